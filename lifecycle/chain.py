"""Lay out a release's chain of seven artifacts with each link's status and what blocks the next step."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from .gates import GateStatus
from .models import (
    ARTIFACT_OWNERS, ARTIFACT_TITLES, BacklogStatus, CheckStatus, Frozen, Release, Role, Verdict, short,
)
from .releases import LIVE, ReleaseReview, active_release, review
from .store import Store

LinkStatus = Literal["present", "missing", "failing check", "awaiting decision", "blocked"]


class ChainLink(Frozen):
    step: int
    kind: str
    title: str
    digest: str | None
    owner_role: Role
    status: LinkStatus
    detail: str
    page: str


class LifecycleMap(Frozen):
    model: str
    release: Release | None
    links: list[ChainLink]
    verdict: str
    line: str

    def first_blocker(self) -> ChainLink | None:
        """Return the first link that is not simply present."""
        return next((link for link in self.links if link.status != "present"), None)


def _link(step: int, kind: str, digest: str | None, status: LinkStatus, detail: str, page: str) -> ChainLink:
    return ChainLink(step=step, kind=kind, title=ARTIFACT_TITLES[kind], digest=digest, owner_role=ARTIFACT_OWNERS[kind],
                     status=status, detail=detail, page=page)


def _snapshot_link(rv: ReleaseReview) -> ChainLink:
    ev = rv.evidence
    snap = ev.snapshot
    if snap is None:
        return _link(1, "dataset_snapshot", None, "missing", "no snapshot behind the training run", "datasets")
    if ev.files is not None and ev.files.status != CheckStatus.PASS:
        return _link(1, "dataset_snapshot", snap.digest, "failing check", ev.files.reason, "datasets")
    own = [d for d in rv.decisions if d.gate == "snapshot" and d.subject == snap.digest]
    last = own[-1] if own else None
    if last is not None and last.verdict == Verdict.BLOCKED:
        return _link(1, "dataset_snapshot", snap.digest, "blocked",
                     f"blocked by {last.user}: {last.comment}", "datasets")
    failing = [c for c in snap.quality_checks if c.status == CheckStatus.FAIL]
    if failing:
        return _link(1, "dataset_snapshot", snap.digest, "failing check",
                     "; ".join(f"{c.name}: {c.reason}" for c in failing), "datasets")
    if last is None:
        return _link(1, "dataset_snapshot", snap.digest, "awaiting decision",
                     "Data owner to mark the snapshot usable", "datasets")
    return _link(1, "dataset_snapshot", snap.digest, "present", f"{snap.row_count:,} rows; marked usable", "datasets")


def _evaluation_link(rv: ReleaseReview) -> ChainLink:
    report = rv.evidence.evaluation
    if report is None:
        return _link(3, "evaluation_report", None, "missing", "no evaluation against the baseline", "evaluation")
    if report.gate.status == CheckStatus.FAIL:
        return _link(3, "evaluation_report", report.digest, "failing check", report.gate.reason, "evaluation")
    signed = [d for d in rv.decisions if d.gate == "evaluation" and d.subject == report.digest]
    if not signed:
        return _link(3, "evaluation_report", report.digest, "awaiting decision", "Model owner to sign off",
                     "evaluation")
    return _link(3, "evaluation_report", report.digest, "present", report.gate.reason, "evaluation")


def lifecycle_map(store: Store, model: str, now: datetime, release_id: str | None = None) -> LifecycleMap:
    """Return the lifecycle map of a model's current (or given) release."""
    release = store.release(release_id) if release_id else active_release(store, model)
    if release is None:
        links = [_link(i, kind, None, "missing", "no release yet", page) for i, (kind, page) in enumerate(
            zip(ARTIFACT_TITLES, ["datasets", "runs", "evaluation", "registry", "release", "monitoring",
                                  "backlog"]), start=1)]
        return LifecycleMap(model=model, release=None, links=links, verdict="wait", line="no release for this model")
    rv = review(store, release.id, now)
    ev = rv.evidence
    links = [_snapshot_link(rv)]
    run = ev.run
    links.append(_link(2, "training_run", run.digest if run else None, "present" if run else "missing",
                       f"{run.estimator}, validation " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                   run.validation_metrics.items()) if run else "",
                       "runs"))
    links.append(_evaluation_link(rv))
    aliases = [a for a, d in store.aliases(model).items() if d == ev.candidate.digest]
    links.append(_link(4, "registry_entry", ev.candidate.digest, "present",
                       f"{ev.candidate.name} v{ev.candidate.version}" + (f" ({', '.join(aliases)})" if aliases else ""),
                       "registry"))
    if ev.note is None:
        links.append(_link(5, "rollout_note", None, "missing", "Product owner to write the rollout note", "release"))
    else:
        pending = [r for r in rv.results if r.gate.stage == "before" and r.status == GateStatus.PENDING
                   and r.gate.kind == "signoff"]
        status: LinkStatus = "awaiting decision" if pending and release.state.value == "in_review" else "present"
        detail = ("awaiting " + ", ".join(r.gate.owner_role.label for r in pending)) if status != "present" \
            else f"release {release.state.value.replace('_', ' ')}"
        links.append(_link(5, "rollout_note", ev.note.digest, status, detail, "release"))
    batches = [a for a in store.artifacts(model, "monitoring_signals") if a.release == release.id]
    tripped = [r for r in ev.stop_rules if r.status == CheckStatus.FAIL]
    if tripped:
        links.append(_link(6, "monitoring_signals", batches[0].digest if batches else None, "failing check",
                           "; ".join(r.reason for r in tripped), "monitoring"))
    elif batches:
        links.append(_link(6, "monitoring_signals", batches[0].digest, "present",
                           f"{sum(len(b.windows) for b in batches):,} windows", "monitoring"))
    else:
        links.append(_link(6, "monitoring_signals", None, "missing",
                           "starts when the release goes live" if release.state not in LIVE else "no windows yet",
                           "monitoring"))
    items = [i for i in store.backlog(model) if i.status in (BacklogStatus.OPEN, BacklogStatus.IN_PROGRESS)]
    triggers = store.artifacts(model, "retraining_trigger")
    if items:
        links.append(_link(7, "retraining_trigger", items[0].triggers[0] if items[0].triggers else None, "present",
                           f"{len(items)} open backlog item(s): " + "; ".join(i.type.value for i in items[:3]),
                           "backlog"))
    else:
        closed = [i for i in store.backlog(model) if i.status == BacklogStatus.CLOSED and i.resolved_by]
        detail = f"loop closed by {short(closed[0].resolved_by)}" if closed else "no trigger has fired"
        links.append(_link(7, "retraining_trigger", triggers[0].digest if triggers else None,
                           "present" if triggers else "missing", detail, "backlog"))
    return LifecycleMap(model=model, release=release, links=links, verdict=rv.verdict, line=rv.line)
