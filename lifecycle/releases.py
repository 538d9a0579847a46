"""Run the release review: gather evidence, enforce who may decide, move the state machine, answer history."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from .gates import GateResult, GateStatus, ReleaseEvidence, evaluate_gates, is_stale, stage_open, summary
from .identity import User
from .models import (
    CheckResult, CheckStatus, DatasetSnapshot, Decision, EvaluationReport, Frozen, GateStage, RegistryEntry,
    Release, ReleaseState, Role, RolloutNote, Stage, TrainingRun, Verdict, short,
)
from .store import NotFound, StaleVersion, Store

S = ReleaseState
TRANSITIONS: dict[ReleaseState, set[ReleaseState]] = {
    S.DRAFT: {S.IN_REVIEW},
    S.IN_REVIEW: {S.APPROVED, S.REJECTED, S.DRAFT},
    S.APPROVED: {S.SHADOW, S.CANARY},
    S.SHADOW: {S.CANARY, S.HALTED, S.ROLLED_BACK},
    S.CANARY: {S.RAMP, S.HALTED, S.ROLLED_BACK},
    S.RAMP: {S.FULL, S.HALTED, S.ROLLED_BACK},
    S.FULL: {S.PROMOTED, S.HALTED, S.ROLLED_BACK},
    S.HALTED: {S.ROLLED_BACK, S.SHADOW, S.CANARY},
}
# Who may move a release into a state (besides the system acting on a stop rule).
MOVERS: dict[ReleaseState, set[Role]] = {
    S.IN_REVIEW: {Role.PRODUCT, Role.MODEL}, S.DRAFT: {Role.PRODUCT, Role.MODEL},
    S.SHADOW: {Role.PLATFORM}, S.CANARY: {Role.PLATFORM}, S.RAMP: {Role.PLATFORM}, S.FULL: {Role.PLATFORM},
    S.PROMOTED: {Role.PLATFORM, Role.PRODUCT}, S.HALTED: {Role.PLATFORM}, S.ROLLED_BACK: {Role.PLATFORM},
}
SYSTEM = "seamline"
LIVE = (S.SHADOW, S.CANARY, S.RAMP, S.FULL)


class DecisionRefused(PermissionError):
    """A decision or transition the rules do not allow; the message says which rule."""


class ReleaseReview(Frozen):
    evidence: ReleaseEvidence
    results: list[GateResult]
    decisions: list[Decision]
    verdict: str = Field(description="go, stop or wait")
    line: str


class DecisionOutcome(Frozen):
    decision: Decision
    release: Release
    moved_to: ReleaseState | None = None
    message: str


def current_evaluation(store: Store, candidate: RegistryEntry, baseline: RegistryEntry | None) -> EvaluationReport | None:
    """Return the newest evaluation of the candidate's run against the baseline's run."""
    reports = [r for r in store.artifacts(candidate.model, "evaluation_report")
               if r.candidate_run == candidate.training_run
               and (baseline is None or r.baseline_run == baseline.training_run)]
    if reports:
        return reports[0]
    return store.artifact(candidate.evaluation) if candidate.evaluation else None


def release_evidence(store: Store, release_id: str, verify_files: bool = True,
                     now: datetime | None = None) -> ReleaseEvidence:
    """Gather every artifact, check and verdict the gates of a release read."""
    from .snapshots import verify_files as verify

    release = store.release(release_id)
    candidate: RegistryEntry = store.artifact(release.candidate)
    baseline = store.artifact(release.baseline) if release.baseline else None
    note: RolloutNote | None = store.artifact(release.rollout_note) if release.rollout_note else None
    run: TrainingRun = store.artifact(candidate.training_run)
    baseline_run = store.artifact(baseline.training_run) if baseline else None
    snapshot: DatasetSnapshot = store.artifact(run.snapshot)
    files = verify(snapshot, store.data_root) if verify_files else None
    live = live_verdicts(store, release, note, now)
    return ReleaseEvidence(
        release=release, model=store.model(release.model), policy=store.policy(release.model, release.policy_version),
        candidate=candidate, baseline=baseline, note=note, run=run, baseline_run=baseline_run, snapshot=snapshot,
        evaluation=current_evaluation(store, candidate, baseline), files=files, **live)


def live_verdicts(store: Store, release: Release, note: RolloutNote | None,
                  now: datetime | None = None) -> dict[str, Any]:
    """Evaluate the note's stop rules and the stability check over the release's stored windows."""
    windows = store.windows_frame(release.id)
    if note is None or windows.empty:
        return {}
    from .stoprules import evaluate_stop_rules, stability

    out: dict[str, Any] = {"stop_rules": []}
    for stage in windows["stage"].unique():
        for v in evaluate_stop_rules(note.stop_rules, windows, stage=Stage(stage)):
            out["stop_rules"].append(v.as_check().model_copy(update={"name": f"{v.rule} ({v.stage.value})"}))
    if release.state in (S.FULL, S.PROMOTED):
        full = windows[windows["stage"] == "full"]
        out["stability"] = stability(full, note.stop_rules, store.policy(release.model,
                                                                          release.policy_version).stability_windows)
        from .monitoring import post_release_review

        out["post_release"] = post_release_review(store, release.id, now)
    return out


def review(store: Store, release_id: str, now: datetime, verify_files: bool = True) -> ReleaseReview:
    """Evaluate a release's gates and say go, stop or wait."""
    evidence = release_evidence(store, release_id, verify_files, now)
    decisions = decisions_for(store, evidence)
    results = evaluate_gates(evidence.policy, evidence, decisions, now)
    verdict, line = summary(evidence.release, results)
    return ReleaseReview(evidence=evidence, results=results, decisions=decisions, verdict=verdict, line=line)


def decisions_for(store: Store, evidence: ReleaseEvidence) -> list[Decision]:
    """Return the release's decisions plus the owners' decisions on its snapshot and evaluation."""
    out = store.decisions(release=evidence.release.id)
    for subject in (evidence.snapshot, evidence.evaluation):
        if subject is not None:
            out += [d for d in store.decisions(subject=subject.digest) if d.release is None]
    return sorted(out, key=lambda d: d.id or 0)


def _authors(evidence: ReleaseEvidence) -> set[str]:
    authors = {evidence.candidate.created_by}
    if evidence.run is not None:
        authors.add(evidence.run.created_by)
    return authors


def check_decision(user: User, evidence: ReleaseEvidence, gate_id: str, role: Role, verdict: Verdict,
                   comment: str) -> None:
    """Raise DecisionRefused unless the user may record this decision on this release."""
    release = evidence.release
    gate = next((g for g in evidence.policy.gates if g.id == gate_id), None)
    if gate is None:
        raise DecisionRefused(f"policy v{evidence.policy.version} has no gate '{gate_id}'")
    if not user.holds(release.model, role):
        raise DecisionRefused(f"{user.email} does not hold the {role.label} role on '{release.model}'")
    if verdict == Verdict.WAIVE:
        if role not in gate.waivable_by:
            allowed = ", ".join(r.label for r in gate.waivable_by) or "nobody"
            raise DecisionRefused(f"gate '{gate.title}' may be waived only by: {allowed}")
        if not comment.strip():
            raise DecisionRefused("a waiver needs a reason in the comment")
    elif verdict in (Verdict.APPROVE, Verdict.REJECT):
        if gate.owner_role != role:
            raise DecisionRefused(f"gate '{gate.title}' is signed off by the {gate.owner_role.label}, "
                                  f"not the {role.label}")
        if verdict == Verdict.APPROVE and user.email in _authors(evidence):
            raise DecisionRefused(f"{user.email} authored the candidate (training run or registry entry) and "
                                  "cannot approve its release: separation of duties")
    else:
        raise DecisionRefused(f"'{verdict.value}' is not a release decision; use approve, reject or waive")
    if gate.stage == GateStage.BEFORE and release.state != S.IN_REVIEW:
        raise DecisionRefused(f"release is {release.state.value}: before-rollout decisions are taken in review")


def decide(store: Store, user: User, release_id: str, gate_id: str, role: Role, verdict: Verdict, comment: str,
           now: datetime, seen_version: int | None = None) -> DecisionOutcome:
    """Record a sign-off, rejection or waiver bound to the current digests; move the release when gates allow."""
    role, verdict = Role(role), Verdict(verdict)
    evidence = release_evidence(store, release_id)
    check_decision(user, evidence, gate_id, role, verdict, comment)
    decision = store.record_decision(Decision(
        release=release_id, gate=gate_id, user=user.email, role=role, verdict=verdict, comment=comment, at=now,
        covered=evidence.covered()), actor=user.email)
    changed = ""
    if seen_version is not None and seen_version != evidence.release.version:
        changed = (f"Meanwhile the release changed (version {seen_version} → {evidence.release.version}, "
                   f"now {evidence.release.state.value}). ")
    moved, release = _advance_after_decision(store, release_id, verdict, now)
    if moved is None and release.state != evidence.release.state:
        changed += f"Another decision moved the release to {release.state.value}. "
    msg = f"{changed}Recorded: {verdict.value} of '{gate_id}' as {role.label}, bound to {len(decision.covered)} digests."
    if moved:
        msg += f" The release is now {moved.value}."
    return DecisionOutcome(decision=decision, release=release, moved_to=moved, message=msg)


def _advance_after_decision(store: Store, release_id: str, verdict: Verdict,
                            now: datetime) -> tuple[ReleaseState | None, Release]:
    """Approve when every before-rollout gate passes, reject on a rejection; exactly once under races."""
    for _ in range(3):
        rv = review(store, release_id, now)
        release = rv.evidence.release
        if release.state != S.IN_REVIEW:
            return None, release
        target = None
        if verdict == Verdict.REJECT:
            target = S.REJECTED
        elif not stage_open(rv.results, GateStage.BEFORE):
            target = S.APPROVED
        if target is None:
            return None, release
        try:
            new = store.update_release(release.model_copy(update={"state": target}), release.version, SYSTEM,
                                       f"release.{target.value}", {"from": release.state.value, "to": target.value,
                                                                   "covered": rv.evidence.covered()}, now)
            return target, new
        except StaleVersion:
            continue
    return None, store.release(release_id)


def transition(store: Store, user: User | None, release_id: str, target: ReleaseState, now: datetime,
               reason: str, seen_version: int | None = None) -> Release:
    """Move a release along its state machine when the rules and gates allow; user None is the system."""
    rv = review(store, release_id, now)
    release = rv.evidence.release
    if seen_version is not None and seen_version != release.version:
        raise StaleVersion(f"release '{release_id}' changed meanwhile (now {release.state.value}); review again")
    if target not in TRANSITIONS.get(release.state, set()):
        raise DecisionRefused(f"a release cannot go from {release.state.value} to {target.value}")
    actor = SYSTEM
    if user is not None:
        actor = user.email
        if target not in MOVERS:
            raise DecisionRefused(f"a release becomes {target.value} through its sign-offs, not by hand: "
                                  "record your decision on the gates instead")
        if not (MOVERS[target] & user.roles_for(release.model)):
            need = " or ".join(r.label for r in MOVERS[target])
            raise DecisionRefused(f"moving a release to {target.value} needs the {need} role")
    if target == S.APPROVED or (release.state == S.IN_REVIEW and target not in (S.REJECTED, S.DRAFT)):
        blocking = stage_open(rv.results, GateStage.BEFORE)
        if blocking:
            raise DecisionRefused("before-rollout gates still open: " + ", ".join(r.gate.title for r in blocking))
    if target in (S.CANARY, S.RAMP, S.FULL) and release.state != S.APPROVED:
        failing = [r for r in stage_open(rv.results, GateStage.DURING) if r.status == GateStatus.FAIL]
        if failing:
            raise DecisionRefused("during-rollout gates fail: " + "; ".join(r.reason for r in failing))
    if target == S.PROMOTED:
        blocking = stage_open(rv.results, GateStage.AFTER)
        if blocking:
            raise DecisionRefused("promotion waits for: " + "; ".join(f"{r.gate.title} ({r.reason})" for r in blocking))
    update: dict[str, Any] = {"state": target}
    if target in (S.SHADOW, S.CANARY, S.RAMP, S.FULL):
        update["serving"] = release.candidate
    if target in (S.HALTED, S.ROLLED_BACK) and rv.evidence.note is not None:
        update["serving"] = rv.evidence.note.fallback.serving if len(rv.evidence.note.fallback.serving) == 64 \
            else release.baseline
    new = store.update_release(release.model_copy(update=update), release.version, actor, f"release.{target.value}",
                               {"from": release.state.value, "to": target.value, "reason": reason,
                                "covered": rv.evidence.covered()}, now)
    if target == S.PROMOTED:
        store.set_alias(release.model, "champion", release.candidate, actor, now)
    return new


def last_artifact_decision(store: Store, digest: str, gate: str) -> tuple[Decision | None, str]:
    """Return the newest owner's decision on an artifact and 'by WHO on WHEN UTC[: comment]' (the newest counts)."""
    decisions = store.decisions(subject=digest, gate=gate)
    if not decisions:
        return None, ""
    last = decisions[-1]
    when = last.at.astimezone(timezone.utc)
    return last, f"by {last.user} on {when:%Y-%m-%d %H:%M} UTC" + (f": {last.comment}" if last.comment else "")


def decide_artifact(store: Store, user: User, subject: str, verdict: Verdict, comment: str,
                    now: datetime) -> Decision:
    """Record the Data owner's usable/blocked on a snapshot or the Model owner's sign-off of an evaluation."""
    artifact = store.artifact(subject)
    if isinstance(artifact, DatasetSnapshot):
        gate, role, allowed = "snapshot", Role.DATA, (Verdict.USABLE, Verdict.BLOCKED)
    elif isinstance(artifact, EvaluationReport):
        gate, role, allowed = "evaluation", Role.MODEL, (Verdict.APPROVE, Verdict.REJECT)
    else:
        raise DecisionRefused(f"{artifact.kind} is not decided on directly; decide on its release")
    if verdict not in allowed:
        raise DecisionRefused(f"a {gate} decision is {' or '.join(v.value for v in allowed)}")
    if not user.holds(artifact.model, role):
        raise DecisionRefused(f"{user.email} does not hold the {role.label} role on '{artifact.model}'")
    if verdict in (Verdict.BLOCKED, Verdict.REJECT) and not comment.strip():
        raise DecisionRefused("say why in the comment")
    return store.record_decision(Decision(gate=gate, subject=artifact.digest, user=user.email, role=role,
                                          verdict=verdict, comment=comment, at=now,
                                          covered={gate: artifact.digest}), actor=user.email)


class ServingAnswer(Frozen):
    model: str
    at: datetime
    champion: str | None
    live_releases: list[dict[str, Any]]
    decisions_in_force: list[dict[str, Any]]
    line: str


def serving_at(store: Store, model: str, at: datetime) -> ServingAnswer:
    """Answer what was serving for a model at time t, and on what evidence, from the audit log."""
    champion, states = None, {}
    releases = {r.id: r for r in store.releases(model)}
    for e in sorted(store.audit_events(), key=lambda e: (e.at, e.seq)):
        if e.at > at:
            break
        if e.action == "alias.set" and e.subject == f"{model}/champion":
            champion = e.detail["entry"]
        elif e.subject in releases and e.action.startswith("release."):
            states[e.subject] = e.detail.get("to", "draft")
    live = [{"release": rid, "state": st, "candidate": releases[rid].candidate} for rid, st in states.items()
            if st in {s.value for s in (S.SHADOW, S.CANARY, S.RAMP, S.FULL)}]
    in_force = []
    for rid in [x["release"] for x in live] + [rid for rid, st in states.items() if st == "promoted"
                                               and releases[rid].candidate == champion]:
        for d in store.decisions(release=rid):
            if d.at <= at and d.verdict in (Verdict.APPROVE, Verdict.WAIVE):
                in_force.append({"release": rid, "gate": d.gate, "user": d.user, "role": d.role.value,
                                 "verdict": d.verdict.value, "at": d.at.isoformat()})
    line = f"champion {short(champion)}" if champion else "no champion"
    if live:
        line += "; live: " + ", ".join(f"{x['release']} ({x['state']})" for x in live)
    return ServingAnswer(model=model, at=at, champion=champion, live_releases=live, decisions_in_force=in_force,
                         line=line)


def active_release(store: Store, model: str) -> Release | None:
    """Return the release a model's lifecycle map centres on: the newest open one, else the newest."""
    releases = store.releases(model)
    for r in releases:
        if r.state not in (S.PROMOTED, S.REJECTED, S.ROLLED_BACK):
            return r
    return releases[0] if releases else None


def stale_decisions(evidence: ReleaseEvidence, decisions: list[Decision]) -> list[Decision]:
    """Return the release decisions that no longer count because what they covered changed."""
    return [d for d in decisions if d.release == evidence.release.id and is_stale(d, evidence)]


def find_release(store: Store, release_id: str) -> Release:
    """Return a release or raise NotFound with a helpful message."""
    try:
        return store.release(release_id)
    except NotFound:
        known = ", ".join(r.id for r in store.releases()) or "none"
        raise NotFound(f"no release '{release_id}'; known: {known}") from None


def checklist_frame(rv: ReleaseReview):
    """Return the gate checklist as a table: stage, gate, owner, status, reason, who must act."""
    import pandas as pd

    order = {"before": 0, "during": 1, "after": 2}
    rows = [{"stage": r.gate.stage.value, "gate": r.gate.title, "id": r.gate.id, "owner": r.gate.owner_role.label,
             "kind": r.gate.kind.value, "status": r.status.value, "reason": r.reason,
             "to act": r.who_must_act.label if r.who_must_act else "", "stale decisions": len(r.stale)}
            for r in sorted(rv.results, key=lambda r: order[r.gate.stage.value])]
    return pd.DataFrame(rows)


def timeline_frame(store: Store, release_id: str):
    """Return the release's history from the audit log: transitions, decisions, incidents."""
    import pandas as pd

    rows = []
    for e in store.audit_events(release_id):
        what = e.detail.get("to") or e.detail.get("gate") or e.detail.get("rule") or ""
        note = e.detail.get("reason") or e.detail.get("comment") or ""
        rows.append({"at": e.at, "action": e.action, "actor": e.actor, "what": what, "note": str(note)[:200],
                     "entry": e.seq})
    return pd.DataFrame(rows, columns=["at", "action", "actor", "what", "note", "entry"])


def decidable_gates(rv: ReleaseReview, user: User) -> list[tuple[str, Role, list[Verdict]]]:
    """Return (gate id, role, verdicts) the user could record on this release, for the form to offer."""
    held = user.roles_for(rv.evidence.release.model)
    out = []
    for gate in rv.evidence.policy.gates:
        for role in sorted(held, key=list(Role).index):
            verdicts = []
            if gate.kind.value == "signoff" and gate.owner_role == role:
                verdicts += [Verdict.APPROVE, Verdict.REJECT]
            if role in gate.waivable_by:
                verdicts.append(Verdict.WAIVE)
            if verdicts:
                out.append((gate.id, role, verdicts))
    return out
