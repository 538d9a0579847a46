"""Test prediction-log aggregation, the idempotent log store, window models, evidence split and A/B effects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from lifecycle.models import SIGNAL_METRICS, SignalWindow, SuccessMetric
from lifecycle.signals import (
    LOG_TABLE_DDL,
    PREDICTION_LOG_COLUMNS,
    SignalInputError,
    ab_effects,
    aggregate_windows,
    apply_labels,
    evidence_by_kind,
    ingest_log,
    validate_log,
    windows_frame,
    windows_to_models,
)

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["release", "stage", "arm", "segment", "start"]
METRICS = ["requests", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate", "fallback_rate",
           "cost_per_1k", "disagreement_rate", "labelled", "precision", "recall", "positive_rate", "calibration_gap"]
ARM_STAGE = {"shadow": "shadow", "canary": "canary", "baseline": "canary", "treatment": "ramp", "control": "ramp"}


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def make_log(n: int = 3000, seed: int = 0, hours: int = 5, label_share: float = 0.7) -> pd.DataFrame:
    """Build a small random prediction log over two releases, every arm and three segments."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(list(ARM_STAGE), n)
    candidate = rng.random(n)
    baseline = np.clip(candidate + rng.normal(0, 0.15, n), 0, 1)
    label = (rng.random(n) < candidate).astype(float)
    label[rng.random(n) > label_share] = np.nan
    return pd.DataFrame({
        "request_id": [f"req-{seed}-{i}" for i in range(n)],
        "timestamp": pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, hours * 3600 * 10**6, n), unit="us"),
        "release": rng.choice(["rel-a", "rel-b"], n),
        "stage": [ARM_STAGE[a] for a in arm],
        "arm": arm,
        "segment": rng.choice(["region=EU", "region=US", "region=APAC"], n, p=[0.5, 0.45, 0.05]),
        "latency_ms": rng.lognormal(4.5, 0.6, n),
        "error": rng.random(n) < 0.05,
        "fallback": (rng.random(n) < 0.1).astype(np.int64),
        "cost": rng.gamma(2.0, 0.001, n),
        "candidate_score": candidate,
        "baseline_score": baseline,
        "decision": (candidate > 0.5).astype(np.int64),
        "baseline_decision": (baseline > 0.5).astype(np.int64),
        "label": label,
    })


def brute_force_windows(log: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Compute the windows the slow way: a Python loop over groups with numpy's percentile."""
    log = log.assign(start=log["timestamp"].dt.floor(f"{minutes}min"))
    rows = []
    for (release, stage, arm, start), group in log.groupby(["release", "stage", "arm", "start"]):
        parts = [("all", group), *((segment, part) for (segment,), part in group.groupby(["segment"]))]
        for segment, part in parts:
            labelled = part[part["label"].notna()]
            predicted = labelled["decision"] == 1
            actual = labelled["label"] == 1
            p50, p95, p99 = np.percentile(part["latency_ms"].to_numpy(), [50, 95, 99])
            rows.append({
                "release": release, "stage": stage, "arm": arm, "segment": segment, "start": start,
                "end": start + pd.Timedelta(minutes=minutes), "requests": len(part),
                "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99,
                "error_rate": part["error"].mean(), "fallback_rate": part["fallback"].mean(),
                "cost_per_1k": 1000 * part["cost"].mean(),
                "disagreement_rate": (part["decision"] != part["baseline_decision"]).mean(),
                "labelled": len(labelled),
                "precision": (predicted & actual).sum() / predicted.sum() if predicted.sum() else np.nan,
                "recall": (predicted & actual).sum() / actual.sum() if actual.sum() else np.nan,
                "positive_rate": part["decision"].mean(),
                "calibration_gap": (labelled["candidate_score"].mean() - labelled["label"].mean()
                                    if len(labelled) else np.nan),
            })
    return pd.DataFrame(rows)


def assert_same_windows(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    merged = actual.merge(expected, on=KEYS, how="outer", suffixes=("", "_ref"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", KEYS]
    for metric in METRICS:
        np.testing.assert_allclose(merged[metric].to_numpy(float), merged[f"{metric}_ref"].to_numpy(float),
                                   rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=metric)


# ---------------------------------------------------------------- aggregation


@pytest.mark.parametrize("minutes", [7, 15, 60])
def test_windows_match_a_brute_force_pandas_computation(con, minutes):
    log = make_log(n=2000, seed=minutes, hours=3)

    windows = aggregate_windows(con, log, window_minutes=minutes)

    assert_same_windows(windows, brute_force_windows(log, minutes))
    assert list(windows.columns) == ["release", "stage", "arm", "segment", "start", "end", *METRICS[:8],
                                     "labelled", *METRICS[9:]]


def test_all_roll_up_adds_segment_volumes_and_recomputes_percentiles_from_rows(con):
    log = make_log(seed=1)

    windows = aggregate_windows(con, log, window_minutes=60)

    rollup = windows[windows["segment"] == "all"].set_index(["release", "stage", "arm", "start"])
    segments = windows[windows["segment"] != "all"].groupby(["release", "stage", "arm", "start"])
    assert (segments["requests"].sum().reindex(rollup.index) == rollup["requests"]).all()
    key = rollup.index[0]
    rows = log[(log["release"] == key[0]) & (log["stage"] == key[1]) & (log["arm"] == key[2])
               & (log["timestamp"].dt.floor("60min") == key[3])]
    assert rollup.loc[key, "latency_p95_ms"] == pytest.approx(np.percentile(rows["latency_ms"], 95), rel=1e-12)


def test_release_filter_keeps_only_that_release(con):
    log = make_log(seed=2)

    windows = aggregate_windows(con, log, window_minutes=60, release="rel-b")

    assert set(windows["release"]) == {"rel-b"}
    assert_same_windows(windows, brute_force_windows(log[log["release"] == "rel-b"], 60))


def test_a_log_without_labels_leaves_quality_metrics_empty(con):
    log = make_log(seed=4).drop(columns=["label"])

    windows = aggregate_windows(con, log, window_minutes=60)

    assert (windows["labelled"] == 0).all()
    assert windows[["precision", "recall", "calibration_gap"]].isna().all().all()


@pytest.mark.parametrize("kind", ["parquet", "csv", "table"])
def test_files_and_the_log_table_give_the_same_windows_as_a_dataframe(con, tmp_path, kind):
    log = make_log(seed=5, n=800)
    if kind == "parquet":
        source = tmp_path / "log.parquet"
        log.to_parquet(source)
    elif kind == "csv":
        source = str(tmp_path / "log.csv")
        log.to_csv(source, index=False)
    else:
        ingest_log(con, log)
        source = "prediction_log"

    windows = aggregate_windows(con, source, window_minutes=30)

    assert_same_windows(windows, aggregate_windows(con, log, window_minutes=30))


def test_aware_timestamps_are_bucketed_in_utc(con):
    log = make_log(seed=6, n=500)
    berlin = log.assign(timestamp=log["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin"))

    windows = aggregate_windows(con, berlin, window_minutes=60)

    assert_same_windows(windows, brute_force_windows(log, 60))


def test_aggregating_leaves_no_temporary_objects_behind(con, tmp_path):
    log = make_log(seed=7, n=300)
    log.to_csv(tmp_path / "log.csv", index=False)

    aggregate_windows(con, log, window_minutes=60)
    aggregate_windows(con, str(tmp_path / "log.csv"), window_minutes=60)

    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [(0,)]


# ---------------------------------------------------------------- validation


def _set(column, value, rows=3):
    def mutate(log):
        log = log.copy()
        log[column] = log[column].astype(object)
        log.loc[log.index[:rows], column] = value
        return log
    return mutate


@pytest.mark.parametrize("mutate, column, rows", [
    (lambda log: log.drop(columns=["cost"]), "cost", 400),
    (lambda log: log.drop(columns=["baseline_decision"]), "baseline_decision", 400),
    (_set("arm", "blue"), "arm", 3),
    (_set("stage", "beta"), "stage", 3),
    (_set("candidate_score", 1.2), "candidate_score", 3),
    (_set("baseline_score", -0.1), "baseline_score", 3),
    (_set("latency_ms", -5.0), "latency_ms", 3),
    (_set("latency_ms", np.nan, rows=2), "latency_ms", 2),
    (_set("error", 2), "error", 3),
    (_set("decision", 0.5), "decision", 3),
    (_set("label", 3.0, rows=4), "label", 4),
    (_set("segment", "all", rows=1), "segment", 1),
    (_set("release", None, rows=2), "release", 2),
    (_set("timestamp", "yesterday", rows=2), "timestamp", 2),
], ids=lambda v: v if isinstance(v, str) else None)
def test_validation_error_names_the_column_and_counts_the_rows(con, mutate, column, rows):
    log = mutate(make_log(seed=8, n=400))

    with pytest.raises(SignalInputError) as raised:
        aggregate_windows(con, log, window_minutes=60)

    assert raised.value.column == column
    assert raised.value.rows == rows
    assert column in str(raised.value)


def test_validation_lists_the_unknown_values_and_every_bad_column(con):
    log = _set("arm", "blue")(_set("candidate_score", 7.0, rows=2)(make_log(seed=9, n=200)))

    with pytest.raises(SignalInputError) as raised:
        validate_log(con, log)

    assert "'blue'" in str(raised.value)
    assert {column for column, _, _ in raised.value.problems} == {"arm", "candidate_score"}


def test_a_bad_log_writes_nothing_to_the_store(con):
    log = _set("arm", "blue")(make_log(seed=10, n=200))

    with pytest.raises(SignalInputError):
        ingest_log(con, log)

    assert con.execute("SELECT count(*) FROM prediction_log").fetchall() == [(0,)]


@pytest.mark.parametrize("source", ["no_such_table", "/nonexistent/log.parquet", "notes.txt"])
def test_an_unknown_source_is_refused_clearly(con, source):
    with pytest.raises(SignalInputError) as raised:
        aggregate_windows(con, source, window_minutes=60)

    assert raised.value.column == "source"


@pytest.mark.parametrize("minutes", [0, -5, 1.5, True, 7 * 24 * 60 + 1])
def test_window_size_must_be_a_positive_whole_number_of_minutes(con, minutes):
    with pytest.raises(ValueError, match="window_minutes"):
        aggregate_windows(con, make_log(n=50), window_minutes=minutes)


def test_required_columns_are_documented():
    assert set(PREDICTION_LOG_COLUMNS) == {
        "request_id", "timestamp", "release", "stage", "arm", "segment", "latency_ms", "error", "fallback", "cost",
        "candidate_score", "baseline_score", "decision", "baseline_decision"}


# ---------------------------------------------------------------- idempotent store and delayed labels


def test_reingesting_the_same_log_changes_nothing(con):
    log = make_log(seed=11)
    first = ingest_log(con, log)
    windows = aggregate_windows(con, "prediction_log", window_minutes=60)

    second = ingest_log(con, log)

    assert first == (len(log), 0)
    assert second == (0, len(log))
    pd.testing.assert_frame_equal(aggregate_windows(con, "prediction_log", window_minutes=60), windows)


def test_overlapping_batches_count_each_request_once(con):
    log = make_log(seed=12)
    ingest_log(con, log.iloc[:2000])

    count = ingest_log(con, log.iloc[1500:])

    assert count == (len(log) - 2000, 500)
    assert_same_windows(aggregate_windows(con, "prediction_log", window_minutes=60), brute_force_windows(log, 60))


def test_a_request_repeated_within_one_file_is_stored_once(con):
    log = make_log(seed=13, n=100)
    repeated = pd.concat([log, log.iloc[[5, 6]]], ignore_index=True)

    count = ingest_log(con, repeated)

    assert count == (100, 2)


def test_delayed_labels_update_quality_without_double_counting(con):
    log = make_log(seed=14)
    ingest_log(con, log.assign(label=np.nan))
    before = aggregate_windows(con, "prediction_log", window_minutes=60)
    labels = log.loc[log["label"].notna(), ["request_id", "label"]]

    changed = apply_labels(con, labels)
    after = aggregate_windows(con, "prediction_log", window_minutes=60)
    repeated = apply_labels(con, labels)

    assert before["labelled"].sum() == 0 and before["precision"].isna().all()
    assert changed == len(labels)
    assert repeated == 0
    assert (after["requests"].to_numpy() == before["requests"].to_numpy()).all()
    assert_same_windows(after, brute_force_windows(log, 60))
    assert_same_windows(aggregate_windows(con, "prediction_log", window_minutes=60), after)


def test_labels_for_unknown_requests_are_ignored(con):
    log = make_log(seed=15, n=50, label_share=0.0)
    ingest_log(con, log)
    labels = pd.DataFrame({"request_id": ["req-15-0", "someone-else"], "label": [1, 0]})

    changed = apply_labels(con, labels)

    assert changed == 1


@pytest.mark.parametrize("labels, column", [
    (pd.DataFrame({"request_id": ["a"], "label": [2]}), "label"),
    (pd.DataFrame({"request_id": ["a", "a"], "label": [0, 1]}), "label"),
    (pd.DataFrame({"request_id": [None], "label": [1]}), "request_id"),
    (pd.DataFrame({"request_id": ["a"]}), "label"),
])
def test_bad_label_files_are_refused(con, labels, column):
    with pytest.raises(SignalInputError) as raised:
        apply_labels(con, labels)

    assert raised.value.column == column


def test_log_table_ddl_is_idempotent(con):
    con.execute(LOG_TABLE_DDL)

    con.execute(LOG_TABLE_DDL)

    assert con.execute("SELECT count(*) FROM prediction_log").fetchall() == [(0,)]


# ---------------------------------------------------------------- models and evidence


def test_windows_become_signal_windows_without_null_metrics(con):
    log = make_log(seed=16, n=400, label_share=0.0)
    windows = aggregate_windows(con, log, window_minutes=60)

    models = windows_to_models(windows)

    assert len(models) == len(windows)
    assert all(isinstance(m, SignalWindow) for m in models)
    assert all("precision" not in m.metrics and set(m.metrics) <= set(SIGNAL_METRICS) for m in models)
    assert models[0].start.tzinfo is not None
    restored = [SignalWindow.model_validate_json(m.model_dump_json()) for m in models]
    assert restored == models


def test_signal_windows_turn_back_into_the_same_frame(con):
    windows = aggregate_windows(con, make_log(seed=17, n=600), window_minutes=60, release="rel-a")

    frame = windows_frame(windows_to_models(windows), release="rel-a")

    columns = [c for c in METRICS if c != "labelled"]
    pd.testing.assert_frame_equal(frame[KEYS + ["end"] + columns], windows[KEYS + ["end"] + columns],
                                  check_dtype=False)


def test_evidence_kinds_are_kept_apart(con):
    windows = aggregate_windows(con, make_log(seed=18), window_minutes=60)

    kinds = evidence_by_kind(windows)

    assert set(kinds) == {"shadow", "canary", "ab"}
    assert set(kinds["shadow"]["arm"]) == {"shadow"}
    assert set(kinds["canary"]["arm"]) == {"canary", "baseline"}
    assert set(kinds["ab"]["arm"]) == {"treatment", "control"}
    assert sum(len(frame) for frame in kinds.values()) == len(windows)
    np.testing.assert_allclose(kinds["shadow"]["agreement_rate"], 1 - kinds["shadow"]["disagreement_rate"])


# ---------------------------------------------------------------- A/B effects


def simulated_ab_log(n: int, p_treatment: float, p_control: float, seed: int) -> pd.DataFrame:
    log = make_log(n=n, seed=seed, hours=24)
    rng = np.random.default_rng(seed + 1)
    arm = rng.choice(["treatment", "control"], n)
    error = rng.random(n) < np.where(arm == "treatment", p_treatment, p_control)
    return log.assign(arm=arm, stage="ramp", release="rel-a", error=error)


def test_ab_effect_interval_contains_the_true_difference_on_simulated_data(con):
    log = simulated_ab_log(60_000, p_treatment=0.06, p_control=0.04, seed=19)
    windows = aggregate_windows(con, log, window_minutes=60)

    (effect,) = ab_effects(windows, [SuccessMetric(metric="error_rate", comparator="<=", target=0.05)])

    assert effect.method == "difference of proportions"
    assert effect.low < 0.02 < effect.high
    assert effect.low > 0
    assert effect.n_treatment + effect.n_control == len(log)
    assert effect.status == "fail"
    assert "target <= 0.05 not met" in effect.reason


def _simulated_windows(rng, n_windows, p, mean_cost):
    frames = []
    for arm in ("treatment", "control"):
        requests = rng.poisson(2000, n_windows)
        frames.append(pd.DataFrame({
            "release": "rel-a", "stage": "ramp", "arm": arm, "segment": "all", "requests": requests,
            "error_rate": rng.binomial(requests, p[arm]) / requests,
            "cost_per_1k": rng.normal(mean_cost[arm], 0.3, n_windows),
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("metric, true_difference", [("error_rate", 0.01), ("cost_per_1k", -0.25)])
def test_ab_intervals_cover_the_true_effect_about_95_percent_of_the_time(metric, true_difference):
    rng = np.random.default_rng(20)
    p, mean_cost = {"treatment": 0.05, "control": 0.04}, {"treatment": 1.75, "control": 2.0}

    effects = [ab_effects(_simulated_windows(rng, 12, p, mean_cost), [metric])[0] for _ in range(200)]
    covered = [effect.low <= true_difference <= effect.high for effect in effects]

    # 200 replicates: the observed coverage has a standard error of about 1.5 points.
    assert 0.90 <= np.mean(covered) <= 0.99


def test_ab_effects_ignore_other_arms_and_refuse_mixed_releases(con):
    windows = aggregate_windows(con, make_log(seed=21), window_minutes=60)

    with pytest.raises(ValueError, match="releases"):
        ab_effects(windows, ["error_rate"])
    (effect,) = ab_effects(windows[windows["release"] == "rel-a"], ["latency_p95_ms"])

    ab_rows = windows[(windows["release"] == "rel-a") & windows["arm"].isin(["treatment", "control"])
                      & (windows["segment"] == "all")]
    assert effect.method == "welch"
    assert effect.n_treatment + effect.n_control == len(ab_rows)


def test_an_unmeasured_metric_gives_an_inconclusive_effect():
    windows = _simulated_windows(np.random.default_rng(22), 5, {"treatment": 0.1, "control": 0.1},
                                 {"treatment": 1.0, "control": 1.0})

    (effect,) = ab_effects(windows, [SuccessMetric(metric="conversion", comparator=">=", target=0.03)])

    assert effect.status == "inconclusive"
    assert effect.difference is None
    assert json.loads(effect.model_dump_json())["metric"] == "conversion"


# ---------------------------------------------------------------- project rules


def test_signal_modules_never_import_streamlit():
    code = "import sys, lifecycle.signals, lifecycle.stoprules; print('streamlit' in sys.modules)"

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "False"
