"""Test the dataset quality checks on crafted files whose answers are known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.models import (
    CheckStatus,
    FeatureDefinition,
    LabelDefinition,
    PointInTime,
    QualityThresholds,
    canonical_json,
)
from lifecycle.quality import CHECK_NAMES, quote_ident, run_quality_checks

AS_OF = datetime(2024, 6, 1)
DELAY_DAYS = 7
NOW = AS_OF + timedelta(hours=2)


def clean_frame(n: int = 2000, seed: int = 7) -> pd.DataFrame:
    """Return data that passes every check: fresh, mature labels, no leaks, unique keys, few nulls."""
    rng = np.random.default_rng(seed)
    # Events spread over three months, the newest one hour before as_of.
    offsets = np.sort(rng.uniform(1, 92 * 24, n))[::-1]
    offsets[-1] = 1.0
    event_time = pd.Series(AS_OF - pd.to_timedelta(offsets, unit="h")).dt.floor("s")
    mature = event_time <= AS_OF - timedelta(days=DELAY_DAYS)
    label = pd.Series(rng.integers(0, 2, n), dtype="Int64").where(mature)
    return pd.DataFrame({
        "id": np.arange(n, dtype="int64"),
        "event_time": event_time,
        "feature_time": event_time - pd.Timedelta(minutes=10),
        "amount": rng.lognormal(3, 1, n),
        "n_items": rng.integers(1, 9, n),
        "channel": rng.choice(["web", "app", "pos"], n),
        "is_new": rng.random(n) < 0.3,
        "label": label,
    })


def features() -> list[FeatureDefinition]:
    """Return the feature definitions matching clean_frame."""
    return [
        FeatureDefinition(name=name, dtype=dtype, source="transactions", transformation="raw", owner="dana")
        for name, dtype in [("amount", "float"), ("n_items", "int"), ("channel", "category"), ("is_new", "bool")]
    ]


def point_in_time(**overrides) -> PointInTime:
    """Return point-in-time rules matching clean_frame."""
    values = dict(as_of=AS_OF, feature_cutoff=AS_OF, label_window_start=AS_OF - timedelta(days=93),
                  label_window_end=AS_OF - timedelta(days=DELAY_DAYS), event_time_column="event_time",
                  feature_time_column="feature_time")
    return PointInTime(**{**values, **overrides})


def write(df: pd.DataFrame, tmp_path: Path, fmt: str = "parquet") -> Path:
    """Write df as a real Parquet or CSV file and return its path."""
    path = tmp_path / f"data.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def check(path, *, feats=None, pit=None, keys=("id",), thresholds=None, label_delay=DELAY_DAYS, now=NOW):
    """Run the quality checks with the defaults of clean_frame and return them by name."""
    results = run_quality_checks(
        path, features=feats if feats is not None else features(),
        label=LabelDefinition(column="label", definition="chargeback within 7 days", delay_days=label_delay),
        point_in_time=pit or point_in_time(), key_columns=list(keys),
        thresholds=thresholds or QualityThresholds(), now=now,
    )
    return {r.name: r for r in results}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_clean_file_passes_every_check(tmp_path, fmt):
    path = write(clean_frame(), tmp_path, fmt)

    results = check(path)

    assert list(results) == list(CHECK_NAMES)
    assert {name: r.status for name, r in results.items()} == {name: CheckStatus.PASS for name in CHECK_NAMES}


def test_every_result_is_json_safe_and_states_its_thresholds(tmp_path):
    df = clean_frame()
    df.loc[:4, "feature_time"] = df.loc[:4, "event_time"] + pd.Timedelta(hours=1)
    path = write(df, tmp_path)

    results = check(path)

    for r in results.values():
        canonical_json(r.model_dump(mode="json"))
    assert results["leakage"].thresholds == {"max_leaking_rows": 0, "feature_cutoff": AS_OF.isoformat()}
    assert results["null_rate"].thresholds == {"max_null_rate": 0.02}


def test_an_injected_leak_of_37_rows_is_caught_with_its_exact_count(tmp_path):
    df = clean_frame()
    leaked = np.random.default_rng(1).choice(len(df), 37, replace=False)
    df.loc[leaked, "feature_time"] = df.loc[leaked, "event_time"] + pd.Timedelta(minutes=1)
    path = write(df, tmp_path)

    result = check(path)["leakage"]

    assert result.status is CheckStatus.FAIL
    assert result.evidence["leaking_rows"] == 37
    assert "37 row(s)" in result.reason
    assert len(result.evidence["sample"]) == 5
    assert {row["id"] for row in result.evidence["sample"]} <= set(leaked.tolist())


@pytest.mark.parametrize(
    ("after_event", "after_cutoff", "both", "max_leaking_rows", "expected_total", "status"),
    [
        (37, 0, 0, 0, 37, CheckStatus.FAIL),
        (0, 12, 0, 0, 12, CheckStatus.FAIL),
        (5, 6, 7, 0, 18, CheckStatus.FAIL),
        (5, 6, 7, 18, 18, CheckStatus.PASS),
        (0, 0, 0, 0, 0, CheckStatus.PASS),
    ],
)
def test_leakage_counts_rows_stamped_after_the_event_or_the_cutoff_once(
        tmp_path, after_event, after_cutoff, both, max_leaking_rows, expected_total, status):
    df = clean_frame()
    cutoff = AS_OF - timedelta(days=2)
    # Features of the last two days' events were computed at the cutoff; clean so far.
    df.loc[df["event_time"] > cutoff, "feature_time"] = cutoff - pd.Timedelta(hours=1)
    # Such rows can be stamped after the cutoff yet before their own event time.
    recent = df.index[df["event_time"] > cutoff + timedelta(hours=2)].to_numpy()
    early = df.index[df["event_time"] < cutoff - timedelta(days=1)].to_numpy()
    rows_cut, rows_both = recent[:after_cutoff], recent[after_cutoff:after_cutoff + both]
    rows_event = early[:after_event]
    df.loc[rows_event, "feature_time"] = df.loc[rows_event, "event_time"] + pd.Timedelta(seconds=1)
    df.loc[rows_cut, "feature_time"] = cutoff + pd.Timedelta(minutes=30)
    df.loc[rows_both, "feature_time"] = df.loc[rows_both, "event_time"] + pd.Timedelta(hours=1)
    path = write(df, tmp_path)

    result = check(path, pit=point_in_time(feature_cutoff=cutoff),
                   thresholds=QualityThresholds(null_rate_overrides={"label": 0.2},
                                                max_leaking_rows=max_leaking_rows))["leakage"]

    assert result.evidence["leaking_rows"] == expected_total
    assert result.evidence["after_event_time"] == after_event + both
    assert result.evidence["after_feature_cutoff"] == after_cutoff + both
    assert result.status is status


def test_leakage_is_inconclusive_without_a_feature_time_column(tmp_path):
    path = write(clean_frame().drop(columns="feature_time"), tmp_path)

    result = check(path, pit=point_in_time(feature_time_column=None))["leakage"]

    assert result.status is CheckStatus.INCONCLUSIVE
    assert "feature_time_column" in result.reason


@pytest.mark.parametrize(
    ("stale_hours", "max_lag", "status"),
    [
        (0, 48.0, CheckStatus.PASS),
        (46, 48.0, CheckStatus.PASS),
        (48, 48.0, CheckStatus.FAIL),
        (120, 48.0, CheckStatus.FAIL),
        (120, 200.0, CheckStatus.PASS),
    ],
)
def test_stale_data_fails_freshness(tmp_path, stale_hours, max_lag, status):
    df = clean_frame()
    # The newest event is already 1 h old; push everything back by stale_hours more.
    for col in ("event_time", "feature_time"):
        df[col] = df[col] - pd.Timedelta(hours=stale_hours)
    path = write(df, tmp_path)

    result = check(path, thresholds=QualityThresholds(max_refresh_lag_hours=max_lag,
                                                      null_rate_overrides={"label": 0.2}))["freshness"]

    assert result.status is status
    assert result.evidence["lag_hours"] == pytest.approx(stale_hours + 1, abs=1 / 3600)
    assert result.evidence["newest_event"] == df["event_time"].max().isoformat()


def test_events_after_as_of_fail_freshness_with_their_count(tmp_path):
    df = clean_frame()
    df.loc[:8, "event_time"] = AS_OF + pd.Timedelta(hours=3)
    df.loc[:8, "feature_time"] = AS_OF - pd.Timedelta(hours=3)
    path = write(df, tmp_path)

    result = check(path)["freshness"]

    assert result.status is CheckStatus.FAIL
    assert result.evidence["rows_after_as_of"] == 9
    assert "9 row(s)" in result.reason


def test_an_as_of_after_the_check_time_fails_freshness(tmp_path):
    path = write(clean_frame(), tmp_path)

    result = check(path, now=AS_OF - timedelta(days=1))["freshness"]

    assert result.status is CheckStatus.FAIL
    assert "after the check time" in result.reason


def test_an_immature_label_is_flagged_with_its_exact_count(tmp_path):
    df = clean_frame()
    recent = df.index[df["event_time"] > AS_OF - timedelta(days=DELAY_DAYS)].to_numpy()[:23]
    df.loc[recent, "label"] = 1
    path = write(df, tmp_path)

    result = check(path)["label_maturity"]

    assert result.status is CheckStatus.FAIL
    assert result.evidence["immature_rows"] == 23
    assert "23 labelled row(s)" in result.reason
    assert {row["id"] for row in result.evidence["sample"]} <= set(recent.tolist())


@pytest.mark.parametrize("delay_days", [0, 3, 7, 30])
def test_label_maturity_matches_a_brute_force_count_for_any_delay(tmp_path, delay_days):
    df = clean_frame()
    df["label"] = pd.Series(np.arange(len(df)) % 2, dtype="Int64")
    path = write(df, tmp_path)
    # Independent reference: a plain Python loop over the rows.
    brute = sum(1 for t in df["event_time"] if t + timedelta(days=delay_days) > AS_OF)

    result = check(path, label_delay=delay_days, pit=point_in_time(label_window_end=AS_OF))["label_maturity"]

    assert result.evidence["immature_rows"] == brute
    assert result.status is (CheckStatus.FAIL if brute else CheckStatus.PASS)
    assert (brute == 0) is (delay_days == 0)


def test_labels_outside_the_label_window_warn(tmp_path):
    path = write(clean_frame(), tmp_path)

    result = check(path, pit=point_in_time(label_window_start=AS_OF - timedelta(days=30)))["label_maturity"]

    assert result.status is CheckStatus.WARN
    assert result.evidence["labelled_rows_outside_window"] > 0


@pytest.mark.parametrize(
    ("keys_duplicated", "copies", "max_duplicate_keys", "duplicate_rows", "status"),
    [
        (5, 3, 0, 10, CheckStatus.FAIL),
        (1, 2, 0, 1, CheckStatus.FAIL),
        (4, 2, 4, 4, CheckStatus.PASS),
        (0, 0, 0, 0, CheckStatus.PASS),
    ],
)
def test_duplicate_keys_are_counted(tmp_path, keys_duplicated, copies, max_duplicate_keys, duplicate_rows, status):
    df = clean_frame()
    # Overwrite the ids of the next rows so that each chosen key appears `copies` times.
    for k in range(keys_duplicated):
        start = 100 + k * copies
        df.loc[start:start + copies - 1, "id"] = 10_000 + k
    path = write(df, tmp_path)

    result = check(path, thresholds=QualityThresholds(max_duplicate_keys=max_duplicate_keys,
                                                      null_rate_overrides={"label": 0.2}))["duplicate_keys"]

    assert result.evidence["duplicate_rows"] == duplicate_rows
    assert result.evidence["duplicated_keys"] == keys_duplicated
    assert result.status is status
    if keys_duplicated:
        assert result.evidence["sample"][0]["n"] == copies


def test_duplicates_over_a_composite_key_ignore_rows_with_a_null_key_part(tmp_path):
    df = clean_frame()
    df["shop"] = np.where(df["id"] % 2 == 0, "a", "b")
    df.loc[:9, "id"] = 500  # ten rows on id 500: shop a five times, shop b five times
    df["shop"] = df["shop"].astype(object)
    df.loc[20:22, "shop"] = None
    path = write(df, tmp_path)

    result = check(path, keys=("id", "shop"),
                   thresholds=QualityThresholds(null_rate_overrides={"label": 0.2, "shop": 0.01}))["duplicate_keys"]

    # Brute force: pandas duplicated over rows whose key parts are all present.
    present = df.dropna(subset=["id", "shop"])
    assert result.evidence["duplicate_rows"] == int(present.duplicated(["id", "shop"]).sum())
    assert result.evidence["rows_with_null_key"] == 3


def test_duplicate_keys_are_inconclusive_without_key_columns(tmp_path):
    path = write(clean_frame(), tmp_path)

    result = check(path, keys=())["duplicate_keys"]

    assert result.status is CheckStatus.INCONCLUSIVE


def test_a_null_heavy_column_fails_with_its_rate(tmp_path):
    df = clean_frame()
    df.loc[df.sample(frac=0.3, random_state=3).index, "amount"] = np.nan
    path = write(df, tmp_path)

    result = check(path)["null_rate"]

    rate = df["amount"].isna().mean()
    assert result.status is CheckStatus.FAIL
    assert result.evidence["rates"]["amount"] == pytest.approx(rate)
    assert result.evidence["failing"] == [{"column": "amount", "rate": pytest.approx(rate), "allowed": 0.02}]
    assert f"{rate:.2%}" in result.reason
    assert set(result.evidence["rates"]) == set(df.columns)


@pytest.mark.parametrize(
    ("missing_due", "status"),
    [(0, CheckStatus.PASS), (30, CheckStatus.PASS), (60, CheckStatus.FAIL)],
)
def test_a_label_counts_as_missing_only_once_its_delay_has_passed(tmp_path, missing_due, status):
    df = clean_frame()  # every label not yet due is already missing, ~7% of the rows
    due = df["event_time"] <= AS_OF - timedelta(days=DELAY_DAYS)
    df.loc[df.index[due][:missing_due], "label"] = pd.NA
    path = write(df, tmp_path)

    result = check(path)["null_rate"]

    assert result.evidence["label"]["due_rows"] == int(due.sum())
    assert result.evidence["label"]["missing_when_due"] == missing_due
    assert result.evidence["label"]["rate_when_due"] == pytest.approx(missing_due / due.sum())
    assert result.evidence["null_counts"]["label"] == int(df["label"].isna().sum()) == missing_due + (~due).sum()
    assert result.status is status
    if status is CheckStatus.FAIL:
        assert "'label' 3.2" in result.reason and "among rows whose label is due" in result.reason


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"label": 0.2, "amount": 0.35}, CheckStatus.PASS),
        ({"label": 0.2, "amount": 0.25}, CheckStatus.FAIL),
        ({"label": 0.2, "amount": 0.35, "amuont": 0.5}, CheckStatus.WARN),
        ({"amount": 0.35}, CheckStatus.PASS),
    ],
)
def test_null_rate_overrides_apply_per_column(tmp_path, overrides, status):
    df = clean_frame()
    df.loc[df.sample(frac=0.3, random_state=3).index, "amount"] = np.nan
    path = write(df, tmp_path)

    result = check(path, thresholds=QualityThresholds(null_rate_overrides=overrides))["null_rate"]

    assert result.status is status


@pytest.mark.parametrize(
    ("dtype", "values", "compatible"),
    [
        ("int", np.arange(5, dtype="int32"), True),
        ("int", np.arange(5, dtype="float64"), False),
        ("float", np.arange(5, dtype="float32"), True),
        ("float", np.arange(5, dtype="int64"), True),
        ("float", list("abcde"), False),
        ("bool", [True, False] * 2 + [True], True),
        ("bool", np.arange(5), False),
        ("category", pd.Categorical(list("ababa")), True),
        ("category", np.arange(5), True),
        ("string", list("abcde"), True),
        ("string", np.arange(5), False),
        ("timestamp", pd.date_range("2024-01-01", periods=5, tz="UTC"), True),
        ("timestamp", list("abcde"), False),
    ],
)
def test_schema_accepts_only_compatible_types(tmp_path, dtype, values, compatible):
    df = clean_frame(5)
    df["x"] = values
    path = write(df, tmp_path)
    feats = [FeatureDefinition(name="x", dtype=dtype, source="s", transformation="raw", owner="dana")]

    result = check(path, feats=feats, thresholds=QualityThresholds(max_null_rate=1.0))["schema"]

    assert result.status is (CheckStatus.PASS if compatible else CheckStatus.FAIL)
    assert result.evidence["features"][0]["compatible"] is compatible


def test_schema_names_a_missing_feature_and_dependent_checks_say_why_they_cannot_run(tmp_path):
    path = write(clean_frame().drop(columns=["amount", "event_time"]), tmp_path)

    results = check(path)

    assert results["schema"].status is CheckStatus.FAIL
    assert "feature 'amount' is missing" in results["schema"].reason
    assert "event_time_column 'event_time' is missing" in results["schema"].reason
    for name in ("freshness", "label_maturity", "leakage"):
        assert results[name].status is CheckStatus.INCONCLUSIVE
        assert "'event_time'" in results[name].reason


@pytest.mark.parametrize(
    "content",
    [b"this is not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1", b""],
)
def test_an_unreadable_file_fails_every_check_instead_of_crashing(tmp_path, content):
    path = tmp_path / "broken.parquet"
    path.write_bytes(content)

    results = check(path)

    assert [r.status for r in results.values()] == [CheckStatus.FAIL] * len(CHECK_NAMES)
    assert all("broken.parquet" in r.reason for r in results.values())


@pytest.mark.parametrize("name", ["missing.parquet", "data.xlsx", "part[1].parquet"])
def test_a_missing_or_unsupported_file_fails_clearly(tmp_path, name):
    path = tmp_path / name
    if name != "missing.parquet":
        clean_frame(10).to_parquet(path)

    results = check(path)

    assert all(r.status is CheckStatus.FAIL and "Unreadable data" in r.reason for r in results.values())


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns", "utc", "date"])
def test_time_checks_count_exactly_whatever_the_timestamp_type(tmp_path, unit):
    df = clean_frame()
    df.loc[:36, "feature_time"] = df.loc[:36, "event_time"] + pd.Timedelta(days=1)
    df.loc[37:39, "label"] = 1
    df.loc[37:39, "event_time"] = AS_OF - timedelta(days=2)
    df.loc[37:39, "feature_time"] = AS_OF - timedelta(days=3)
    expected_leaks = int(((df["feature_time"] > df["event_time"]) | (df["feature_time"] > AS_OF)).sum())
    for col in ("event_time", "feature_time"):
        if unit == "utc":
            df[col] = df[col].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
        elif unit == "date":
            df[col] = df[col].dt.floor("D").dt.date
        else:
            df[col] = df[col].astype(f"datetime64[{unit}]")
    path = write(df, tmp_path)
    pit = point_in_time(as_of=AS_OF.replace(tzinfo=UTC), feature_cutoff=AS_OF.replace(tzinfo=UTC))

    results = check(path, pit=pit, thresholds=QualityThresholds(null_rate_overrides={"label": 0.2},
                                                                max_refresh_lag_hours=72))

    assert results["schema"].status is CheckStatus.PASS
    assert results["freshness"].status is CheckStatus.PASS
    assert results["label_maturity"].evidence["immature_rows"] == 3
    assert results["leakage"].evidence["leaking_rows"] == expected_leaks == 37


def test_hostile_column_names_are_quoted_not_executed(tmp_path):
    hostile = 'id"); DROP TABLE snapshot_data; --'
    df = clean_frame().rename(columns={"id": hostile, "amount": 'amount "usd"'})
    df.loc[:2, hostile] = 0
    path = write(df, tmp_path)
    feats = [FeatureDefinition(name='amount "usd"', dtype="float", source="s", transformation="raw", owner="d")]

    results = check(path, feats=feats, keys=(hostile,))

    assert results["schema"].status is CheckStatus.PASS
    assert results["duplicate_keys"].evidence["duplicate_rows"] == 2
    assert results["leakage"].status is CheckStatus.PASS


@pytest.mark.parametrize("key", ["n", "_n", "count(*)"])
def test_a_key_column_named_like_an_internal_alias_still_counts_duplicates(tmp_path, key):
    df = clean_frame().rename(columns={"id": key})
    df.loc[:3, key] = 0
    path = write(df, tmp_path)

    result = check(path, keys=(key,))["duplicate_keys"]

    assert result.evidence["duplicate_rows"] == 3
    assert result.evidence["sample"][0][key] == 0


@pytest.mark.parametrize("name", ["", "bad\x00name", "line\nbreak"])
def test_quote_ident_refuses_names_that_cannot_be_columns(name):
    with pytest.raises(ValueError, match="invalid column name"):
        quote_ident(name)


def test_checks_match_a_brute_force_reference_on_messy_data(tmp_path):
    rng = np.random.default_rng(11)
    df = clean_frame(5000, seed=11)
    df["label"] = pd.Series(rng.integers(0, 2, len(df)), dtype="Int64").mask(rng.random(len(df)) < 0.1)
    df.loc[rng.random(len(df)) < 0.05, "channel"] = None
    df.loc[rng.choice(len(df), 300), "id"] = rng.integers(0, 50, 300)
    shift = pd.to_timedelta(rng.normal(-3600, 3600, len(df)), unit="s")
    df["feature_time"] = (df["event_time"] + shift).dt.floor("s")
    path = write(df, tmp_path)
    cutoff = AS_OF - timedelta(days=1)

    results = check(path, pit=point_in_time(feature_cutoff=cutoff))

    immature = sum(1 for t, y in zip(df["event_time"], df["label"])
                   if y is not pd.NA and t + timedelta(days=DELAY_DAYS) > AS_OF)
    leaks = sum(1 for f, e in zip(df["feature_time"], df["event_time"]) if f > e or f > cutoff)
    assert results["label_maturity"].evidence["immature_rows"] == immature
    assert results["leakage"].evidence["leaking_rows"] == leaks
    assert results["duplicate_keys"].evidence["duplicate_rows"] == int(df["id"].duplicated().sum())
    assert results["null_rate"].evidence["null_counts"] == {c: int(df[c].isna().sum()) for c in df.columns}
