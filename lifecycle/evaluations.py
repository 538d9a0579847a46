"""Serve the Evaluation screen: pick the runs, compute or reuse a report, tables, limits and the Model owner's sign-off.

A report is computed by scoring a labelled snapshot with both runs' stored models and handing the scored rows to
``evaluation.evaluate``. Work is cached by the digests of its inputs twice over: a stored report whose inputs match a
request is returned as it is, and computed bodies stay in an in-process LRU keyed by the request's digest.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field

from .evaluation import METRIC_LABELS, METRICS, EvaluationResult, evaluate
from .identity import User
from .models import (
    Calibration, DatasetSnapshot, Decision, Digest, EvaluationReport, EvaluationSettings, Frozen, ReleaseState, Role,
    Text, TrainingRun, Verdict, canonical_json, sha256_hex, short,
)
from .releases import current_evaluation, decide_artifact, last_artifact_decision
from .runs import run_labels
from .store import NotFound, Store
from .training import TrainingError, check_data, load_model, read_snapshot_frame

Progress = Callable[[float, str], None]
SignoffState = Literal["approved", "rejected", "awaiting sign-off"]
SIGNOFF_VERDICTS = (Verdict.APPROVE.value, Verdict.REJECT.value)
OPEN_STATES = (ReleaseState.DRAFT, ReleaseState.IN_REVIEW, ReleaseState.APPROVED, ReleaseState.SHADOW,
               ReleaseState.CANARY, ReleaseState.RAMP)
MAX_LIMITS = 30
MAX_SEED = 2**31 - 1  # the page, the CLI and the request accept the same seeds
_CACHE_SIZE = 8
_cache: OrderedDict[str, EvaluationResult] = OrderedDict()
_cache_lock = threading.Lock()


class EvaluationRefused(ValueError):
    """A request the Evaluation screen cannot carry out; nothing was written."""


# ---------------------------------------------------------------- choosing what to compare


def _stored(store: Store, digest: str, cls: type, word: str, model: str | None = None) -> Any:
    """Return the stored artifact of this class (and model, when given), or refuse naming what was expected."""
    try:
        artifact = store.artifact(digest)
    except NotFound:
        raise EvaluationRefused(f"no {word} {short(digest)} in the store") from None
    if not isinstance(artifact, cls):
        raise EvaluationRefused(f"{short(digest)} is a {artifact.kind}, not a {word}"
                                + (f" of '{model}'" if model else ""))
    if model is not None and artifact.model != model:
        raise EvaluationRefused(f"{short(digest)} is not a {word} of '{model}'")
    return artifact


def _run(store: Store, digest: str, model: str) -> TrainingRun:
    return _stored(store, digest, TrainingRun, "training run", model)


def run_choices(store: Store, model: str) -> dict[str, str]:
    """Return {run digest: label} of a model's training runs, newest first."""
    return {digest: title for title, digest in run_labels(store, model).items()}


def default_indices(store: Store, model: str, runs: list[str]) -> tuple[int, int]:
    """Return the selector positions of the release's candidate and baseline runs (else the two newest runs)."""
    cand, base = release_pair(store, model)
    return runs.index(cand) if cand in runs else 0, runs.index(base) if base in runs else min(1, len(runs) - 1)


def release_pair(store: Store, model: str) -> tuple[str | None, str | None]:
    """Return (candidate run, baseline run) of the newest open release, or of the newest report, or (None, None)."""
    for release in store.releases(model, states=OPEN_STATES):
        candidate = store.artifact(release.candidate)
        baseline = store.artifact(release.baseline) if release.baseline else None
        return candidate.training_run, baseline.training_run if baseline else None
    reports = store.artifacts(model, "evaluation_report")
    if reports:
        return reports[0].candidate_run, reports[0].baseline_run
    return None, None


def reports_for(store: Store, model: str, candidate_run: str, baseline_run: str) -> list[EvaluationReport]:
    """Return the stored reports comparing these two runs, newest first."""
    return [r for r in store.artifacts(model, "evaluation_report")
            if r.candidate_run == candidate_run and r.baseline_run == baseline_run]


def report_choices(store: Store, reports: list[EvaluationReport]) -> dict[str, str]:
    """Return {report digest: label} for a selector: when, by whom, gate status and sign-off."""
    return {r.digest: (f"{r.created_at:%Y-%m-%d %H:%M} · {short(r.digest)} · by {r.created_by} · gate "
                       f"{r.gate.status.value} · {signoff_status(store, r.digest).status}") for r in reports}


def snapshot_choices(store: Store, model: str) -> dict[str, str]:
    """Return {snapshot digest: label} of a model's labelled snapshots, newest first."""
    return {s.digest: f"{s.name} · {short(s.digest)} · {s.row_count:,} rows"
            for s in store.artifacts(model, "dataset_snapshot") if s.label_rate is not None}


def reference_choices(store: Store, model: str, candidate_run: str) -> tuple[dict[str, str], int]:
    """Return {snapshot digest: label} of every snapshot of the model, and the position of the candidate's
    training snapshot, the default reference window of the shift checks."""
    choices = {s.digest: f"{s.name} · {short(s.digest)} · {s.row_count:,} rows"
               for s in store.artifacts(model, "dataset_snapshot")}
    trained_on = _run(store, candidate_run, model).snapshot
    return choices, list(choices).index(trained_on) if trained_on in choices else 0


def default_thresholds(store: Store, model: str, candidate_run: str, baseline_run: str) -> tuple[float, float]:
    """Return each run's decision threshold from its newest registry entry, else from a report, else 0.5."""
    by_run: dict[str, float] = {}
    for entry in reversed(store.artifacts(model, "registry_entry")):  # oldest first: the newest entry wins
        by_run[entry.training_run] = entry.decision_threshold
    reports = reports_for(store, model, candidate_run, baseline_run)
    settings = reports[0].settings if reports else {}
    return (float(by_run.get(candidate_run, settings.get("candidate_threshold", 0.5))),
            float(by_run.get(baseline_run, settings.get("baseline_threshold", 0.5))))


class ComputeDefaults(Frozen):
    """What the compute form starts from: the last report's snapshot and seed, the policy's resamples, thresholds."""

    snapshot_index: int
    references: dict[str, str] = Field(description="every snapshot of the model, for the shift checks' reference")
    reference_index: int = Field(description="the candidate's training snapshot, the default reference")
    seed: int
    bootstrap: int
    candidate_threshold: float
    baseline_threshold: float


def compute_defaults(store: Store, model: str, candidate_run: str, baseline_run: str,
                     snapshots: list[str]) -> ComputeDefaults:
    reports = reports_for(store, model, candidate_run, baseline_run)
    last = reports[0] if reports else None
    index = snapshots.index(last.evaluation_snapshot) if last and last.evaluation_snapshot in snapshots else 0
    c_thr, b_thr = default_thresholds(store, model, candidate_run, baseline_run)
    references, reference_index = reference_choices(store, model, candidate_run)
    return ComputeDefaults(snapshot_index=index, references=references, reference_index=reference_index,
                           seed=min(max(int(last.settings.get("seed", 0)), 0), MAX_SEED) if last else 0,
                           bootstrap=store.policy(model).evaluation.bootstrap, candidate_threshold=c_thr,
                           baseline_threshold=b_thr)


# ---------------------------------------------------------------- computing a report


class EvaluationRequest(Frozen):
    """Everything a computed report depends on; its digest keys the cache."""

    model: str
    candidate_run: Digest
    baseline_run: Digest
    evaluation_snapshot: Digest
    reference_snapshot: Digest | None = Field(None, description="shift checks against it; default: the candidate "
                                              "run's training snapshot")
    candidate_threshold: float = Field(ge=0, le=1)
    baseline_threshold: float = Field(ge=0, le=1)
    settings: EvaluationSettings
    seed: int = Field(0, ge=0, le=MAX_SEED)

    def key(self) -> str:
        return sha256_hex(canonical_json(self.model_dump(mode="json")))


def make_request(store: Store, model: str, runs: tuple[str, str], snapshots: tuple[str, str | None],
                 thresholds: tuple[float, float], bootstrap: int, seed: int) -> EvaluationRequest:
    """Return the request for (candidate, baseline) runs on (evaluation, reference) snapshots with the policy's
    settings and this many resamples."""
    settings = EvaluationSettings.model_validate({**store.policy(model).evaluation.model_dump(),
                                                  "bootstrap": bootstrap})  # validated: bounds hold
    return EvaluationRequest(model=model, candidate_run=runs[0], baseline_run=runs[1],
                             evaluation_snapshot=snapshots[0], reference_snapshot=snapshots[1],
                             candidate_threshold=thresholds[0], baseline_threshold=thresholds[1], settings=settings,
                             seed=seed)


def stored_match(store: Store, request: EvaluationRequest) -> EvaluationReport | None:
    """Return the newest stored report computed from exactly this request (its digest is recorded in the report's
    settings); a report computed elsewhere (the CLI, the demo) never matches."""
    key = request.key()
    for report in reports_for(store, request.model, request.candidate_run, request.baseline_run):
        if report.settings.get("request") == key:
            return report
    return None


def _snapshot(store: Store, digest: str, model: str) -> DatasetSnapshot:
    return _stored(store, digest, DatasetSnapshot, "dataset snapshot", model)


def _scored(store: Store, request: EvaluationRequest, cand: TrainingRun, base: TrainingRun,
            snap: DatasetSnapshot, say: Progress) -> pd.DataFrame:
    label = snap.label.column
    columns = [c.name for c in snap.schema_]
    missing = [f for f in dict.fromkeys(cand.features + base.features + request.settings.segment_columns)
               if f not in columns]
    if missing:
        raise EvaluationRefused(f"snapshot '{snap.name}' has no column {missing[0]!r} that a run or the policy's "
                                "segments need")
    frame = read_snapshot_frame(snap, store.data_root, columns)
    frame = frame[frame[label].notna()].reset_index(drop=True)
    if frame.empty:
        raise EvaluationRefused(f"snapshot '{snap.name}' has no labelled rows")
    frame[label] = frame[label].astype(int)
    say(0.1, f"scoring {len(frame):,} labelled rows with the candidate")
    frame["candidate_score"] = load_model(cand, store.data_root).predict_proba(frame[cand.features])[:, 1]
    say(0.2, "scoring with the baseline")
    frame["baseline_score"] = load_model(base, store.data_root).predict_proba(frame[base.features])[:, 1]
    return frame


def _compute(store: Store, request: EvaluationRequest, say: Progress) -> EvaluationResult:
    cand = _run(store, request.candidate_run, request.model)
    base = _run(store, request.baseline_run, request.model)
    snap = _snapshot(store, request.evaluation_snapshot, request.model)
    ref_snap = _snapshot(store, request.reference_snapshot or cand.snapshot, request.model)
    say(0.02, f"checking the files of snapshot '{snap.name}'")
    try:
        for checked in {snap.digest: snap, ref_snap.digest: ref_snap}.values():
            check_data(checked, store.data_root)  # a changed file is refused, as in training
        frame = _scored(store, request, cand, base, snap, say)
        ref_columns = {c.name for c in ref_snap.schema_}
        features = [f for f in cand.features if f in ref_columns]
        reference = read_snapshot_frame(ref_snap, store.data_root, features) if features else None
    except (TrainingError, OSError, duckdb.Error) as exc:
        raise EvaluationRefused(f"cannot read what the evaluation needs: {str(exc).splitlines()[0]}") from None
    say(0.3, "bootstrapping segment deltas")
    return evaluate(frame, label=snap.label.column, candidate="candidate_score", baseline="baseline_score",
                    segments=request.settings.segment_columns, settings=request.settings,
                    candidate_threshold=request.candidate_threshold, baseline_threshold=request.baseline_threshold,
                    reference=reference, features=features or None, seed=request.seed,
                    progress=lambda f, t: say(0.3 + 0.7 * f, t))


def compute_result(store: Store, request: EvaluationRequest, progress: Progress | None = None) -> EvaluationResult:
    """Return the computed body for a request, from the cache when these inputs were computed before."""
    say = progress or (lambda f, t: None)
    key = request.key()
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            say(1.0, "done (cached)")
            return _cache[key]
    result = _compute(store, request, say)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def _require_model_owner(user: User, model: str, doing: str) -> None:
    if not user.holds(model, Role.MODEL):
        raise PermissionError(f"{user.email} does not hold the Model owner role on '{model}', which {doing} needs")


class Computed(Frozen):
    report: EvaluationReport
    reused: bool
    line: Text


def compute_and_store(store: Store, user: User, request: EvaluationRequest, now: datetime,
                      progress: Progress | None = None) -> Computed:
    """Compute a report for a request and store it, or return the stored report with the same inputs."""
    _require_model_owner(user, request.model, "storing an evaluation")
    found = stored_match(store, request)
    if found is not None:
        return Computed(report=found, reused=True, line=f"Reused stored report {short(found.digest)}: the same "
                        "runs, snapshot, thresholds, seed and settings were evaluated before")
    result = compute_result(store, request, progress)
    cand = _run(store, request.candidate_run, request.model)
    settings = dict(result.settings_used)
    settings["reference_snapshot"] = request.reference_snapshot or cand.snapshot
    settings["request"] = request.key()
    report = EvaluationReport(
        model=request.model, created_by=user.email, created_at=now, candidate_run=request.candidate_run,
        baseline_run=request.baseline_run, evaluation_snapshot=request.evaluation_snapshot, settings=settings,
        overall=result.overall, segments=result.segments, calibration=result.calibration,
        shift_checks=result.shift_checks, regression_suite=result.regression_suite, gate=result.gate,
        limits=cand.stated_limits)
    store.put_artifact(report, user.email, now)
    return Computed(report=report, reused=False, line=f"Stored report {short(report.digest)}: gate "
                    f"{report.gate.status.value}")


# ---------------------------------------------------------------- stated limits and sign-off


def parse_limits(text: str) -> list[str]:
    """Return one stated limit per non-empty line."""
    limits = [line.strip().lstrip("-*• ").strip() for line in text.splitlines()]
    limits = [line for line in limits if line]
    if len(limits) > MAX_LIMITS:
        raise EvaluationRefused(f"at most {MAX_LIMITS} stated limits, got {len(limits)}")
    too_long = [i for i, line in enumerate(limits, 1) if len(line) > 1000]
    if too_long:
        raise EvaluationRefused(f"limit {too_long[0]} is longer than 1000 characters")
    return limits


def revise_limits(store: Store, user: User, digest: str, text: str, now: datetime) -> EvaluationReport:
    """Store a new version of a report whose stated limits the Model owner edited; sign-offs bind to the new digest."""
    report = _report(store, digest)
    _require_model_owner(user, report.model, "editing the stated limits")
    limits = parse_limits(text)
    if limits == report.limits:
        raise EvaluationRefused("the stated limits are unchanged")
    revised = EvaluationReport.model_validate({**report.record(), "limits": limits, "created_by": user.email,
                                               "created_at": now.isoformat()})
    store.put_artifact(revised, user.email, now)
    return revised


def _report(store: Store, digest: str) -> EvaluationReport:
    return _stored(store, digest, EvaluationReport, "evaluation report")


class SignoffStatus(Frozen):
    digest: str
    status: SignoffState
    decision: Decision | None = None
    line: Text

    @property
    def icon(self) -> str:
        return {"approved": "pass", "rejected": "fail"}.get(self.status, "pending")


def signoff_status(store: Store, digest: str) -> SignoffStatus:
    """Return where the Model owner's sign-off of a report stands; the newest decision counts."""
    last, said = last_artifact_decision(store, digest, "evaluation")
    if last is None:
        return SignoffStatus(digest=digest, status="awaiting sign-off",
                             line="Awaiting the Model owner's sign-off of this report")
    status: SignoffState = "approved" if last.verdict == Verdict.APPROVE else "rejected"
    return SignoffStatus(digest=digest, status=status, decision=last,
                         line=f"Signed off ({last.verdict.value}) {said}")


def sign_off(store: Store, user: User, digest: str, verdict: str, comment: str, now: datetime) -> Decision:
    """Record the Model owner's approve or reject of a report, bound to its digest."""
    report = _report(store, digest)
    if verdict not in SIGNOFF_VERDICTS:
        raise EvaluationRefused(f"a sign-off is {' or '.join(SIGNOFF_VERDICTS)}, not {verdict!r}")
    if len(comment) > 2000:
        raise EvaluationRefused("the comment is longer than 2000 characters")
    return decide_artifact(store, user, report.digest, Verdict(verdict), comment, now)


def decisions_frame(store: Store, digest: str) -> pd.DataFrame:
    """Return every sign-off decision on a report, oldest first."""
    rows = [{"when": d.at, "who": d.user, "role": d.role.label, "verdict": d.verdict.value, "comment": d.comment}
            for d in store.decisions(subject=digest, gate="evaluation")]
    return pd.DataFrame(rows, columns=["when", "who", "role", "verdict", "comment"])


def report_caption(store: Store, report: EvaluationReport) -> str:
    """Return one line on a report: its digest, the releases whose gates read it, and how it was computed."""
    used_by = in_release(store, report)
    where = f"read by the gates of {', '.join(used_by)}" if used_by else "not the report an open release reads"
    return " · ".join([f"Report {short(report.digest)}", where, *settings_lines(report)])


def in_release(store: Store, report: EvaluationReport) -> list[str]:
    """Return the ids of open releases whose gates read this report."""
    out = []
    for release in store.releases(report.model, states=OPEN_STATES):
        candidate = store.artifact(release.candidate)
        baseline = store.artifact(release.baseline) if release.baseline else None
        current = current_evaluation(store, candidate, baseline)
        if current is not None and current.digest == report.digest:
            out.append(release.id)
    return out


# ---------------------------------------------------------------- tables and downloads


def _value(m, metric: str) -> float:
    v = getattr(m, metric)
    return np.nan if v is None else float(v)


def segments_frame(report: EvaluationReport, metric: str | None = None) -> pd.DataFrame:
    """Return one row per segment (overall first): status, size, the gated metric's delta and interval, all metrics."""
    metric = metric or str(report.settings.get("gated_metric", "roc_auc"))
    label = METRIC_LABELS[metric]
    rows = []
    for seg in [report.overall, *report.segments]:
        d = seg.deltas.get(metric)
        row: dict[str, Any] = {
            "segment": seg.segment, "status": seg.status.value, "n": seg.candidate.n,
            "positives": seg.candidate.positives, f"{label} candidate": _value(seg.candidate, metric),
            f"{label} baseline": _value(seg.baseline, metric),
            f"Δ {label}": np.nan if d is None else d.estimate, "CI low": np.nan if d is None else d.low,
            "CI high": np.nan if d is None else d.high}
        for other in METRICS:
            if other == metric:
                continue
            lab = METRIC_LABELS[other]
            row[f"{lab} candidate"] = _value(seg.candidate, other)
            row[f"{lab} baseline"] = _value(seg.baseline, other)
            od = seg.deltas.get(other)
            row[f"Δ {lab}"] = np.nan if od is None else od.estimate
        row["reason"] = seg.reason
        rows.append(row)
    return pd.DataFrame(rows)


def metric_choices(report: EvaluationReport) -> tuple[list[str], int]:
    """Return the metrics a forest plot can show and the position of the gated one."""
    metrics = [m for m in METRICS if m != "positive_rate"]
    gated = str(report.settings.get("gated_metric", "roc_auc"))
    return metrics, metrics.index(gated) if gated in metrics else 0


def row_segment(frame: pd.DataFrame, rows: list[int]) -> str | None:
    """Return the segment of the first selected table row, if any."""
    return str(frame["segment"].iloc[rows[0]]) if rows and 0 <= rows[0] < len(frame) else None


def segment_names(report: EvaluationReport) -> list[str]:
    return [report.overall.segment, *(s.segment for s in report.segments)]


def segment_reason(report: EvaluationReport, segment: str) -> str:
    return next(s.reason for s in [report.overall, *report.segments] if s.segment == segment)


def failing_segments(report: EvaluationReport) -> list[str]:
    return [s.segment for s in report.segments if s.status.value == "fail"]


def calibration_for(report: EvaluationReport, segment: str, strategy: str) -> list[Calibration]:
    return [c for c in report.calibration if c.segment == segment and c.strategy == strategy]


def checks_frame(checks) -> pd.DataFrame:
    """Return a table of shift checks or regression cases: name, status, reason, the numbers behind it."""
    rows = [{"check": c.name, "status": c.status.value, "reason": c.reason,
             "evidence": json.dumps(c.evidence, sort_keys=True, default=str)[:500],
             "thresholds": json.dumps(c.thresholds, sort_keys=True)} for c in checks]
    return pd.DataFrame(rows, columns=["check", "status", "reason", "evidence", "thresholds"])


def report_json(report: EvaluationReport) -> bytes:
    """Return the report as the store keeps it, with its digest, for download."""
    return json.dumps({"digest": report.digest, **report.record()}, indent=2, sort_keys=True).encode("utf-8")


def segments_csv(report: EvaluationReport) -> bytes:
    buffer = io.StringIO()
    segments_frame(report).to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def settings_lines(report: EvaluationReport) -> list[str]:
    """Return how a report was computed, one line per aspect, for its caption."""
    s = report.settings
    rows = f"{s['rows']:,} rows; " if isinstance(s.get("rows"), int) else ""  # an ingested report may lack it
    return [f"{rows}{s.get('bootstrap')} paired bootstrap resamples, seed {s.get('seed')}, "
            f"{float(s.get('confidence', 0.95)):.0%} intervals",
            f"decision thresholds: candidate {s.get('candidate_threshold')}, baseline {s.get('baseline_threshold')}",
            f"gate: no segment with n >= {s.get('min_segment_size')} loses more than {s.get('max_segment_drop')} "
            f"{METRIC_LABELS.get(str(s.get('gated_metric')), s.get('gated_metric'))}",
            f"bootstrap score groups: {s.get('bootstrap_score_groups', 'n/a')}"]


# ---------------------------------------------------------------- files (the `evaluate` command)


def read_table(path) -> pd.DataFrame:
    """Read a scored evaluation set or a reference window from Parquet or CSV."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise EvaluationRefused(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix == ".csv":
            return pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise EvaluationRefused(f"{p.name}: cannot be read ({str(exc).splitlines()[0]})") from None
    raise EvaluationRefused(f"{p.name}: expected a .parquet or .csv file")


def evaluate_frames(scores: pd.DataFrame, *, label: str, candidate: str, baseline: str, segments: list[str],
                    settings: EvaluationSettings, candidate_threshold: float, baseline_threshold: float,
                    reference: pd.DataFrame | None = None, weight: str | None = None, seed: int = 0,
                    progress: Progress | None = None) -> EvaluationResult:
    """Evaluate a scored set the caller read; shift checks on the features the reference window shares with it."""
    features = None
    if reference is not None:
        skip = {label, candidate, baseline, weight}
        features = [c for c in scores.columns if c in reference.columns and c not in skip
                    and not pd.api.types.is_datetime64_any_dtype(scores[c].dtype)]
        if not features:
            raise EvaluationRefused("the reference window shares no feature column with the scored set")
    return evaluate(scores, label=label, candidate=candidate, baseline=baseline, segments=segments,
                    settings=settings, candidate_threshold=candidate_threshold,
                    baseline_threshold=baseline_threshold, reference=reference, features=features, seed=seed,
                    weight=weight, progress=progress)


def store_result(store: Store, result: EvaluationResult, *, model: str, candidate_run: str, baseline_run: str,
                 evaluation_snapshot: str, actor: str, now: datetime) -> EvaluationReport:
    """Store a computed body as an evaluation report of two recorded runs on a recorded snapshot."""
    cand = _run(store, candidate_run, model)
    _run(store, baseline_run, model)
    _snapshot(store, evaluation_snapshot, model)
    report = EvaluationReport(
        model=model, created_by=actor, created_at=now, candidate_run=candidate_run, baseline_run=baseline_run,
        evaluation_snapshot=evaluation_snapshot, settings=result.settings_used, overall=result.overall,
        segments=result.segments, calibration=result.calibration, shift_checks=result.shift_checks,
        regression_suite=result.regression_suite, gate=result.gate, limits=cand.stated_limits)
    store.put_artifact(report, actor, now)
    return report
