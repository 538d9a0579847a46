"""Evaluate a candidate against a baseline by segment: metrics, paired bootstrap intervals, calibration, shift, gate.

How it stays fast (STACK.md, "Fast evaluation"); the figures are in bench/bench_evaluation.py.

* Point metrics. Additive quantities (rows, positives, log loss, Brier, calibration-bin sums, counts at
  the threshold) are summed per cell of the finest partition (the cross of all segment columns) with one
  bincount per quantity, then added up per segment: no sorting. Each model's scores are sorted once
  (a packed-key sort); every *layer* of disjoint segments (all rows; one segment column; the cross of the
  columns; one named slice) is then put in (segment, score) order by a stable radix sort of its small
  segment codes. ROC AUC and average precision need cumulative label counts read only at the positives:
  for a positive in a group of equal scores, the negatives below it (ties count one half) and the
  precision over all rows scoring at least as much. Results equal scikit-learn's to rounding.

* Paired bootstrap. Rows are aggregated into *cells*: (segment, candidate score group, baseline score
  group, label). Poisson(1) row weights summed over a cell are Poisson(cell count), so a replicate draws
  one count per cell; the same draw feeds both models, so the bootstrap is paired. Every metric of every
  segment is then recomputed for a block of replicates at once from sparse products (cell counts ->
  per-segment label histograms over the score groups, and per-segment sums of each cell's mean log loss,
  squared error and calibration gap per bin) and cumulative sums over the groups. A replicate costs
  O(cells), never O(rows). When the rows summed over segments are at most ``EXACT_BOOTSTRAP_ROWS``, a
  score group is one distinct score and the bootstrap is the exact Poisson bootstrap. Otherwise score
  groups are ``FINE_GROUPS`` rank groups per segment and model (half holding equal numbers of rows, half
  equal numbers of positives; one per distinct score in a segment with at most that many), split where
  the decision threshold falls (threshold counts stay exact), and coarsened until the cells fit
  ``CELL_BUDGET``. Log loss, Brier and ECE then use each cell's mean per row, and ROC AUC / PR AUC
  replicates are computed on the grouped scores; every interval is the percentile interval of
  ``replicate - grouped estimate + exact estimate``, i.e. re-centred on the exact point estimate. With a
  weight column a cell carries its rows' mean weight. Cell counts below ``EXACT_POISSON_BELOW`` are drawn
  exactly (table inversion); larger ones by a Cornish-Fisher normal approximation with the Poisson's
  mean, variance and skewness. ``settings_used`` states the resolution a report used.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import Field

from lifecycle.models import (
    Calibration,
    CheckResult,
    CheckStatus,
    EvaluationSettings,
    Frozen,
    Interval,
    ModelMetrics,
    ReliabilityBin,
    Scalar,
    SegmentResult,
)
from lifecycle.slices import evaluate_slice, slice_columns

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall", "fpr", "positive_rate")
HIGHER_IS_BETTER = {
    "roc_auc": True, "pr_auc": True, "precision": True, "recall": True,
    "log_loss": False, "brier": False, "ece": False, "fpr": False,
}
METRIC_LABELS = {
    "roc_auc": "AUC", "pr_auc": "PR AUC", "log_loss": "log loss", "brier": "Brier score", "ece": "ECE",
    "precision": "precision", "recall": "recall", "fpr": "FPR", "positive_rate": "positive rate",
}
FINE_GROUPS = 64  # score groups per segment and model before coarsening
CELL_BUDGET = 60_000  # bootstrap cells over all segments; a replicate costs O(cells)
EXACT_BOOTSTRAP_ROWS = CELL_BUDGET  # up to this many rows (summed over segments) every distinct score is a group
EXACT_POISSON_BELOW = 128  # cell counts below this are drawn by exact table inversion
_CHUNK_ELEMENTS = 4_000_000  # cells x replicates held in memory at once
_EPS = float(np.finfo(np.float64).eps)  # scikit-learn 1.9 clips probabilities to [eps, 1 - eps] for log loss


class EvaluationInputError(ValueError):
    """Bad evaluation input: names the column and how many rows are affected."""


class SegmentMetrics(Frozen):
    """Point metrics of both models on one segment (no intervals)."""

    segment: str
    keys: dict[str, str] = Field(default_factory=dict)
    candidate: ModelMetrics
    baseline: ModelMetrics


class EvaluationResult(Frozen):
    """The computed body of an evaluation report: segments with intervals, calibration, checks and the gate."""

    overall: SegmentResult
    segments: list[SegmentResult]
    calibration: list[Calibration]
    shift_checks: list[CheckResult]
    regression_suite: list[CheckResult]
    gate: CheckResult
    settings_used: dict[str, Scalar]


# ---------------------------------------------------------------- formatting


def _count(n: int | float) -> str:
    return f"{int(n):,}".replace(",", " ")


def _num(x: float | None) -> str:
    if x is None:
        return "undefined"
    if x != 0 and abs(x) < 0.001:
        return f"{x:.1e}"
    return f"{x:.3f}"


def _name(text: str) -> str:
    """Fit a segment or check name into the models' 200-character names."""
    return text if len(text) <= 200 else text[:199] + "…"


def _rows(k: int, n: int) -> str:
    return f"{_count(k)} of {_count(n)} row{'s' if n != 1 else ''}"


# ---------------------------------------------------------------- validation


@dataclass
class _Data:
    y: np.ndarray  # int8 labels 0/1
    scores: tuple[np.ndarray, np.ndarray]  # candidate, baseline as float64
    weight: np.ndarray | None

    @property
    def n(self) -> int:
        return int(self.y.size)


def _examples(values: np.ndarray) -> str:
    uniq = pd.unique(values[:1000])[:3]
    return ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in uniq)


def _check_columns(frame: pd.DataFrame, columns: list[tuple[str, str]]) -> None:
    missing = [(role, col) for role, col in columns if col not in frame.columns]
    if missing:
        listed = "; ".join(f"{role} column {col!r} is not in the scores" for role, col in missing)
        available = ", ".join(map(str, list(frame.columns)[:20]))
        raise EvaluationInputError(
            f"unknown column: {listed} (all {_count(len(frame))} rows affected); available: {available}"
        )


def _label_array(frame: pd.DataFrame, label: str) -> np.ndarray:
    series = frame[label]
    n = len(series)
    if not (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)):
        raise EvaluationInputError(
            f"column {label!r}: labels must be 0 or 1, found {series.dtype} values "
            f"({_rows(n, n)} affected, e.g. {_examples(series.to_numpy())})"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~((values == 0) | (values == 1))
    k = int(bad.sum())
    if k:
        raise EvaluationInputError(
            f"column {label!r}: labels must be 0 or 1; {_rows(k, n)} are not "
            f"(e.g. {_examples(values[bad])})"
        )
    return values.astype(np.int8)


def _score_array(frame: pd.DataFrame, column: str) -> np.ndarray:
    series = frame[column]
    n = len(series)
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise EvaluationInputError(
            f"column {column!r}: scores must be numbers in [0, 1], found {series.dtype} values "
            f"({_rows(n, n)} affected)"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(values)
    outside = ~nan & ~((values >= 0) & (values <= 1))
    problems = []
    if nan.any():
        problems.append(f"{_rows(int(nan.sum()), n)} are NaN or missing")
    if outside.any():
        problems.append(f"{_rows(int(outside.sum()), n)} are outside [0, 1] (e.g. {_examples(values[outside])})")
    if problems:
        raise EvaluationInputError(f"column {column!r}: scores must be probabilities in [0, 1]; " + "; ".join(problems))
    return values


def _weight_array(frame: pd.DataFrame, column: str) -> np.ndarray:
    series = frame[column]
    n = len(series)
    if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise EvaluationInputError(
            f"column {column!r}: weights must be non-negative numbers, found {series.dtype} ({_rows(n, n)} affected)"
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~(np.isfinite(values) & (values >= 0))
    k = int(bad.sum())
    if k:
        raise EvaluationInputError(
            f"column {column!r}: weights must be finite and non-negative; {_rows(k, n)} are not "
            f"(e.g. {_examples(values[bad])})"
        )
    return values


def _checked(frame: pd.DataFrame, *, label: str, candidate: str, baseline: str, segments: list[str],
             weight: str | None) -> _Data:
    if not isinstance(frame, pd.DataFrame):
        raise EvaluationInputError("the scores must be a table (pandas DataFrame)")
    columns = [("label", label), ("candidate score", candidate), ("baseline score", baseline)]
    columns += [("segment", s) for s in segments]
    if weight is not None:
        columns.append(("weight", weight))
    _check_columns(frame, columns)
    if len(frame) == 0:
        raise EvaluationInputError("the scores have no rows (0 rows)")
    y = _label_array(frame, label)
    # + 0.0 turns -0.0 into 0.0, whose bit pattern sorts with the other non-negative scores.
    cand = _score_array(frame, candidate) + 0.0
    base = _score_array(frame, baseline) + 0.0
    w = _weight_array(frame, weight) if weight is not None else None
    return _Data(y=y, scores=(cand, base), weight=w)


def validate_scores(frame: pd.DataFrame, *, label: str, candidate: str, baseline: str, segments: list[str],
                    weight: str | None = None) -> None:
    """Refuse unknown columns, labels other than 0/1, and scores that are NaN or outside [0, 1]."""
    _checked(frame, label=label, candidate=candidate, baseline=baseline, segments=segments, weight=weight)


# ---------------------------------------------------------------- sorting


def _score_order(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return a permutation sorting s ascending (ties in any order) and the sorted scores."""
    n = s.size
    if n < 200_000:
        order = np.argsort(s, kind="quicksort")
        return order, s[order]
    # np.sort on packed uint64 keys is several times faster than argsort here: the high bits of the
    # score's IEEE pattern (monotone for non-negative floats) above the row index. Scores that agree on
    # the kept bits but differ below them are put right afterwards, so the order stays exact.
    bits = max(1, int(n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = np.bitwise_and(s.view(np.uint64), ~low)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    high = packed & ~low
    np.bitwise_and(packed, low, out=packed)
    order = packed.view(np.intp)
    del packed
    ss = s[order]
    bad = np.flatnonzero(ss[1:] < ss[:-1])
    if bad.size:
        run_start = np.flatnonzero(np.concatenate(([True], high[1:] != high[:-1])))
        run_id = np.searchsorted(run_start, bad, side="right") - 1
        runs = np.unique(run_id)
        ends = np.append(run_start[1:], n)
        lengths = ends[runs] - run_start[runs]
        pos = np.repeat(run_start[runs] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        sub = np.lexsort((ss[pos], np.repeat(runs, lengths)))
        order[pos] = order[pos[sub]]
        ss[pos] = ss[pos[sub]]
    del high
    return order, ss


# ---------------------------------------------------------------- one model over one layer


# Quantities summed per (cell, calibration bin, label): rows, weight, weight*score, weight*log loss,
# weight*squared error, weight of rows at or above the threshold.
_COUNT, _W, _WP, _LOSS, _BRIER, _FLAG = range(6)


@dataclass
class _RowTerms:
    """One model's per-row terms, in row order (multiplied by the weight when there is one)."""

    loss: np.ndarray  # scikit-learn's log loss term: -log(clip(p if y else 1 - p, eps, 1 - eps))
    brier: np.ndarray  # (p - y)^2
    gap: np.ndarray  # p - y
    ece_bin: np.ndarray  # min(floor(p * bins), bins - 1)


def _row_terms(s: np.ndarray, y: np.ndarray, yf: np.ndarray, w: np.ndarray | None, bins: int) -> _RowTerms:
    gap = s - yf
    # The probability given to the true label, exactly as scikit-learn forms it (p, or 1 - p).
    loss = 1.0 - s
    np.copyto(loss, s, where=y.view(bool))
    np.clip(loss, _EPS, 1 - _EPS, out=loss)
    np.log(loss, out=loss)
    np.negative(loss, out=loss)
    brier = gap * gap
    if w is not None:
        loss *= w
        brier *= w
        gap *= w
    ece_bin = (s * bins).astype(np.int64)
    np.minimum(ece_bin, bins - 1, out=ece_bin)
    return _RowTerms(loss=loss, brier=brier, gap=gap, ece_bin=ece_bin)


def _cell_sums(s: np.ndarray, y: np.ndarray, w: np.ndarray | None, terms: _RowTerms, cell_base: np.ndarray | None,
               n_cells: int, bins: int, threshold: float) -> np.ndarray:
    """Sum the additive quantities of one model per (cell, calibration bin, label); no sorting needed.

    cell_base is the row's cell code times 2 * bins (None: a single cell).
    """
    key = terms.ece_bin * 2
    key += y
    if cell_base is not None:
        key += cell_base
    size = n_cells * bins * 2
    out = np.empty((6, size))
    out[_COUNT] = np.bincount(key, minlength=size)
    out[_W] = out[_COUNT] if w is None else np.bincount(key, weights=w, minlength=size)
    out[_WP] = np.bincount(key, weights=s if w is None else s * w, minlength=size)
    out[_LOSS] = np.bincount(key, weights=terms.loss, minlength=size)
    out[_BRIER] = np.bincount(key, weights=terms.brier, minlength=size)
    flag = s >= threshold
    out[_FLAG] = (np.bincount(key[flag], minlength=size) if w is None
                  else np.bincount(key, weights=np.where(flag, w, 0.0), minlength=size))
    return out.T.reshape(n_cells, bins, 2, 6)


@dataclass
class _Pass:
    """One model over one layer: additive sums per segment plus the rank-based sums."""

    sums: np.ndarray  # (segments, bins, 2 labels, 6 quantities)
    auc_num: np.ndarray
    ap_sum: np.ndarray
    quantile: np.ndarray | None = None  # (segments, bins, 6): weight, w*score, w*label, rows, low, high


@dataclass
class _Groups:
    """Bootstrap score groups of one model over one layer."""

    fid: np.ndarray  # per row (row order, only the layer's rows are meaningful): group id within segment
    table: np.ndarray  # (segments, groups, 2): at/above threshold, rank group; -1 where unused


def _mass_boundaries(starts: np.ndarray | None, mass: np.ndarray | None, seg_start: np.ndarray,
                     seg_end: np.ndarray, levels: int) -> np.ndarray:
    """Split each segment at tie-group starts into `levels` parts of (nearly) equal mass.

    Returns (segments, levels + 1) positions; part k is [pos[k], pos[k + 1]). mass[q] is the mass of the
    positions before q (None: the row count q); starts None means every position starts a tie group.
    A tie group is never split.
    """
    a = (seg_start if mass is None else mass[seg_start]).astype(np.float64)
    total = (seg_end if mass is None else mass[seg_end]) - a
    targets = a[:, None] + total[:, None] * (np.arange(1, levels) / levels)[None, :]
    if starts is None and mass is None:
        inner = np.ceil(targets).astype(np.int64)
    elif starts is None:
        # every position may start a part: the first position whose mass before it reaches the target
        inner = np.searchsorted(mass[:-1], targets, side="left")
    else:
        idx = np.searchsorted(starts if mass is None else mass[starts], targets, side="left")
        inner = np.where(idx < starts.size, starts[np.minimum(idx, starts.size - 1)], seg_end[:, None])
    inner = np.clip(inner, seg_start[:, None], seg_end[:, None])
    return np.concatenate([seg_start[:, None], inner, seg_end[:, None]], axis=1)


def _rank_pass_untied(y: np.ndarray, seg_start: np.ndarray, seg_end: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The no-ties, no-weights case of _rank_pass, on arrays as long as the positives only.

    The j-th positive (layer order) has exactly j positives before it, so the negatives before it are
    its position minus j, and the rows at or above it in its segment are the segment end minus its position.
    """
    n_seg = seg_start.size
    at = np.flatnonzero(y)
    last = np.searchsorted(at, seg_end)  # positives before each segment's end
    per_seg = np.diff(last, prepend=0)
    seg = np.repeat(np.arange(n_seg), per_seg)
    j = np.arange(at.size)
    neg_before = (at - j).astype(np.float64)
    # negatives before each segment's start: its start minus the positives before it
    neg_at_start = (seg_start - (last - per_seg)).astype(np.float64)
    auc_num = np.bincount(seg, weights=neg_before, minlength=n_seg) - per_seg * neg_at_start
    tp_ge = (last[seg] - j).astype(np.float64)
    ap_sum = np.bincount(seg, weights=tp_ge / (seg_end[seg] - at), minlength=n_seg)
    return auc_num, ap_sum, {}


def _rank_pass(y: np.ndarray, w: np.ndarray | None, sizes: np.ndarray, starts: np.ndarray | None,
               scores: Callable[[np.ndarray], np.ndarray] | None = None,
               first_at_or_above: np.ndarray | None = None, detail: dict[str, Any] | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Compute ROC AUC numerators and average-precision sums per segment from rows in (segment, score) order.

    Only cumulative label counts read at the positives are needed: for a positive in a tie group
    [gs, ge) of segment [a, b), the negatives below it are C_neg(gs) - C_neg(a) and half of those in its
    group count as ties; the precision at its score is (C_pos(b) - C_pos(gs)) / (C(b) - C(gs)).
    `starts` lists the tie-group starts (None: no ties, every row is its own group). With `detail`, also
    return equal-mass reliability bins (`scores` gives the score at layer positions) and the bootstrap
    score groups (`first_at_or_above` is each segment's first position at or above the threshold).
    """
    n = y.size
    n_seg = sizes.size
    seg_end = np.cumsum(sizes)
    seg_start = seg_end - sizes
    extra: dict[str, Any] = {}
    if n == 0:
        if detail is not None:
            quantile = np.zeros((n_seg, detail["bins"], 6))
            quantile[:, :, 4:] = np.nan
            extra = {"quantile": quantile}
            if detail["groups"]:
                extra.update(fid=np.zeros(0, dtype=np.int32), table=np.full((n_seg, 1, 2), -1, dtype=np.int64))
        return np.zeros(n_seg), np.zeros(n_seg), extra
    if w is None and starts is None and detail is None:
        return _rank_pass_untied(y, seg_start, seg_end)
    # Cumulative sums with a leading zero: c[q] is the total over positions < q. Without weights the
    # total count before q is q itself and positive counts fit int32.
    if w is None:
        cpos = np.zeros(n + 1, dtype=np.int32 if n < 2**31 else np.int64)
        np.cumsum(y, out=cpos[1:], dtype=cpos.dtype)
        call = None
    else:
        cpos = np.zeros(n + 1)
        np.cumsum(w * y, out=cpos[1:])
        call = np.zeros(n + 1)
        np.cumsum(w, out=call[1:])

    def total(q: np.ndarray) -> np.ndarray:
        return q if call is None else call[q]

    at = np.flatnonzero(y)
    if starts is None:
        gs, ge = at, at + 1
    else:
        gi = np.searchsorted(starts, at, side="right")
        gs = starts[gi - 1]
        ge = np.where(gi < starts.size, starts[np.minimum(gi, starts.size - 1)], n)
        del gi
    seg = np.searchsorted(seg_end, at, side="right")
    a, b = seg_start[seg], seg_end[seg]
    pos_gs, pos_a, pos_ge, pos_b = (cpos[q].astype(np.float64) for q in (gs, a, ge, b))
    all_gs, all_a, all_ge, all_b = (np.asarray(total(q), dtype=np.float64) for q in (gs, a, ge, b))
    neg_gs, neg_a, neg_ge = all_gs - pos_gs, all_a - pos_a, all_ge - pos_ge
    weight = 1.0 if w is None else w[at]
    auc_num = np.bincount(seg, weights=weight * ((neg_gs - neg_a) + 0.5 * (neg_ge - neg_gs)), minlength=n_seg)
    tp_ge = pos_b - pos_gs
    above = all_b - all_gs
    precision = np.divide(tp_ge, above, out=np.zeros_like(tp_ge), where=above > 0)
    ap_sum = np.bincount(seg, weights=weight * precision, minlength=n_seg)
    del at, gs, ge, seg, a, b, pos_gs, pos_a, pos_ge, pos_b, all_gs, all_a, all_ge, all_b
    del neg_gs, neg_a, neg_ge, tp_ge, above, precision
    if detail is None:
        return auc_num, ap_sum, extra
    assert scores is not None and first_at_or_above is not None

    bins = detail["bins"]
    # Reliability bins of equal mass, as contiguous ranges of the sorted order (ties kept together).
    qpos = _mass_boundaries(starts, call, seg_start, seg_end, bins)
    lo, hi = qpos[:, :-1], qpos[:, 1:]
    filled = hi > lo
    low = np.where(filled, scores(np.minimum(lo, n - 1)), np.nan)
    high = np.where(filled, scores(np.maximum(hi - 1, 0)), np.nan)
    # Sum of (weight x) score per bin: the bins are contiguous, so differences of one cumulative sum.
    ordered = scores(None)
    cws = np.zeros(n + 1)
    np.cumsum(ordered if w is None else w * ordered, out=cws[1:])
    del ordered
    quantile = np.stack([
        np.asarray(total(hi) - total(lo), dtype=np.float64), cws[hi] - cws[lo], cpos[hi] - cpos[lo], hi - lo,
        low, high,
    ], axis=-1).astype(np.float64)
    extra["quantile"] = quantile
    del cws, call
    if not detail["groups"]:
        return auc_num, ap_sum, extra

    # Bootstrap score groups: tie groups where a segment has few, else FINE_GROUPS rank groups; always
    # split where the threshold falls, so that threshold counts stay exact.
    ties = sizes if starts is None else np.searchsorted(starts, seg_end) - np.searchsorted(starts, seg_start)
    rank_mark = np.zeros(n, dtype=bool)
    rank_mark[seg_start[sizes > 0]] = True
    few = ties <= FINE_GROUPS
    if detail["exact"] or few.all():
        if starts is None:
            rank_mark[:] = True
        else:
            rank_mark[starts] = True
    else:
        if few.any():
            if starts is None:
                small = np.flatnonzero(few & (sizes > 0))
                rank_mark[np.concatenate([np.arange(seg_start[i], seg_end[i]) for i in small])] = True
            else:
                rank_mark[starts[np.repeat(few, ties)]] = True
        many = np.flatnonzero(~few & (sizes > 0))
        # Half the boundaries split the rows evenly, half split the positives evenly: positives crowd the
        # high scores, where average precision varies most (equal-row groups alone left PR AUC intervals
        # ~5% too narrow against the exact bootstrap).
        for mass in (None, cpos):
            rpos = _mass_boundaries(starts, mass, seg_start[many], seg_end[many], FINE_GROUPS // 2)[:, 1:-1].ravel()
            rank_mark[rpos[rpos < n]] = True
    del cpos
    mark = rank_mark.copy()
    cut = first_at_or_above[first_at_or_above < seg_end]
    mark[cut] = True
    run = np.cumsum(mark, dtype=np.int32) - 1
    first = run[np.minimum(seg_start, n - 1)]
    fid = run - np.repeat(first, sizes)
    del run
    m = np.flatnonzero(mark)
    del mark
    seg_m = np.searchsorted(seg_end, m, side="right")
    rank_at = np.flatnonzero(rank_mark)
    del rank_mark
    qg = np.searchsorted(rank_at, m, side="right") - 1 - np.searchsorted(rank_at, seg_start, side="left")[seg_m]
    table = np.full((n_seg, int(fid.max()) + 1, 2), -1, dtype=np.int64)
    flagged = (m >= first_at_or_above[seg_m]).astype(np.int64)
    table[seg_m, fid[m]] = np.stack([flagged, qg], axis=-1)
    extra["fid"] = fid
    extra["table"] = table
    return auc_num, ap_sum, extra


def _metrics_from_sums(sums: np.ndarray, auc_num: float, ap_sum: float) -> ModelMetrics:
    """Turn one segment's sums into ModelMetrics; an undefined metric is None and explained in the note."""
    n = int(round(sums[:, :, _COUNT].sum()))
    positives = int(round(sums[:, 1, _COUNT].sum()))
    P = float(sums[:, 1, _W].sum())
    N = float(sums[:, 0, _W].sum())
    W = P + N
    notes = []
    if n == 0:
        return ModelMetrics(n=0, positives=0, note="no rows: every metric is undefined")
    if W <= 0:
        return ModelMetrics(n=n, positives=positives, note="all weights are zero: every metric is undefined")
    values: dict[str, float] = {}
    tp = float(sums[:, 1, _FLAG].sum())
    fp = float(sums[:, 0, _FLAG].sum())
    if P > 0 and N > 0:
        values["roc_auc"] = auc_num / (P * N)
    else:
        notes.append("ROC AUC needs both classes" + (" (no positives)" if P <= 0 else " (no negatives)"))
    if P > 0:
        values["pr_auc"] = ap_sum / P
        values["recall"] = tp / P
    else:
        notes.append("PR AUC and recall need positives")
    values["log_loss"] = float(sums[:, :, _LOSS].sum()) / W
    values["brier"] = float(sums[:, :, _BRIER].sum()) / W
    gap = sums[:, :, _WP].sum(axis=1) - sums[:, 1, _W]
    values["ece"] = float(np.abs(gap).sum()) / W
    if tp + fp > 0:
        values["precision"] = tp / (tp + fp)
    else:
        notes.append("precision needs a row scored at or above the threshold")
    if N > 0:
        values["fpr"] = fp / N
    else:
        notes.append("FPR needs negatives")
    values["positive_rate"] = (tp + fp) / W
    return ModelMetrics(n=n, positives=positives, note="; ".join(notes), **{k: float(v) for k, v in values.items()})


def _reliability(ps: _Pass, i: int, strategy: str, bins: int) -> tuple[list[ReliabilityBin], float | None]:
    """Return reliability bins and ECE of segment i with fixed-width or equal-mass bins."""
    if strategy == "uniform":
        s = ps.sums[i]
        table = np.stack([s[:, :, _W].sum(axis=1), s[:, :, _WP].sum(axis=1), s[:, 1, _W],
                          s[:, :, _COUNT].sum(axis=1)], axis=-1)
    else:
        assert ps.quantile is not None
        table = ps.quantile[i]
    total = table[:, 0].sum()
    out = []
    for k in range(bins):
        weight, wscore, wlabel, rows = table[k, :4]
        if rows <= 0 or weight <= 0:
            continue
        if strategy == "uniform":
            low, high = k / bins, (k + 1) / bins
        else:
            low, high = float(table[k, 4]), float(table[k, 5])
        out.append(ReliabilityBin(low=low, high=high, mean_score=float(wscore / weight),
                                  observed_rate=float(wlabel / weight), count=int(round(rows))))
    ece = float(np.abs(table[:, 1] - table[:, 2]).sum() / total) if total > 0 else None
    return out, ece


# ---------------------------------------------------------------- segments and layers


@dataclass
class _Segment:
    name: str
    keys: dict[str, str]
    layer: int
    code: int
    shown: bool = True  # False for the slices only the regression suite uses


@dataclass
class _Layer:
    kind: str  # overall | column | cross | slice
    n_seg: int
    code: np.ndarray | None = None  # per-row segment code (uint8/uint16/int64); None: one segment
    mask: np.ndarray | None = None  # rows of a slice
    offset: int = 0  # index of its first segment in the global list
    cell_map: np.ndarray | None = None  # finest cell -> segment code, for layers made of whole cells


@dataclass
class _Partition:
    """The finest partition of the rows by all segment columns; every non-slice layer is a union of cells."""

    cell: np.ndarray | None  # per-row cell code; None when there are no segment columns
    n_cells: int


def _small_codes(codes: np.ndarray, n: int) -> np.ndarray:
    if n <= 256:
        return codes.astype(np.uint8)
    if n <= 65536:
        return codes.astype(np.uint16)
    return codes.astype(np.int64)


def _value_name(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    return str(value)


def _build_layers(frame: pd.DataFrame, segments: list[str], slices: dict[str, str], case_slices: list[str]
                  ) -> tuple[list[_Layer], list[_Segment], dict[str, int], _Partition]:
    n = len(frame)
    layers = [_Layer(kind="overall", n_seg=1)]
    segs = [_Segment(name="all", keys={}, layer=0, code=0)]
    per_column: list[tuple[np.ndarray, list[str]]] = []
    for column in segments:
        codes, uniques = pd.factorize(frame[column], sort=True, use_na_sentinel=False)
        names = [_value_name(v) for v in uniques]
        per_column.append((codes, names))
        li = len(layers)
        layers.append(_Layer(kind="column", n_seg=len(names), code=_small_codes(codes, len(names)), offset=len(segs)))
        segs += [_Segment(name=_name(f"{column}={v}"), keys={column: v}, layer=li, code=k)
                 for k, v in enumerate(names)]
    if not segments:
        partition = _Partition(cell=None, n_cells=1)
        layers[0].cell_map = np.zeros(1, dtype=np.intp)
    elif len(segments) == 1:
        partition = _Partition(cell=layers[1].code, n_cells=layers[1].n_seg)
        layers[0].cell_map = np.zeros(layers[1].n_seg, dtype=np.intp)
        layers[1].cell_map = np.arange(layers[1].n_seg)
    else:
        combined = np.zeros(n, dtype=np.int64)
        for codes, names in per_column:
            combined = combined * len(names) + codes
        space = math.prod(len(names) for _, names in per_column)
        if space <= 4_000_000:
            present = np.flatnonzero(np.bincount(combined, minlength=space))
            lookup = np.zeros(space, dtype=np.int64)
            lookup[present] = np.arange(present.size)
            cell = lookup[combined]
        else:
            present, cell = np.unique(combined, return_inverse=True)
        del combined
        li = len(layers)
        n_cells = int(present.size)
        code = _small_codes(cell, n_cells)
        layers.append(_Layer(kind="cross", n_seg=n_cells, code=code, offset=len(segs), cell_map=np.arange(n_cells)))
        partition = _Partition(cell=code, n_cells=n_cells)
        layers[0].cell_map = np.zeros(n_cells, dtype=np.intp)
        rest = present.copy()
        column_codes = []
        for _, names in reversed(per_column):
            rest, j = np.divmod(rest, len(names))
            column_codes.append(j)
        column_codes.reverse()
        for j in range(len(segments)):
            layers[1 + j].cell_map = column_codes[j]
        for k in range(n_cells):
            keys = {c: per_column[j][1][column_codes[j][k]] for j, c in enumerate(segments)}
            segs.append(_Segment(name=_name(" / ".join(f"{c}={v}" for c, v in keys.items())), keys=keys, layer=li,
                                 code=k))
    slice_index: dict[str, int] = {}
    named = {e.strip() for e in slices.values()}
    expressions = [(f"slice: {name}", expr, True) for name, expr in slices.items()]
    expressions += [(f"case slice: {expr}", expr, False) for expr in case_slices if expr.strip() not in named]
    for name, expr, shown in expressions:
        key = expr.strip()
        if key in slice_index and not shown:
            continue
        try:
            mask = evaluate_slice(expr, frame)
        except ValueError as exc:
            raise EvaluationInputError(f"{name} ({expr!r}): {exc}") from None
        li = len(layers)
        layers.append(_Layer(kind="slice", n_seg=1, mask=mask, offset=len(segs)))
        slice_index.setdefault(key, len(segs))
        segs.append(_Segment(name=_name(name), keys={}, layer=li, code=0, shown=shown))
    return layers, segs, slice_index, partition


# ---------------------------------------------------------------- bootstrap cells


@dataclass
class _Cells:
    """Bootstrap cells of all segments: (segment, candidate group, baseline group, label) with their sums."""

    seg: np.ndarray
    fc: np.ndarray
    fb: np.ndarray
    y: np.ndarray
    count: np.ndarray
    # (cells, 5 + 2 * bins): weight, loss_c, loss_b, brier_c, brier_b, then per calibration bin the
    # weighted (score - label) of the candidate, then of the baseline
    sums: np.ndarray
    tables: list[np.ndarray]  # per model (segments, groups, 2): at/above threshold, rank group
    exact: bool
    groups: int  # rank groups per segment (FINE_GROUPS unless coarsened; 0 when exact)


@dataclass
class _RowValues:
    """Per-row quantities whose cell sums the bootstrap needs (already multiplied by the weight)."""

    additive: list[np.ndarray | None]  # weight (None: all ones), loss_c, loss_b, brier_c, brier_b
    gap: tuple[np.ndarray, np.ndarray]  # weighted (score - label) per model
    ece_bin: tuple[np.ndarray, np.ndarray]  # calibration bin per model


def _row_values(data: _Data, views: list[_View]) -> _RowValues:
    c, b = views[0].terms, views[1].terms
    return _RowValues(additive=[data.weight, c.loss, b.loss, c.brier, b.brier], gap=(c.gap, b.gap),
                      ece_bin=(views[0].terms.ece_bin, views[1].terms.ece_bin))


def _layer_cells(layer: _Layer, groups: tuple[_Groups, _Groups], data: _Data, values: _RowValues, bins: int
                 ) -> tuple[np.ndarray, ...]:
    """Aggregate one layer's rows into bootstrap cells (segment, candidate group, baseline group, label)."""
    rows = np.flatnonzero(layer.mask) if layer.mask is not None else None

    def pick(x: np.ndarray) -> np.ndarray:
        return x if rows is None else x[..., rows]

    fc, fb, y = pick(groups[0].fid), pick(groups[1].fid), pick(data.y)
    if layer.code is not None:
        seg = layer.code.astype(np.int64)
    else:
        seg = np.zeros(y.size, dtype=np.int64)
    Fc, Fb = groups[0].table.shape[1], groups[1].table.shape[1]
    key = seg * Fc
    del seg
    key += fc
    key *= Fb
    key += fb
    key *= 2
    key += y
    # A dense count over the key space is one linear pass; a sort is cheaper when that space dwarfs the rows.
    present, inverse = _distinct(key, layer.n_seg * Fc * Fb * 2)
    count = np.bincount(inverse, minlength=present.size)
    del key
    A = present.size
    sums = np.empty((A, 5 + 2 * bins))
    for j, v in enumerate(values.additive):
        sums[:, j] = count if v is None else np.bincount(inverse, weights=pick(v), minlength=A)
    for k in range(2):
        # Calibration bins are not group boundaries: a cell keeps its signed gap per bin instead.
        idx = inverse * bins + pick(values.ece_bin[k])
        sums[:, 5 + k * bins:5 + (k + 1) * bins] = np.bincount(
            idx, weights=pick(values.gap[k]), minlength=A * bins).reshape(A, bins)
    rest, cy = np.divmod(present, 2)
    rest, cb = np.divmod(rest, Fb)
    cseg, cc = np.divmod(rest, Fc)
    return cseg + layer.offset, cc, cb, cy, count, sums, groups[0].table, groups[1].table


def _coarsen_tables(table: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge rank groups down to `groups` per segment; return the old->new id map and the new table."""
    valid = table[:, :, 0] >= 0
    fine = np.where(valid, table[:, :, 1], 0)
    rank = fine * groups // FINE_GROUPS
    comb = np.where(valid, table[:, :, 0] * (groups + 1) + rank, np.iinfo(np.int64).max)
    change = np.ones_like(valid)
    change[:, 1:] = comb[:, 1:] != comb[:, :-1]
    new_id = np.cumsum(change, axis=1) - 1
    width = int(np.where(valid, new_id, -1).max()) + 1
    new_table = np.full((table.shape[0], max(width, 1), 2), -1, dtype=np.int64)
    s, f = np.nonzero(valid & change)
    new_table[s, new_id[s, f]] = np.stack([table[s, f, 0], fine[s, f]], axis=-1)
    return new_id, new_table


def _distinct(key: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted distinct keys and each key's index among them (a dense count when the space is small)."""
    if space <= min(1 << 23, 4 * key.size + 100_000):
        present = np.flatnonzero(np.bincount(key, minlength=space))
        lookup = np.zeros(space, dtype=np.int64)
        lookup[present] = np.arange(present.size)
        return present, lookup[key]
    return np.unique(key, return_inverse=True)


def _merge_cells(seg: np.ndarray, fc: np.ndarray, fb: np.ndarray, y: np.ndarray, count: np.ndarray,
                 sums: np.ndarray, Fc: int, Fb: int) -> tuple[np.ndarray, ...]:
    """Add up cells that share (segment, candidate group, baseline group, label) after regrouping."""
    from scipy import sparse

    key = ((seg * Fc + fc) * Fb + fb) * 2 + y
    present, inverse = _distinct(key, int(seg.max(initial=0) + 1) * Fc * Fb * 2)
    merge = sparse.csr_matrix((np.ones(key.size), (inverse, np.arange(key.size))), shape=(present.size, key.size))
    new_count = np.rint(merge @ count.astype(np.float64)).astype(np.int64)
    new_sums = merge @ sums
    rest, cy = np.divmod(present, 2)
    rest, cb = np.divmod(rest, Fb)
    cseg, cc = np.divmod(rest, Fc)
    return cseg, cc, cb, cy, new_count, new_sums


def _pad(tables: list[np.ndarray]) -> np.ndarray:
    width = max(t.shape[1] for t in tables)
    out = np.full((sum(t.shape[0] for t in tables), width, tables[0].shape[2]), -1, dtype=np.int64)
    row = 0
    for t in tables:
        out[row:row + t.shape[0], :t.shape[1]] = t
        row += t.shape[0]
    return out


def _assemble_cells(parts: list[tuple[np.ndarray, ...]], exact: bool, n_seg: int) -> _Cells:
    seg = np.concatenate([p[0] for p in parts])
    fc = np.concatenate([p[1] for p in parts])
    fb = np.concatenate([p[2] for p in parts])
    y = np.concatenate([p[3] for p in parts])
    count = np.concatenate([p[4] for p in parts])
    sums = np.concatenate([p[5] for p in parts])
    tables = [_pad([p[6] for p in parts]), _pad([p[7] for p in parts])]
    groups = 0 if exact else FINE_GROUPS
    if not exact and count.size > CELL_BUDGET:
        # Use the finest resolution whose cells fit the budget. Every try starts from the fine cells and
        # only counts (a coarse group is a union of fine groups, so no pass over rows is needed); the sums
        # are merged once, for the resolution chosen.
        for target in (56, 48, 40, 32, 28, 24, 20, 16, 12, 8, 6, 4, 2, 1):
            id_c, tab_c = _coarsen_tables(tables[0], target)
            id_b, tab_b = _coarsen_tables(tables[1], target)
            Fc, Fb = tab_c.shape[1], tab_b.shape[1]
            key = ((seg * Fc + id_c[seg, fc]) * Fb + id_b[seg, fb]) * 2 + y
            if _distinct(key, n_seg * Fc * Fb * 2)[0].size <= CELL_BUDGET or target == 1:
                break
        seg, fc, fb, y, count, sums = _merge_cells(seg, id_c[seg, fc], id_b[seg, fb], y, count, sums, Fc, Fb)
        tables = [tab_c, tab_b]
        groups = target
    return _Cells(seg=seg, fc=fc, fb=fb, y=y, count=count, sums=sums, tables=tables, exact=exact, groups=groups)


# ---------------------------------------------------------------- Poisson counts


_GUIDE_BITS = 10  # the guide table has 2**10 slots per Poisson mean


@functools.lru_cache(maxsize=1)
def _poisson_tables(top: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return flattened tables for Poisson(lam), lam = 0 .. top-1: CDF thresholds on 32-bit integers, guide."""
    width = int(top + 14 * math.sqrt(top) + 20)
    k = np.arange(width)
    lam = np.arange(top, dtype=np.float64)[:, None]
    lgamma = np.array([math.lgamma(i + 1) for i in range(width)])
    pmf = np.exp(k * np.log(np.maximum(lam, 1e-300)) - lam - lgamma)
    pmf[0, 0] = 1.0
    cdf = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    # u < F(k) for u = bits / 2**32 is bits < F(k) * 2**32; the last entry closes the table (its tail is
    # below 1e-40), so inversion always stops inside it.
    thresholds = np.minimum(np.floor(cdf * 2.0**32), 2.0**32 - 1).astype(np.uint32)
    thresholds[:, -1] = np.uint32(2**32 - 1)
    slots = 1 << _GUIDE_BITS
    guide = np.empty((top, slots), dtype=np.int16)
    for i in range(top):
        guide[i] = np.searchsorted(cdf[i], np.arange(slots) / slots, side="right")
    return thresholds.ravel(), guide.ravel(), width


class _PoissonSampler:
    """Draw (cells, reps) float32 matrices of Poisson(count) cell counts, deterministic for a generator."""

    def __init__(self, count: np.ndarray):
        self.n = count.size
        self.small = np.flatnonzero(count < EXACT_POISSON_BELOW)
        self.large = np.flatnonzero(count >= EXACT_POISSON_BELOW)
        if self.small.size:
            self.thresholds, self.guide, width = _poisson_tables(EXACT_POISSON_BELOW)
            lam = count[self.small].astype(np.int64)[:, None]
            self.guide_base = lam << _GUIDE_BITS
            self.cdf_base = lam * width
        if self.large.size:
            self.lam_large = count[self.large].astype(np.float32)[:, None]
            self.sqrt_large = np.sqrt(self.lam_large)

    def _small(self, rng: np.random.Generator, reps: int) -> np.ndarray:
        size = self.small.size * reps
        bits = rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)[:size].reshape(self.small.size, reps)
        # Inversion with a guide table: start at the smallest k whose CDF exceeds the slot given by the
        # top bits, then step up while the CDF is still <= u (for under 1% of draws).
        idx = np.right_shift(bits, 32 - _GUIDE_BITS) + self.guide_base
        x = self.guide.take(idx)
        np.add(x, self.cdf_base, out=idx)
        todo = np.flatnonzero(bits >= self.thresholds.take(idx))
        del idx
        flat_x = x.reshape(-1)
        flat_bits = bits.reshape(-1)
        while todo.size:
            flat_x[todo] += 1
            todo = todo[flat_bits[todo] >= self.thresholds[self.cdf_base[todo // reps, 0] + flat_x[todo]]]
        return x

    def draw(self, rng: np.random.Generator, reps: int) -> np.ndarray:
        if self.large.size == 0:
            return self._small(rng, reps).astype(np.float32)
        out = np.empty((self.n, reps), dtype=np.float32)
        if self.small.size:
            out[self.small] = self._small(rng, reps)
        z = rng.standard_normal((self.large.size, reps), dtype=np.float32)
        # Cornish-Fisher: matches the Poisson's mean, variance and skewness (1/sqrt(lam)).
        x = z * z
        x -= 1.0
        x /= 6.0
        x += self.lam_large
        z *= self.sqrt_large
        x += z
        np.rint(x, out=x)
        np.maximum(x, 0.0, out=x)
        out[self.large] = x
        return out


# ---------------------------------------------------------------- bootstrap replicates


def _metrics_from_hist(hist: np.ndarray, thr: np.ndarray, add: np.ndarray, bins: int) -> np.ndarray:
    """Compute METRICS from (segments, 2 labels, groups, reps) histograms; returns (segments, 9, reps)."""
    neg = hist[:, 0]
    pos = hist[:, 1]
    cneg = np.cumsum(neg, axis=1)
    cpos = np.cumsum(pos, axis=1)
    P = cpos[:, -1, :]
    N = cneg[:, -1, :]
    W = P + N
    out = np.empty((hist.shape[0], len(METRICS), hist.shape[3]))
    with np.errstate(invalid="ignore", divide="ignore"):
        # Threshold counts: everything from the segment's first group at or above the threshold.
        last = np.clip(thr - 1, 0, hist.shape[2] - 1)[:, None, None]
        some_below = (thr > 0)[:, None]
        tp = P - np.where(some_below, np.take_along_axis(cpos, last, axis=1)[:, 0], 0.0)
        fp = N - np.where(some_below, np.take_along_axis(cneg, last, axis=1)[:, 0], 0.0)
        out[:, 5] = tp / (tp + fp)
        out[:, 6] = tp / P
        out[:, 7] = fp / N
        out[:, 8] = (tp + fp) / W
        out[:, 2] = add[:, 0] / W
        out[:, 3] = add[:, 1] / W
        out[:, 4] = np.abs(add[:, 2:2 + bins]).sum(axis=1) / W
        # ROC AUC: each positive counts the negatives below its group plus half of those tied with it.
        below = cneg - 0.5 * neg
        out[:, 0] = np.einsum("sfr,sfr->sr", pos, below) / (P * N)
        del below
        # Average precision: precision at each group (rows at or above it), weighted by its positives.
        tp_ge = P[:, None, :] - cpos
        tp_ge += pos
        all_ge = cneg  # reused in place: W - cpos - cneg + pos + neg
        all_ge += cpos
        np.subtract(W[:, None, :], all_ge, out=all_ge)
        all_ge += neg
        all_ge += pos
        np.divide(tp_ge, all_ge, out=tp_ge, where=all_ge > 0)
        out[:, 1] = np.einsum("sfr,sfr->sr", pos, tp_ge) / P
    return out


@dataclass
class _Replicates:
    values: np.ndarray  # (models, segments, metrics, reps)
    grouped: np.ndarray  # (models, segments, metrics): the same formulas on the unresampled cells


def _bootstrap(cells: _Cells, n_seg: int, bins: int, reps: int, seed: int,
               progress: Callable[[float, str], None] | None, span: tuple[float, float]) -> _Replicates:
    """Run the paired Poisson bootstrap over cells; each replicate's cost is O(cells), not O(rows)."""
    from scipy import sparse

    seg, fc, fb, y, count = cells.seg, cells.fc, cells.fb, cells.y, cells.count
    mean = cells.sums / count[:, None]
    A = count.size
    F = max(cells.tables[0].shape[1], cells.tables[1].shape[1])
    # One sparse product per model turns cell counts into label histograms over each segment's score
    # groups (a cell contributes its count times its mean weight); both read the same counts: paired.
    hist_maps = [
        sparse.csr_matrix((mean[:, 0].astype(np.float32), ((seg * 2 + y) * F + f, np.arange(A))),
                          shape=(n_seg * 2 * F, A))
        for f in (fc, fb)
    ]
    # Per-cell means of the additive quantities (log loss, Brier, signed calibration gap per bin, for
    # both models) mapped to (segment, quantity): one more sparse product. Sparse products run single-
    # threaded; many small multithreaded BLAS calls stall for milliseconds each on a busy 2-core machine.
    width = 2 + bins
    V = np.zeros((A, 2 * width))
    for k in range(2):
        V[:, k * width + 0] = mean[:, 1 + k]
        V[:, k * width + 1] = mean[:, 3 + k]
        V[:, k * width + 2:(k + 1) * width] = mean[:, 5 + k * bins:5 + (k + 1) * bins]
    cell_of, quantity = np.nonzero(V)
    add_map = sparse.csr_matrix((V[cell_of, quantity].astype(np.float32),
                                 (seg[cell_of] * (2 * width) + quantity, cell_of)), shape=(n_seg * 2 * width, A))
    del V, cell_of, quantity
    thr = []
    for table in cells.tables:
        flagged = table[:, :, 0] == 1
        thr.append(np.where(flagged.any(axis=1), flagged.argmax(axis=1), table.shape[1]))

    def replicate_metrics(W: np.ndarray) -> np.ndarray:
        R = W.shape[1]
        out = np.empty((2, n_seg, len(METRICS), R))
        # float32 products (counts are exact below 2**24), float64 from here on
        add = (add_map @ W).astype(np.float64).reshape(n_seg, 2 * width, R)
        for k in range(2):
            hist = (hist_maps[k] @ W).astype(np.float64).reshape(n_seg, 2, F, R)
            out[k] = _metrics_from_hist(hist, thr[k], add[:, k * width:(k + 1) * width], bins)
        return out

    grouped = replicate_metrics(count[:, None].astype(np.float32))[..., 0]
    values = np.empty((2, n_seg, len(METRICS), reps))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(reps, _CHUNK_ELEMENTS // max(A, n_seg * F * 2, 1)))
    sampler = _PoissonSampler(count)
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        values[..., done:done + r] = replicate_metrics(sampler.draw(rng, r))
        done += r
        if progress is not None:
            progress(span[0] + (span[1] - span[0]) * done / reps, f"bootstrap {done}/{reps}")
    return _Replicates(values=values, grouped=grouped)


# ---------------------------------------------------------------- metrics of segments


def _metric_value(m: ModelMetrics, metric: str) -> float | None:
    return getattr(m, metric)


def _nan_percentiles(x: np.ndarray, q: list[float]) -> np.ndarray:
    """Percentiles along the last axis ignoring NaN (numpy's 'linear' method), vectorised over the rest.

    np.nanquantile falls back to a Python loop per row when any NaN is present.
    """
    xs = np.sort(x, axis=-1)  # NaN sorts last
    valid = (~np.isnan(xs)).sum(axis=-1)
    out = np.full((len(q),) + x.shape[:-1], np.nan)
    for i, level in enumerate(q):
        pos = level * np.maximum(valid - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
        v_lo = np.take_along_axis(xs, lo[..., None], axis=-1)[..., 0]
        v_hi = np.take_along_axis(xs, hi[..., None], axis=-1)[..., 0]
        out[i] = np.where(valid > 0, v_lo + (pos - lo) * (v_hi - v_lo), np.nan)
    return out


def _intervals(point: np.ndarray, reps: _Replicates | None, confidence: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile intervals of the delta and of each model's metric, re-centred on the exact estimate."""
    delta_point = point[0] - point[1]
    if reps is None:
        return (np.stack([delta_point, delta_point]), np.stack([point[0], point[0]]),
                np.stack([point[1], point[1]]))
    alpha = (1 - confidence) / 2
    q = [alpha, 1 - alpha]
    shift_models = point - reps.grouped
    delta = (reps.values[0] - reps.values[1]) + (delta_point - (reps.grouped[0] - reps.grouped[1]))[..., None]
    model0 = reps.values[0] + shift_models[0][..., None]
    model1 = reps.values[1] + shift_models[1][..., None]
    out = [_nan_percentiles(x, q) for x in (delta, model0, model1)]
    return out[0], out[1], out[2]


@dataclass
class _SegmentNumbers:
    metrics: tuple[ModelMetrics, ModelMetrics]
    deltas: dict[str, Interval]
    model_intervals: tuple[dict[str, Interval], dict[str, Interval]]


def _numbers(metrics: list[tuple[ModelMetrics, ModelMetrics]], reps: _Replicates | None, confidence: float
             ) -> list[_SegmentNumbers]:
    point = np.full((2, len(metrics), len(METRICS)), np.nan)
    for i, pair in enumerate(metrics):
        for k in range(2):
            for j, metric in enumerate(METRICS):
                v = _metric_value(pair[k], metric)
                if v is not None:
                    point[k, i, j] = v
    delta_iv, cand_iv, base_iv = _intervals(point, reps, confidence)
    out = []
    for i, pair in enumerate(metrics):
        deltas: dict[str, Interval] = {}
        models: tuple[dict[str, Interval], dict[str, Interval]] = ({}, {})
        for j, metric in enumerate(METRICS):
            for k, iv in enumerate((cand_iv, base_iv)):
                if not np.isnan(point[k, i, j]):
                    models[k][metric] = _interval(point[k, i, j], iv[0, i, j], iv[1, i, j])
            if np.isnan(point[0, i, j]) or np.isnan(point[1, i, j]):
                continue
            deltas[metric] = _interval(point[0, i, j] - point[1, i, j], delta_iv[0, i, j], delta_iv[1, i, j])
        out.append(_SegmentNumbers(metrics=pair, deltas=deltas, model_intervals=models))
    return out


def _interval(estimate: float, low: float, high: float) -> Interval:
    if np.isnan(low) or np.isnan(high):
        low = high = estimate  # no replicate had the metric defined: the interval collapses to the point
    # Re-centring can push a bound a rounding error past the estimate; keep low <= estimate <= high.
    return Interval(estimate=float(estimate), low=float(min(low, estimate)), high=float(max(high, estimate)))


@dataclass
class _View:
    """One model's scores in ascending order, with labels and weights in the same order."""

    order: np.ndarray
    s: np.ndarray
    y: np.ndarray
    w: np.ndarray | None
    ties: bool  # whether any two rows share a score
    cells: np.ndarray  # additive sums per finest cell
    terms: _RowTerms | None  # kept for the bootstrap cells


def _view(data: _Data, k: int, partition: _Partition, threshold: float, bins: int, yf: np.ndarray,
          cell_base: np.ndarray | None, keep_terms: bool, sorted_scores: Future | None = None) -> _View:
    s = data.scores[k]
    order, ss = _score_order(s) if sorted_scores is None else sorted_scores.result()
    ties = bool(ss.size > 1 and not np.all(ss[1:] != ss[:-1]))
    terms = _row_terms(s, data.y, yf, data.weight, bins)
    cells = _cell_sums(s, data.y, data.weight, terms, cell_base, partition.n_cells, bins, threshold)
    return _View(order=order, s=ss, y=data.y[order], w=None if data.weight is None else data.weight[order],
                 ties=ties, cells=cells, terms=terms if keep_terms else None)


def _layer_pass(layer: _Layer, view: _View, data: _Data, k: int, threshold: float, bins: int,
                detail: dict[str, Any] | None) -> tuple[_Pass, _Groups | None]:
    """Run one model over one layer: put its rows in (segment, score) order and sum everything per segment."""
    gpos: np.ndarray | None  # layer position -> position in the model's score order (None: the same)
    if layer.mask is not None:
        gpos = np.flatnonzero(layer.mask[view.order])
        sizes = np.array([gpos.size])
        picked = np.flatnonzero(layer.mask)
        sub = _row_terms(data.scores[k][picked], data.y[picked], data.y[picked].astype(np.float64),
                         None if data.weight is None else data.weight[picked], bins)
        sums = _cell_sums(data.scores[k][picked], data.y[picked], None if data.weight is None else data.weight[picked],
                          sub, None, 1, bins, threshold)
        del picked, sub
    else:
        sums = np.zeros((layer.n_seg,) + view.cells.shape[1:])
        np.add.at(sums, layer.cell_map, view.cells)
        if layer.code is None:
            gpos, sizes = None, np.array([view.s.size])
        else:
            in_order = layer.code[view.order]
            # A stable argsort of 8/16-bit codes is a radix sort: linear, and keeps the score order per segment.
            gpos = np.argsort(in_order, kind="stable")
            del in_order
            sizes = np.rint(sums[:, :, :, _COUNT].sum(axis=(1, 2))).astype(np.int64)
    y = view.y if gpos is None else view.y[gpos]
    w = None if view.w is None else (view.w if gpos is None else view.w[gpos])
    seg_end = np.cumsum(sizes)
    seg_start = seg_end - sizes
    starts = None
    if view.ties:
        s = view.s if gpos is None else view.s[gpos]
        change = np.empty(s.size, dtype=bool)
        if s.size:
            change[0] = True
            np.not_equal(s[1:], s[:-1], out=change[1:])
            change[seg_start[sizes > 0]] = True
        del s
        starts = np.flatnonzero(change)
        del change
    first_at_or_above = None
    if detail is not None:
        # Positions are in score order within a segment, so the first row at or above the threshold is
        # a binary search on the model's global score order.
        t_at = int(np.searchsorted(view.s, threshold, side="left"))
        if gpos is None:
            first_at_or_above = np.clip(np.full(sizes.size, t_at), seg_start, seg_end)
        else:
            first_at_or_above = np.array(
                [a + int(np.searchsorted(gpos[a:b], t_at)) for a, b in zip(seg_start, seg_end)], dtype=np.int64)

    def scores(q: np.ndarray | None) -> np.ndarray:
        if q is None:
            return view.s if gpos is None else view.s[gpos]
        return view.s[q] if gpos is None else view.s[gpos[q]]

    auc_num, ap_sum, extra = _rank_pass(y, w, sizes, starts, scores, first_at_or_above, detail)
    ps = _Pass(sums=sums, auc_num=auc_num, ap_sum=ap_sum, quantile=extra.get("quantile"))
    if "fid" not in extra:
        return ps, None
    fid = np.zeros(data.n, dtype=np.int32)
    fid[view.order if gpos is None else view.order[gpos]] = extra["fid"]
    return ps, _Groups(fid=fid, table=extra["table"])


def _collect_metrics(pool: ThreadPoolExecutor, sorted_scores: list[Future], layers: list[_Layer],
                     partition: _Partition, data: _Data, thresholds: tuple[float, float], bins: int,
                     calibration: bool, cells_wanted: bool, exact: bool,
                     progress: Callable[[float, str], None] | None, span: tuple[float, float]
                     ) -> tuple[list[tuple[ModelMetrics, ModelMetrics]], list[tuple[_Pass, _Pass]],
                                list[tuple[np.ndarray, ...]]]:
    """Run both models over every layer; return metrics per segment, the passes and the bootstrap cells.

    The two models are independent until their groups meet in the bootstrap cells, so they run on the
    pool's two threads (sorting, gathers and cumulative sums release the GIL); sorted_scores are the
    futures of each model's score order, started while the layers were being built. calibration adds
    equal-mass reliability bins; cells_wanted adds the bootstrap cells.
    """
    detail = {"bins": bins, "exact": exact, "groups": cells_wanted} if calibration or cells_wanted else None
    metrics: list[tuple[ModelMetrics, ModelMetrics]] = []
    passes: list[tuple[_Pass, _Pass]] = []
    cells = []
    yf = data.y.astype(np.float64)
    cell_base = None if partition.cell is None else partition.cell.astype(np.int64) * (2 * bins)
    views = list(pool.map(lambda k: _view(data, k, partition, thresholds[k], bins, yf, cell_base, cells_wanted,
                                          sorted_scores[k]), range(2)))
    del yf, cell_base
    values = _row_values(data, views) if cells_wanted else None
    for v in views:
        v.terms = None

    def submit(layer: _Layer) -> list:
        return [pool.submit(_layer_pass, layer, views[k], data, k, thresholds[k], bins, detail) for k in range(2)]

    # Pipeline: the next layer's passes run on the pool while this layer's cells are counted here.
    pending = submit(layers[0]) if layers else []
    for li, layer in enumerate(layers):
        pair = [f.result() for f in pending]
        pending = submit(layers[li + 1]) if li + 1 < len(layers) else []
        if cells_wanted:
            cells.append(_layer_cells(layer, (pair[0][1], pair[1][1]), data, values, bins))
        c, b = pair[0][0], pair[1][0]
        for code in range(layer.n_seg):
            metrics.append((_metrics_from_sums(c.sums[code], c.auc_num[code], c.ap_sum[code]),
                            _metrics_from_sums(b.sums[code], b.auc_num[code], b.ap_sum[code])))
        passes.append((c, b))
        del pair
        if progress is not None:
            progress(span[0] + (span[1] - span[0]) * (li + 1) / len(layers),
                     f"metrics: layer {li + 1}/{len(layers)}")
    return metrics, passes, cells


def measure_segments(frame: pd.DataFrame, *, label: str, candidate: str, baseline: str, segments: list[str],
                     candidate_threshold: float, baseline_threshold: float, bins: int = 10,
                     slices: dict[str, str] | None = None, weight: str | None = None) -> list[SegmentMetrics]:
    """Compute both models' point metrics overall and per segment and slice (no intervals)."""
    data = _checked(frame, label=label, candidate=candidate, baseline=baseline, segments=segments, weight=weight)
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Sort both models' scores while the segment columns are factorised here.
        sorted_scores = [pool.submit(_score_order, s) for s in data.scores]
        layers, segs, _, partition = _build_layers(frame, segments, slices or {}, [])
        metrics, _, _ = _collect_metrics(pool, sorted_scores, layers, partition, data,
                                         (candidate_threshold, baseline_threshold), bins, calibration=False,
                                         cells_wanted=False, exact=False, progress=None, span=(0, 1))
    return [SegmentMetrics(segment=s.name, keys=s.keys, candidate=m[0], baseline=m[1])
            for s, m in zip(segs, metrics)]


def point_metrics(y: Any, score: Any, threshold: float, weight: Any = None, bins: int = 10) -> ModelMetrics:
    """Compute one model's point metrics on one set of rows (equal to scikit-learn's to 1e-9)."""
    frame = pd.DataFrame({"label": np.asarray(y), "score": np.asarray(score)})
    if weight is not None:
        frame["weight"] = np.asarray(weight, dtype=np.float64)
    data = _checked(frame, label="label", candidate="score", baseline="score", segments=[],
                    weight="weight" if weight is not None else None)
    view = _view(data, 0, _Partition(cell=None, n_cells=1), threshold, bins, data.y.astype(np.float64), None, False)
    starts = np.flatnonzero(np.concatenate(([True], view.s[1:] != view.s[:-1]))) if view.ties else None
    auc_num, ap_sum, _ = _rank_pass(view.y, view.w, np.array([data.n]), starts)
    return _metrics_from_sums(view.cells[0], auc_num[0], ap_sum[0])


# ---------------------------------------------------------------- gate and statuses


def _rule(metric: str, bound: float) -> str:
    if HIGHER_IS_BETTER[metric]:
        return f"no segment loses more than {bound:g}"
    return f"no segment's {METRIC_LABELS[metric]} rises by more than {bound:g}"


def _judge(metric: str, iv: Interval, bound: float) -> CheckStatus:
    """Judge an interval of candidate - baseline against 'no loss beyond bound' (sign-aware)."""
    if HIGHER_IS_BETTER[metric]:
        low, high = iv.low, iv.high
    else:
        low, high = -iv.high, -iv.low
    if high < -bound:
        return CheckStatus.FAIL
    if low >= -bound:
        return CheckStatus.PASS
    return CheckStatus.INCONCLUSIVE


def _describe(name: str, metric: str, nums: _SegmentNumbers, confidence: float, resampled: bool = True) -> str:
    cand, base = (_metric_value(m, metric) for m in nums.metrics)
    label = METRIC_LABELS[metric]
    text = f"{name}: {label} {_num(base)} -> {_num(cand)}"
    iv = nums.deltas.get(metric)
    if iv is not None and resampled:
        text += f", delta {iv.estimate:+.3f}, {confidence:.0%} CI [{iv.low:+.3f}, {iv.high:+.3f}]"
    elif iv is not None:
        text += f", delta {iv.estimate:+.3f} (no interval: the bootstrap is off, the point decides)"
    return text + f", n = {_count(nums.metrics[0].n)}"


def _segment_verdict(seg: _Segment, nums: _SegmentNumbers, settings: EvaluationSettings
                     ) -> tuple[CheckStatus, str, bool]:
    """Return (status, reason, counted by the gate) for one segment."""
    metric = settings.gated_metric
    text = _describe(seg.name, metric, nums, settings.confidence, settings.bootstrap > 0)
    rule = _rule(metric, settings.max_segment_drop)
    n = nums.metrics[0].n
    if n < settings.min_segment_size:
        return (CheckStatus.INCONCLUSIVE,
                f"{text}: too small to judge (n = {_count(n)} < {_count(settings.min_segment_size)})", False)
    iv = nums.deltas.get(metric)
    if iv is None:
        notes = "; ".join(m.note for m in nums.metrics if m.note) or "undefined"
        return CheckStatus.INCONCLUSIVE, f"{text}: {METRIC_LABELS[metric]} is undefined ({notes})", True
    status = _judge(metric, iv, settings.max_segment_drop)
    if status is CheckStatus.FAIL:
        return status, f"{text}: fails '{rule}'", True
    if status is CheckStatus.PASS:
        return status, f"{text}: passes '{rule}'", True
    return status, f"{text}: inconclusive, the interval straddles the bound of '{rule}'", True


def _evidence(seg: _Segment, nums: _SegmentNumbers, metric: str) -> dict[str, Any]:
    iv = nums.deltas.get(metric)
    return {
        "segment": seg.name, "n": nums.metrics[0].n, "positives": nums.metrics[0].positives,
        "baseline": _metric_value(nums.metrics[1], metric), "candidate": _metric_value(nums.metrics[0], metric),
        "delta": iv.estimate if iv else None, "low": iv.low if iv else None, "high": iv.high if iv else None,
    }


def _gate(results: list[tuple[_Segment, _SegmentNumbers, CheckStatus, str, bool]], settings: EvaluationSettings
          ) -> CheckResult:
    metric = settings.gated_metric
    rule = _rule(metric, settings.max_segment_drop)
    counted = [r for r in results if r[4]]
    failing = [r for r in counted if r[2] is CheckStatus.FAIL]
    unsure = [r for r in counted if r[2] is CheckStatus.INCONCLUSIVE]
    small = [r[0].name for r in results if not r[4]]
    evidence = {
        "gated_metric": metric, "confidence": settings.confidence, "checked": len(counted),
        "failing": [_evidence(r[0], r[1], metric) for r in failing],
        "inconclusive": [_evidence(r[0], r[1], metric) for r in unsure],
        "too_small": small,
    }
    thresholds: dict[str, Scalar] = {
        "gated_metric": metric, "max_segment_drop": settings.max_segment_drop,
        "min_segment_size": settings.min_segment_size, "confidence": settings.confidence,
    }

    def listing(items: list) -> str:
        shown = "; ".join(r[3] for r in items[:3])
        return shown + (f"; and {len(items) - 3} more" if len(items) > 3 else "")

    size_note = f" with n >= {_count(settings.min_segment_size)}"
    if failing:
        status = CheckStatus.FAIL
        reason = f"{len(failing)} of {len(counted)} segments{size_note} fail '{rule}': {listing(failing)}"
    elif unsure:
        status = CheckStatus.INCONCLUSIVE
        reason = (f"No segment fails '{rule}', but {len(unsure)} of {len(counted)} segments{size_note} "
                  f"cannot be decided: {listing(unsure)}")
    elif not counted:
        status = CheckStatus.INCONCLUSIVE
        reason = f"No segment has n >= {_count(settings.min_segment_size)}: the gate '{rule}' cannot be judged"
    else:
        sign = 1 if HIGHER_IS_BETTER[metric] else -1
        worst = min(counted, key=lambda r: sign * r[1].deltas[metric].low if sign > 0 else -r[1].deltas[metric].high)
        reason = (f"All {len(counted)} segments{size_note} pass '{rule}'; closest to the bound: "
                  f"{_describe(worst[0].name, metric, worst[1], settings.confidence, settings.bootstrap > 0)}")
        status = CheckStatus.PASS
    if small:
        reason += f" ({len(small)} smaller segment{'s' if len(small) != 1 else ''} not judged)"
    return CheckResult(name="segment gate", status=status, reason=reason[:5000], evidence=evidence,
                       thresholds=thresholds)


def _regression_case(case, seg: _Segment, nums: _SegmentNumbers, settings: EvaluationSettings) -> CheckResult:
    metric = case.metric
    label = METRIC_LABELS[metric]
    n = nums.metrics[0].n
    cand = _metric_value(nums.metrics[0], metric)
    base = _metric_value(nums.metrics[1], metric)
    conf = settings.confidence
    thresholds: dict[str, Scalar] = {"metric": metric, "min_value": case.min_value, "max_drop": case.max_drop,
                                     "min_segment_size": settings.min_segment_size, "confidence": conf}
    evidence: dict[str, Any] = {"slice": case.slice, "n": n, "positives": nums.metrics[0].positives,
                                "candidate": cand, "baseline": base}
    head = f"{case.name} ({case.slice}): n = {_count(n)}"
    if n < settings.min_segment_size:
        return CheckResult(name=case.name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"{head}: too small to judge (< {_count(settings.min_segment_size)})")
    if cand is None or (case.max_drop is not None and base is None):
        notes = "; ".join(m.note for m in nums.metrics if m.note)
        return CheckResult(name=case.name, status=CheckStatus.INCONCLUSIVE, evidence=evidence, thresholds=thresholds,
                           reason=f"{head}: {label} is undefined ({notes})")
    higher = HIGHER_IS_BETTER[metric]
    if case.min_value is not None:
        iv = nums.model_intervals[0][metric]
        bound = case.min_value
        low, high = (iv.low, iv.high) if higher else (-iv.high, -iv.low)
        edge = bound if higher else -bound
        status = CheckStatus.FAIL if high < edge else CheckStatus.PASS if low >= edge else CheckStatus.INCONCLUSIVE
        word = ">=" if higher else "<="
        evidence.update(low=iv.low, high=iv.high)
        text = (f"{head}: candidate {label} {_num(cand)}, {conf:.0%} CI [{_num(iv.low)}, {_num(iv.high)}], "
                f"required {word} {bound:g}")
    else:
        iv = nums.deltas[metric]
        status = _judge(metric, iv, case.max_drop)
        evidence.update(delta=iv.estimate, low=iv.low, high=iv.high)
        text = (f"{head}: {label} {_num(base)} -> {_num(cand)}, delta {iv.estimate:+.3f}, {conf:.0%} CI "
                f"[{iv.low:+.3f}, {iv.high:+.3f}], allowed loss {case.max_drop:g}")
    verdict = {CheckStatus.PASS: "pass", CheckStatus.FAIL: "fail",
               CheckStatus.INCONCLUSIVE: "inconclusive, the interval straddles the bound"}[status]
    return CheckResult(name=case.name, status=status, reason=f"{text}: {verdict}", evidence=evidence,
                       thresholds=thresholds)


# ---------------------------------------------------------------- shift checks


def _is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    return (pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(dtype) or dtype == object)


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    ref = np.maximum(ref, 1e-4)
    cur = np.maximum(cur, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _shift_status(psi: float, settings: EvaluationSettings) -> tuple[CheckStatus, str]:
    if psi >= settings.psi_fail:
        return CheckStatus.FAIL, f"PSI {psi:.3f} >= {settings.psi_fail:g} (fail)"
    if psi >= settings.psi_warn:
        return CheckStatus.WARN, f"PSI {psi:.3f} >= {settings.psi_warn:g} (warn)"
    return CheckStatus.PASS, f"PSI {psi:.3f} < {settings.psi_warn:g}"


def _ks_two_sample(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Return the two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value (both samples sorted).

    F_r - F_c only changes at observed values and is monotone between two reference values, so the
    largest gap is read right at and right before each distinct reference value: two binary searches per
    distinct reference value instead of evaluating both CDFs at every point.
    """
    m, n = r.size, c.size
    last = np.flatnonzero(np.append(r[1:] != r[:-1], True))
    values = r[last]
    f_r = (last + 1) / m
    f_r_before = np.concatenate(([0.0], f_r[:-1]))
    f_c = np.searchsorted(c, values, side="right") / n
    f_c_before = np.searchsorted(c, values, side="left") / n
    d = float(max(np.max(f_r - f_c), np.max(f_c_before - f_r_before), 0.0))
    x = math.sqrt(m * n / (m + n)) * d
    if x < 0.2:
        return d, 1.0
    # Kolmogorov's limiting distribution: P(K > x) = 2 sum (-1)^(k-1) exp(-2 k^2 x^2).
    k = np.arange(1, 101)
    p = 2.0 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k * k * x * x)))
    return d, min(max(p, 0.0), 1.0)


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Return the Jensen-Shannon distance (base 2, in [0, 1]) between two distributions."""
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def _numeric_shift(feature: str, ref: pd.Series, cur: pd.Series, settings: EvaluationSettings) -> CheckResult:
    r = ref.to_numpy(dtype=np.float64, na_value=np.nan)
    c = cur.to_numpy(dtype=np.float64, na_value=np.nan)
    r_ok = np.sort(r[~np.isnan(r)])
    c_ok = np.sort(c[~np.isnan(c)])
    thresholds: dict[str, Scalar] = {"psi_warn": settings.psi_warn, "psi_fail": settings.psi_fail, "bins": 10}
    if r_ok.size == 0 or c_ok.size == 0:
        return CheckResult(name=_name(f"shift: {feature}"), status=CheckStatus.INCONCLUSIVE, thresholds=thresholds,
                           reason=f"{feature}: no non-missing values in the "
                                  f"{'reference' if r_ok.size == 0 else 'evaluation'} window")
    # Ten bins (-inf, e1], (e1, e2], ..., (e9, inf) whose edges are the reference's deciles (from the
    # reference only); missing values get a bin of their own. Counts come from the sorted samples.
    edges = np.unique(np.quantile(r_ok, np.linspace(0.1, 0.9, 9)))

    def shares(sorted_values: np.ndarray, total: int) -> np.ndarray:
        cum = np.concatenate(([0], np.searchsorted(sorted_values, edges, side="right"), [sorted_values.size]))
        return np.append(np.diff(cum), total - sorted_values.size) / total

    r_bins = shares(r_ok, r.size)
    c_bins = shares(c_ok, c.size)
    psi = _psi(r_bins, c_bins)
    ks, p = _ks_two_sample(r_ok, c_ok)
    status, text = _shift_status(psi, settings)
    p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    evidence = {"psi": psi, "ks": ks, "p_value": p, "bin_edges": edges.tolist(),
                "reference_share": r_bins.tolist(), "current_share": c_bins.tolist(),
                "reference_rows": int(r.size), "current_rows": int(c.size)}
    return CheckResult(name=_name(f"shift: {feature}"), status=status, evidence=evidence, thresholds=thresholds,
                       reason=f"{feature}: {text}; KS {ks:.3f} ({p_text})")


def _category_counts(series: pd.Series) -> pd.Series:
    counts = series.value_counts(dropna=False)
    return counts.groupby([_value_name(v) for v in counts.index]).sum()


def _categorical_shift(feature: str, ref: pd.Series, cur: pd.Series, settings: EvaluationSettings) -> CheckResult:
    r_counts = _category_counts(ref)
    c_counts = _category_counts(cur)
    categories = sorted(set(r_counts.index) | set(c_counts.index))
    r_share = r_counts.reindex(categories, fill_value=0).to_numpy(dtype=np.float64) / max(len(ref), 1)
    c_share = c_counts.reindex(categories, fill_value=0).to_numpy(dtype=np.float64) / max(len(cur), 1)
    thresholds: dict[str, Scalar] = {"psi_warn": settings.psi_warn, "psi_fail": settings.psi_fail}
    if len(ref) == 0 or len(cur) == 0:
        return CheckResult(name=_name(f"shift: {feature}"), status=CheckStatus.INCONCLUSIVE, thresholds=thresholds,
                           reason=f"{feature}: a window has no rows")
    psi = _psi(r_share, c_share)
    js = _jensen_shannon(r_share, c_share)
    status, text = _shift_status(psi, settings)
    evidence = {"psi": psi, "js": js, "categories": categories[:100],
                "reference_share": r_share[:100].tolist(), "current_share": c_share[:100].tolist(),
                "reference_rows": len(ref), "current_rows": len(cur)}
    return CheckResult(name=_name(f"shift: {feature}"), status=status, evidence=evidence, thresholds=thresholds,
                       reason=f"{feature}: {text}; Jensen-Shannon distance {js:.3f}")


def check_shift(reference: pd.DataFrame, current: pd.DataFrame, features: list[str],
                settings: EvaluationSettings) -> list[CheckResult]:
    """Compare each feature's distribution in the reference window with the evaluation window."""
    missing = [(f, name) for f in features for name, fr in (("reference", reference), ("evaluation", current))
               if f not in fr.columns]
    if missing:
        f, where = missing[0]
        n = len(reference) if where == "reference" else len(current)
        raise EvaluationInputError(f"unknown column {f!r}: not in the {where} data (all {_count(n)} rows affected)")
    out = []
    for f in features:
        ref, cur = reference[f], current[f]
        if pd.api.types.is_datetime64_any_dtype(ref.dtype) or pd.api.types.is_datetime64_any_dtype(cur.dtype):
            raise EvaluationInputError(f"feature {f!r} is a timestamp; shift checks cover numeric and categorical "
                                       f"features (all {_count(len(cur))} rows affected)")
        if _is_categorical(ref) or _is_categorical(cur):
            out.append(_categorical_shift(f, ref, cur, settings))
        else:
            out.append(_numeric_shift(f, ref, cur, settings))
    return out


# ---------------------------------------------------------------- evaluate


def _resolution(cells: _Cells) -> str:
    if cells.exact:
        return "exact: one group per distinct score"
    kind = "rank groups per segment and model, half with equal rows and half with equal positives"
    if cells.groups == FINE_GROUPS:
        return f"{FINE_GROUPS} {kind} (one per distinct score where a segment has at most {FINE_GROUPS})"
    return f"{cells.groups} {kind} (coarsened from {FINE_GROUPS} to fit {CELL_BUDGET} cells)"


def evaluate(frame: pd.DataFrame, *, label: str, candidate: str, baseline: str, segments: list[str],
             settings: EvaluationSettings, candidate_threshold: float, baseline_threshold: float,
             reference: pd.DataFrame | None = None, features: list[str] | None = None, seed: int = 0,
             weight: str | None = None, progress: Callable[[float, str], None] | None = None) -> EvaluationResult:
    """Compare candidate and baseline overall, per segment and slice, with paired bootstrap intervals and the gate."""
    def report(fraction: float, text: str) -> None:
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0), text)

    report(0.0, "validating")
    thresholds = []
    for name, t in (("candidate_threshold", candidate_threshold), ("baseline_threshold", baseline_threshold)):
        try:
            value = float(t)  # numpy scalars from a registry entry or a quantile are fine
        except (TypeError, ValueError):
            value = math.nan
        if not 0 <= value <= 1:
            raise EvaluationInputError(f"{name} must be a number in [0, 1], got {t!r}")
        thresholds.append(value)
    candidate_threshold, baseline_threshold = thresholds
    data = _checked(frame, label=label, candidate=candidate, baseline=baseline, segments=segments, weight=weight)
    case_slices = [c.slice for c in settings.regression_cases]
    for name, expr in list(settings.slices.items()) + [(c.name, c.slice) for c in settings.regression_cases]:
        try:
            unknown = [c for c in slice_columns(expr) if c not in frame.columns]
        except ValueError as exc:
            raise EvaluationInputError(f"slice {name!r}: {exc}") from None
        if unknown:
            raise EvaluationInputError(f"slice {name!r} refers to unknown column {unknown[0]!r} "
                                       f"(all {_count(data.n)} rows affected)")
    bins = settings.calibration_bins
    reps_wanted = settings.bootstrap
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Sort both models' scores while the segment columns are factorised and the slices evaluated here.
        sorted_scores = [pool.submit(_score_order, s) for s in data.scores]
        layers, segs, slice_index, partition = _build_layers(frame, segments, settings.slices, case_slices)
        total_rows = sum(data.n if layer.mask is None else int(layer.mask.sum()) for layer in layers)
        # Small evaluation sets get one bootstrap group per distinct score: the exact Poisson bootstrap.
        exact = total_rows <= EXACT_BOOTSTRAP_ROWS
        report(0.05, "metrics")
        metrics, passes, cell_parts = _collect_metrics(
            pool, sorted_scores, layers, partition, data, (candidate_threshold, baseline_threshold), bins,
            calibration=True, cells_wanted=reps_wanted > 0, exact=exact, progress=progress, span=(0.05, 0.45))
    replicates = None
    cells = None
    if reps_wanted > 0:
        report(0.45, "bootstrap cells")
        cells = _assemble_cells(cell_parts, exact, len(segs))
        del cell_parts
        replicates = _bootstrap(cells, len(segs), bins, reps_wanted, seed, progress, (0.5, 0.9))
    numbers = _numbers(metrics, replicates, settings.confidence)

    report(0.9, "gate and calibration")
    verdicts = []
    results: list[SegmentResult] = []
    for seg, nums in zip(segs, numbers):
        if not seg.shown:
            continue
        status, reason, counted = _segment_verdict(seg, nums, settings)
        verdicts.append((seg, nums, status, reason, counted))
        results.append(SegmentResult(segment=seg.name, keys=seg.keys, candidate=nums.metrics[0],
                                     baseline=nums.metrics[1], deltas=nums.deltas, status=status,
                                     reason=reason[:5000]))
    gate = _gate(verdicts, settings)

    calibration = []
    for (ps_c, ps_b), layer in zip(passes, layers):
        for code in range(layer.n_seg):
            seg = segs[layer.offset + code]
            if not seg.shown:
                continue
            for which, ps in (("candidate", ps_c), ("baseline", ps_b)):
                for strategy in ("uniform", "quantile"):
                    rel, ece = _reliability(ps, code, strategy, bins)
                    calibration.append(Calibration(segment=seg.name, which=which, strategy=strategy, bins=rel,
                                                   ece=ece))

    suite = []
    for case in settings.regression_cases:
        i = slice_index[case.slice.strip()]
        suite.append(_regression_case(case, segs[i], numbers[i], settings))

    shift: list[CheckResult] = []
    if reference is not None:
        report(0.93, "shift checks")
        if features is None:
            skip = {label, candidate, baseline, weight}
            features = [c for c in frame.columns if c in reference.columns and c not in skip
                        and not pd.api.types.is_datetime64_any_dtype(frame[c].dtype)]
        shift = check_shift(reference, frame, features, settings)

    used: dict[str, Scalar] = {
        "bootstrap": reps_wanted, "seed": seed, "confidence": settings.confidence, "bins": bins,
        "candidate_threshold": float(candidate_threshold), "baseline_threshold": float(baseline_threshold),
        "min_segment_size": settings.min_segment_size, "gated_metric": settings.gated_metric,
        "max_segment_drop": settings.max_segment_drop, "rows": data.n, "weight": weight,
        "bootstrap_method": "paired Poisson bootstrap over aggregated cells, percentile intervals",
        "bootstrap_cells": 0 if cells is None else int(cells.count.size),
        "bootstrap_score_groups": "none: no resamples" if cells is None else _resolution(cells),
    }
    report(1.0, "done")
    overall = results[0]
    return EvaluationResult(overall=overall, segments=results[1:], calibration=calibration, shift_checks=shift,
                            regression_suite=suite, gate=gate, settings_used=used)
