"""The Datasets service and page: snapshots from uploads and the CLI, listing, decisions, comparison, AppTest."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from conftest import ROOT, T0, make_model
from lifecycle import datasets
from lifecycle.cli import main
from lifecycle.identity import user_for
from lifecycle.models import CheckStatus, short
from lifecycle.policy import default_policy
from lifecycle.snapshots import SnapshotError
from lifecycle.store import NotFound

AS_OF = T0 - timedelta(hours=2)
NOW = T0
DATA_OWNER = "d@x.test"
APP = str(ROOT / "app.py")

MANIFEST = f"""\
model: fraud
name: card transactions
created_by: {DATA_OWNER}
sources:
  - name: ledger
    uri: warehouse://payments/ledger
    version: "2026.09.30"
    extracted_at: {AS_OF.isoformat()}
    legal_usage: fraud scoring; no marketing
  - name: device_vendor
    uri: https://vendor.example/api
    version: v2.0
    extracted_at: {AS_OF.isoformat()}
    legal_usage: fraud scoring
label:
  column: label
  definition: chargeback within 7 days
  delay_days: 7
point_in_time:
  as_of: {AS_OF.isoformat()}
  feature_cutoff: {AS_OF.isoformat()}
  label_window_start: {(AS_OF - timedelta(days=60)).isoformat()}
  label_window_end: {(AS_OF - timedelta(days=7)).isoformat()}
  event_time_column: event_time
  feature_time_column: feature_time
features:
  - {{name: amount, dtype: float, source: ledger, transformation: amount in EUR, owner: {DATA_OWNER}}}
  - {{name: channel, dtype: category, source: ledger, transformation: raw, owner: {DATA_OWNER}}}
  - {{name: device_risk, dtype: float, source: device_vendor, transformation: vendor score, owner: {DATA_OWNER}}}
key_columns: [id]
"""


def manifest_text(**changes) -> str:
    """Return MANIFEST with top-level fields replaced (None removes a field)."""
    doc = yaml.safe_load(MANIFEST)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def frame(n: int = 2000, seed: int = 3, leaks: int = 0) -> pd.DataFrame:
    """Return data matching MANIFEST: mature labels, fresh events, unique ids; `leaks` rows stamped late."""
    rng = np.random.default_rng(seed)
    naive = AS_OF.replace(tzinfo=None)
    hours = np.sort(rng.uniform(0.5, 59 * 24, n))[::-1]
    event_time = pd.Series(naive - pd.to_timedelta(hours, unit="h")).dt.floor("s").astype("datetime64[us]")
    mature = event_time <= naive - timedelta(days=7)
    feature_time = event_time - pd.Timedelta(minutes=5)
    feature_time.iloc[:leaks] = event_time.iloc[:leaks] + pd.Timedelta(hours=30)
    return pd.DataFrame({
        "id": np.arange(n, dtype="int64"), "event_time": event_time, "feature_time": feature_time,
        "amount": rng.lognormal(3, 1, n), "channel": rng.choice(["web", "app", "pos"], n),
        "device_risk": rng.random(n),
        "label": pd.Series((rng.random(n) < 0.08).astype("int64"), dtype="Int64").where(mature),
    })


def parquet_bytes(df: pd.DataFrame, tmp_path: Path) -> bytes:
    path = tmp_path / "upload-source.parquet"
    df.to_parquet(path, index=False)
    return path.read_bytes()


@pytest.fixture
def fraud(store):
    """The fresh store with the 'fraud' model, its team and its default policy."""
    store.put_model(make_model())
    store.put_policy(default_policy("fraud", "r@x.test", T0 - timedelta(days=30)), "r@x.test")
    return store


def data_owner(store):
    return user_for(store, DATA_OWNER)


def written(store) -> tuple[dict, list[Path]]:
    """Return what the store and the upload folder hold, to show that nothing was written."""
    uploads = store.data_root / datasets.UPLOAD_DIR
    return store.counts(), sorted(p for p in uploads.rglob("*") if p.is_file()) if uploads.exists() else []


def upload(store, df: pd.DataFrame, tmp_path: Path, name: str = "txns.parquet", now=NOW, **changes):
    return datasets.create_snapshot_from_upload(store, data_owner(store), parquet_bytes(df, tmp_path), name,
                                                manifest_text(**changes), now)


# ---------------------------------------------------------------- creating snapshots from uploads


def test_an_upload_is_written_under_the_data_root_and_stored_as_a_checked_snapshot(fraud, tmp_path):
    df = frame()
    content = parquet_bytes(df, tmp_path)

    created = datasets.create_snapshot_from_upload(fraud, data_owner(fraud), content, "txns.parquet",
                                                   manifest_text(), NOW)

    snap = fraud.artifact(created.digest)
    stored = fraud.data_root / created.path
    assert created.new and created.path.startswith("uploads/fraud/") and created.path.endswith("-txns.parquet")
    assert stored.read_bytes() == content
    assert snap.row_count == len(df)
    assert snap.label_rate == pytest.approx(df["label"].dropna().mean(), abs=1e-12)
    assert [c.name for c in snap.quality_checks] == ["schema", "null_rate", "duplicate_keys", "freshness",
                                                     "label_maturity", "leakage"]
    assert all(c.status == CheckStatus.PASS for c in snap.quality_checks), [c.reason for c in snap.quality_checks]
    assert datasets.reverify(fraud, created.digest).status == CheckStatus.PASS
    assert [e.actor for e in fraud.audit_events(created.digest)] == [DATA_OWNER]
    assert "all 6 checks pass" in created.line


def test_a_csv_upload_makes_a_snapshot_with_the_same_counts(fraud, tmp_path):
    df = frame(n=500)
    path = tmp_path / "txns.csv"
    df.to_csv(path, index=False)

    created = datasets.create_snapshot_from_upload(fraud, data_owner(fraud), path.read_bytes(), "txns.csv",
                                                   manifest_text(), NOW)

    snap = fraud.artifact(created.digest)
    assert created.path.endswith("-txns.csv")
    assert snap.row_count == 500
    assert snap.label_rate == pytest.approx(df["label"].dropna().mean(), abs=1e-12)


def test_an_injected_leak_is_stored_as_a_failing_check_with_its_exact_row_count(fraud, tmp_path):
    df = frame(leaks=23)
    expected = sum(1 for f, e in zip(df["feature_time"], df["event_time"]) if f > e)

    created = upload(fraud, df, tmp_path)

    leakage = next(c for c in created.checks if c.name == "leakage")
    assert expected == 23
    assert leakage.status == CheckStatus.FAIL and leakage.evidence["leaking_rows"] == 23
    assert len(datasets.sample_rows(leakage)) == 5
    assert "1 check(s) fail: leakage" in created.line


@pytest.mark.parametrize("changes, field", [
    ({"label": None}, "label: Field required"),
    ({"features": [{"name": "amount", "dtype": "decimal", "source": "ledger", "transformation": "raw",
                    "owner": "d"}]}, "features[0].dtype"),
    ({"point_in_time": {"as_of": "yesterday"}}, "point_in_time.as_of"),
    ({"model": "no-such-model"}, "model: no model 'no-such-model'"),
    ({"features": [{"name": "amount_eur", "dtype": "float", "source": "ledger", "transformation": "raw",
                    "owner": "d"}]}, "features[0].name: column 'amount_eur' is not in the data file"),
    ({"label": {"column": "is_fraud", "definition": "x", "delay_days": 7}}, "label.column: column 'is_fraud'"),
    ({"key_columns": ["id", "txn_id"]}, "key_columns[1]: column 'txn_id'"),
    ({"created_by": "someone@else.test"}, "created_by: the manifest says 'someone@else.test'"),
    ({"unexpected": 1}, "unexpected: Extra inputs are not permitted"),
])
def test_a_bad_manifest_is_refused_naming_the_field_and_nothing_is_written(fraud, tmp_path, changes, field):
    before = written(fraud)

    with pytest.raises(SnapshotError) as err:
        upload(fraud, frame(n=300), tmp_path, **changes)

    assert field in str(err.value)
    assert written(fraud) == before


@pytest.mark.parametrize("manifest, field", [
    ("model: fraud\nname: x\n  bad: indentation", "manifest: invalid YAML"),
    ("model: fraud\nmodel: churn\n", "manifest line 2: duplicate key 'model'"),
    ("- just\n- a list\n", "manifest: the top level must be a mapping"),
    (b"\xff\xfe not utf-8", "manifest: not UTF-8"),
])
def test_a_manifest_that_is_not_a_yaml_mapping_is_refused(fraud, tmp_path, manifest, field):
    before = written(fraud)

    with pytest.raises(SnapshotError) as err:
        datasets.create_snapshot_from_upload(fraud, data_owner(fraud), parquet_bytes(frame(n=50), tmp_path),
                                             "txns.parquet", manifest, NOW)

    assert field in str(err.value)
    assert written(fraud) == before


@pytest.mark.parametrize("content, name, field", [
    (b"", "txns.parquet", "data: the file is empty"),
    (b"id,amount\n1,2\n", "txns.txt", "data file name: 'txns.txt' is neither Parquet"),
    (b"id,amount\n1,2\n", "my data;rm -rf.csv", "data file name"),
    (b"id,amount\n1,2\n", "*.parquet", "data file name"),
    (b"this is not parquet", "txns.parquet", "data: cannot read"),
    (b"x" * 101, "txns.csv", "data: 101 bytes; the limit is 100"),
])
def test_a_bad_data_file_is_refused_naming_it_and_nothing_is_written(fraud, content, name, field):
    before = written(fraud)

    with pytest.raises(SnapshotError) as err:
        datasets.create_snapshot_from_upload(fraud, data_owner(fraud), content, name, manifest_text(), NOW,
                                             max_bytes=100)

    assert field in str(err.value)
    assert written(fraud) == before


def test_an_upload_name_with_folders_is_reduced_to_its_file_name(fraud, tmp_path):
    created = upload(fraud, frame(n=300), tmp_path, name="../../outside/txns.parquet")

    assert created.path.startswith("uploads/fraud/") and ".." not in created.path
    assert (fraud.data_root / created.path).is_file()


@pytest.mark.parametrize("email", ["m@x.test", "p@x.test", "n@x.test", "nobody@x.test"])
def test_only_a_data_owner_may_create_a_snapshot_from_an_upload(fraud, tmp_path, email):
    before = written(fraud)

    with pytest.raises(PermissionError) as err:
        datasets.create_snapshot_from_upload(fraud, user_for(fraud, email), parquet_bytes(frame(n=50), tmp_path),
                                             "txns.parquet", manifest_text(created_by=email), NOW)

    assert f"{email} does not hold the Data owner role on 'fraud'" in str(err.value)
    assert written(fraud) == before


def test_a_failed_upload_keeps_a_data_file_an_earlier_snapshot_uses(fraud, tmp_path):
    df = frame(n=400)
    first = upload(fraud, df, tmp_path)

    with pytest.raises(SnapshotError):
        upload(fraud, df, tmp_path, key_columns=["txn_id"])

    assert datasets.reverify(fraud, first.digest).status == CheckStatus.PASS


def test_the_same_data_uploaded_twice_shares_one_file_and_makes_two_snapshots(fraud, tmp_path):
    df = frame(n=400)

    first = upload(fraud, df, tmp_path, now=NOW)
    second = upload(fraud, df, tmp_path, now=NOW + timedelta(minutes=5))

    assert first.digest != second.digest and first.path == second.path
    assert written(fraud)[1] == [fraud.data_root / first.path]


# ---------------------------------------------------------------- listing, status, detail, decisions


@pytest.mark.parametrize("verdicts, status", [
    ([], "awaiting decision"),
    (["usable"], "usable"),
    (["usable", "blocked"], "blocked"),
    (["blocked", "usable"], "usable"),
])
def test_the_newest_data_owner_decision_sets_a_snapshots_status(fraud, tmp_path, verdicts, status):
    created = upload(fraud, frame(n=300), tmp_path)
    for i, verdict in enumerate(verdicts):
        datasets.decide_snapshot(fraud, data_owner(fraud), created.digest, verdict, f"reason {i}",
                                 NOW + timedelta(minutes=i))

    result = datasets.snapshot_status(fraud, created.digest)

    assert result.status == status
    assert (result.decision is None) == (not verdicts)


def test_the_snapshot_list_is_newest_first_with_size_label_rate_checks_and_decision(fraud, tmp_path):
    old_df, new_df = frame(n=300, seed=1), frame(n=450, seed=2, leaks=4)
    old = upload(fraud, old_df, tmp_path, name="old.parquet", now=NOW - timedelta(days=1))
    new = upload(fraud, new_df, tmp_path, name="new.parquet", now=NOW)
    datasets.decide_snapshot(fraud, data_owner(fraud), new.digest, "blocked", "late feature stamps", NOW)

    table = datasets.snapshots_frame(fraud, "fraud")

    assert list(table["digest"]) == [short(new.digest), short(old.digest)]
    assert list(table["rows"]) == [450, 300]
    assert table["label_rate"].tolist() == pytest.approx([new_df["label"].dropna().mean(),
                                                          old_df["label"].dropna().mean()])
    assert list(table["leakage"]) == ["fail", "pass"]
    assert list(table["decision"]) == ["blocked", "awaiting decision"]
    assert list(datasets.snapshot_choices(fraud, "fraud")) == [new.digest, old.digest]


def test_a_snapshot_detail_shows_sources_rules_features_schema_and_files(fraud, tmp_path):
    created = upload(fraud, frame(n=300), tmp_path)

    detail = datasets.snapshot_detail(fraud, created.digest)

    assert list(detail.sources_frame()["version"]) == ["2026.09.30", "v2.0"]
    assert list(detail.features_frame()["name"]) == ["amount", "channel", "device_risk"]
    roles = dict(zip(detail.schema_frame()["column"], detail.schema_frame()["role"]))
    assert roles == {"id": "key", "event_time": "event time", "feature_time": "feature time", "amount": "feature",
                     "channel": "feature", "device_risk": "feature", "label": "label"}
    assert detail.rules()["label delay (days)"] == 7 and detail.rules()["row count"] == "300"
    assert list(detail.files_frame()["path"]) == [created.path]


def test_a_digest_that_is_not_a_snapshot_is_refused(store, chain):
    with pytest.raises(NotFound, match="not a dataset snapshot"):
        datasets.snapshot_detail(store, chain["cand"].digest)


@pytest.mark.parametrize("email", ["m@x.test", "a@x.test", "p@x.test", "r@x.test", "n@x.test"])
def test_a_user_without_the_data_owner_role_cannot_decide_on_a_snapshot(fraud, tmp_path, email):
    created = upload(fraud, frame(n=300), tmp_path)
    before = fraud.counts()

    with pytest.raises(PermissionError) as err:
        datasets.decide_snapshot(fraud, user_for(fraud, email), created.digest, "usable", "looks fine", NOW)

    assert f"{email} does not hold the Data owner role on 'fraud'" in str(err.value)
    assert fraud.counts() == before


@pytest.mark.parametrize("verdict, comment, message", [
    ("blocked", "  ", "say why in the comment"),
    ("approve", "ok", "verdict: 'approve' is not a snapshot decision"),
])
def test_a_snapshot_decision_needs_a_snapshot_verdict_and_a_reason_to_block(fraud, tmp_path, verdict, comment,
                                                                             message):
    created = upload(fraud, frame(n=300), tmp_path)
    before = fraud.counts()

    with pytest.raises((PermissionError, ValueError), match=message):
        datasets.decide_snapshot(fraud, data_owner(fraud), created.digest, verdict, comment, NOW)

    assert fraud.counts() == before


def test_a_blocking_decision_binds_to_the_snapshot_digest_and_is_audited(fraud, tmp_path):
    created = upload(fraud, frame(n=300), tmp_path)

    decision = datasets.decide_snapshot(fraud, data_owner(fraud), created.digest, "blocked", "late stamps", NOW)

    event = fraud.audit_events(created.digest)[-1]
    assert decision.covered == {"snapshot": created.digest}
    assert event.action == "decision.blocked" and event.detail["comment"] == "late stamps"
    assert fraud.verify_audit()[0]


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes() + b"x"), "changed: sha256"),
    (lambda p: p.unlink(), "is missing"),
])
def test_re_verifying_a_changed_or_missing_file_fails_naming_it(fraud, tmp_path, damage, words):
    created = upload(fraud, frame(n=300), tmp_path)
    damage(fraud.data_root / created.path)

    result = datasets.reverify(fraud, created.digest)

    assert result.status == CheckStatus.FAIL
    assert f"data file '{created.path}'" in result.reason and words in result.reason


def test_comparing_two_snapshots_lists_source_and_feature_changes_and_the_count_change(fraud, tmp_path):
    a = upload(fraud, frame(n=300, seed=1), tmp_path, name="a.parquet", now=NOW - timedelta(days=1))
    doc = yaml.safe_load(MANIFEST)
    sources = doc["sources"]
    sources[1]["version"] = "v2.1"
    features = doc["features"][:2]
    b = upload(fraud, frame(n=360, seed=2), tmp_path, name="b.parquet", sources=sources, features=features)

    cmp = datasets.compare(fraud, a.digest, b.digest)
    changes = datasets.changes_frame(cmp)
    lines = datasets.comparison_lines(cmp)

    rows = {(r.part, r.name, r.change) for r in changes.itertuples()}
    assert ("source", "device_vendor", "changed") in rows and ("feature", "device_risk", "removed") in rows
    assert "version: v2.0 -> v2.1" in changes.set_index("name").loc["device_vendor", "detail"]
    assert lines[0] == "Rows: 300 → 360 (+60)"
    assert list(cmp.shift_frame()["feature"]).count("amount") == 1


@pytest.mark.parametrize("choices, digest, expected", [
    (["c", "b", "a"], "c", (1, 0)),
    (["c", "b", "a"], "b", (2, 1)),
    (["c", "b", "a"], "a", (2, 2)),
    (["only"], "only", (0, 0)),
])
def test_a_comparison_defaults_to_the_snapshot_before_the_selected_one(choices, digest, expected):
    assert datasets.compare_defaults(choices, digest) == expected


# ---------------------------------------------------------------- the CLI


def write_inputs(folder: Path, df: pd.DataFrame, **changes) -> tuple[Path, Path]:
    """Write a data file and its manifest into a folder outside the store's data root."""
    data = folder / "txns.parquet"
    df.to_parquet(data, index=False)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest_text(**changes))
    return data, manifest


def test_the_cli_creates_a_snapshot_from_a_file_and_a_manifest(fraud, tmp_path_factory, capsys):
    data, manifest = write_inputs(tmp_path_factory.mktemp("incoming"), frame(n=300))
    fraud.close()

    code = main(["--db", fraud.path, "snapshot", "create", "--data", str(data), "--manifest", str(manifest)])

    out = capsys.readouterr().out.splitlines()
    from lifecycle.store import Store
    reopened = Store(fraud.path)
    snap = reopened.artifact(out[0])
    assert code == 0 and snap.row_count == 300
    assert snap.files[0].path.startswith("uploads/fraud/")
    assert any(line.strip().startswith("pass") and "leakage" in line for line in out)
    reopened.close()


@pytest.mark.parametrize("changes, message", [
    ({"features": [{"name": "amount", "dtype": "money", "source": "l", "transformation": "t", "owner": "o"}]},
     "features[0].dtype"),
    ({"label": {"column": "is_fraud", "definition": "x", "delay_days": 7}}, "label.column: column 'is_fraud'"),
])
def test_the_cli_refuses_a_bad_manifest_naming_the_field_and_exits_non_zero(fraud, tmp_path_factory, capsys,
                                                                            changes, message):
    data, manifest = write_inputs(tmp_path_factory.mktemp("incoming"), frame(n=100), **changes)
    before = written(fraud)
    fraud.close()

    code = main(["--db", fraud.path, "snapshot", "create", "--data", str(data), "--manifest", str(manifest)])

    err = capsys.readouterr().err
    from lifecycle.store import Store
    reopened = Store(fraud.path)
    assert code != 0 and err.startswith("error: ") and message in err
    assert written(reopened) == before
    reopened.close()


def test_the_cli_module_exits_non_zero_when_the_data_file_is_missing(fraud, tmp_path_factory, tmp_path):
    _, manifest = write_inputs(tmp_path_factory.mktemp("incoming"), frame(n=10))
    fraud.close()

    result = subprocess.run([sys.executable, "-m", "lifecycle", "--db", fraud.path, "snapshot", "create",
                             "--data", str(tmp_path / "nope.parquet"), "--manifest", str(manifest)],
                            cwd=ROOT, capture_output=True, text=True)

    assert result.returncode != 0
    assert "--data" in result.stderr and "nope.parquet" in result.stderr


def test_the_cli_records_a_file_already_under_the_data_root_in_place(fraud, tmp_path, capsys):
    data = fraud.data_root / "landing" / "txns.parquet"
    data.parent.mkdir()
    frame(n=120).to_parquet(data, index=False)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(manifest_text())
    fraud.close()

    code = main(["--db", fraud.path, "snapshot", "create", "--data", str(data), "--manifest", str(manifest)])

    from lifecycle.store import Store
    reopened = Store(fraud.path)
    snap = reopened.artifact(capsys.readouterr().out.splitlines()[0])
    assert code == 0 and [f.path for f in snap.files] == ["landing/txns.parquet"]
    assert not (reopened.data_root / datasets.UPLOAD_DIR).exists()
    reopened.close()


def test_the_cli_verify_exits_one_when_a_file_changed(fraud, tmp_path, capsys):
    created = upload(fraud, frame(n=100), tmp_path)
    fraud.close()
    ok = main(["--db", fraud.path, "snapshot", "verify", created.digest])
    (fraud.data_root / created.path).write_bytes(b"tampered")

    bad = main(["--db", fraud.path, "snapshot", "verify", created.digest[:12]])

    assert (ok, bad) == (0, 1)
    assert "changed" in capsys.readouterr().out


# ---------------------------------------------------------------- the page (AppTest on the demo)


@pytest.fixture
def page(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(ROOT)

    def open_page(user: str = "dana@seamline.example", model: str = "card-fraud") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=90)
        at.session_state["demo_user"] = user
        at.session_state["model"] = model
        at.run()
        at.switch_page("pages/datasets.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return open_page


def table(at: AppTest, *columns: str) -> pd.DataFrame:
    """Return the first table on the page with these columns (read-only tables carry no key in AppTest)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def refresh_snapshot(demo_dir: Path) -> str:
    from lifecycle.store import Store
    s = Store(demo_dir / "seamline.duckdb")
    try:
        return next(a.digest for a in s.artifacts("card-fraud", "dataset_snapshot") if "refresh" in a.name)
    finally:
        s.close()


def test_the_page_lists_the_models_snapshots_newest_first(page):
    at = page()

    snapshots = table(at, "snapshot", "leakage", "decision")

    assert len(snapshots) == 3
    assert list(snapshots["as_of"]) == sorted(snapshots["as_of"], reverse=True)


def test_the_refresh_snapshot_shows_its_failing_leakage_check_and_the_sample_rows(page, demo_dir):
    at = page()

    at.selectbox(key="datasets_snapshot_card-fraud").select(refresh_snapshot(demo_dir)).run()

    leakage = [m.value for m in at.markdown if "leakage" in m.value and "material/cancel" in m.value]
    assert leakage and "37 row" in leakage[0]
    assert len(table(at, "txn_id", "event_time", "feature_time")) == 5


@pytest.mark.parametrize("user", ["ana@seamline.example", "milo@seamline.example", "paul@seamline.example"])
def test_a_user_without_the_data_owner_role_is_refused_with_the_reason_shown(page, demo_dir, user):
    at = page(user)
    at.selectbox(key="datasets_snapshot_card-fraud").select(refresh_snapshot(demo_dir)).run()
    at.radio(key="datasets_verdict").set_value("blocked")
    at.text_area(key="datasets_comment").input("leaks")

    at.button(key="datasets_decide").click().run()

    errors = " ".join(e.value for e in at.error)
    assert "Refused" in errors and "does not hold the Data owner role on 'card\\-fraud'" in errors
    assert not at.success
    assert table(at, "verdict", "user", "comment").empty


def test_the_data_owner_blocks_the_refresh_snapshot_and_the_map_shows_the_release_blocked(page, demo_dir):
    at = page()
    at.selectbox(key="datasets_snapshot_card-fraud").select(refresh_snapshot(demo_dir)).run()
    at.radio(key="datasets_verdict").set_value("blocked")
    at.text_area(key="datasets_comment").input("37 rows stamped after the transaction")

    at.button(key="datasets_decide").click().run()
    at.switch_page("pages/lifecycle_map.py").run()

    warning = " ".join(w.value for w in at.warning)
    assert "Next step blocked at **1. Dataset snapshot** (blocked)" in warning
    assert "37 rows stamped after the transaction" in warning


def test_compare_and_re_verify_show_their_results(page):
    at = page()

    at.button(key="datasets_compare").click().run()
    at.button(key="datasets_verify").click().run()

    assert len(table(at, "feature", "psi")) == 12
    assert "device_vendor" in set(table(at, "part", "name", "change")["name"])
    assert any("Reproducibility" in m.value and "reproduced" in m.value for m in at.markdown)


@pytest.mark.parametrize("user, created_by, outcome", [
    ("dana@seamline.example", "dana@seamline.example", "success"),
    ("ana@seamline.example", "ana@seamline.example", "does not hold the Data owner role"),
    ("dana@seamline.example", "milo@seamline.example", "created\\_by\\: the manifest says"),
])
def test_the_upload_form_stores_a_snapshot_or_shows_why_not(page, tmp_path, user, created_by, outcome):
    at = page(user)
    before = len(table(at, "snapshot", "leakage", "decision"))
    at.file_uploader(key="datasets_upload_data").upload("oct.parquet", parquet_bytes(frame(n=300), tmp_path))
    at.file_uploader(key="datasets_upload_manifest").upload(
        "oct.yaml", manifest_text(model="card-fraud", name="October upload", created_by=created_by).encode())
    at.run()

    at.button(key="datasets_upload_submit").click().run()

    after = len(table(at, "snapshot", "leakage", "decision"))
    if outcome == "success":
        assert "Stored snapshot" in at.success[0].value and after == before + 1
        assert "October upload" in at.subheader[0].value
    else:
        assert outcome in " ".join(e.value for e in at.error) and after == before

