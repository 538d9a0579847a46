"""Evaluate a release policy's gates: (policy, evidence, decisions, now) -> results that explain themselves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from .models import (
    CheckResult, CheckStatus, DatasetSnapshot, Decision, EvaluationReport, Frozen, Gate, GateKind, GateStage,
    Model, RegistryEntry, Release, ReleasePolicy, ReleaseState, Role, RolloutNote, Stage, TrainingRun, Verdict,
    short,
)


class GateStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"
    WAIVED = "waived"


class GateResult(Frozen):
    gate: Gate
    status: GateStatus
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    who_must_act: Role | None = None
    stale: list[int] = Field(default_factory=list, description="ids of decisions that no longer count")


class ReleaseEvidence(Frozen):
    """Everything the gates of one release read, assembled by `releases.release_evidence`."""

    release: Release
    model: Model
    policy: ReleasePolicy
    candidate: RegistryEntry
    baseline: RegistryEntry | None = None
    note: RolloutNote | None = None
    run: TrainingRun | None = None
    baseline_run: TrainingRun | None = None
    snapshot: DatasetSnapshot | None = None
    evaluation: EvaluationReport | None = None
    files: CheckResult | None = Field(None, description="data files re-hashed against the snapshot")
    stop_rules: list[CheckResult] = Field(default_factory=list, description="current verdict of each stop rule")
    stability: CheckResult | None = None
    post_release: CheckResult | None = None

    def covered(self) -> dict[str, str]:
        """Return the digests a decision on this release binds to."""
        out = {"policy": self.policy.digest, "candidate": self.candidate.digest}
        for name in ("baseline", "note", "run", "snapshot", "evaluation"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.digest
        return out


# A sign-off gate can also be satisfied by the owner's decision on the artifact they own.
ARTIFACT_SIGNOFF = {Role.DATA: ("snapshot", Verdict.USABLE, Verdict.BLOCKED),
                    Role.MODEL: ("evaluation", Verdict.APPROVE, Verdict.REJECT)}
LIVE_STATES = (ReleaseState.SHADOW, ReleaseState.CANARY, ReleaseState.RAMP, ReleaseState.FULL)


def is_stale(decision: Decision, evidence: ReleaseEvidence) -> bool:
    """Tell whether a release decision covered artifacts other than the current ones."""
    current = evidence.covered()
    return any(current.get(name) != digest for name, digest in decision.covered.items())


def _check(gate: Gate, ev: ReleaseEvidence) -> tuple[GateStatus, str, dict[str, Any]]:
    name = gate.check
    if name == "lineage_confirmed":
        if ev.snapshot is None:
            return GateStatus.PENDING, "no dataset snapshot is linked to the candidate's training run", {}
        if ev.files is not None and ev.files.status != CheckStatus.PASS:
            return GateStatus.FAIL, ev.files.reason, {"files": ev.files.evidence}
        failing = [c for c in ev.snapshot.quality_checks if c.status == CheckStatus.FAIL]
        if failing:
            return (GateStatus.FAIL, "; ".join(f"{c.name}: {c.reason}" for c in failing),
                    {"snapshot": ev.snapshot.digest, "failing_checks": [c.name for c in failing]})
        return (GateStatus.PASS, f"snapshot {short(ev.snapshot.digest)}: data files match their digests and "
                f"{len(ev.snapshot.quality_checks)} quality checks pass", {"snapshot": ev.snapshot.digest})
    if name == "evaluation_gate":
        if ev.evaluation is None:
            return GateStatus.PENDING, "no evaluation report compares the candidate with the baseline", {}
        g = ev.evaluation.gate
        status = {CheckStatus.PASS: GateStatus.PASS, CheckStatus.WARN: GateStatus.PASS,
                  CheckStatus.FAIL: GateStatus.FAIL}.get(g.status, GateStatus.PENDING)
        return status, g.reason, {"evaluation": ev.evaluation.digest, **g.evidence}
    if name == "baseline_comparison":
        if ev.baseline is None:
            return GateStatus.PASS, "first release of this model: there is no baseline to compare with", {}
        if ev.evaluation is None:
            return GateStatus.PENDING, f"no evaluation against baseline {ev.baseline.name} v{ev.baseline.version}", {}
        if ev.evaluation.baseline_run != ev.baseline.training_run:
            return (GateStatus.FAIL, "the evaluation compares against a different baseline run than the champion's",
                    {"evaluation_baseline": ev.evaluation.baseline_run, "champion_run": ev.baseline.training_run})
        return (GateStatus.PASS, f"evaluation {short(ev.evaluation.digest)} compares v{ev.candidate.version} with "
                f"baseline v{ev.baseline.version}", {"evaluation": ev.evaluation.digest})
    if name == "release_owner_named":
        if ev.note is None:
            return GateStatus.PENDING, "no rollout note: the release owner is named there", {}
        owners = {p.email for people in ev.model.owners.values() for p in people}
        if ev.note.release_owner not in owners:
            return (GateStatus.FAIL, f"release owner {ev.note.release_owner} is not in the model's team",
                    {"release_owner": ev.note.release_owner})
        return GateStatus.PASS, f"release owner: {ev.note.release_owner}", {"release_owner": ev.note.release_owner}
    if name == "rollback_plan_ready":
        if ev.note is None:
            return GateStatus.PENDING, "no rollout note: the fallback path is described there", {}
        fb = ev.note.fallback
        if not fb.tested:
            return GateStatus.FAIL, f"fallback '{fb.serving[:20]}' has not been tested", {"fallback": fb.serving}
        return (GateStatus.PASS, f"fallback {short(fb.serving) if len(fb.serving) == 64 else fb.serving} "
                f"tested: {fb.test_evidence or 'yes'}", {"fallback": fb.serving})
    if name == "stop_rules":
        if ev.release.state not in LIVE_STATES and ev.release.state != ReleaseState.HALTED:
            return GateStatus.PENDING, "not live yet: stop rules are evaluated from signals during rollout", {}
        if not ev.stop_rules:
            return GateStatus.PENDING, "no signal windows yet", {}
        tripped = [r for r in ev.stop_rules if r.status == CheckStatus.FAIL]
        if tripped:
            return GateStatus.FAIL, "; ".join(r.reason for r in tripped), {"tripped": [r.name for r in tripped]}
        waiting = [r for r in ev.stop_rules if r.status == CheckStatus.INCONCLUSIVE]
        if waiting:
            return GateStatus.PENDING, "; ".join(r.reason for r in waiting), {}
        return GateStatus.PASS, f"{len(ev.stop_rules)} stop rules pass", {}
    if name == "blast_radius":
        if ev.note is None:
            return GateStatus.PENDING, "no rollout note", {}
        share = {c.stage: c.traffic_share for c in ev.note.stages}
        stage = Stage(ev.release.state.value) if ev.release.state in LIVE_STATES else None
        if stage is None:
            return GateStatus.PENDING, "not live yet", {}
        current = share.get(stage, 1.0 if stage == Stage.FULL else 0.0)
        limit = 1.0 if stage == Stage.FULL else ev.note.blast_radius.max_traffic_share
        if current > limit:
            return GateStatus.FAIL, f"{stage.value} at {current:.0%} exceeds the blast radius {limit:.0%}", {}
        return GateStatus.PASS, f"{stage.value} at {current:.0%} within {limit:.0%}", {}
    if name in ("post_release_review", "stability"):
        result = ev.post_release if name == "post_release_review" else ev.stability
        if result is None:
            return GateStatus.PENDING, "evaluated after full rollout", {}
        status = {CheckStatus.PASS: GateStatus.PASS, CheckStatus.FAIL: GateStatus.FAIL}.get(result.status,
                                                                                          GateStatus.PENDING)
        return status, result.reason, result.evidence
    return GateStatus.FAIL, f"unknown check '{name}'", {}


def _signoff(gate: Gate, ev: ReleaseEvidence, decisions: list[Decision]) -> tuple[GateStatus, str, dict, list[int]]:
    stale, counted = [], []
    for d in decisions:
        if d.gate != gate.id or d.role != gate.owner_role or d.verdict == Verdict.WAIVE:
            continue
        (stale if is_stale(d, ev) else counted).append(d)
    artifact = ARTIFACT_SIGNOFF.get(gate.owner_role)
    if artifact:
        kind, yes, no = artifact
        subject = getattr(ev, kind)
        for d in decisions:
            if d.gate == kind and d.role == gate.owner_role and d.verdict in (yes, no):
                if subject is not None and d.subject == subject.digest:
                    counted.append(d)
    if not counted:
        return (GateStatus.PENDING, f"awaiting the {gate.owner_role.label}'s sign-off",
                {}, [d.id for d in stale if d.id is not None])
    last = max(counted, key=lambda d: (d.at, d.id or 0))
    ok = last.verdict in (Verdict.APPROVE, Verdict.USABLE)
    verb = {"approve": "approved", "reject": "rejected", "usable": "marked usable", "blocked": "marked blocked"}
    reason = f"{verb[last.verdict.value]} by {last.user} ({last.role.label}) on {last.at:%Y-%m-%d %H:%M}"
    if last.comment:
        reason += f": “{last.comment}”"
    return (GateStatus.PASS if ok else GateStatus.FAIL, reason, {"decision": last.id},
            [d.id for d in stale if d.id is not None])


def _waiver(gate: Gate, ev: ReleaseEvidence, decisions: list[Decision]) -> Decision | None:
    valid = [d for d in decisions if d.gate == gate.id and d.verdict == Verdict.WAIVE
             and d.role in gate.waivable_by and d.comment.strip() and not is_stale(d, ev)]
    return max(valid, key=lambda d: (d.at, d.id or 0)) if valid else None


def evaluate_gates(policy: ReleasePolicy, evidence: ReleaseEvidence, decisions: list[Decision],
                   now: datetime) -> list[GateResult]:
    """Evaluate every gate of the policy; each result names its status, reason, evidence and who must act."""
    results = []
    for gate in policy.gates:
        stale: list[int] = []
        if gate.kind is GateKind.CHECK:
            status, reason, evid = _check(gate, evidence)
        else:
            status, reason, evid, stale = _signoff(gate, evidence, decisions)
        if status in (GateStatus.FAIL, GateStatus.PENDING):
            waiver = _waiver(gate, evidence, decisions)
            if waiver is not None:
                status = GateStatus.WAIVED
                reason = f"waived by {waiver.user} ({waiver.role.label}): {waiver.comment} — was: {reason}"
                evid = {**evid, "waiver": waiver.id}
        if stale:
            reason += f" ({len(stale)} earlier decision(s) are stale: the artifacts changed since)"
        who = gate.owner_role if status in (GateStatus.PENDING, GateStatus.FAIL) else None
        results.append(GateResult(gate=gate, status=status, reason=reason, evidence=evid, who_must_act=who,
                                  stale=stale))
    return results


def stage_open(results: list[GateResult], stage: GateStage) -> list[GateResult]:
    """Return the gates of a stage that do not yet pass (and are not waived)."""
    return [r for r in results if r.gate.stage == stage and r.status not in (GateStatus.PASS, GateStatus.WAIVED)]


def summary(release: Release, results: list[GateResult]) -> tuple[str, str]:
    """Return (go|stop|wait, one line) for the release's next step."""
    stage = {ReleaseState.DRAFT: GateStage.BEFORE, ReleaseState.IN_REVIEW: GateStage.BEFORE,
             ReleaseState.APPROVED: GateStage.DURING, ReleaseState.SHADOW: GateStage.DURING,
             ReleaseState.CANARY: GateStage.DURING, ReleaseState.RAMP: GateStage.DURING,
             ReleaseState.FULL: GateStage.AFTER}.get(release.state)
    if stage is None:
        return "stop", f"release is {release.state.value.replace('_', ' ')}: no next step"
    open_ = stage_open(results, stage)
    failing = [r for r in open_ if r.status == GateStatus.FAIL]
    if failing:
        names = ", ".join(r.gate.title for r in failing)
        return "stop", f"STOP — {len(failing)} {stage.value}-rollout gate(s) fail: {names}"
    if open_:
        who = sorted({r.who_must_act.label for r in open_ if r.who_must_act})
        return "wait", f"WAIT — {len(open_)} {stage.value}-rollout gate(s) pending; to act: {', '.join(who)}"
    return "go", f"GO — every {stage.value}-rollout gate passes"
