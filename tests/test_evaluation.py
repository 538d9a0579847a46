"""Test the evaluation engine against scikit-learn, brute force and simulations with a known truth."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp, norm
from sklearn.metrics import (average_precision_score, brier_score_loss, log_loss, precision_score, recall_score,
                             roc_auc_score)

from lifecycle import evaluation
from lifecycle.evaluation import (METRICS, EvaluationInputError, check_shift, evaluate, measure_segments,
                                  point_metrics, validate_scores)
from lifecycle.models import CheckStatus, EvaluationSettings, RegressionCase

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-9


# ---------------------------------------------------------------- factories and references


def scored_frame(n: int = 3000, seed: int = 0, decimals: int | None = 2, prevalence: float = 0.3,
                 weight: bool = False) -> pd.DataFrame:
    """Build a scored set with two segment columns, heavy ties (scores rounded) and an amount column."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    z = rng.standard_normal(n)
    cand = 1 / (1 + np.exp(-(1.3 * y + 0.8 * z + 0.5 * rng.standard_normal(n) - 1)))
    base = 1 / (1 + np.exp(-(1.1 * y + 0.8 * z + 0.5 * rng.standard_normal(n) - 1)))
    if decimals is not None:
        cand, base = np.round(cand, decimals), np.round(base, decimals)
    frame = pd.DataFrame({
        "label": y, "cand": cand, "base": base,
        "region": rng.choice(["APAC", "EMEA", "AMER"], n, p=[0.2, 0.5, 0.3]),
        "channel": rng.choice(["web", "mobile"], n),
        "amount": rng.exponential(800, n),
    })
    if weight:
        frame["w"] = rng.uniform(0.2, 3.0, n)
    return frame


def reference_metrics(y: np.ndarray, p: np.ndarray, threshold: float, w: np.ndarray | None = None,
                      bins: int = 10) -> dict[str, float | None]:
    """Compute every metric with scikit-learn, or by brute force where scikit-learn has none."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    weights = np.ones(len(y)) if w is None else np.asarray(w)
    pred = (p >= threshold).astype(int)
    both = 0 < y.sum() < len(y)
    out: dict[str, float | None] = {
        "roc_auc": roc_auc_score(y, p, sample_weight=w) if both else None,
        "pr_auc": average_precision_score(y, p, sample_weight=w) if y.sum() > 0 else None,
        "log_loss": log_loss(y, p, labels=[0, 1], sample_weight=w),
        "brier": brier_score_loss(y, p, sample_weight=w),
        "precision": precision_score(y, pred, sample_weight=w, zero_division=0) if pred.any() else None,
        "recall": recall_score(y, pred, sample_weight=w, zero_division=0) if y.any() else None,
        "fpr": float(weights[(pred == 1) & (y == 0)].sum() / weights[y == 0].sum()) if (y == 0).any() else None,
        "positive_rate": float(weights[pred == 1].sum() / weights.sum()),
    }
    gap = 0.0
    for k in range(bins):
        in_bin = np.array([min(math.floor(v * bins), bins - 1) == k for v in p])
        gap += abs(float((weights[in_bin] * (p[in_bin] - y[in_bin])).sum()))
    out["ece"] = gap / weights.sum()
    return out


def assert_metrics_match(metrics, expected: dict[str, float | None]) -> None:
    """Assert every metric equals the reference to 1e-9, or is undefined exactly where the reference is."""
    for name, value in expected.items():
        got = getattr(metrics, name)
        if value is None:
            assert got is None, f"{name}: expected undefined, got {got}"
        else:
            assert got is not None, f"{name}: undefined, expected {value}"
            assert abs(got - value) <= TOL, f"{name}: {got} != {value}"


def segment_masks(frame: pd.DataFrame, slices: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Brute-force row masks of every segment the engine reports, by name."""
    masks = {"all": np.ones(len(frame), dtype=bool)}
    for column in ("region", "channel"):
        for value in sorted(frame[column].unique()):
            masks[f"{column}={value}"] = (frame[column] == value).to_numpy()
    for region in sorted(frame["region"].unique()):
        for channel in sorted(frame["channel"].unique()):
            mask = ((frame["region"] == region) & (frame["channel"] == channel)).to_numpy()
            if mask.any():
                masks[f"region={region} / channel={channel}"] = mask
    for name, expr in (slices or {}).items():
        masks[f"slice: {name}"] = frame.eval(expr).to_numpy()
    return masks


def run(frame: pd.DataFrame, settings: EvaluationSettings | None = None, **kwargs):
    """Evaluate a scored_frame with the usual columns, thresholds 0.4 / 0.35 and segments region x channel."""
    arguments = dict(label="label", candidate="cand", baseline="base", segments=["region", "channel"],
                     settings=settings or EvaluationSettings(bootstrap=200, min_segment_size=100),
                     candidate_threshold=0.4, baseline_threshold=0.35)
    arguments.update(kwargs)
    return evaluate(frame, **arguments)


# ---------------------------------------------------------------- point metrics


@pytest.mark.parametrize("seed, decimals, weighted, threshold", [
    (0, 2, False, 0.5),
    (1, 1, False, 0.3),
    (2, 3, True, 0.45),
    (3, None, False, 0.2),
    (4, 2, True, 0.9),
])
def test_point_metrics_equal_scikit_learn_on_tied_scores(seed, decimals, weighted, threshold):
    frame = scored_frame(n=2500, seed=seed, decimals=decimals, weight=weighted)
    w = frame["w"].to_numpy() if weighted else None

    got = point_metrics(frame["label"], frame["cand"], threshold, weight=w)

    assert_metrics_match(got, reference_metrics(frame["label"].to_numpy(), frame["cand"].to_numpy(), threshold, w))


@pytest.mark.parametrize("y, p, undefined", [
    ([0, 0, 0, 0], [0.1, 0.4, 0.4, 0.9], {"roc_auc", "pr_auc", "recall"}),
    ([1, 1, 1], [0.2, 0.2, 0.7], {"roc_auc", "fpr"}),
    ([1], [0.3], {"roc_auc", "fpr", "precision"}),
    ([0], [0.0], {"roc_auc", "pr_auc", "recall", "precision"}),
    ([0, 1, 0, 1, 1], [0.5] * 5, set()),
    ([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0], set()),
    ([0, 1, 0, 1], [1e-300, 1 - 1e-17, 1.0, 0.0], set()),
])
def test_edge_cases_equal_scikit_learn_or_are_undefined_with_a_note(y, p, undefined):
    threshold = 0.5

    got = point_metrics(y, p, threshold)

    expected = reference_metrics(np.array(y), np.array(p), threshold)
    assert_metrics_match(got, expected)
    assert {m for m in METRICS if getattr(got, m) is None} == undefined
    assert bool(got.note) == bool(undefined)


@pytest.mark.parametrize("weighted, decimals", [(False, 2), (True, 2), (False, None), (True, None)])
def test_every_segment_and_slice_equals_scikit_learn(weighted, decimals):
    frame = scored_frame(n=4000, seed=11, decimals=decimals, weight=weighted)
    slices = {"big_web": "amount > 1000 and channel == 'web'"}
    w = frame["w"].to_numpy() if weighted else None

    result = measure_segments(frame, label="label", candidate="cand", baseline="base",
                              segments=["region", "channel"], candidate_threshold=0.4, baseline_threshold=0.35,
                              slices=slices, weight="w" if weighted else None)

    masks = segment_masks(frame, slices)
    assert [r.segment for r in result] == list(masks)
    for r in result:
        mask = masks[r.segment]
        sub_w = None if w is None else w[mask]
        y = frame["label"].to_numpy()[mask]
        assert_metrics_match(r.candidate, reference_metrics(y, frame["cand"].to_numpy()[mask], 0.4, sub_w))
        assert_metrics_match(r.baseline, reference_metrics(y, frame["base"].to_numpy()[mask], 0.35, sub_w))
        assert r.candidate.n == mask.sum() and r.candidate.positives == y.sum()


def test_report_segments_equal_the_point_metrics_and_never_hold_nan():
    frame = scored_frame(n=3000, seed=5)

    result = run(frame, EvaluationSettings(bootstrap=50, slices={"web": "channel == 'web'"}))

    points = measure_segments(frame, label="label", candidate="cand", baseline="base",
                              segments=["region", "channel"], candidate_threshold=0.4, baseline_threshold=0.35,
                              slices={"web": "channel == 'web'"})
    for seg, point in zip([result.overall] + result.segments, points):
        assert seg.segment == point.segment
        assert seg.candidate == point.candidate and seg.baseline == point.baseline
    assert result.segments[-1].segment == "slice: web"
    assert "NaN" not in result.model_dump_json()


def test_a_weighted_report_matches_its_point_metrics_and_has_intervals_around_them():
    frame = scored_frame(n=3000, seed=25, weight=True)

    result = run(frame, EvaluationSettings(bootstrap=100), weight="w")

    points = measure_segments(frame, label="label", candidate="cand", baseline="base", segments=["region", "channel"],
                              candidate_threshold=0.4, baseline_threshold=0.35, weight="w")
    assert [s.candidate for s in [result.overall] + result.segments] == [p.candidate for p in points]
    for seg in [result.overall] + result.segments:
        for iv in seg.deltas.values():
            assert iv.low <= iv.estimate <= iv.high and iv.high > iv.low
    assert result.settings_used["weight"] == "w"


def test_segment_names_and_keys_cross_every_column():
    frame = scored_frame(n=600, seed=1)

    result = run(frame, EvaluationSettings(bootstrap=0))

    cross = [s for s in result.segments if " / " in s.segment]
    assert {s.segment for s in cross} == {f"region={r} / channel={c}" for r in ("AMER", "APAC", "EMEA")
                                          for c in ("mobile", "web")}
    apac_mobile = next(s for s in cross if s.segment == "region=APAC / channel=mobile")
    assert apac_mobile.keys == {"region": "APAC", "channel": "mobile"}


def test_large_sets_are_sorted_exactly_even_when_scores_differ_only_in_their_last_bits():
    rng = np.random.default_rng(23)
    n = 250_000
    # Many scores share their high bits and differ only in the low ones the fast sort packs away.
    scores = np.round(rng.random(n), 3) * 0.999 + rng.integers(0, 2**12, n) * 2.0**-52
    y = (rng.random(n) < 0.3).astype(int)

    order, ordered = evaluation._score_order(scores)
    metrics = point_metrics(y, scores, 0.5)

    assert np.array_equal(ordered, np.sort(scores)) and np.array_equal(scores[order], ordered)
    assert metrics.roc_auc == pytest.approx(roc_auc_score(y, scores), abs=TOL)
    assert metrics.pr_auc == pytest.approx(average_precision_score(y, scores), abs=TOL)


# ---------------------------------------------------------------- undefined and small segments


def test_single_class_and_tiny_segments_are_inconclusive_with_a_reason_not_dropped():
    frame = scored_frame(n=3000, seed=2)
    frame.loc[frame["region"] == "APAC", "label"] = 0
    frame.loc[len(frame)] = [1, 0.9, 0.8, "LATAM", "web", 10.0]

    result = run(frame, EvaluationSettings(bootstrap=100, min_segment_size=100))

    by_name = {s.segment: s for s in result.segments}
    apac = by_name["region=APAC"]
    assert apac.status is CheckStatus.INCONCLUSIVE
    assert apac.candidate.roc_auc is None and "no positives" in apac.candidate.note
    assert apac.candidate.log_loss is not None and "roc_auc" not in apac.deltas
    assert "log_loss" in apac.deltas
    latam = by_name["region=LATAM"]
    assert latam.candidate.n == 1 and latam.status is CheckStatus.INCONCLUSIVE
    assert "too small" in latam.reason and "n = 1 < 100" in latam.reason
    assert "region=LATAM" in result.gate.evidence["too_small"]
    assert "NaN" not in result.model_dump_json()


def test_all_equal_scores_give_auc_one_half_and_finite_intervals():
    frame = scored_frame(n=800, seed=3)
    frame["cand"] = 0.42
    frame["base"] = 0.42

    result = run(frame, EvaluationSettings(bootstrap=100, min_segment_size=50))

    assert result.overall.candidate.roc_auc == pytest.approx(0.5, abs=TOL)
    interval = result.overall.deltas["roc_auc"]
    assert interval.estimate == pytest.approx(0.0, abs=TOL)
    assert interval.low == pytest.approx(0.0, abs=1e-12) and interval.high == pytest.approx(0.0, abs=1e-12)


def test_an_empty_slice_is_reported_with_no_metrics():
    frame = scored_frame(n=500, seed=4)

    result = run(frame, EvaluationSettings(bootstrap=20, slices={"none": "amount < 0"}))

    empty = result.segments[-1]
    assert empty.segment == "slice: none" and empty.candidate.n == 0
    assert empty.status is CheckStatus.INCONCLUSIVE and empty.deltas == {}


# ---------------------------------------------------------------- bootstrap


def test_the_same_seed_gives_the_same_report():
    frame = scored_frame(n=2000, seed=6)

    first = run(frame, seed=42)
    second = run(frame, seed=42)

    assert first.model_dump() == second.model_dump()


def test_a_different_seed_gives_different_intervals():
    frame = scored_frame(n=2000, seed=6)

    first = run(frame, seed=1)
    second = run(frame, seed=2)

    assert first.overall.deltas["roc_auc"].estimate == second.overall.deltas["roc_auc"].estimate
    assert first.overall.deltas["roc_auc"].low != second.overall.deltas["roc_auc"].low


def brute_force_bootstrap(frame: pd.DataFrame, reps: int, seed: int) -> dict[str, np.ndarray]:
    """Paired Poisson bootstrap over rows: one weight per row and replicate, shared by both models."""
    y = frame["label"].to_numpy()
    W = np.random.default_rng(seed).poisson(1.0, (reps, len(y))).astype(float)
    out: dict[str, list[np.ndarray]] = {"roc_auc": [], "log_loss": [], "precision": []}
    for column, threshold in (("cand", 0.4), ("base", 0.35)):
        s = frame[column].to_numpy()
        pos, neg = s[y == 1], s[y == 0]
        pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        w_pos, w_neg = W[:, y == 1], W[:, y == 0]
        out["roc_auc"].append(((w_pos @ pairs) * w_neg).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1)))
        p_true = np.clip(np.where(y == 1, s, 1 - s), np.finfo(float).eps, 1 - np.finfo(float).eps)
        out["log_loss"].append(W @ -np.log(p_true) / W.sum(axis=1))
        pred = (s >= threshold).astype(float)
        out["precision"].append(W @ (pred * y) / (W @ pred))
    return {metric: a - b for metric, (a, b) in out.items()}


def test_intervals_match_a_brute_force_row_level_paired_poisson_bootstrap():
    frame = scored_frame(n=400, seed=7, decimals=None)
    reps = 4000
    deltas = brute_force_bootstrap(frame, reps, seed=99)

    result = run(frame, EvaluationSettings(bootstrap=reps), segments=[], seed=3)

    assert result.settings_used["bootstrap_score_groups"].startswith("exact")
    for metric, values in deltas.items():
        low, high = np.nanpercentile(values, [2.5, 97.5])
        got = result.overall.deltas[metric]
        width = high - low
        # Monte Carlo error of a 2.5% percentile over 4000 replicates is ~1.5% of the width per side.
        assert abs(got.low - low) < 0.08 * width, (metric, got, low, high)
        assert abs(got.high - high) < 0.08 * width, (metric, got, low, high)


def test_poisson_cell_counts_have_the_poisson_distribution():
    from scipy.stats import poisson

    counts = np.array([1, 3, 40, 127, 128, 900])
    sampler = evaluation._PoissonSampler(counts)
    rng = np.random.default_rng(0)

    draws = np.concatenate([sampler.draw(rng, 5000) for _ in range(10)], axis=1)

    for lam, row in zip(counts, draws):
        assert row.mean() == pytest.approx(lam, rel=0.02, abs=0.02)
        assert row.var() == pytest.approx(lam, rel=0.05)
        if lam < evaluation.EXACT_POISSON_BELOW:
            k = np.arange(int(lam + 4 * math.sqrt(lam)) + 2)
            observed = np.bincount(row.astype(int), minlength=k.size)[:k.size] / row.size
            assert np.abs(observed - poisson.pmf(k, lam)).max() < 0.01


def test_cells_are_coarsened_to_the_budget_and_intervals_stay_close(monkeypatch):
    frame = scored_frame(n=20_000, seed=24, decimals=None)
    settings = EvaluationSettings(bootstrap=400, min_segment_size=100)
    fine = run(frame, settings, seed=4)
    monkeypatch.setattr(evaluation, "CELL_BUDGET", 4000)

    coarse = run(frame, settings, seed=4)

    assert "coarsened" not in fine.settings_used["bootstrap_score_groups"]
    assert coarse.settings_used["bootstrap_cells"] <= 4000
    assert "coarsened" in coarse.settings_used["bootstrap_score_groups"]
    for a, b in zip([fine.overall] + fine.segments, [coarse.overall] + coarse.segments):
        for metric in ("roc_auc", "pr_auc", "log_loss", "precision"):
            x, z = a.deltas[metric], b.deltas[metric]
            assert z.estimate == x.estimate and z.low <= z.estimate <= z.high
            assert (z.high - z.low) == pytest.approx(x.high - x.low, rel=0.3), (a.segment, metric)


def binormal_frame(n: int, rng: np.random.Generator, mu_c: float, mu_b: float, rho: float,
                   prevalence: float = 0.3) -> pd.DataFrame:
    """Scores whose true AUCs are Phi(mu / sqrt(2)) in each class (unit variance, correlation rho)."""
    y = (rng.random(n) < prevalence).astype(int)
    shared = rng.standard_normal(n)
    raw_c = mu_c * y + math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(n)
    raw_b = mu_b * y + math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(n)
    return pd.DataFrame({"label": y, "cand": 1 / (1 + np.exp(-raw_c)), "base": 1 / (1 + np.exp(-raw_b))})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", ["exact", "grouped"])
def test_nominal_95_percent_intervals_cover_the_true_auc_delta(path, monkeypatch):
    if path == "grouped":
        # Force rank groups (the path large evaluation sets take) on small simulated sets.
        monkeypatch.setattr(evaluation, "EXACT_BOOTSTRAP_ROWS", 0)
    mu_c, mu_b, rho = 1.0, 0.85, 0.8
    truth = norm.cdf(mu_c / math.sqrt(2)) - norm.cdf(mu_b / math.sqrt(2))
    rng = np.random.default_rng(2026)
    settings = EvaluationSettings(bootstrap=200, min_segment_size=10)
    repetitions, covered, groups = 200, 0, set()

    for i in range(repetitions):
        frame = binormal_frame(1500, rng, mu_c, mu_b, rho)
        result = evaluate(frame, label="label", candidate="cand", baseline="base", segments=[], settings=settings,
                          candidate_threshold=0.5, baseline_threshold=0.5, seed=i)
        interval = result.overall.deltas["roc_auc"]
        covered += interval.low <= truth <= interval.high
        groups.add(result.settings_used["bootstrap_score_groups"].split(":")[0])

    coverage = covered / repetitions
    print(f"\ncoverage of the nominal 95% AUC-delta interval ({path} cells): {coverage:.3f} "
          f"over {repetitions} repetitions; groups: {groups}")
    expected = "exact" if path == "exact" else f"{evaluation.FINE_GROUPS} rank groups per segment and model"
    assert len(groups) == 1 and groups.pop().startswith(expected)
    assert 0.88 <= coverage <= 0.99


# ---------------------------------------------------------------- gate


def regressing_frame(seed: int = 8) -> pd.DataFrame:
    """A set where the candidate is clearly worse on APAC / mobile and better elsewhere."""
    frame = scored_frame(n=12000, seed=seed, decimals=3)
    rng = np.random.default_rng(seed)
    bad = ((frame["region"] == "APAC") & (frame["channel"] == "mobile")).to_numpy()
    frame.loc[bad, "cand"] = np.round(rng.random(bad.sum()) * 0.6 + 0.03 * frame.loc[bad, "label"], 3)
    return frame


def test_a_regressing_segment_fails_the_gate_with_its_numbers_in_the_reason():
    frame = regressing_frame()
    settings = EvaluationSettings(bootstrap=300, min_segment_size=500, max_segment_drop=0.01)

    result = run(frame, settings)

    segment = next(s for s in result.segments if s.segment == "region=APAC / channel=mobile")
    assert segment.status is CheckStatus.FAIL
    iv = segment.deltas["roc_auc"]
    assert iv.high < -0.01
    pattern = (r"region=APAC / channel=mobile: AUC (\d\.\d{3}) -> (\d\.\d{3}), delta (-\d\.\d{3}), "
               r"95% CI \[(-\d\.\d{3}), (-\d\.\d{3})\], n = ([\d ]+): fails 'no segment loses more than 0\.01'")
    match = re.search(pattern, result.gate.reason)
    assert result.gate.status is CheckStatus.FAIL and match, result.gate.reason
    assert float(match.group(1)) == pytest.approx(segment.baseline.roc_auc, abs=5e-4)
    assert float(match.group(2)) == pytest.approx(segment.candidate.roc_auc, abs=5e-4)
    assert float(match.group(4)) == pytest.approx(iv.low, abs=5e-4)
    assert int(match.group(6).replace(" ", "")) == segment.candidate.n
    failing = result.gate.evidence["failing"]
    assert any(f["segment"] == segment.segment and f["high"] == iv.high for f in failing)
    assert result.gate.thresholds["max_segment_drop"] == 0.01


def test_an_interval_straddling_the_bound_is_inconclusive():
    frame = scored_frame(n=3000, seed=9)
    swapped = {"candidate": "base", "baseline": "cand"}  # the weaker model as the candidate
    estimate = run(frame, EvaluationSettings(bootstrap=0), **swapped).overall.deltas["roc_auc"].estimate
    # The bound sits on the point estimate, so any interval around the estimate straddles it.
    # Only the whole set (n = 3000) is large enough to be judged.
    settings = EvaluationSettings(bootstrap=200, min_segment_size=3000, max_segment_drop=-estimate)

    result = run(frame, settings, **swapped)

    assert result.overall.status is CheckStatus.INCONCLUSIVE
    assert "straddles" in result.overall.reason
    assert result.gate.status is CheckStatus.INCONCLUSIVE
    assert result.gate.evidence["inconclusive"][0]["segment"] == "all"


@pytest.mark.parametrize("metric, higher_is_better", [("roc_auc", True), ("log_loss", False), ("ece", False)])
def test_the_gate_reads_worse_in_the_metric_direction(metric, higher_is_better):
    frame = regressing_frame(seed=10)
    settings = EvaluationSettings(bootstrap=200, min_segment_size=500, gated_metric=metric, max_segment_drop=0.0)

    result = run(frame, settings)

    segment = next(s for s in result.segments if s.segment == "region=APAC / channel=mobile")
    iv = segment.deltas[metric]
    worse = iv.high < 0 if higher_is_better else iv.low > 0
    assert (segment.status is CheckStatus.FAIL) == worse


def test_a_passing_report_names_the_segment_closest_to_the_bound():
    frame = scored_frame(n=6000, seed=12)
    settings = EvaluationSettings(bootstrap=200, min_segment_size=1000, max_segment_drop=0.2)

    result = run(frame, settings)

    assert result.gate.status is CheckStatus.PASS
    assert result.gate.reason.startswith("All ") and "closest to the bound" in result.gate.reason
    assert result.gate.evidence["failing"] == [] and result.gate.evidence["inconclusive"] == []


# ---------------------------------------------------------------- regression suite


@pytest.mark.parametrize("case, status", [
    (RegressionCase(name="web auc floor", slice="channel == 'web'", min_value=0.5), CheckStatus.PASS),
    (RegressionCase(name="web auc ceiling", slice="channel == 'web'", min_value=0.99), CheckStatus.FAIL),
    (RegressionCase(name="apac mobile drop", slice="region == 'APAC' and channel == 'mobile'", max_drop=0.01),
     CheckStatus.FAIL),
    (RegressionCase(name="tiny", slice="amount > 1e9", max_drop=0.5), CheckStatus.INCONCLUSIVE),
    (RegressionCase(name="log loss cap", slice="region == 'EMEA'", metric="log_loss", min_value=5.0),
     CheckStatus.PASS),
])
def test_regression_cases_pass_fail_or_are_inconclusive(case, status):
    frame = regressing_frame(seed=13)
    settings = EvaluationSettings(bootstrap=200, min_segment_size=200, regression_cases=[case])

    result = run(frame, settings)

    (check,) = result.regression_suite
    assert check.name == case.name and check.status is status, check.reason
    assert case.slice in check.reason and "n = " in check.reason


def test_a_single_class_regression_slice_is_inconclusive():
    frame = scored_frame(n=3000, seed=14)
    frame.loc[frame["channel"] == "web", "label"] = 1
    case = RegressionCase(name="web", slice="channel == 'web'", min_value=0.7)

    result = run(frame, EvaluationSettings(bootstrap=50, min_segment_size=100, regression_cases=[case]))

    (check,) = result.regression_suite
    assert check.status is CheckStatus.INCONCLUSIVE and "undefined" in check.reason


# ---------------------------------------------------------------- calibration


def test_reliability_bins_match_a_brute_force_loop_and_count_every_row():
    frame = scored_frame(n=2000, seed=15, decimals=2)

    result = run(frame, EvaluationSettings(bootstrap=0, calibration_bins=10))

    cal = {(c.segment, c.which, c.strategy): c for c in result.calibration}
    assert len(cal) == 4 * (1 + len(result.segments))
    p = frame["cand"].to_numpy()
    y = frame["label"].to_numpy()
    uniform = cal[("all", "candidate", "uniform")]
    for b in uniform.bins:
        k = int(round(b.low * 10))
        in_bin = np.array([min(math.floor(v * 10), 9) == k for v in p])
        assert b.count == in_bin.sum()
        assert b.mean_score == pytest.approx(p[in_bin].mean(), abs=TOL)
        assert b.observed_rate == pytest.approx(y[in_bin].mean(), abs=TOL)
    assert uniform.ece == pytest.approx(result.overall.candidate.ece, abs=TOL)
    quantile = cal[("all", "candidate", "quantile")]
    assert sum(b.count for b in quantile.bins) == len(frame)
    assert all(b.low <= b.high for b in quantile.bins)
    assert all(a.high < b.low for a, b in zip(quantile.bins, quantile.bins[1:]))  # ties never split


# ---------------------------------------------------------------- shift checks


@pytest.mark.parametrize("shift, status", [(0.0, CheckStatus.PASS), (1.0, CheckStatus.FAIL)])
def test_numeric_shift_uses_reference_deciles_and_ks(shift, status):
    rng = np.random.default_rng(16)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 20000)})
    current = pd.DataFrame({"x": rng.normal(shift, 1, 30000)})

    (check,) = check_shift(reference, current, ["x"], EvaluationSettings())

    edges = np.quantile(reference["x"], np.linspace(0.1, 0.9, 9))
    ref_share = np.bincount(np.searchsorted(edges, reference["x"]), minlength=10) / len(reference)
    cur_share = np.bincount(np.searchsorted(edges, current["x"]), minlength=10) / len(current)
    ref_share, cur_share = np.maximum(ref_share, 1e-4), np.maximum(cur_share, 1e-4)
    psi = float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))
    ks = ks_2samp(reference["x"], current["x"])
    assert check.status is status
    assert check.evidence["psi"] == pytest.approx(psi, abs=1e-12)
    assert check.evidence["ks"] == pytest.approx(ks.statistic, abs=1e-12)
    assert check.evidence["p_value"] == pytest.approx(ks.pvalue, abs=0.02)
    assert check.thresholds == {"psi_warn": 0.1, "psi_fail": 0.25, "bins": 10}


def test_categorical_shift_uses_psi_and_jensen_shannon():
    from scipy.spatial.distance import jensenshannon

    reference = pd.DataFrame({"device": ["ios"] * 500 + ["android"] * 400 + ["web"] * 100})
    current = pd.DataFrame({"device": ["ios"] * 300 + ["android"] * 300 + ["web"] * 350 + [None] * 50})

    (check,) = check_shift(reference, current, ["device"], EvaluationSettings(psi_warn=0.1, psi_fail=0.5))

    cats = check.evidence["categories"]
    assert cats == ["(missing)", "android", "ios", "web"]
    ref = np.array([0.0, 0.4, 0.5, 0.1])
    cur = np.array([0.05, 0.3, 0.3, 0.35])
    psi = float(np.sum((np.maximum(cur, 1e-4) - np.maximum(ref, 1e-4))
                       * np.log(np.maximum(cur, 1e-4) / np.maximum(ref, 1e-4))))
    assert check.evidence["psi"] == pytest.approx(psi, abs=1e-12)
    assert check.evidence["js"] == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-12)
    assert check.status is (CheckStatus.FAIL if psi >= 0.5 else CheckStatus.WARN)


def test_shift_checks_run_per_feature_only_with_a_reference():
    frame = scored_frame(n=1000, seed=17)
    reference = scored_frame(n=800, seed=18)

    with_reference = run(frame, EvaluationSettings(bootstrap=0), reference=reference, features=["amount", "region"])
    without = run(frame, EvaluationSettings(bootstrap=0))

    assert [c.name for c in with_reference.shift_checks] == ["shift: amount", "shift: region"]
    assert without.shift_checks == []


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("change, column, count", [
    (lambda f: f.assign(cand=f["cand"].where(f.index >= 3, np.nan)), "cand", "3 of 50 rows"),
    (lambda f: f.assign(base=f["base"].where(f.index >= 2, 1.2)), "base", "2 of 50 rows"),
    (lambda f: f.assign(cand=f["cand"].where(f.index >= 4, -0.1)), "cand", "4 of 50 rows"),
    (lambda f: f.assign(label=f["label"].where(f.index >= 1, 2)), "label", "1 of 50 rows"),
    (lambda f: f.drop(columns=["region"]), "region", "all 50 rows"),
    (lambda f: f.assign(w=np.where(f.index < 5, -1.0, 1.0)), "w", "5 of 50 rows"),
])
def test_bad_input_is_refused_naming_the_column_and_the_rows(change, column, count):
    frame = change(scored_frame(n=50, seed=19))

    with pytest.raises(EvaluationInputError) as error:
        validate_scores(frame, label="label", candidate="cand", baseline="base", segments=["region", "channel"],
                        weight="w" if "w" in frame else None)

    assert repr(column) in str(error.value) and count in str(error.value)


def test_a_slice_on_an_unknown_column_is_refused_before_any_work():
    frame = scored_frame(n=50, seed=20)

    with pytest.raises(EvaluationInputError, match="unknown column 'price'"):
        run(frame, EvaluationSettings(slices={"rich": "price > 10"}))


# ---------------------------------------------------------------- project rules


def test_the_engine_does_not_import_streamlit():
    code = "import sys, lifecycle.evaluation, lifecycle.slices; print('streamlit' in sys.modules)"

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_progress_is_reported_in_order_from_zero_to_one():
    frame = scored_frame(n=500, seed=21)
    seen: list[tuple[float, str]] = []

    run(frame, EvaluationSettings(bootstrap=50), progress=lambda f, text: seen.append((f, text)))

    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and all(isinstance(t, str) and t for _, t in seen)


def test_settings_used_are_scalars_that_state_the_bootstrap():
    frame = scored_frame(n=500, seed=22)

    result = run(frame, EvaluationSettings(bootstrap=30), seed=5)

    used = result.settings_used
    assert used["bootstrap"] == 30 and used["seed"] == 5 and used["confidence"] == 0.95
    assert used["candidate_threshold"] == 0.4 and used["baseline_threshold"] == 0.35
    assert {"bins", "min_segment_size", "gated_metric", "max_segment_drop"} <= set(used)
    assert all(isinstance(v, (bool, int, float, str, type(None))) for v in used.values())
