"""Test the training runner: specs parsed strictly, runs recorded with every field, bad input refused, and the
reproducibility check passing and failing."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import T0, make_model, make_training_snapshot
from lifecycle import cli
from lifecycle.models import CheckStatus, canonical_json, sha256_hex
from lifecycle.runs import last_check, check_reproducibility, reproduce, spec_yaml
from lifecycle.training import (
    TrainingError, code_version, load_model, package_versions, parse_spec, run_spec, train,
)

FEATURES = ["amount", "n_items", "channel", "is_intl"]
ESTIMATORS = {
    "LogisticRegression": ("onehot_scaled", {"C": 0.5, "max_iter": 300}),
    "HistGradientBoostingClassifier": ("ordinal", {"max_iter": 15, "learning_rate": 0.2, "early_stopping": False}),
}


def spec_doc(snapshot: str, estimator: str = "LogisticRegression", **changes) -> dict:
    encoder, params = ESTIMATORS[estimator]
    doc = {"model": "fraud", "snapshot": snapshot, "features": list(FEATURES), "encoder": encoder,
           "estimator": {"name": "clf", "class": estimator, "params": dict(params)}, "seed": 11,
           "created_by": "m@x.test"}
    doc.update(changes)
    return doc


@pytest.fixture
def snap(store):
    store.put_model(make_model())
    return make_training_snapshot(store)


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Count concordant positive/negative pairs, ties one half: the definition of ROC AUC."""
    pos, neg = p[y == 1], p[y == 0]
    wins = sum(float((q > neg).sum()) + 0.5 * float((q == neg).sum()) for q in pos)
    return wins / (len(pos) * len(neg))


def held_out(store, snapshot, fraction: float = 0.2) -> pd.DataFrame:
    """Return the validation rows by reading the Parquet file with pandas: labelled, by time, last fraction."""
    frame = pd.read_parquet(store.data_root / snapshot.files[0].path)
    frame = frame[frame["label"].notna()].sort_values("event_time", kind="stable")
    return frame.iloc[int(len(frame) * (1 - fraction)):]


# ---------------------------------------------------------------- the run record


def test_a_run_is_recorded_with_every_field(store, snap):
    spec = parse_spec(spec_doc(snap.digest))

    run = run_spec(store, spec, now=T0)

    stored = store.artifact(run.digest)
    assert stored == run
    assert (run.model, run.created_by, run.created_at, run.snapshot) == ("fraud", "m@x.test", T0, snap.digest)
    assert run.code_version == code_version() and run.code_version != ""
    assert run.estimator == "LogisticRegression" and run.seed == 11 and run.features == FEATURES
    assert run.parameters == {"C": 0.5, "max_iter": 300, "encoder": "onehot_scaled", "split": "time",
                              "validation_fraction": 0.2}
    assert run.dependencies == package_versions() and "scikit-learn" in run.dependencies
    assert run.lock_digest == sha256_hex(canonical_json(run.dependencies))
    assert set(run.validation_metrics) == {"roc_auc", "log_loss"}
    assert {(p.metric, p.split) for p in run.experiment_log} == {
        (m, s) for m in ("roc_auc", "log_loss") for s in ("train", "validation")}
    blob = (store.data_root / run.model_artifact.uri).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == run.model_artifact.digest
    assert run.spec == spec.document() and parse_spec(run.spec) == spec
    assert run.duration_s > 0 and "duration_s" not in run.body()
    assert store.children(snap.digest) == [(run.digest, "snapshot")]


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_the_model_digest_is_stable_across_two_runs_with_the_same_seed(store, snap, tmp_path, estimator):
    spec = parse_spec(spec_doc(snap.digest, estimator))

    first, _ = train(spec, snap, store.data_root, tmp_path / "one", now=T0)
    second, _ = train(spec, snap, store.data_root, tmp_path / "two", now=T0)
    other_seed, _ = train(parse_spec(spec_doc(snap.digest, estimator, seed=12)), snap, store.data_root,
                          tmp_path / "three", now=T0)

    assert first.model_artifact.digest == second.model_artifact.digest
    assert first.digest == second.digest
    assert other_seed.model_artifact.digest != first.model_artifact.digest


def test_the_model_digest_does_not_depend_on_the_threads_the_host_offers(store, snap, tmp_path):
    from threadpoolctl import threadpool_limits
    spec = parse_spec(spec_doc(snap.digest, "HistGradientBoostingClassifier"))

    with threadpool_limits(limits=2):
        two, _ = train(spec, snap, store.data_root, tmp_path / "two", now=T0)
    with threadpool_limits(limits=1):
        one, _ = train(spec, snap, store.data_root, tmp_path / "one", now=T0)

    assert two.model_artifact.digest == one.model_artifact.digest


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_validation_metrics_match_a_brute_force_reference_on_the_held_out_rows(store, snap, estimator):
    run = run_spec(store, parse_spec(spec_doc(snap.digest, estimator)), now=T0)
    rows = held_out(store, snap)
    y = rows["label"].to_numpy().astype(int)

    p = load_model(run, store.data_root).predict_proba(rows[FEATURES])[:, 1]

    assert run.validation_metrics["roc_auc"] == pytest.approx(brute_auc(y, p), abs=1e-12)
    expected_loss = -np.mean([math.log(q) if t else math.log(1 - q) for t, q in zip(y, p)])
    assert run.validation_metrics["log_loss"] == pytest.approx(expected_loss, abs=1e-9)


@pytest.mark.parametrize("estimator, steps", [("LogisticRegression", "growing subsets of rows"),
                                              ("HistGradientBoostingClassifier", "boosting iterations")])
def test_the_experiment_log_ends_at_the_final_models_validation_metrics(store, snap, estimator, steps):
    run = run_spec(store, parse_spec(spec_doc(snap.digest, estimator)), now=T0)

    validation = [p for p in run.experiment_log if p.split == "validation"]
    last_step = max(p.step for p in validation)
    at_end = {p.metric: p.value for p in validation if p.step == last_step}

    assert at_end == pytest.approx(run.validation_metrics, abs=1e-9)
    assert len({p.step for p in validation}) >= 5, steps
    if estimator == "HistGradientBoostingClassifier":
        assert last_step == 15


# ---------------------------------------------------------------- bad input: refused, nothing recorded


BAD_SPECS = [
    ("an estimator outside the allow-list", lambda d: {**d, "estimator": {"name": "clf", "class": "SVC"}},
     "estimator.class: 'SVC' is not allowed"),
    ("a class path instead of a name", lambda d: {**d, "estimator": {"name": "clf", "class": "os.system"}},
     "estimator.class: 'os.system' is not allowed"),
    ("an unknown parameter", lambda d: {**d, "estimator": {**d["estimator"], "params": {"max_depthh": 3}}},
     "estimator.params.max_depthh: not a parameter of LogisticRegression"),
    ("a parameter out of range", lambda d: {**d, "estimator": {**d["estimator"], "params": {"max_iter": -1}}},
     "estimator.params.max_iter: The 'max_iter' parameter of LogisticRegression must be"),
    ("a disallowed solver value", lambda d: {**d, "estimator": {**d["estimator"], "params": {"solver": "evil"}}},
     "estimator.params.solver:"),
    ("a random_state beside the seed", lambda d: {**d, "estimator": {**d["estimator"], "params": {"random_state": 1}}},
     "estimator.params.random_state: set the spec's seed instead"),
    ("an unknown field", lambda d: {**d, "learning": "fast"}, "learning: Extra inputs are not permitted"),
    ("a seed given as text", lambda d: {**d, "seed": "eleven"}, "seed: Input should be a valid integer"),
    ("a feature listed twice", lambda d: {**d, "features": ["amount", "amount"]},
     "features[1]: 'amount' is listed twice"),
    ("an unknown metric", lambda d: {**d, "metrics": ["accuracy"]}, "metrics[0]:"),
    ("a split fraction of one", lambda d: {**d, "split": {"kind": "time", "validation_fraction": 1.0}},
     "split.validation_fraction:"),
    ("a snapshot the store does not hold", lambda d: {**d, "snapshot": "ab" * 32},
     "snapshot: the store holds no artifact ababababab…"),
    ("a feature missing from the data", lambda d: {**d, "features": ["amount", "merchant"]},
     "features[1]: 'merchant' is not a column of the data of snapshot 'txns-1'"),
    ("the label as a feature", lambda d: {**d, "features": ["amount", "label"]},
     "features[1]: 'label' is the label of snapshot 'txns-1'"),
    ("a column that is not a declared feature", lambda d: {**d, "features": ["amount", "id"]},
     "features[1]: 'id' is in the data but not a declared feature"),
    ("a timestamp feature", lambda d: {**d, "features": ["amount", "seen_at"]},
     "features[1]: 'seen_at' is a timestamp"),
    ("a baseline run the store does not hold", lambda d: {**d, "baseline_run": "cd" * 32},
     "baseline_run: the store holds no artifact cdcdcdcdcd…"),
    ("a baseline that is a snapshot", lambda d: {**d, "baseline_run": d["snapshot"]},
     "baseline_run:"),
    ("a model the store does not hold", lambda d: {**d, "model": "churn"}, "model: no model 'churn'"),
]


@pytest.mark.parametrize("case, change, message", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_a_bad_spec_is_refused_naming_the_field_and_records_nothing(store, snap, tmp_path, capsys, case, change,
                                                                      message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(change(spec_doc(snap.digest))))
    before = store.counts()

    code = cli.main(["--db", store.path, "train", "--spec", str(path)])

    assert code == 2
    assert message in capsys.readouterr().err
    assert store.counts() == before
    assert not (store.data_root / "models").exists()


@pytest.mark.parametrize("text, message", [
    ("model: fraud\nmodel: fraud\n", "duplicate key"),
    ("seed: .nan\n", "is not a valid number"),
    ("- just\n- a list\n", "spec: the top level must be a mapping"),
    ("model: [unclosed\n", "invalid YAML"),
])
def test_a_malformed_spec_file_is_refused_before_the_store_is_opened(tmp_path, capsys, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    db = tmp_path / "never" / "seamline.duckdb"

    code = cli.main(["--db", str(db), "train", "--spec", str(path)])

    assert code == 2
    assert message in capsys.readouterr().err
    assert not db.exists()


def test_a_changed_data_file_is_refused_and_records_nothing(store, snap, tmp_path, capsys):
    data = store.data_root / snap.files[0].path
    frame = pd.read_parquet(data)
    frame.loc[0, "amount"] = 1e6
    frame.to_parquet(data, index=False)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_doc(snap.digest)))
    before = store.counts()

    code = cli.main(["--db", store.path, "train", "--spec", str(path)])

    assert code == 2
    assert "snapshot: data file 'txns-1.parquet' changed" in capsys.readouterr().err
    assert store.counts() == before


def test_the_cli_trains_from_a_yaml_spec_and_prints_the_run(store, snap, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_doc(snap.digest)))

    code = cli.main(["--db", store.path, "train", "--spec", str(path)])

    assert code == 0
    out = json.loads(capsys.readouterr().out)
    run = store.artifact(out["run"])
    assert run.model_artifact.digest == out["model_artifact"]["digest"]
    assert out["validation_metrics"] == run.validation_metrics


def test_the_spec_shown_on_the_run_page_parses_back_to_the_same_spec(store, snap):
    spec = parse_spec(spec_doc(snap.digest, "HistGradientBoostingClassifier"))
    run = run_spec(store, spec, now=T0)

    again = parse_spec(spec_yaml(run))

    assert again == spec


# ---------------------------------------------------------------- reproducibility


def test_reproducibility_passes_bit_identical_and_is_recorded(store, snap):
    run = run_spec(store, parse_spec(spec_doc(snap.digest, "HistGradientBoostingClassifier")), now=T0)
    seen = []

    result = check_reproducibility(store, run.digest, "m@x.test", T0, progress=lambda f, t: seen.append(f))

    assert result.status == CheckStatus.PASS
    assert result.reason.startswith(f"Bit-identical: the re-run produced model digest {run.model_artifact.digest[:10]}")
    assert result.evidence["run_digest_reproduced"] is True
    assert seen and seen[-1] == 1.0
    recorded = last_check(store, run.digest)
    assert (recorded.actor, recorded.at, recorded.result) == ("m@x.test", T0, result)
    assert store.verify_audit()[0]


def test_reproducibility_fails_with_the_reason_after_the_data_file_is_altered(store, snap):
    run = run_spec(store, parse_spec(spec_doc(snap.digest)), now=T0)
    data = store.data_root / snap.files[0].path
    frame = pd.read_parquet(data)
    frame.loc[frame.index[-1], "n_items"] = 99
    frame.to_parquet(data, index=False)

    result = check_reproducibility(store, run.digest, "m@x.test", T0)

    assert result.status == CheckStatus.FAIL
    assert "Could not re-run the spec: snapshot: data file 'txns-1.parquet' changed" in result.reason
    assert last_check(store, run.digest).result.status == CheckStatus.FAIL


@pytest.mark.parametrize("change, status, reason", [
    (lambda r: {"model_artifact": r.model_artifact.model_copy(update={"digest": "0" * 64})}, CheckStatus.PASS,
     "The model bytes differ (0000000000 →"),
    (lambda r: {"model_artifact": r.model_artifact.model_copy(update={"digest": "0" * 64}),
                "validation_metrics": {m: v + 5e-7 for m, v in r.validation_metrics.items()}}, CheckStatus.PASS,
     "agree within 1e-06"),
    (lambda r: {"validation_metrics": {m: v + 1e-3 for m, v in r.validation_metrics.items()}}, CheckStatus.FAIL,
     "Not reproduced: roc_auc"),
    (lambda r: {"spec": {}}, CheckStatus.INCONCLUSIVE, "recorded without its spec"),
    (lambda r: {"spec": {**r.spec, "estimator": {"name": "clf", "class": "SVC"}}}, CheckStatus.FAIL,
     "The recorded spec no longer validates: estimator.class: 'SVC' is not allowed"),
])
def test_reproducibility_judges_digest_and_metrics_against_the_tolerance(store, snap, change, status, reason):
    run = run_spec(store, parse_spec(spec_doc(snap.digest)), now=T0)
    recorded = run.model_copy(update=change(run))

    result = reproduce(store, recorded, tolerance=1e-6)

    assert result.status == status
    assert reason in result.reason
    assert result.thresholds == {"bit_tolerance": 1e-9, "metric_tolerance": 1e-6}


def test_the_cli_reproduce_exits_zero_when_the_run_comes_back(store, snap, capsys):
    run = run_spec(store, parse_spec(spec_doc(snap.digest)), now=T0)

    code = cli.main(["--db", store.path, "reproduce", run.digest[:12], "--actor", "ci"])

    assert code == 0
    assert capsys.readouterr().out.startswith("pass: Bit-identical")
    assert last_check(store, run.digest).actor == "ci"


def test_the_demo_runs_carry_specs_that_parse_back(demo_store):
    runs = demo_store.artifacts(kind="training_run")

    assert len(runs) == 4
    for run in runs:
        spec = parse_spec(run.spec)
        assert (spec.snapshot, spec.features, spec.seed, spec.estimator.cls) == \
            (run.snapshot, run.features, run.seed, run.estimator)
