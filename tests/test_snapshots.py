"""Test building, verifying and comparing dataset snapshots from real files and YAML manifests."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lifecycle.models import CheckStatus, DataFile, DatasetSnapshot, QualityThresholds, canonical_json, sha256_hex
from lifecycle.snapshots import (
    SnapshotComparison,
    SnapshotError,
    build_snapshot,
    compare_snapshots,
    data_digest,
    file_sha256,
    parse_manifest,
    population_stability_index,
    resolve,
    stored_path,
    verify_files,
)

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
NOW = AS_OF + timedelta(hours=3)
THRESHOLDS = QualityThresholds(null_rate_overrides={"label": 0.2})

MANIFEST = """\
model: fraud
name: transactions-2024-06
created_by: dana@example.com
sources:
  - name: transactions
    uri: warehouse://payments/transactions
    version: "2024.06.01"
    extracted_at: 2024-06-01T01:00:00Z
    legal_usage: fraud scoring; no marketing
  - name: chargebacks
    uri: warehouse://payments/chargebacks
    version: "v7"
    extracted_at: 2024-06-01T01:00:00Z
    legal_usage: fraud scoring
label:
  column: label
  definition: chargeback filed within 7 days of the transaction
  delay_days: 7
point_in_time:
  as_of: 2024-06-01T00:00:00Z
  feature_cutoff: 2024-06-01T00:00:00Z
  label_window_start: 2024-02-01T00:00:00Z
  label_window_end: 2024-05-25T00:00:00Z
  event_time_column: event_time
  feature_time_column: feature_time
features:
  - {name: amount, dtype: float, source: transactions, transformation: raw amount in EUR, owner: dana}
  - {name: n_items, dtype: int, source: transactions, transformation: count of basket items, owner: dana}
  - {name: channel, dtype: category, source: transactions, transformation: raw, owner: dana}
key_columns: [id]
"""


def frame(n: int = 3000, seed: int = 5, amount_scale: float = 1.0) -> pd.DataFrame:
    """Return clean data matching MANIFEST: fresh, mature labels, no leaks, unique ids."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(1, 110 * 24, n))[::-1]
    offsets[-1] = 1.0
    event_time = pd.Series(AS_OF.replace(tzinfo=None) - pd.to_timedelta(offsets, unit="h"))
    event_time = event_time.dt.floor("s").astype("datetime64[us]")
    mature = event_time <= AS_OF.replace(tzinfo=None) - timedelta(days=7)
    return pd.DataFrame({
        "id": np.arange(n, dtype="int64"),
        "event_time": event_time,
        "feature_time": event_time - pd.Timedelta(minutes=5),
        "amount": rng.lognormal(3, 1, n) * amount_scale,
        "n_items": rng.integers(1, 9, n),
        "channel": rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2]),
        "label": pd.Series((rng.random(n) < 0.1).astype("int64"), dtype="Int64").where(mature),
    })


def write(df: pd.DataFrame, path: Path) -> Path:
    """Write df as a real Parquet or CSV file, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def manifest(**changes) -> dict:
    """Return MANIFEST parsed, with top-level fields replaced."""
    return {**parse_manifest(MANIFEST), **changes}


def build(path: Path, root: Path, m: dict | None = None) -> DatasetSnapshot:
    """Build a snapshot of path under root with the default thresholds and clock."""
    return build_snapshot(path, m or manifest(), data_root=root, thresholds=THRESHOLDS, now=NOW)


# ---------------------------------------------------------------- files and digests


@pytest.mark.parametrize("size", [0, 10, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 17])
def test_file_sha256_matches_hashlib_across_chunk_boundaries(tmp_path, size):
    path = tmp_path / "blob.bin"
    content = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(content)

    digest = file_sha256(path)

    assert digest == hashlib.sha256(content).hexdigest()


def test_data_digest_hashes_the_sorted_path_and_sha256_pairs():
    files = [DataFile(path="b.parquet", sha256="b" * 64, bytes=1), DataFile(path="a.parquet", sha256="a" * 64, bytes=2)]

    digest = data_digest(files)

    expected = hashlib.sha256(b'[["a.parquet","' + b"a" * 64 + b'"],["b.parquet","' + b"b" * 64 + b'"]]').hexdigest()
    assert digest == expected == data_digest(list(reversed(files)))


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("snap/a.parquet", "ROOT/snap/a.parquet"),
        ("a.parquet", "ROOT/a.parquet"),
        ("/elsewhere/a.parquet", "/elsewhere/a.parquet"),
    ],
)
def test_resolve_reads_relative_paths_under_the_data_root(tmp_path, stored, expected):
    path = resolve(stored, tmp_path)

    assert path == Path(expected.replace("ROOT", str(tmp_path)))


@pytest.mark.parametrize("stored", ["../secrets.parquet", "snap/../../x.parquet"])
def test_resolve_refuses_relative_paths_that_leave_the_data_root(tmp_path, stored):
    with pytest.raises(SnapshotError, match="leaves the data root"):
        resolve(stored, tmp_path)


def test_stored_path_is_relative_under_the_root_and_absolute_outside(tmp_path):
    root = tmp_path / "root"
    inside, outside = root / "snap" / "a.parquet", tmp_path / "other" / "b.parquet"

    paths = stored_path(inside, root), stored_path(outside, root)

    assert paths == ("snap/a.parquet", outside.resolve().as_posix())


# ---------------------------------------------------------------- manifest


def test_a_valid_manifest_parses_to_a_dict():
    parsed = parse_manifest(MANIFEST)

    assert parsed["name"] == "transactions-2024-06"
    assert parsed["features"][2]["dtype"] == "category"
    assert parsed["point_in_time"]["as_of"] == AS_OF


def _edit(old: str, new: str) -> str:
    assert old in MANIFEST
    return MANIFEST.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MANIFEST + "name: again\n", "manifest line 31: duplicate key 'name'"),
        (_edit("    version: \"v7\"\n", "    version: \"v7\"\n    version: v8\n"), "duplicate key 'version'"),
        (_edit("dtype: int,", "dtype: integer,"), "features[1].dtype: Input should be 'int', 'float'"),
        (_edit("delay_days: 7", "delay_days: soon"), "label.delay_days: Input should be a valid integer"),
        (_edit("delay_days: 7", "delay_days: -1"), "label.delay_days: Input should be greater than or equal to 0"),
        (_edit('version: "v7"', "version: 7"), "sources[1].version: Input should be a valid string"),
        (_edit("  column: label\n", ""), "label.column: Field required"),
        (_edit("key_columns: [id]", "key_columns: [id]\nlable: x"), "lable: Extra inputs are not permitted"),
        (_edit("owner: dana}\n  - {name: channel", "owner: dana, colour: red}\n  - {name: channel"),
         "features[1].colour: Extra inputs are not permitted"),
        (_edit("{name: n_items", "{name: amount"), "features[1].name: 'amount' is declared twice"),
        (_edit("label_window_start: 2024-02-01", "label_window_start: 2024-05-30"),
         "point_in_time: Value error, label_window_start must not be after label_window_end"),
        (_edit("key_columns: [id]", "key_columns: [id, id]"), "key_columns[1]: 'id' is declared twice"),
        (_edit("sources:\n", "sources: []\nx:\n"), "sources: List should have at least 1 item"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("model: [unclosed\n", "manifest: invalid YAML at line 2"),
        ("base: &b {model: m}\nother: *b\n", "YAML aliases are not allowed"),
        ("model: m\n1: x\n", "key 1 is not a string"),
        ("model: m\non: x\n", "key True is not a string"),
        ("# pad\n" * 200_000, "larger than 1 MB"),
        ("model: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
    ],
)
def test_a_bad_manifest_is_refused_with_an_error_naming_the_field(text, message):
    with pytest.raises(SnapshotError) as err:
        parse_manifest(text)

    assert message in str(err.value)


def test_build_snapshot_names_the_field_of_a_bad_manifest_dict(tmp_path):
    path = write(frame(), tmp_path / "data.parquet")
    m = manifest()
    m["features"] = [*m["features"][:2], {**m["features"][2], "dtype": "decimal"}]

    with pytest.raises(SnapshotError, match=r"^features\[2\]\.dtype: Input should be"):
        build(path, tmp_path, m)


# ---------------------------------------------------------------- build


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_snapshot_records_schema_rows_label_rate_files_and_passing_checks(tmp_path, suffix):
    df = frame()
    path = write(df, tmp_path / "snap" / f"data{suffix}")

    snap = build(path, tmp_path)

    assert [(c.name, c.dtype) for c in snap.schema_][:4] == [
        ("id", "BIGINT"), ("event_time", "TIMESTAMP"), ("feature_time", "TIMESTAMP"), ("amount", "DOUBLE")]
    assert snap.row_count == len(df)
    assert snap.label_rate == pytest.approx(df["label"].mean())
    assert snap.files == [DataFile(path=f"snap/data{suffix}", sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                   bytes=path.stat().st_size)]
    assert snap.data_digest == data_digest(snap.files)
    assert {c.name: c.status for c in snap.quality_checks} == {
        name: CheckStatus.PASS for name in
        ("schema", "null_rate", "duplicate_keys", "freshness", "label_maturity", "leakage")}
    assert snap.created_at == NOW and snap.created_by == "dana@example.com"


def test_a_snapshot_round_trips_through_json_with_the_same_digest(tmp_path):
    df = frame()
    df.loc[:40, "feature_time"] = df.loc[:40, "event_time"] + pd.Timedelta(hours=1)
    snap = build(write(df, tmp_path / "data.parquet"), tmp_path)

    again = DatasetSnapshot.model_validate_json(snap.model_dump_json(by_alias=True))

    assert again == snap
    assert again.digest == snap.digest == sha256_hex(canonical_json(snap.body()))
    assert again.quality_checks[5].evidence["leaking_rows"] == 41


def test_building_twice_from_the_same_file_gives_the_same_digest(tmp_path):
    df = frame()
    df.loc[:40, "feature_time"] = df.loc[:40, "event_time"] + pd.Timedelta(hours=1)
    path = write(df, tmp_path / "data.parquet")

    first, second = build(path, tmp_path), build(path, tmp_path)

    assert first.digest == second.digest


def test_a_directory_of_parts_is_one_snapshot_with_one_file_entry_per_part(tmp_path):
    df = frame()
    write(df.iloc[:1000], tmp_path / "snap" / "part-0.parquet")
    write(df.iloc[1000:], tmp_path / "snap" / "part-1.parquet")

    snap = build(tmp_path / "snap", tmp_path)

    assert [f.path for f in snap.files] == ["snap/part-0.parquet", "snap/part-1.parquet"]
    assert snap.row_count == len(df)


def test_a_file_outside_the_data_root_is_stored_with_its_absolute_path(tmp_path):
    path = write(frame(), tmp_path / "outside" / "data.parquet")

    snap = build(path, tmp_path / "root")

    assert snap.files[0].path == path.resolve().as_posix()
    assert verify_files(snap, tmp_path / "root").status is CheckStatus.PASS


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        ("n_items", "features[1].name"),
        ("label", "label.column"),
        ("id", "key_columns[0]"),
        ("event_time", "point_in_time.event_time_column"),
        ("feature_time", "point_in_time.feature_time_column"),
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_column_missing_from_the_data_file_is_named(tmp_path, drop, field, suffix):
    path = write(frame().drop(columns=drop), tmp_path / f"data{suffix}")

    with pytest.raises(SnapshotError) as err:
        build(path, tmp_path)

    assert str(err.value) == f"{field}: column '{drop}' is not in the data file data{suffix}"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nothing.parquet", None, "does not exist"),
        ("garbage.parquet", b"not parquet", "cannot read garbage.parquet"),
        ("data.json", b"{}", "neither Parquet"),
    ],
)
def test_an_unreadable_data_file_is_refused_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(SnapshotError, match=message) as err:
        build(path, tmp_path)

    assert str(err.value).startswith("data: ")


def test_a_failing_check_is_recorded_not_refused(tmp_path):
    df = frame()
    df["n_items"] = df["n_items"].astype(str)
    path = write(df, tmp_path / "data.parquet")

    snap = build(path, tmp_path)

    schema = next(c for c in snap.quality_checks if c.name == "schema")
    assert schema.status is CheckStatus.FAIL
    assert "feature 'n_items' is declared int but the file has VARCHAR" in schema.reason


# ---------------------------------------------------------------- verify


def test_unchanged_files_reproduce_the_data_digest(tmp_path):
    snap = build(write(frame(), tmp_path / "snap" / "data.parquet"), tmp_path)

    result = verify_files(snap, tmp_path)

    assert result.status is CheckStatus.PASS
    assert result.evidence["data_digest"] == snap.data_digest


def test_a_changed_file_fails_verification_naming_the_file(tmp_path):
    path = write(frame(), tmp_path / "snap" / "data.parquet")
    snap = build(path, tmp_path)
    df = frame()
    df.loc[7, "amount"] = 1.0
    write(df, path)

    result = verify_files(snap, tmp_path)

    assert result.status is CheckStatus.FAIL
    assert result.reason.startswith("data file 'snap/data.parquet' changed: sha256 ")
    assert result.evidence["files"][0]["status"] == "changed"
    assert result.evidence["data_digest"] != snap.data_digest


def test_a_missing_file_fails_verification_naming_the_file(tmp_path):
    df = frame()
    write(df.iloc[:1000], tmp_path / "snap" / "part-0.parquet")
    write(df.iloc[1000:], tmp_path / "snap" / "part-1.parquet")
    snap = build(tmp_path / "snap", tmp_path)
    (tmp_path / "snap" / "part-1.parquet").unlink()

    result = verify_files(snap, tmp_path)

    assert result.status is CheckStatus.FAIL
    assert result.reason == "data file 'snap/part-1.parquet' is missing"
    assert [f["status"] for f in result.evidence["files"]] == ["ok", "missing"]


def test_a_tampered_data_digest_fails_verification(tmp_path):
    snap = build(write(frame(), tmp_path / "data.parquet"), tmp_path)
    tampered = snap.model_copy(update={"data_digest": "0" * 64})

    result = verify_files(tampered, tmp_path)

    assert result.status is CheckStatus.FAIL
    assert "recorded data digest 0000000000 does not match" in result.reason


# ---------------------------------------------------------------- compare


@pytest.fixture
def pair(tmp_path) -> tuple[DatasetSnapshot, DatasetSnapshot, Path]:
    """Return snapshot a and a later b with a new column, a new source version and a shifted amount."""
    a = build(write(frame(seed=1), tmp_path / "a" / "data.parquet"), tmp_path)
    df_b = frame(n=3500, seed=2, amount_scale=3.0)
    df_b["device"] = np.where(df_b["id"] % 3 == 0, "ios", "android")
    m = manifest()
    m["sources"] = [{**m["sources"][0], "version": "2024.07.01"}, m["sources"][1]]
    m["features"] = [*m["features"], {"name": "device", "dtype": "category", "source": "transactions",
                                      "transformation": "raw", "owner": "sam"}]
    b = build(write(df_b, tmp_path / "b" / "data.parquet"), tmp_path, m)
    return a, b, tmp_path


def test_compare_finds_an_added_column_and_feature(pair):
    a, b, root = pair

    cmp = compare_snapshots(a, b, root)

    assert [(c.name, c.dtype) for c in cmp.added_columns] == [("device", "VARCHAR")]
    assert cmp.removed_columns == [] and cmp.retyped_columns == []
    assert [(f.name, f.change) for f in cmp.feature_changes] == [("device", "added")]


def test_compare_finds_a_source_version_change(pair):
    a, b, root = pair

    cmp = compare_snapshots(a, b, root)

    assert [(s.name, s.change, s.fields) for s in cmp.source_changes] == [("transactions", "changed", ["version"])]
    assert (cmp.source_changes[0].a.version, cmp.source_changes[0].b.version) == ("2024.06.01", "2024.07.01")


def test_compare_lists_label_and_point_in_time_changes(tmp_path):
    path = write(frame(), tmp_path / "data.parquet")
    m = manifest()
    m["label"] = {**m["label"], "delay_days": 14}
    a, b = build(path, tmp_path), build(path, tmp_path, m)

    cmp = compare_snapshots(a, b, tmp_path)

    assert cmp.other_changes == ["label.delay_days: 7 -> 14"]
    assert all(s.psi == 0 for s in cmp.shifts)


def test_compare_reports_row_count_and_label_rate_change(pair):
    a, b, root = pair

    cmp = compare_snapshots(a, b, root)

    assert (cmp.row_count_a, cmp.row_count_b, cmp.row_count_change) == (3000, 3500, 500)
    assert cmp.label_rate_change == pytest.approx(b.label_rate - a.label_rate)


def test_a_shifted_feature_has_psi_above_025_and_unshifted_ones_stay_below_01(pair):
    a, b, root = pair

    cmp = compare_snapshots(a, b, root)

    psi = {s.feature: s.psi for s in cmp.shifts}
    assert psi["amount"] > 0.25
    assert psi["n_items"] < 0.1
    assert psi["channel"] < 0.1
    assert "device" not in psi  # only in b: a feature change, not a shift
    frame_ = cmp.shift_frame()
    assert list(frame_.columns) == ["feature", "kind", "psi", "status", "reason"]
    assert frame_.iloc[0][["feature", "kind", "status"]].tolist() == ["amount", "numeric", "fail"]


def test_numeric_bins_come_from_a_deciles_and_psi_matches_numpy(pair):
    a, b, root = pair
    df_a, df_b = pd.read_parquet(root / "a" / "data.parquet"), pd.read_parquet(root / "b" / "data.parquet")

    shift = next(s for s in compare_snapshots(a, b, root).shifts if s.feature == "amount")

    # Independent reference: numpy deciles of a (linear, like quantile_cont) and searchsorted.
    edges = np.quantile(df_a["amount"], np.arange(1, 10) / 10)
    pa = np.bincount(np.searchsorted(edges, df_a["amount"], side="left"), minlength=10) / len(df_a)
    pb = np.bincount(np.searchsorted(edges, df_b["amount"], side="left"), minlength=10) / len(df_b)
    pa, pb = np.maximum(pa, 1e-4), np.maximum(pb, 1e-4)
    assert [x.a_count for x in shift.bins] == [300] * 10
    assert shift.psi == pytest.approx(float(np.sum((pb - pa) * np.log(pb / pa))))


def test_categorical_shift_reports_the_shares_of_both_snapshots(tmp_path):
    df_a = frame(seed=3)
    df_b = frame(seed=4)
    df_b["channel"] = np.random.default_rng(0).choice(["web", "app", "pos", "kiosk"], len(df_b),
                                                      p=[0.2, 0.2, 0.2, 0.4])
    a = build(write(df_a, tmp_path / "a.parquet"), tmp_path)
    b = build(write(df_b, tmp_path / "b.parquet"), tmp_path)

    shift = next(s for s in compare_snapshots(a, b, tmp_path).shifts if s.feature == "channel")

    shares = {x.label: (x.a_share, x.b_share) for x in shift.bins}
    assert set(shares) == {"web", "app", "pos", "other"}
    assert shares["web"] == pytest.approx(((df_a["channel"] == "web").mean(), (df_b["channel"] == "web").mean()))
    assert shares["other"][0] == 0 and shares["other"][1] == pytest.approx((df_b["channel"] == "kiosk").mean())
    assert shift.kind == "categorical" and shift.psi > 0.25 and shift.status is CheckStatus.FAIL


@pytest.mark.parametrize("name", ["n", "cat", "kind", 'odd "name"'])
def test_categorical_shift_works_for_any_column_name(tmp_path, name):
    df = frame(seed=3).rename(columns={"channel": name})
    m = manifest()
    m["features"] = [*m["features"][:2], {**m["features"][2], "name": name}]
    a = build(write(df, tmp_path / "a.parquet"), tmp_path, m)

    shift = compare_snapshots(a, a, tmp_path).shifts[2]

    assert (shift.feature, shift.kind, shift.psi) == (name, "categorical", 0.0)
    assert {x.label for x in shift.bins} == {"web", "app", "pos"}


def test_compare_does_not_compute_shift_over_files_that_changed(pair):
    a, b, root = pair
    (root / "b" / "data.parquet").unlink()

    cmp = compare_snapshots(a, b, root)

    assert cmp.shifts == []
    assert "b: data file 'b/data.parquet' is missing" in cmp.shift_note
    assert cmp.files_b.status is CheckStatus.FAIL
    assert cmp.shift_frame().empty


def test_a_comparison_round_trips_through_json(pair):
    a, b, root = pair
    cmp = compare_snapshots(a, b, root)

    again = SnapshotComparison.model_validate_json(cmp.model_dump_json())

    assert again == cmp
    assert len(cmp.shares_frame()) == sum(len(s.bins) for s in cmp.shifts)


@pytest.mark.parametrize(
    ("a_counts", "b_counts"),
    [([50, 50], [50, 50]), ([90, 10], [10, 90]), ([100, 0], [50, 50]), ([1, 2, 3, 4], [4, 3, 2, 1])],
)
def test_population_stability_index_matches_its_formula(a_counts, b_counts):
    psi = population_stability_index(a_counts, b_counts)

    pa = [max(c / sum(a_counts), 1e-4) for c in a_counts]
    pb = [max(c / sum(b_counts), 1e-4) for c in b_counts]
    assert psi == pytest.approx(sum((q - p) * math.log(q / p) for p, q in zip(pa, pb)))


def test_the_strict_loader_reads_a_valid_manifest_like_safe_load():
    strict = parse_manifest(MANIFEST)

    assert strict == yaml.safe_load(MANIFEST)
