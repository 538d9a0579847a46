"""Run a release's live path: ingest signals, let the system enforce stop rules, expand, review and promote.

How stored windows are superseded: a window is identified by (stage, arm, segment, start, end). Every ingestion
re-aggregates the windows its rows (or labels) touch from the stored prediction log, compares them with the
current stored windows and stores only the ones that changed, as one new MonitoringSignals batch. Batches are
numbered in write order and `Store.windows_frame` returns the newest version of each window; older versions stay
stored and audited. So late rows and delayed labels update their windows without double counting (the log keeps
one row per request_id), and re-ingesting the same log finds nothing changed and writes nothing.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, TypeAdapter, ValidationError

from .identity import User
from .ingest import IngestError, parse_document, validation_problems
from .models import (
    SIGNAL_METRICS, CheckResult, CheckStatus, Decision, Frozen, MonitoringSignals, RegistryEntry, Release,
    ReleaseState, Role, RolloutNote, SignalWindow, Stage, StopRule, Verdict, short,
)
from .releases import DecisionOutcome, DecisionRefused, find_release, release_evidence, timeline_frame, transition
from .signals import (
    MAX_WINDOW_MINUTES, Effect, SignalInputError, ab_effects, aggregate_windows, apply_labels, evidence_by_kind,
    ingest_log, windows_to_models,
)
from .stoprules import CANDIDATE_ARMS, RuleVerdict, evaluate_stop_rules, expansion_ready, stability, window_verdicts
from .store import StaleVersion, Store

WINDOW_MINUTES = 60
KEYS = ["stage", "arm", "segment", "start", "end"]
LIVE = (ReleaseState.SHADOW, ReleaseState.CANARY, ReleaseState.RAMP, ReleaseState.FULL)
# States in which a release has served (or still serves) traffic, so signals about it can arrive.
SERVED = (*LIVE, ReleaseState.HALTED, ReleaseState.ROLLED_BACK, ReleaseState.PROMOTED)
LOG_SUFFIXES = (".parquet", ".pq", ".csv")
WINDOW_SUFFIXES = (".json", ".yaml", ".yml")
_WINDOWS = TypeAdapter(list[SignalWindow])


class IngestResult(Frozen):
    """What one ingestion changed: rows stored, windows re-aggregated, and what the stop rules did."""

    release: str
    kind: str = Field(description="prediction log, labels or windows")
    rows: int = Field(description="rows (or windows) read from the input")
    inserted: int = Field(0, description="new log rows stored")
    duplicates: int = Field(0, description="log rows whose request_id was stored already")
    labels_changed: int = 0
    windows_updated: int = Field(0, description="windows stored in the new batch (new or changed)")
    batch: str | None = Field(None, description="digest of the MonitoringSignals batch; None when nothing changed")
    tripped: list[str] = Field(default_factory=list, description="stop rules that tripped and acted")
    state: ReleaseState
    message: str


class ExpansionStatus(Frozen):
    """Whether the current stage may expand to the next one, and why."""

    release: str
    state: ReleaseState
    stage: Stage | None
    next_stage: Stage | None
    check: CheckResult
    verdicts: list[CheckResult] = Field(default_factory=list)


class PostReleaseGuardrails(Frozen):
    """Guardrails of the post-release review; a policy overrides them in its post_release_review gate's params."""

    max_recall_drop: float = Field(0.05, ge=0, le=1, description="largest baseline - candidate recall per segment")
    max_precision_drop: float = Field(0.05, ge=0, le=1, description="largest precision drop per segment")
    min_labelled: int = Field(200, ge=1, description="labelled requests a segment needs to be judged")
    min_label_share: float = Field(0.8, ge=0, le=1, description="share of due requests that must carry a label")
    max_escalations_per_1k: float = Field(2.0, ge=0, description="escalations per 1000 live requests")
    max_open_hours: float = Field(72.0, gt=0, description="hours an escalation may wait for human review")


# ---------------------------------------------------------------- ingestion


def _served_release(store: Store, release_id: str) -> Release:
    release = find_release(store, release_id)
    if release.state not in SERVED:
        raise IngestError([("release", f"release '{release_id}' is {release.state.value}: it serves no traffic "
                                       "yet, so it has no signals")])
    return release


def _check_minutes(window_minutes: Any) -> int:
    if isinstance(window_minutes, bool) or not isinstance(window_minutes, (int, np.integer)) \
            or not 0 < window_minutes <= MAX_WINDOW_MINUTES:
        raise IngestError([("window_minutes", f"must be a whole number of minutes from 1 to {MAX_WINDOW_MINUTES}, "
                                              f"got {window_minutes!r}")])
    return int(window_minutes)


def _refused(exc: SignalInputError) -> IngestError:
    return IngestError([(column, detail) for column, _, detail in exc.problems])


def _naive(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.to_datetime(values).astype("datetime64[us]")


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.assign(start=_naive(frame["start"]).astype("datetime64[us]"),
                        end=_naive(frame["end"]).astype("datetime64[us]"))


def changed_windows(new: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of `new` that are not stored yet or whose volume or any metric differs from the stored one."""
    if new.empty:
        return new
    new = _keyed(new).reset_index(drop=True)
    if stored.empty:
        return new
    stored = _keyed(stored)
    metrics = [m for m in SIGNAL_METRICS if m in new.columns or m in stored.columns]
    old = stored.reindex(columns=[*KEYS, *metrics]).rename(columns={m: f"{m}__old" for m in metrics})
    both = new.reindex(columns=[*new.columns, *(m for m in metrics if m not in new.columns)]).merge(
        old, on=KEYS, how="left", indicator=True)
    differs = (both["_merge"] == "left_only").to_numpy().copy()
    for m in metrics:
        a = both[m].to_numpy(dtype=float, na_value=np.nan)
        b = both[f"{m}__old"].to_numpy(dtype=float, na_value=np.nan)
        # Re-aggregating the same rows may sum in another order: equal within 1e-9 counts as unchanged.
        differs |= ~np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    return new[differs].reset_index(drop=True)


def _aligned(lo: pd.Timestamp, hi: pd.Timestamp, minutes: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Widen [lo, hi) to whole windows of the given size, so no window is re-aggregated from part of its rows."""
    width = minutes * 60 * 1_000_000
    # In microseconds (the log's unit): nanoseconds overflow for timestamps after 2262.
    lo_us, hi_us = (int(t.as_unit("us").asm8.view("i8")) for t in (lo, hi))
    return (pd.Timestamp((lo_us // width) * width, unit="us"), pd.Timestamp(-(-hi_us // width) * width, unit="us"))


def _reaggregate(cur, release_id: str, sizes: set[int], lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
    """Aggregate the stored prediction log of a release over [lo, hi), at every window size given.

    Float sums depend on the order rows are added in, and a parallel scan (or the order rows happened to be
    stored in) varies that order between runs. So the rows are read in a fixed order into a private one-thread
    DuckDB and aggregated there: the same log always gives bit-identical windows, hence the same batch digests.
    """
    spans = {minutes: _aligned(lo, hi, minutes) for minutes in sizes}
    if not spans:
        return pd.DataFrame(columns=KEYS)
    first, last = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    rows = cur.sql("SELECT * FROM prediction_log WHERE release = $release AND timestamp >= $first AND timestamp < "
                   "$last ORDER BY timestamp, request_id",
                   params={"release": release_id, "first": first, "last": last}).to_arrow_table()
    private = duckdb.connect(config={"threads": 1})
    frames = []
    try:
        private.register("scope_rows", rows)
        private.execute("CREATE TABLE scope AS SELECT * FROM scope_rows ORDER BY timestamp, request_id")
        for minutes, (start, end) in sorted(spans.items()):
            # Both bounds are timestamps computed here, not user text.
            private.execute(f"CREATE OR REPLACE VIEW scope_{minutes} AS SELECT * FROM scope WHERE timestamp >= "
                            f"TIMESTAMP '{start.isoformat(sep=' ')}' AND timestamp < TIMESTAMP "
                            f"'{end.isoformat(sep=' ')}'")
            frames.append(aggregate_windows(private, f"scope_{minutes}", window_minutes=minutes, release=release_id))
    finally:
        private.close()
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)


def _sizes(stored: pd.DataFrame) -> set[int]:
    if stored.empty:
        return set()
    minutes = (_naive(stored["end"]) - _naive(stored["start"])).dt.total_seconds() // 60
    return {int(m) for m in minutes.unique()}


def _store_batch(store: Store, cur, release: Release, changed: pd.DataFrame, actor: str,
                 now: datetime) -> str | None:
    windows = windows_to_models(changed) if not changed.empty else []
    if not windows:
        return None
    batch = MonitoringSignals(model=release.model, created_by=actor, created_at=now, release=release.id,
                              entry=release.candidate, windows=windows)
    # The same windows at the same instant are the same artifact; a batch that reverts a later change to those
    # exact values must still be stored as the newest, so it gets a distinct instant.
    while store.has(batch.digest):
        batch = batch.model_copy(update={"created_at": batch.created_at + timedelta(microseconds=1)})
    return store.put_artifacts_in(cur, [batch], actor, batch.created_at)[0]


def _enforce(store: Store, release_id: str, now: datetime) -> list[str]:
    from .rollout import enforce_stop_rules

    try:
        return enforce_stop_rules(store, release_id, now)
    except (DecisionRefused, StaleVersion):
        return []  # a concurrent ingestion acted on the same evidence first


def _result(store: Store, release_id: str, now: datetime, tripped: list[str] | None = None,
            **counts) -> IngestResult:
    if tripped is None:
        tripped = _enforce(store, release_id, now) if counts.get("batch") else []
    release = store.release(release_id)
    kind = counts["kind"]
    parts = []
    if kind == "prediction log":
        parts.append(f"{counts['inserted']:,} new requests stored ({counts['duplicates']:,} already stored)")
    elif kind == "labels":
        parts.append(f"{counts['labels_changed']:,} labels changed")
    else:
        parts.append(f"{counts['rows']:,} windows read")
    if counts.get("batch"):
        parts.append(f"{counts['windows_updated']:,} windows updated in batch {short(counts['batch'])}")
    else:
        parts.append("no window changed: nothing written")
    if tripped:
        parts.append(f"stop rule {', '.join(tripped)} tripped: the release is {release.state.value} and "
                     f"{short(release.serving)} serves")
    return IngestResult(release=release_id, tripped=tripped, state=release.state,
                        message="; ".join(parts) + ".", **counts)


@dataclass(frozen=True)
class _LogBatch:
    """One caller's validated prediction log, waiting to be stored with the others queued meanwhile."""

    release: Release
    source: Any
    minutes: int
    start: datetime
    end: datetime
    actor: str
    now: datetime


def _incoming(store: Store, release_id: str, source: str | Path | pd.DataFrame, minutes: int
              ) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Validate a log on a cursor of its own, outside the write lock; return the span of its windows."""
    cur = store.cursor()
    try:
        incoming = aggregate_windows(cur, source, window_minutes=minutes)
    except SignalInputError as exc:
        raise _refused(exc) from None
    finally:
        cur.close()
    others = incoming[(incoming["release"] != release_id) & (incoming["segment"] == "all")]
    if not others.empty:
        names = ", ".join(sorted(others["release"].unique())[:3])
        raise IngestError([("release", f"{int(others['requests'].sum()):,} rows are for release(s) {names}, "
                                       f"not '{release_id}'; send each release's log on its own")])
    if incoming.empty:
        raise IngestError([("source", "the log holds no rows")])
    return pd.Timestamp(incoming["start"].min()), pd.Timestamp(incoming["end"].max())


def _store_logs(store: Store, batches: list[_LogBatch]) -> tuple[list, int, str | None]:
    """Store validated logs of one release in one transaction and re-aggregate the windows they touch, once."""
    release, minutes = batches[0].release, batches[0].minutes
    now = max(b.now for b in batches)
    with store.transaction() as cur:
        try:
            counts = [ingest_log(cur, b.source) for b in batches]
        except SignalInputError as exc:
            raise _refused(exc) from None
        stored = store.windows_frame(release.id)
        fresh = _reaggregate(cur, release.id, {minutes} | _sizes(stored), min(b.start for b in batches),
                             max(b.end for b in batches))
        changed = changed_windows(fresh, stored)
        batch = _store_batch(store, cur, release, changed, batches[0].actor, now)
    return counts, len(changed), batch


def _settle_logs(store: Store, items: list) -> None:
    """Store these queued logs in one transaction, run the stop rules once, hand each caller its outcome."""
    counts, updated, batch = _store_logs(store, [i.payload for i in items])
    tripped = _enforce(store, items[0].payload.release.id, max(i.payload.now for i in items)) if batch else []
    for item, count in zip(items, counts):
        item.result = (count, updated, batch, tripped)


def _lead_logs(store: Store, group: list) -> None:
    """Store every queued log, one transaction per (release, window size, actor); on failure, each on its own."""
    keyed: dict[tuple, list] = {}
    for item in group:
        b = item.payload
        keyed.setdefault((b.release.id, b.minutes, b.actor), []).append(item)
    for items in keyed.values():
        try:
            _settle_logs(store, items)
        except Exception:  # noqa: BLE001 - the shared transaction failed: settle each log on its own
            for item in items:
                try:
                    _settle_logs(store, [item])
                except Exception as exc:  # noqa: BLE001 - handed to the caller, raised in its thread
                    item.error = exc


def ingest_prediction_log(store: Store, release_id: str, source: str | Path | pd.DataFrame,
                          window_minutes: int = WINDOW_MINUTES, actor: str = "cli",
                          now: datetime | None = None) -> IngestResult:
    """Store a prediction log idempotently, update the windows it touches, then enforce the stop rules.

    The log is validated outside the write lock; logs of one release sent meanwhile by the same actor are then
    stored in one transaction with one re-aggregation and one batch of windows (each log all or nothing: a log
    that fails validation is refused before it joins, and a failing shared transaction is retried log by log).
    """
    now = now or datetime.now(timezone.utc)
    release = _served_release(store, release_id)
    minutes = _check_minutes(window_minutes)
    start, end = _incoming(store, release_id, source, minutes)
    mine = _LogBatch(release=release, source=source, minutes=minutes, start=start, end=end, actor=actor, now=now)
    counts, updated, batch, tripped = store.run_grouped("prediction_log", mine, lambda g: _lead_logs(store, g))
    return _result(store, release_id, now, tripped=tripped, kind="prediction log",
                   rows=counts.inserted + counts.duplicates, inserted=counts.inserted, duplicates=counts.duplicates,
                   windows_updated=updated, batch=batch)


def _labels_frame(cur, source: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.suffix.lower() not in LOG_SUFFIXES:
        raise IngestError([("source", f"'{path.name}' is not a .parquet or .csv file")])
    if not path.is_file():
        raise IngestError([("source", f"file not found: {path}")])
    try:
        relation = cur.read_csv(str(path)) if path.suffix.lower() == ".csv" else cur.read_parquet(str(path))
        return relation.df()
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise IngestError([("source", f"cannot read {path.name}: {str(exc).splitlines()[0]}")]) from None


def ingest_labels(store: Store, release_id: str, source: str | Path | pd.DataFrame, actor: str = "cli",
                  now: datetime | None = None) -> IngestResult:
    """Set delayed labels (request_id, label) on a release's logged requests and update the windows they belong to."""
    now = now or datetime.now(timezone.utc)
    release = _served_release(store, release_id)
    with store.transaction() as cur:
        labels = _labels_frame(cur, source)
        if "request_id" not in labels.columns:
            raise IngestError([("request_id", "required column is missing")])
        name = f"_seamline_labels_{uuid.uuid4().hex}"
        cur.register(name, labels[["request_id"]].astype("string"))
        try:
            owners = cur.execute(f"""
                SELECT p.release, count(*), min(p.timestamp), max(p.timestamp) FROM prediction_log p
                JOIN (SELECT DISTINCT request_id FROM {name}) l USING (request_id) GROUP BY p.release""").fetchall()
        finally:
            cur.unregister(name)
        foreign = [(r, n) for r, n, _, _ in owners if r != release_id]
        if foreign:
            names = ", ".join(sorted(r for r, _ in foreign)[:3])
            raise IngestError([("request_id", f"{sum(n for _, n in foreign):,} labels are for requests of release(s) "
                                              f"{names}; send them for that release")])
        try:
            changed_labels = apply_labels(cur, labels)
        except SignalInputError as exc:
            raise _refused(exc) from None
        stored = store.windows_frame(release_id)
        changed = pd.DataFrame(columns=KEYS)
        if owners and changed_labels:
            _, _, lo, hi = owners[0]
            fresh = _reaggregate(cur, release_id, _sizes(stored) or {WINDOW_MINUTES}, pd.Timestamp(lo),
                                 pd.Timestamp(hi) + pd.Timedelta(microseconds=1))
            changed = changed_windows(fresh, stored)
        batch = _store_batch(store, cur, release, changed, actor, now)
    return _result(store, release_id, now, kind="labels", rows=len(labels), labels_changed=changed_labels,
                   windows_updated=len(changed), batch=batch)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def ingest_windows(store: Store, release_id: str, windows: str | bytes | list | dict, actor: str = "cli",
                   now: datetime | None = None) -> IngestResult:
    """Validate pre-aggregated windows (JSON/YAML text, a list, or {"windows": [...]}) and store the changed ones."""
    now = now or datetime.now(timezone.utc)
    release = _served_release(store, release_id)
    obj = windows if isinstance(windows, (list, dict)) else parse_document(windows)
    if isinstance(obj, dict):
        unknown = sorted(set(obj) - {"release", "windows"})
        if unknown:
            raise IngestError([(unknown[0], "unknown field; a windows document has 'release' and 'windows'")])
        if obj.get("release", release_id) != release_id:
            raise IngestError([("release", f"the document is for '{obj['release']}', not '{release_id}'")])
        obj = obj.get("windows")
    if not isinstance(obj, list) or not obj:
        raise IngestError([("windows", "give a non-empty list of windows")])
    try:
        models = _WINDOWS.validate_json(json.dumps(obj), strict=True)
    except ValidationError as exc:
        raise IngestError(validation_problems(exc, "windows")) from None
    models = [w.model_copy(update={"start": _utc(w.start), "end": _utc(w.end)}) for w in models]
    seen: dict[tuple, int] = {}
    for i, w in enumerate(models):
        key = (w.stage, w.arm, w.segment, w.start, w.end)
        if key in seen:
            raise IngestError([(f"windows[{i}]", f"repeats windows[{seen[key]}] (same stage, arm, segment, start "
                                                 "and end)")])
        seen[key] = i
    frame = pd.DataFrame([{"stage": w.stage.value, "arm": w.arm, "segment": w.segment, "start": w.start,
                           "end": w.end, "requests": w.requests, **w.metrics} for w in models])
    with store.transaction() as cur:
        changed = changed_windows(frame, store.windows_frame(release_id))
        batch = _store_batch(store, cur, release, changed, actor, now)
    return _result(store, release_id, now, kind="windows", rows=len(models), windows_updated=len(changed),
                   batch=batch)


def ingest_file(store: Store, release_id: str, path: str | Path, *, window_minutes: int = WINDOW_MINUTES,
                labels: bool = False, actor: str = "cli", now: datetime | None = None) -> IngestResult:
    """Ingest a file by its kind: a prediction log (or labels) in Parquet/CSV, or windows in JSON/YAML."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LOG_SUFFIXES + WINDOW_SUFFIXES:
        raise IngestError([("file", f"'{path.name}': use .parquet or .csv for a prediction log or labels, "
                                    ".json or .yaml for pre-aggregated windows")])
    if not path.is_file():
        raise IngestError([("file", f"{path}: no such file")])
    if suffix in WINDOW_SUFFIXES:
        if labels:
            raise IngestError([("file", "labels come as .parquet or .csv with request_id and label")])
        return ingest_windows(store, release_id, path.read_bytes(), actor, now)
    if labels:
        return ingest_labels(store, release_id, path, actor, now)
    return ingest_prediction_log(store, release_id, path, window_minutes, actor, now)


def ingest_upload(store: Store, release_id: str, filename: str, data: bytes, *, window_minutes: int = WINDOW_MINUTES,
                  labels: bool = False, actor: str, now: datetime) -> IngestResult:
    """Ingest an uploaded file (its bytes and name) through the same path as the CLI."""
    suffix = Path(filename).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="seamline-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        return ingest_file(store, release_id, path, window_minutes=window_minutes, labels=labels, actor=actor,
                           now=now)


# ---------------------------------------------------------------- stages, expansion, promotion


def _note(store: Store, release: Release) -> RolloutNote | None:
    return store.artifact(release.rollout_note) if release.rollout_note else None


def stage_history(store: Store, release_id: str, now: datetime) -> pd.DataFrame:
    """Return the release's states as spans (state, start, end) from the audit log, the last one open until now."""
    events = [(e.detail.get("to"), e.at) for e in store.audit_events(release_id)
              if e.action.startswith("release.") and e.detail.get("to")]
    first = store.audit_events(release_id)
    if first and first[0].action == "release.create":
        events.insert(0, (first[0].detail.get("state", "draft"), first[0].at))
    rows = [{"state": state, "start": at, "end": events[i + 1][1] if i + 1 < len(events) else max(now, at)}
            for i, (state, at) in enumerate(events)]
    return pd.DataFrame(rows, columns=["state", "start", "end"])


def _entered(store: Store, release_id: str, state: ReleaseState) -> datetime | None:
    times = [e.at for e in store.audit_events(release_id)
             if e.action == f"release.{state.value}" and e.detail.get("to") == state.value]
    return times[-1] if times else None


def _last_live_stage(store: Store, release: Release) -> Stage | None:
    if release.state in LIVE:
        return Stage(release.state.value)
    live = [e.detail["to"] for e in store.audit_events(release.id)
            if e.action.startswith("release.") and e.detail.get("to") in {s.value for s in LIVE}]
    return Stage(live[-1]) if live else None


def _until(windows: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Keep the windows that ended by `now`: evidence from the future does not count."""
    if windows.empty:
        return windows
    return windows[_naive(windows["end"]) <= pd.Timestamp(_utc(now)).tz_localize(None)]


def expansion_status(store: Store, release_id: str, now: datetime) -> ExpansionStatus:
    """Say whether the release's current stage meets its expansion conditions (duration, volume, stop rules)."""
    release = find_release(store, release_id)
    note = _note(store, release)
    base = dict(release=release.id, state=release.state)

    def result(status: CheckStatus, reason: str, stage=None, next_stage=None, **more) -> ExpansionStatus:
        return ExpansionStatus(**base, stage=stage, next_stage=next_stage,
                               check=CheckResult(name="expansion", status=status, reason=reason), **more)

    if release.state in (ReleaseState.HALTED, ReleaseState.ROLLED_BACK):
        return result(CheckStatus.FAIL, f"the release is {release.state.value.replace('_', ' ')}: it does not "
                                        "expand; resume it or roll it back first")
    if release.state not in LIVE:
        return result(CheckStatus.INCONCLUSIVE, f"the release is {release.state.value.replace('_', ' ')}: only a "
                                                "live stage (shadow, canary, ramp) expands")
    stage = Stage(release.state.value)
    if note is None:
        return result(CheckStatus.FAIL, "the release has no rollout note: no expansion conditions", stage)
    conditions = {c.stage: c for c in note.stages}
    later = [c.stage for c in note.stages if list(Stage).index(c.stage) > list(Stage).index(stage)]
    next_stage = later[0] if later else None
    if next_stage is None:
        return result(CheckStatus.INCONCLUSIVE, f"{stage.value} is the last stage of the rollout note: promotion "
                                                "follows once the stability windows pass", stage)
    if stage not in conditions:
        return result(CheckStatus.FAIL, f"the rollout note names no expansion condition for {stage.value}", stage,
                      next_stage)
    windows = _until(store.windows_frame(release_id), now)
    verdicts = evaluate_stop_rules(note.stop_rules, windows, stage=stage) if not windows.empty else []
    check = expansion_ready(conditions[stage], windows, verdicts, now, started_at=_entered(store, release_id,
                                                                                        release.state))
    return ExpansionStatus(**base, stage=stage, next_stage=next_stage,
                           check=check.model_copy(update={"reason": f"{check.reason} (next: {next_stage.value})"}),
                           verdicts=[v.as_check() for v in verdicts])


def _record(store: Store, user: User, release_id: str, gate: str, role: Role, comment: str, now: datetime,
            new: Release, message: str) -> DecisionOutcome:
    covered = release_evidence(store, release_id, verify_files=False).covered()
    decision = store.record_decision(Decision(release=release_id, gate=gate, user=user.email, role=role,
                                              verdict=Verdict.APPROVE, comment=comment[:5000], at=now,
                                              covered=covered), actor=user.email)
    return DecisionOutcome(decision=decision, release=new, moved_to=new.state, message=message)


def expand(store: Store, user: User, release_id: str, now: datetime) -> DecisionOutcome:
    """Move the release to its next stage as the Platform owner's recorded decision, only when conditions hold."""
    release = find_release(store, release_id)
    if not user.holds(release.model, Role.PLATFORM):
        raise DecisionRefused(f"{user.email} does not hold the Platform owner role on '{release.model}': "
                              "only the Platform owner expands a rollout")
    status = expansion_status(store, release_id, now)
    if status.check.status != CheckStatus.PASS or status.next_stage is None:
        raise DecisionRefused(f"expansion refused: {status.check.reason}")
    target = ReleaseState(status.next_stage.value)
    new = transition(store, user, release_id, target, now, status.check.reason, seen_version=release.version)
    return _record(store, user, release_id, "expansion", Role.PLATFORM,
                   f"{status.stage.value} → {target.value}: {status.check.reason}", now, new,
                   f"Expanded {release_id} from {status.stage.value} to {target.value}.")


def promotion_status(store: Store, release_id: str, now: datetime) -> CheckResult:
    """Say whether a fully rolled-out release may be promoted: stability windows and post-release review pass."""
    release = find_release(store, release_id)
    note = _note(store, release)
    name = "promotion"
    if release.state != ReleaseState.FULL:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE,
                           reason=f"the release is {release.state.value.replace('_', ' ')}: only a release in full "
                                  "rollout is promoted")
    if note is None:
        return CheckResult(name=name, status=CheckStatus.FAIL, reason="no rollout note: no stop rules to judge by")
    policy = store.policy(release.model, release.policy_version)
    windows = _until(store.windows_frame(release_id), now)
    full = windows[windows["stage"] == Stage.FULL.value] if not windows.empty else windows
    stable = stability(full, note.stop_rules, policy.stability_windows) if not full.empty else CheckResult(
        name="stability", status=CheckStatus.INCONCLUSIVE, reason="no full-rollout windows yet")
    review = post_release_review(store, release_id, now)
    parts = [stable, review]
    status = (CheckStatus.FAIL if any(p.status == CheckStatus.FAIL for p in parts) else
              CheckStatus.PASS if all(p.status == CheckStatus.PASS for p in parts) else CheckStatus.INCONCLUSIVE)
    verb = {"pass": "may be promoted", "fail": "promotion refused", "inconclusive": "promotion waits"}[status.value]
    return CheckResult(name=name, status=status, reason=f"{verb}: {stable.reason}; {review.reason}",
                       thresholds={"stability_windows": policy.stability_windows},
                       evidence={"stability": stable.model_dump(mode="json"),
                                 "post_release_review": review.model_dump(mode="json")})


def promote(store: Store, user: User, release_id: str, now: datetime) -> DecisionOutcome:
    """Make the candidate the champion after the stability windows and the post-release review pass; audited."""
    release = find_release(store, release_id)
    check = promotion_status(store, release_id, now)
    if check.status != CheckStatus.PASS:
        raise DecisionRefused(check.reason[:1].upper() + check.reason[1:])
    new = transition(store, user, release_id, ReleaseState.PROMOTED, now, check.reason, seen_version=release.version)
    role = Role.PLATFORM if user.holds(release.model, Role.PLATFORM) else Role.PRODUCT
    return _record(store, user, release_id, "promotion", role, check.reason, now, new,
                   f"Promoted {release_id}: {short(release.candidate)} is now the champion.")


# ---------------------------------------------------------------- post-release review


def guardrails(store: Store, release: Release) -> PostReleaseGuardrails:
    """Return the post-release guardrails: defaults, overridden by the policy's post_release_review gate params."""
    policy = store.policy(release.model, release.policy_version)
    params: dict[str, Any] = {}
    for gate in policy.gates:
        if gate.check == "post_release_review":
            params.update(gate.params)
    try:
        return PostReleaseGuardrails.model_validate(params)
    except ValidationError as exc:
        raise IngestError(validation_problems(exc, "post_release_review.params.")) from None


def _segment_quality(store: Store, release_id: str, until: datetime) -> pd.DataFrame:
    """Confirmed-outcome counts per segment: candidate and baseline decisions on the same labelled requests."""
    arms = ", ".join(f"'{a}'" for a in CANDIDATE_ARMS)
    return store.frame(f"""
        SELECT segment, count(*) AS labelled, sum(label) AS positives,
               sum(decision * label) AS candidate_tp, sum(decision) AS candidate_flagged,
               sum(baseline_decision * label) AS baseline_tp, sum(baseline_decision) AS baseline_flagged
        FROM prediction_log WHERE release = ? AND arm IN ({arms}) AND label IS NOT NULL AND timestamp < ?
        GROUP BY segment ORDER BY segment""", [release_id, pd.Timestamp(_utc(until)).tz_localize(None)])


def judge_segments(quality: pd.DataFrame, rails: PostReleaseGuardrails) -> CheckResult:
    """Judge per-segment recall and precision of the candidate against the baseline on the same labelled requests."""
    name = "segment regressions"
    thresholds = {"max_recall_drop": rails.max_recall_drop, "max_precision_drop": rails.max_precision_drop,
                  "min_labelled": rails.min_labelled}
    rows, regressions = [], []
    for r in quality.to_dict("records"):
        pos, cf, bf = float(r["positives"]), float(r["candidate_flagged"]), float(r["baseline_flagged"])
        row = {"segment": r["segment"], "labelled": int(r["labelled"]),
               "candidate_recall": r["candidate_tp"] / pos if pos else None,
               "baseline_recall": r["baseline_tp"] / pos if pos else None,
               "candidate_precision": r["candidate_tp"] / cf if cf else None,
               "baseline_precision": r["baseline_tp"] / bf if bf else None}
        rows.append(row)
        if row["labelled"] < rails.min_labelled:
            continue
        for metric, limit in (("recall", rails.max_recall_drop), ("precision", rails.max_precision_drop)):
            c, b = row[f"candidate_{metric}"], row[f"baseline_{metric}"]
            if c is not None and b is not None and b - c > limit:
                regressions.append(f"{metric} in {r['segment']} {c:.3f} vs baseline {b:.3f} "
                                   f"(drop {b - c:.3f} > {limit:g}, {row['labelled']:,} labelled)")
    judged = [r for r in rows if r["labelled"] >= rails.min_labelled]
    evidence = {"segments": rows}
    if regressions:
        return CheckResult(name=name, status=CheckStatus.FAIL, reason="; ".join(regressions), evidence=evidence,
                           thresholds=thresholds)
    if not judged:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"no segment has {rails.min_labelled:,} labelled requests in the prediction log yet")
    return CheckResult(name=name, status=CheckStatus.PASS, evidence=evidence, thresholds=thresholds,
                       reason=f"{len(judged)} segments keep recall and precision within the guardrails")


def _candidate_all(windows: pd.DataFrame) -> pd.DataFrame:
    rows = windows[windows["arm"].isin(CANDIDATE_ARMS) & (windows["segment"] == "all")]
    if rows.empty:
        return rows
    size = (_naive(rows["end"]) - _naive(rows["start"]))
    return rows[size == size.min()]  # one window size only, so no request counts twice


def judge_labels(windows: pd.DataFrame, delay_days: int, as_of: datetime, rails: PostReleaseGuardrails) -> CheckResult:
    """Check that the requests old enough for their label (older than the label delay) carry one."""
    name = "delayed labels"
    due_by = pd.Timestamp(_utc(as_of)).tz_localize(None) - pd.Timedelta(days=delay_days)
    rows = _candidate_all(windows)
    due = rows[_naive(rows["end"]) <= due_by] if not rows.empty else rows
    requests = int(due["requests"].sum()) if not due.empty else 0
    labelled = int(due["labelled"].fillna(0).sum()) if "labelled" in due.columns and not due.empty else 0
    thresholds = {"min_label_share": rails.min_label_share, "label_delay_days": delay_days}
    evidence = {"due_requests": requests, "labelled": labelled, "due_by": due_by.isoformat()}
    if "labelled" not in windows.columns:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason="the windows carry no 'labelled' count: ingest the prediction log or add it")
    if not requests:
        total = int(rows["requests"].sum()) if not rows.empty else 0
        early = int(rows["labelled"].fillna(0).sum()) if not rows.empty else 0
        if total and early / total >= rails.min_label_share:
            return CheckResult(name=name, status=CheckStatus.PASS, evidence={**evidence, "early": early},
                               thresholds=thresholds, reason=f"{early / total:.0%} of {total:,} live requests carry "
                                                             f"their label before the {delay_days}-day delay")
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"no live request is older than the {delay_days}-day label delay yet")
    share = labelled / requests
    ok = share >= rails.min_label_share
    return CheckResult(name=name, status=CheckStatus.PASS if ok else CheckStatus.FAIL, evidence=evidence,
                       thresholds=thresholds,
                       reason=f"{share:.0%} of {requests:,} due requests carry their label "
                              f"({'at least' if ok else 'below'} {rails.min_label_share:.0%})")


def judge_escalations(escalations: list, requests: int, as_of: datetime,
                      rails: PostReleaseGuardrails) -> list[CheckResult]:
    """Check escalation volume per 1000 live requests and that each case got human review in time."""
    thresholds = {"max_escalations_per_1k": rails.max_escalations_per_1k}
    if not requests:
        volume = CheckResult(name="escalation volume", status=CheckStatus.INCONCLUSIVE, thresholds=thresholds,
                             reason="no live requests yet to weigh escalations against")
    else:
        rate = 1000 * len(escalations) / requests
        ok = rate <= rails.max_escalations_per_1k
        volume = CheckResult(name="escalation volume", status=CheckStatus.PASS if ok else CheckStatus.FAIL,
                             thresholds=thresholds, evidence={"escalations": len(escalations), "requests": requests},
                             reason=f"{len(escalations):,} escalations in {requests:,} live requests: {rate:.2f} per "
                                    f"1k ({'within' if ok else 'above'} {rails.max_escalations_per_1k:g})")
    deadline = _utc(as_of) - timedelta(hours=rails.max_open_hours)
    late = [c.case_id for c in escalations if c.status == "open" and _utc(c.at) < deadline]
    review = CheckResult(
        name="human review", status=CheckStatus.FAIL if late else CheckStatus.PASS,
        thresholds={"max_open_hours": rails.max_open_hours}, evidence={"late": late[:20]},
        reason=(f"{len(late)} escalations waited more than {rails.max_open_hours:g} h for review" if late else
                f"every escalation was reviewed within {rails.max_open_hours:g} h"))
    return [volume, review]


def post_release_review(store: Store, release_id: str, now: datetime | None = None) -> CheckResult:
    """Gather segment regressions, escalation volume, delayed labels and human review against their guardrails.

    Judged as of `now`, or as of the newest stored window when None (so the release gates read a stable record).
    """
    release = find_release(store, release_id)
    windows = store.windows_frame(release_id)
    if now is None:
        now = windows["end"].max().to_pydatetime() if not windows.empty else release.created_at
    windows = _until(windows, now)
    try:
        rails = guardrails(store, release)
    except IngestError as exc:
        return CheckResult(name="post-release review", status=CheckStatus.FAIL, reason=f"invalid guardrails: {exc}")
    entry: RegistryEntry = store.artifact(release.candidate)
    delay = store.artifact(store.artifact(entry.training_run).snapshot).label.delay_days
    went_live = next((e.at for e in store.audit_events(release_id)
                      if e.action.startswith("release.") and e.detail.get("to") in {s.value for s in LIVE}), None)
    scope = [c for c in store.escalations(release.model) if c.release == release_id or
             (c.release is None and went_live is not None and _utc(went_live) <= _utc(c.at) <= _utc(now))]
    live = _candidate_all(windows) if not windows.empty else windows
    requests = int(live["requests"].sum()) if not live.empty else 0
    parts = [judge_segments(_segment_quality(store, release_id, now), rails),
             judge_labels(windows, delay, now, rails) if not windows.empty else
             CheckResult(name="delayed labels", status=CheckStatus.INCONCLUSIVE, reason="no windows yet"),
             *judge_escalations(scope, requests, now, rails)]
    status = (CheckStatus.FAIL if any(p.status == CheckStatus.FAIL for p in parts) else
              CheckStatus.PASS if all(p.status == CheckStatus.PASS for p in parts) else CheckStatus.INCONCLUSIVE)
    return CheckResult(name="post-release review", status=status,
                       reason="; ".join(f"{p.name}: {p.reason}" for p in parts),
                       evidence={p.name: {"status": p.status.value, **p.evidence} for p in parts},
                       thresholds=rails.model_dump())


# ---------------------------------------------------------------- the monitoring view


@dataclass(frozen=True)
class RuleChart:
    """One stop rule's windows over time: candidate arms judged, reference arms shown beside them."""

    rule: StopRule
    series: pd.DataFrame  # stage, arm, segment, start, end, requests, value, status
    tripped: bool
    segments: list[str]  # the segments that tripped it (empty when it did not trip)


@dataclass(frozen=True)
class MonitoringView:
    """Everything the monitoring page shows for one release; the page only displays it."""

    release: Release
    headline: CheckResult
    serving: str
    stage: Stage | None
    verdicts: list[CheckResult]
    earlier: list[CheckResult]
    tripped: pd.DataFrame
    incidents: pd.DataFrame
    charts: list[RuleChart]
    heatmap_rule: str | None  # the rule the heatmap opens on: the tripped one, else the first
    heatmaps: dict[str, pd.DataFrame]  # rule -> its windows of the current stage, judged
    stages: pd.DataFrame
    timeline: pd.DataFrame
    evidence: dict[str, pd.DataFrame]
    effects: pd.DataFrame
    expansion: ExpansionStatus
    promotion: CheckResult
    windows: int
    rules: dict[str, StopRule] = field(default_factory=dict)


_TRIPPED_COLUMNS = ["rule", "stage", "arm", "segment", "start", "end", "requests", "value", "threshold"]


def _series(rule: StopRule, windows: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for stage in [s for s in Stage if s.value in set(windows["stage"])]:
        judged = window_verdicts(rule, windows, stage=stage)
        reference = [a for a in ("baseline", "control") if a in set(windows[windows["stage"] == stage.value]["arm"])]
        for arm in reference:
            ref = window_verdicts(rule, windows, stage=stage, arm=arm).assign(status="reference")
            judged = pd.concat([judged, ref], ignore_index=True)
        frames.append(judged.assign(stage=stage.value))
    if not frames:
        return pd.DataFrame(columns=["stage", "arm", "segment", "start", "end", "requests", "value", "status"])
    return pd.concat(frames, ignore_index=True)


def _serving(release: Release, note: RolloutNote | None) -> str:
    if release.serving is None:
        return "nothing recorded"
    if release.serving == release.candidate and release.state in (*LIVE, ReleaseState.PROMOTED):
        return f"candidate {short(release.serving)}"
    if note is not None and release.serving == (note.fallback.serving if len(note.fallback.serving) == 64
                                                else release.baseline) and release.state in (
            ReleaseState.HALTED, ReleaseState.ROLLED_BACK):
        return f"fallback {short(release.serving)} — {note.fallback.description}"
    if release.serving == release.baseline:
        return f"baseline {short(release.serving)}"
    return short(release.serving)


def _headline(release: Release, stage: Stage | None, verdicts: list[CheckResult], incidents: pd.DataFrame,
              serving: str) -> CheckResult:
    state = release.state.value.replace("_", " ")
    if release.state in (ReleaseState.HALTED, ReleaseState.ROLLED_BACK):
        why = (f"stop rule {incidents.iloc[-1]['rule']} tripped on {incidents.iloc[-1]['at']:%Y-%m-%d %H:%M} UTC"
               if not incidents.empty else "stopped by the Platform owner")
        return CheckResult(name=state, status=CheckStatus.FAIL, reason=f"{state} in {stage.value if stage else '—'}: "
                                                                        f"{why}; serving the {serving}")
    if release.state not in LIVE:
        return CheckResult(name=state, status=CheckStatus.INCONCLUSIVE if release.state != ReleaseState.PROMOTED
                           else CheckStatus.PASS, reason=f"the release is {state}; serving the {serving}")
    failing = [v for v in verdicts if v.status == CheckStatus.FAIL]
    waiting = [v for v in verdicts if v.status == CheckStatus.INCONCLUSIVE]
    status = CheckStatus.FAIL if failing else CheckStatus.INCONCLUSIVE if waiting or not verdicts else CheckStatus.PASS
    said = (f"{len(failing)} stop rules fail" if failing else f"{len(waiting)} stop rules inconclusive" if waiting
            else "no windows yet" if not verdicts else f"all {len(verdicts)} stop rules pass")
    return CheckResult(name=state, status=status, reason=f"live in {state}: {said}; serving the {serving}")


def monitoring_view(store: Store, release_id: str, now: datetime) -> MonitoringView:
    """Assemble the monitoring page of a release: verdicts, tripped windows, series, heatmap, evidence apart."""
    release = find_release(store, release_id)
    note = _note(store, release)
    windows = store.windows_frame(release_id)
    stage = _last_live_stage(store, release)
    rules = note.stop_rules if note is not None else []
    verdicts: list[RuleVerdict] = []
    if not windows.empty:
        for s in [s for s in Stage if s.value in set(windows["stage"])]:
            verdicts += evaluate_stop_rules(rules, windows, stage=s)
    current = [v for v in verdicts if v.stage == stage] if stage else []
    checks = [v.as_check().model_copy(update={"name": f"{v.rule} ({v.stage.value})"}) for v in current]
    earlier = [v.as_check().model_copy(update={"name": f"{v.rule} ({v.stage.value})"})
               for v in verdicts if v not in current]
    tripped_rows = [{**w, "threshold": v.thresholds["threshold"], "rule": v.rule}
                    for v in verdicts if v.tripped for w in v.evidence if w["status"] == "fail"]
    tripped = pd.DataFrame(tripped_rows, columns=_TRIPPED_COLUMNS)
    tripped = tripped.assign(start=pd.to_datetime(tripped["start"], utc=True),
                             end=pd.to_datetime(tripped["end"], utc=True), roll_up=tripped["segment"] == "all")
    tripped = tripped.sort_values(["rule", "roll_up", "segment", "start"]).drop(columns="roll_up")
    tripped = tripped.reset_index(drop=True)
    incidents = pd.DataFrame([{"at": e.at, "rule": e.detail.get("rule", ""), "reason": e.detail.get("reason", "")}
                              for e in store.audit_events(release_id) if e.action == "incident.open"],
                             columns=["at", "rule", "reason"])
    charts = []
    for r in rules:
        trips = [v for v in verdicts if v.rule == r.name and v.tripped]
        charts.append(RuleChart(rule=r, series=_series(r, windows), tripped=bool(trips),
                                segments=[s for v in trips for s in v.segments]))
    first_tripped = next((v.rule for v in current if v.tripped), next((v.rule for v in verdicts if v.tripped), None))
    empty = pd.DataFrame(columns=["arm", "segment", "start", "end", "requests", "value", "status"])
    heatmaps = {r.name: window_verdicts(r, windows, stage=stage) if stage is not None and not windows.empty else empty
                for r in rules}
    flat = windows.assign(release=release_id) if not windows.empty else windows
    evidence = evidence_by_kind(flat) if not windows.empty else {k: pd.DataFrame() for k in ("shadow", "canary", "ab")}
    effects: list[Effect] = ab_effects(flat, note.success_metrics) if note is not None and not evidence["ab"].empty \
        else []
    serving = _serving(release, note)
    return MonitoringView(
        release=release, headline=_headline(release, stage, checks, incidents, serving), serving=serving,
        stage=stage, verdicts=checks, earlier=earlier, tripped=tripped, incidents=incidents, charts=charts,
        heatmap_rule=first_tripped or (rules[0].name if rules else None), heatmaps=heatmaps,
        stages=stage_history(store, release_id, now),
        timeline=timeline_frame(store, release_id), evidence=evidence,
        effects=pd.DataFrame([e.model_dump() for e in effects]), expansion=expansion_status(store, release_id, now),
        promotion=promotion_status(store, release_id, now), windows=len(windows), rules={r.name: r for r in rules})
