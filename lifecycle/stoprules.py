"""Evaluate stop rules over signal windows with Argo Rollouts semantics, and judge expansion and stability.

The semantics, stated once:

- Windows are judged per series, one series per (arm, segment) including the segment='all' roll-up. A window is
  inconclusive when it has fewer than `rule.min_volume` requests or no value for the metric (e.g. labels not in
  yet); otherwise it fails when `value <comparator> threshold` and passes if not.
- A series trips when its failing windows exceed `rule.failure_limit`; with `rule.consecutive`, when its longest run
  of failing windows exceeds the limit. Inconclusive windows, and window slots with no row at all, neither pass,
  fail nor reset a run: only a passing window breaks a run (Argo counts inconclusive measurements apart, too).
- The rule fails (trips) when any series trips, and then its action (halt or rollback) applies. Otherwise it is
  inconclusive when some series has no conclusive window yet, or when the latest window slot of the evaluated data
  has fewer than min_volume requests in some series (traffic stalled or too thin to judge): expansion pauses.
  A latest window that only lacks the metric (delayed labels) does not make a rule inconclusive once earlier
  windows were conclusive; promotion (`stability`) still waits for those labels. Otherwise the rule passes.
  A segment that never reaches min_volume keeps the rule inconclusive: choose segments and min_volume together.
- Windows are matched to a rule by size: only windows whose `end - start` equals `rule.window_minutes` count.
  Aggregate once per distinct window size among the rules (`aggregate_windows(..., window_minutes=m)`) and
  concatenate the frames; windows are never resampled here. A rule with no windows of its size is inconclusive.
- `arm=None` judges the arms that serve the candidate (shadow, canary, treatment); baseline and control are the
  references, not the subject of a stop rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.models import CheckResult, CheckStatus, Scalar, Stage, StageCondition, StopRule

CANDIDATE_ARMS = ("shadow", "canary", "treatment")
MAX_LISTED = 3

_LABELS = {
    "requests": "requests", "latency_p50_ms": "p50 latency", "latency_p95_ms": "p95 latency",
    "latency_p99_ms": "p99 latency", "error_rate": "error rate", "fallback_rate": "fallback rate",
    "cost_per_1k": "cost per 1k requests", "disagreement_rate": "disagreement with the baseline",
    "escalations": "escalations", "precision": "precision", "recall": "recall", "positive_rate": "positive rate",
    "calibration_gap": "calibration gap",
}
_RATES = {"error_rate", "fallback_rate", "disagreement_rate", "precision", "recall", "positive_rate"}


class WindowVerdict(BaseModel):
    """One window of one series judged against one stop rule."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rule: str
    stage: Stage
    arm: str
    segment: str
    start: datetime
    end: datetime
    requests: int
    value: float | None
    status: CheckStatus


class RuleVerdict(BaseModel):
    """A stop rule's verdict for one stage: status, whether it tripped, why, and the windows it rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rule: str
    metric: str
    stage: Stage
    status: CheckStatus
    tripped: bool
    action: Literal["halt", "rollback"]
    failing_windows: list[datetime] = Field(description="starts (UTC) of the failing windows of tripped series")
    segments: list[str] = Field(description="segments that tripped, most failures first, the roll-up 'all' last")
    reason: str
    thresholds: dict[str, Scalar]
    evidence: list[dict[str, Any]] = Field(
        description="WindowVerdict rows (JSON) of the deciding series: the tripped or unjudged ones, else the "
                    "'all' roll-up plus any failing window")

    def as_check(self) -> CheckResult:
        """Return this verdict as a CheckResult for gates and the audit log."""
        return CheckResult(
            name=f"stop rule: {self.rule}", status=self.status, reason=self.reason, thresholds=self.thresholds,
            evidence={"stage": self.stage.value, "tripped": self.tripped, "action": self.action,
                      "failing_windows": [w.isoformat() for w in self.failing_windows],
                      "segments": self.segments, "windows": self.evidence},
        )


# ---------------------------------------------------------------- helpers


def _naive_utc(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values  # already naive, taken as UTC like everything the aggregation writes
    return pd.to_datetime(values, utc=True).dt.tz_localize(None)


def _instant(value: Any) -> pd.Timestamp:
    """Return a naive UTC Timestamp; aware values are converted, naive ones are taken as UTC."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _aware(value: Any) -> datetime:
    return pd.Timestamp(value).to_pydatetime().replace(tzinfo=timezone.utc)


def _one_release(windows: pd.DataFrame) -> None:
    if "release" in windows.columns:
        releases = sorted(str(r) for r in windows["release"].dropna().unique())
        if len(releases) > 1:
            raise ValueError(f"windows hold releases {', '.join(releases)}; judge one release at a time")


def _fmt(metric: str, value: float | None) -> str:
    if value is None or pd.isna(value):
        return "no value"
    if metric.startswith("latency_"):
        return f"{value:,.0f} ms"
    if metric in _RATES:
        return f"{100 * value:.2f}%"
    if metric == "cost_per_1k":
        return f"{value:.4g}"
    if metric == "calibration_gap":
        return f"{value:+.3f}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def _where(series: tuple[str, str]) -> str:
    arm, segment = series
    return f"{'all traffic' if segment == 'all' else 'segment ' + segment} on {arm}"


def _also(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:MAX_LISTED])
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f" (also {shown}{more})"


def _compare(values: np.ndarray, comparator: str, threshold: float) -> np.ndarray:
    return {">": values > threshold, ">=": values >= threshold, "<": values < threshold,
            "<=": values <= threshold}[comparator]


def _thresholds(rule: StopRule) -> dict[str, Scalar]:
    return {"metric": rule.metric, "comparator": rule.comparator, "threshold": rule.threshold,
            "window_minutes": rule.window_minutes, "min_volume": rule.min_volume,
            "failure_limit": rule.failure_limit, "consecutive": rule.consecutive, "action": rule.action}


# ---------------------------------------------------------------- judging windows (vectorised)


_PASS, _FAIL, _INCONCLUSIVE = 0, 1, 2
_STATUS = np.array([CheckStatus.PASS.value, CheckStatus.FAIL.value, CheckStatus.INCONCLUSIVE.value])


class _Selection(NamedTuple):
    """One stage's windows on the judged arms, sorted by series then start, with a code per series."""

    frame: pd.DataFrame
    start: np.ndarray
    end: np.ndarray
    minutes: np.ndarray
    code: np.ndarray
    series: list[tuple[str, str]]


class _Judged(NamedTuple):
    """The windows of one rule's size with their value and status; positions index the selection."""

    pos: np.ndarray
    code: np.ndarray
    start: np.ndarray
    requests: np.ndarray
    value: np.ndarray
    status: np.ndarray


def _select(windows: pd.DataFrame, stage: Stage, arm: str | None) -> _Selection:
    _one_release(windows)
    arms = [arm] if arm is not None else list(CANDIDATE_ARMS)
    rows = windows[(windows["stage"] == Stage(stage).value) & windows["arm"].isin(arms)]
    rows = rows.assign(start=_naive_utc(rows["start"]), end=_naive_utc(rows["end"]))
    rows = rows.sort_values(["arm", "segment", "start"], kind="stable").reset_index(drop=True)
    arm_values, segment_values = rows["arm"].to_numpy(dtype=object), rows["segment"].to_numpy(dtype=object)
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (arm_values[1:] != arm_values[:-1]) | (segment_values[1:] != segment_values[:-1])
    start = rows["start"].to_numpy(dtype="datetime64[us]")
    end = rows["end"].to_numpy(dtype="datetime64[us]")
    return _Selection(
        frame=rows, start=start, end=end, minutes=(end - start) / np.timedelta64(1, "m"),
        code=np.cumsum(new) - 1, series=list(zip(arm_values[new], segment_values[new])),
    )


def _judge(rule: StopRule, sel: _Selection) -> _Judged:
    pos = np.flatnonzero(sel.minutes == rule.window_minutes)
    rows = sel.frame.iloc[pos]
    requests = rows["requests"].to_numpy(dtype=np.int64)
    if rule.metric == "requests":
        value = requests.astype(float)
    elif rule.metric in rows.columns:
        value = rows[rule.metric].to_numpy(dtype=float, na_value=np.nan)
    else:
        value = np.full(len(rows), np.nan)
    conclusive = (requests >= rule.min_volume) & ~np.isnan(value)
    failing = conclusive & _compare(np.nan_to_num(value), rule.comparator, rule.threshold)
    status = np.where(conclusive, np.where(failing, _FAIL, _PASS), _INCONCLUSIVE).astype(np.int8)
    return _Judged(pos=pos, code=sel.code[pos], start=sel.start[pos], requests=requests, value=value, status=status)


def window_verdicts(rule: StopRule, windows: pd.DataFrame, *, stage: Stage, arm: str | None = None) -> pd.DataFrame:
    """Judge every window of the stage against one rule: columns arm, segment, start, end, requests, value, status."""
    sel = _select(windows, stage, arm)
    judged = _judge(rule, sel)
    return pd.DataFrame({
        "arm": sel.frame["arm"].to_numpy()[judged.pos], "segment": sel.frame["segment"].to_numpy()[judged.pos],
        "start": judged.start, "end": sel.end[judged.pos], "requests": judged.requests, "value": judged.value,
        "status": _STATUS[judged.status],
    })


class _Series(NamedTuple):
    """Per-series counts for one rule; arrays are indexed by series code."""

    present: np.ndarray
    failures: np.ndarray
    conclusive: np.ndarray
    longest_run: np.ndarray
    latest_requests: np.ndarray
    counted: np.ndarray
    tripped: np.ndarray
    unjudged: np.ndarray


def _summarise(rule: StopRule, judged: _Judged, n_series: int) -> _Series:
    code, fail = judged.code, judged.status == _FAIL
    present = np.bincount(code, minlength=n_series) > 0
    failures = np.bincount(code, weights=fail, minlength=n_series).astype(np.int64)
    conclusive = np.bincount(code, weights=judged.status != _INCONCLUSIVE, minlength=n_series).astype(np.int64)
    # Runs: inconclusive windows are dropped first, so they neither extend nor break a run of failures.
    decided = judged.status != _INCONCLUSIVE
    d_code, d_fail = code[decided], fail[decided]
    run_start = d_fail.copy()
    run_start[1:] &= ~d_fail[:-1] | (d_code[1:] != d_code[:-1])
    run_id = np.cumsum(run_start) - 1
    longest = np.zeros(n_series, dtype=np.int64)
    if d_fail.any():
        lengths = np.bincount(run_id[d_fail])
        np.maximum.at(longest, d_code[run_start], lengths)
    # A series without a row in the latest slot had no requests there at all.
    at_latest = judged.start == judged.start.max() if len(judged.start) else np.zeros(0, dtype=bool)
    latest_requests = np.bincount(code[at_latest], weights=judged.requests[at_latest],
                                  minlength=n_series).astype(np.int64)
    counted = longest if rule.consecutive else failures
    tripped = present & (counted > rule.failure_limit)
    unjudged = present & ~tripped & ((conclusive == 0) | (latest_requests < rule.min_volume))
    return _Series(present, failures, conclusive, longest, latest_requests, counted, tripped, unjudged)


def _ranked(codes: np.ndarray, counted: np.ndarray, series: list[tuple[str, str]]) -> list[int]:
    """Order series by how much they count against the rule, naming a real segment before the roll-up."""
    return sorted((int(c) for c in codes), key=lambda c: (-counted[c], series[c][1] == "all", series[c]))


def _worst(comparator: str, values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    return float(values.max() if comparator in (">", ">=") else values.min())


def _evidence(rule: StopRule, stage: Stage, sel: _Selection, judged: _Judged, keep: np.ndarray) -> list[dict[str, Any]]:
    """Return the kept windows as WindowVerdict dicts (JSON-ready), in series and time order."""
    out = []
    for i in np.flatnonzero(keep):
        arm, segment = sel.series[judged.code[i]]
        value = judged.value[i]
        out.append(WindowVerdict(
            rule=rule.name, stage=stage, arm=arm, segment=segment, start=_aware(judged.start[i]),
            end=_aware(sel.end[judged.pos[i]]), requests=int(judged.requests[i]),
            value=None if np.isnan(value) else float(value), status=_STATUS[judged.status[i]],
        ).model_dump(mode="json"))
    return out


def _evaluate(rule: StopRule, sel: _Selection, stage: Stage) -> RuleVerdict:
    label, metric = _LABELS.get(rule.metric, rule.metric), rule.metric
    cmp, thr = rule.comparator, _fmt(metric, rule.threshold)
    base = dict(rule=rule.name, metric=metric, stage=stage, action=rule.action, thresholds=_thresholds(rule))
    judged = _judge(rule, sel)
    if not len(judged.pos):
        sizes = sorted({int(m) for m in sel.minutes})
        other = f"; the windows given are {', '.join(map(str, sizes))} minutes" if sizes else ""
        return RuleVerdict(**base, status=CheckStatus.INCONCLUSIVE, tripped=False, failing_windows=[], segments=[],
                           evidence=[], reason=(f"{label}: no {rule.window_minutes}-minute windows in stage "
                                                f"{stage.value}{other}: inconclusive, expansion pauses"))
    summary = _summarise(rule, judged, len(sel.series))
    arms = "/".join(sorted({sel.series[c][0] for c in np.flatnonzero(summary.present)}))
    limit = f"(limit {rule.failure_limit})"

    def windows_text(n: int) -> str:
        return f"{n} {'consecutive ' if rule.consecutive else ''}window{'' if n == 1 else 's'}"

    if summary.tripped.any():
        order = _ranked(np.flatnonzero(summary.tripped), summary.counted, sel.series)
        first = order[0]
        in_tripped = summary.tripped[judged.code]
        failing = in_tripped & (judged.status == _FAIL)
        worst = _worst(cmp, judged.value[failing & (judged.code == first)])
        reason = (f"{label} {_fmt(metric, worst)} {cmp} {thr} in {windows_text(summary.counted[first])} {limit} for "
                  f"{_where(sel.series[first])}{_also([_where(sel.series[c]) for c in order[1:]])} "
                  f"in stage {stage.value}: trips, action {rule.action}")
        return RuleVerdict(**base, status=CheckStatus.FAIL, tripped=True,
                           failing_windows=[_aware(t) for t in np.unique(judged.start[failing])],
                           segments=list(dict.fromkeys(sel.series[c][1] for c in order)), reason=reason,
                           evidence=_evidence(rule, stage, sel, judged, in_tripped))

    if summary.unjudged.any():
        order = sorted(np.flatnonzero(summary.unjudged), key=lambda c: (sel.series[c][1] == "all", sel.series[c]))
        first = order[0]
        why = (f"{summary.latest_requests[first]:,} requests in the latest window (min {rule.min_volume:,})"
               if summary.conclusive[first] else
               f"no window yet with at least {rule.min_volume:,} requests and a {label} value")
        reason = (f"{label}: no segment tripped, but {_where(sel.series[first])} has {why}"
                  f"{_also([_where(sel.series[c]) for c in order[1:]])}: inconclusive, expansion pauses")
        return RuleVerdict(**base, status=CheckStatus.INCONCLUSIVE, tripped=False, failing_windows=[], segments=[],
                           reason=reason, evidence=_evidence(rule, stage, sel, judged, summary.unjudged[judged.code]))

    failing = judged.status == _FAIL
    is_all = np.array([segment == "all" for _, segment in sel.series], dtype=bool)
    keep = is_all[judged.code] | failing
    if not failing.any():
        worst = _worst(cmp, np.where(judged.status == _PASS, judged.value, np.nan))
        reason = (f"{label} never {cmp} {thr} in {int(summary.conclusive.sum()):,} conclusive windows across "
                  f"{int(summary.present.sum())} series on {arms} in stage {stage.value} "
                  f"(worst {_fmt(metric, worst)}): passes")
    else:
        first = _ranked(np.flatnonzero(summary.present), summary.counted, sel.series)[0]
        worst = _worst(cmp, judged.value[failing & (judged.code == first)])
        reason = (f"{label} {_fmt(metric, worst)} {cmp} {thr} in {windows_text(summary.counted[first])} {limit} "
                  f"for {_where(sel.series[first])}, the most of any segment, in stage {stage.value}: "
                  f"within the limit, passes")
    return RuleVerdict(**base, status=CheckStatus.PASS, tripped=False, failing_windows=[], segments=[],
                       reason=reason, evidence=_evidence(rule, stage, sel, judged, keep))


# ---------------------------------------------------------------- stop rules


def evaluate_stop_rules(rules: Sequence[StopRule], windows: pd.DataFrame, *, stage: Stage,
                        arm: str | None = None) -> list[RuleVerdict]:
    """Judge every stop rule that applies to the stage, per segment; a rule trips if any segment trips."""
    stage = Stage(stage)
    applicable = [rule for rule in rules if stage in rule.stages]
    if not applicable:
        return []
    sel = _select(windows, stage, arm)
    return [_evaluate(rule, sel, stage) for rule in applicable]


# ---------------------------------------------------------------- expansion and promotion


def expansion_ready(condition: StageCondition, windows: pd.DataFrame, verdicts: Sequence[RuleVerdict], now: datetime,
                    *, started_at: datetime | None = None) -> CheckResult:
    """Decide whether a stage may expand: minimum duration and volume reached and every stop rule passing."""
    stage = condition.stage
    stray = sorted({v.stage.value for v in verdicts if v.stage != stage})
    if stray:
        raise ValueError(f"verdicts for stage(s) {', '.join(stray)} given to judge expansion of {stage.value}")
    now_ts = _instant(now)
    rows = _select(windows, stage, None).frame
    rows = rows[rows["segment"] == "all"]
    if not rows.empty:
        # With windows of several sizes only the smallest counts, so no request is counted twice.
        size = (rows["end"] - rows["start"]).min()
        rows = rows[(rows["end"] - rows["start"]) == size]
    requests = int(rows["requests"].sum())
    if started_at is not None:
        hours = max((now_ts - _instant(started_at)).total_seconds() / 3600, 0.0)
    elif rows.empty:
        hours = 0.0
    else:
        # Without the stage's start time, the evidence itself tells how long the stage has run.
        observed_until = min(now_ts, rows["end"].max())
        hours = max((observed_until - rows["start"].min()).total_seconds() / 3600, 0.0)
    thresholds: dict[str, Scalar] = {"min_duration_hours": condition.min_duration_hours,
                                     "min_volume": condition.min_volume, "traffic_share": condition.traffic_share}
    evidence = {"stage": stage.value, "hours": round(hours, 3), "requests": requests,
                "verdicts": {v.rule: v.status.value for v in verdicts}}
    name = f"expansion from {stage.value}"

    failed = [v for v in verdicts if v.status == CheckStatus.FAIL]
    if failed:
        return CheckResult(name=name, status=CheckStatus.FAIL, evidence=evidence, thresholds=thresholds,
                           reason=f"expansion refused: stop rule {failed[0].rule} tripped ({failed[0].reason})")
    waiting = []
    if hours < condition.min_duration_hours:
        waiting.append(f"ran {hours:.1f} h of the {condition.min_duration_hours:g} h required")
    if requests < condition.min_volume:
        waiting.append(f"saw {requests:,} of the {condition.min_volume:,} requests required")
    waiting += [f"stop rule {v.rule} is inconclusive" for v in verdicts if v.status != CheckStatus.PASS]
    if waiting:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"{stage.value} not ready to expand: {'; '.join(waiting)}")
    rules = f"all {len(verdicts)} stop rules pass" if verdicts else f"no stop rule applies to {stage.value}"
    return CheckResult(name=name, status=CheckStatus.PASS, evidence=evidence, thresholds=thresholds,
                       reason=(f"{stage.value} ran {hours:.1f} h (min {condition.min_duration_hours:g} h) with "
                               f"{requests:,} requests (min {condition.min_volume:,}) and {rules}: ready to expand"))


def stability(windows: pd.DataFrame, rules: Sequence[StopRule], n_windows: int, *, stage: Stage = Stage.FULL,
              arm: str | None = None) -> CheckResult:
    """Check that the last n window slots of the stage pass every stop rule in every series, as promotion requires."""
    if n_windows < 1:
        raise ValueError(f"n_windows must be at least 1, got {n_windows}")
    stage = Stage(stage)
    name = "stability"
    thresholds: dict[str, Scalar] = {"n_windows": n_windows, "stage": stage.value}
    applicable = [rule for rule in rules if stage in rule.stages]
    if not applicable:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, thresholds=thresholds,
                           reason=f"no stop rule applies to {stage.value}; nothing to judge stability by")
    sel = _select(windows, stage, arm)
    failing, waiting, per_rule = [], [], {}
    for rule in applicable:
        judged = _judge(rule, sel)
        label = _LABELS.get(rule.metric, rule.metric)
        if not len(judged.pos):
            waiting.append(f"{rule.name}: no {rule.window_minutes}-minute windows")
            per_rule[rule.name] = {"windows": 0}
            continue
        step = np.timedelta64(rule.window_minutes, "m")
        latest, first = judged.start.max(), judged.start.min()
        # The last n slots end at the latest window; a slot with no row for a series counts as not passing.
        slots = latest - step * np.arange(n_windows)
        if slots[-1] < first:
            count = int((latest - first) // step) + 1
            waiting.append(f"{rule.name}: only {count} of {n_windows} windows so far")
            per_rule[rule.name] = {"windows": count}
            continue
        n_series = len(sel.series)
        recent = np.isin(judged.start, slots)
        present = np.bincount(judged.code, minlength=n_series) > 0
        fails = np.bincount(judged.code[recent & (judged.status == _FAIL)], minlength=n_series)
        passes = np.bincount(judged.code[recent & (judged.status == _PASS)], minlength=n_series)
        unsettled = present & (fails == 0) & (passes < n_windows)
        per_rule[rule.name] = {"windows": n_windows, "series": int(present.sum()),
                               "failing_series": int((fails > 0).sum()), "unsettled_series": int(unsettled.sum()),
                               "slots": [_aware(t).isoformat() for t in sorted(slots)]}
        if (fails > 0).any():
            c = _ranked(np.flatnonzero(fails > 0), fails, sel.series)[0]
            failing.append(f"{label} failed {rule.name} in {fails[c]} of the last {n_windows} windows "
                           f"for {_where(sel.series[c])}")
        elif unsettled.any():
            c = _ranked(np.flatnonzero(unsettled), -passes, sel.series)[0]
            waiting.append(f"{rule.name}: {_where(sel.series[c])} passes {passes[c]} of the last {n_windows} "
                           f"windows (the rest inconclusive or without traffic)")
    evidence = {"rules": per_rule}
    if failing:
        return CheckResult(name=name, status=CheckStatus.FAIL, evidence=evidence, thresholds=thresholds,
                           reason=f"not stable on {stage.value}: {'; '.join(failing)}")
    if waiting:
        return CheckResult(name=name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"not yet stable on {stage.value}: {'; '.join(waiting)}")
    return CheckResult(name=name, status=CheckStatus.PASS, evidence=evidence, thresholds=thresholds,
                       reason=(f"the last {n_windows} windows on {stage.value} pass all {len(applicable)} stop rules "
                               f"in every segment: stable"))
