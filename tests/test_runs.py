"""Test the runs service (list, detail, comparison, experiment-log figure) and the Training runs page."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss
from streamlit.testing.v1 import AppTest

from conftest import T0, make_entry, make_model, make_run, make_snapshot, make_training_snapshot
from lifecycle.models import CheckStatus
from lifecycle.run_charts import experiment_log_figure
from lifecycle.runs import (
    RunsError, check_reproducibility, compare_runs, comparison_choices, experiment_log_frame, run_detail,
    run_status, runs_frame,
)
from lifecycle.training import load_model, parse_spec, run_spec

APP = str(Path(__file__).resolve().parent.parent / "app.py")
FEATURES = ["amount", "n_items", "channel", "is_intl"]


def spec(snapshot: str, estimator: str = "LogisticRegression", fraction: float = 0.2, baseline: str | None = None,
         params: dict | None = None):
    defaults = {"LogisticRegression": {"C": 0.5}, "HistGradientBoostingClassifier": {"max_iter": 15,
                                                                                      "early_stopping": False}}
    return parse_spec({
        "model": "fraud", "snapshot": snapshot, "features": FEATURES,
        "encoder": "ordinal" if estimator.startswith("Hist") else "onehot_scaled",
        "estimator": {"name": "clf", "class": estimator, "params": params or defaults[estimator]},
        "split": {"kind": "time", "validation_fraction": fraction}, "seed": 3, "baseline_run": baseline,
        "created_by": "a@x.test"})


@pytest.fixture
def two_runs(store):
    """A baseline run on last month's snapshot and a candidate on this month's, with distinct row keys."""
    store.put_model(make_model())
    old = make_training_snapshot(store, "txns-old", seed=5, as_of=T0 - timedelta(days=30))
    new = make_training_snapshot(store, "txns-new", seed=6, as_of=T0, first_id=10_000)
    base = run_spec(store, spec(old.digest), now=T0 - timedelta(days=29))
    cand = run_spec(store, spec(new.digest, "HistGradientBoostingClassifier", baseline=base.digest), now=T0)
    return {"store": store, "old": old, "new": new, "base": base, "cand": cand}


def brute_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return sum(float((q > neg).sum()) + 0.5 * float((q == neg).sum()) for q in pos) / (len(pos) * len(neg))


def held_out(store, snapshot, fraction: float = 0.2) -> pd.DataFrame:
    frame = pd.read_parquet(store.data_root / snapshot.files[0].path)
    frame = frame[frame["label"].notna()].sort_values("event_time", kind="stable")
    return frame.iloc[int(len(frame) * (1 - fraction)):]


# ---------------------------------------------------------------- comparison


def test_metric_deltas_score_both_models_on_the_newer_snapshots_held_out_rows(two_runs):
    store, base, cand = two_runs["store"], two_runs["base"], two_runs["cand"]
    rows = held_out(store, two_runs["new"])
    y = rows["label"].to_numpy().astype(int)
    pa = load_model(base, store.data_root).predict_proba(rows[FEATURES])[:, 1]
    pb = load_model(cand, store.data_root).predict_proba(rows[FEATURES])[:, 1]

    cmp = compare_runs(store, base.digest, cand.digest)

    got = {m["metric"]: m for m in cmp.validation.metrics}
    assert got["roc_auc"]["a"] == pytest.approx(brute_auc(y, pa), abs=1e-12)
    assert got["roc_auc"]["b"] == pytest.approx(brute_auc(y, pb), abs=1e-12)
    assert got["roc_auc"]["delta"] == pytest.approx(brute_auc(y, pb) - brute_auc(y, pa), abs=1e-12)
    loss = lambda p: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))  # noqa: E731
    assert got["log_loss"]["delta"] == pytest.approx(loss(pb) - loss(pa), abs=1e-9)
    assert got["brier"]["a"] == pytest.approx(np.mean((pa - y) ** 2), abs=1e-12)
    assert got["brier"]["b"] == pytest.approx(brier_score_loss(y, pb), abs=1e-12)
    assert (cmp.validation.rows, cmp.validation.positives) == (len(y), int(y.sum()))
    assert (cmp.validation.split_of, cmp.validation.snapshot) == (cand.digest, two_runs["new"].digest)
    assert cmp.validation.status == CheckStatus.PASS and cmp.validation.overlap == 0
    assert f"the same {len(y):,} validation rows" in cmp.validation.reason


def test_the_parameter_and_package_diffs_mark_what_changed(two_runs):
    cmp = compare_runs(two_runs["store"], two_runs["base"].digest, two_runs["cand"].digest)

    params = {r["parameter"]: r for r in cmp.parameters}

    assert params["estimator"] == {"parameter": "estimator", "a": "LogisticRegression",
                                   "b": "HistGradientBoostingClassifier", "changed": True}
    assert params["estimator.params.C"] == {"parameter": "estimator.params.C", "a": "0.5", "b": "—", "changed": True}
    assert params["estimator.params.max_iter"]["b"] == "15"
    assert not params["seed"]["changed"] and not params["features"]["changed"]
    assert params["encoder"]["changed"] and params["snapshot"]["changed"]
    assert [r["parameter"] for r in cmp.parameters][0] == "estimator"
    assert not any(r["changed"] for r in cmp.packages)
    assert cmp.packages[0]["package"] == "code version"


def test_the_data_diff_says_which_snapshots_and_how_they_differ(two_runs):
    old, new = two_runs["old"], two_runs["new"]

    cmp = compare_runs(two_runs["store"], two_runs["base"].digest, two_runs["cand"].digest)

    assert not cmp.data.same_snapshot
    assert cmp.data.comparison is not None and cmp.data.comparison.row_count_change == new.row_count - old.row_count
    assert "B trained on 'txns-new'" in cmp.data.reason and "A on 'txns-old'" in cmp.data.reason
    assert {r["aspect"] for r in cmp.data.summary} >= {"snapshot", "rows", "label rate"}


def test_runs_on_the_same_snapshot_share_their_data(two_runs):
    store, new = two_runs["store"], two_runs["new"]
    other = run_spec(store, spec(new.digest, params={"C": 2.0}), now=T0 + timedelta(hours=1))

    cmp = compare_runs(store, two_runs["cand"].digest, other.digest)

    assert cmp.data.same_snapshot and cmp.data.comparison is None
    assert cmp.data.reason == f"Both runs trained on the same snapshot 'txns-new' ({new.digest[:10]})."


@pytest.mark.parametrize("a_fraction, b_fraction", [(0.1, 0.2), (0.05, 0.3), (0.5, 0.2), (0.2, 0.2)])
def test_the_overlap_counts_validation_rows_the_reference_run_trained_on(two_runs, a_fraction, b_fraction):
    store, new = two_runs["store"], two_runs["new"]
    a = run_spec(store, spec(new.digest, fraction=a_fraction), now=T0 + timedelta(hours=1))
    b = run_spec(store, spec(new.digest, fraction=b_fraction, params={"C": 2.0}), now=T0 + timedelta(hours=2))
    labelled = int(pd.read_parquet(store.data_root / new.files[0].path)["label"].notna().sum())
    expected = max(0, int(labelled * (1 - a_fraction)) - int(labelled * (1 - b_fraction)))

    cmp = compare_runs(store, a.digest, b.digest)

    assert cmp.validation.overlap == expected
    assert cmp.validation.status == (CheckStatus.WARN if expected else CheckStatus.PASS)
    assert (f"Caution: run A trained on {expected:,} of these rows" in cmp.validation.reason) == bool(expected)


def test_metric_deltas_are_inconclusive_when_the_host_run_carries_no_spec(two_runs):
    store = two_runs["store"]
    snap = make_snapshot(name="ingested")
    bare = make_run(snap)
    store.put_artifacts([snap, bare], "a@x.test")

    cmp = compare_runs(store, two_runs["cand"].digest, bare.digest)

    assert cmp.validation.status == CheckStatus.INCONCLUSIVE
    assert "carries no valid spec" in cmp.validation.reason and cmp.validation.metrics == []


def test_a_changed_data_file_is_noticed_by_the_next_comparison(two_runs):
    store, new = two_runs["store"], two_runs["new"]
    first = compare_runs(store, two_runs["base"].digest, two_runs["cand"].digest)
    path = store.data_root / new.files[0].path
    frame = pd.read_parquet(path)
    frame.loc[0, "amount"] = 123456.0
    frame.to_parquet(path, index=False)

    second = compare_runs(store, two_runs["base"].digest, two_runs["cand"].digest)

    assert first.validation.status == CheckStatus.PASS
    assert second.validation.status == CheckStatus.INCONCLUSIVE
    assert "data file 'txns-new.parquet' changed" in second.validation.reason


def test_runs_of_different_models_are_not_compared(two_runs):
    store = two_runs["store"]
    store.put_model(make_model("other"))
    snap = make_snapshot(model="other")
    run = make_run(snap)
    store.put_artifacts([snap, run], "a@x.test")

    with pytest.raises(RunsError, match="belong to different models"):
        compare_runs(store, run.digest, two_runs["cand"].digest)


def test_the_baseline_run_is_offered_first_for_comparison(two_runs):
    store = two_runs["store"]
    later = run_spec(store, spec(two_runs["new"].digest, params={"C": 3.0}), now=T0 + timedelta(days=1))

    choices = comparison_choices(store, two_runs["cand"].digest)

    assert list(choices.values()) == [two_runs["base"].digest, later.digest]
    assert next(iter(choices)).endswith("(its baseline)")


def test_a_second_check_of_the_same_run_is_refused_while_one_runs(two_runs):
    store, base = two_runs["store"], two_runs["base"]
    started, release, results = threading.Event(), threading.Event(), []

    def hold(fraction, text):
        started.set()
        release.wait(30)

    worker = threading.Thread(target=lambda: results.append(
        check_reproducibility(store, base.digest, "a@x.test", T0, progress=hold)))
    worker.start()
    started.wait(30)

    with pytest.raises(RunsError, match="already running"):
        check_reproducibility(store, base.digest, "m@x.test", T0)
    release.set()
    worker.join(60)

    assert results and results[0].status == CheckStatus.PASS


# ---------------------------------------------------------------- list, detail, figure (demo store)


@pytest.mark.parametrize("versions, aliases, evaluated, expected", [
    ([1], {"champion": 0}, False, "champion (v1)"),
    ([2], {"challenger": 0}, True, "challenger (v2)"),
    ([1, 2], {"challenger": 1, "champion": 0}, False, "champion (v1)"),
    ([3, 1], {}, True, "registered (v1, v3)"),
    ([2], {"champion": "another entry"}, False, "registered (v2)"),
    ([], {}, True, "evaluated"),
    ([], {}, False, "logged"),
])
def test_a_runs_status_says_where_it_stands(versions, aliases, evaluated, expected):
    run = make_run(make_snapshot())
    entries = [make_entry(run, None, v) for v in versions]
    pointers = {alias: entries[i].digest if isinstance(i, int) else "f" * 64 for alias, i in aliases.items()}

    status = run_status(entries, pointers, evaluated)

    assert status == expected


def test_the_runs_frame_shows_status_parameters_and_metrics(demo_store):
    frame = runs_frame(demo_store, "card-fraud")

    by_estimator = frame.set_index("estimator")

    assert by_estimator.loc["HistGradientBoostingClassifier", "status"] == "challenger (v2)"
    assert by_estimator.loc["LogisticRegression", "status"] == "champion (v1)"
    assert by_estimator.loc["LogisticRegression", "key parameters"] == "C=0.5, max_iter=500"
    assert set(frame["reproducibility"]) == {"not checked"}
    assert frame["validation roc_auc"].between(0.5, 1).all()


def test_the_candidates_detail_links_up_to_its_snapshot_and_down_to_entry_and_release(demo_store):
    cand = next(r for r in demo_store.artifacts("card-fraud", "training_run") if r.baseline_run)

    detail = run_detail(demo_store, cand.digest)

    relations = {(link.direction, link.relation.split(" (")[0]) for link in detail.lineage}
    assert ("up", "trained on") in relations and ("up", "compared against") in relations
    assert ("down", "registered as") in relations and ("down", "evaluated as candidate") in relations
    assert ("down", "released as candidate in card-fraud-v2") in relations
    assert detail.step_label == "boosting iteration" and "HistGradientBoostingClassifier" in detail.spec_yaml
    assert {r["item"] for r in detail.environment} >= {"code version", "scikit-learn", "seed"}


def test_a_run_id_that_is_not_a_run_is_refused(demo_store):
    snapshot = demo_store.artifacts("card-fraud", "dataset_snapshot")[0]

    with pytest.raises(RunsError, match="is a dataset snapshot, not a training run"):
        run_detail(demo_store, snapshot.digest)


def test_the_experiment_log_figure_draws_train_and_validation_per_metric(two_runs):
    cand = two_runs["cand"]

    fig = experiment_log_figure(experiment_log_frame(cand), "boosting iteration")

    names = [(t.name, t.xaxis) for t in fig.data]
    assert sorted(names) == sorted([(s, x) for s in ("train", "validation") for x in ("x", "x2")])
    assert fig.layout.xaxis.title.text == "boosting iteration"
    last = [t for t in fig.data if t.name == "validation" and t.xaxis == "x"][0]
    assert last.y[-1] == pytest.approx(cand.validation_metrics["roc_auc"], abs=1e-9)


# ---------------------------------------------------------------- the page (AppTest)


@pytest.fixture
def page(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["demo_user"] = "milo@seamline.example"
    at.session_state["model"] = "card-fraud"
    at.run()
    at.switch_page("pages/runs.py").run()
    return at


def _table(at: AppTest, first_column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if list(d.value.columns)[:1] == [first_column])


def test_the_runs_page_lists_runs_and_opens_the_newest_the_candidate(page):
    assert not page.exception

    assert len(page.dataframe[0].value) == 2
    assert "HistGradientBoostingClassifier" in page.selectbox(key="runs_pick").value
    assert len(page.get("plotly_chart")) == 1
    assert [t.label for t in page.tabs] == ["Spec and environment", "Lineage", "Experiment log", "Compare",
                                             "Reproducibility"]


def test_the_compare_tab_shows_the_parameter_diff_and_metric_deltas_against_the_baseline(page):
    page.session_state["runs_tab"] = "Compare"

    page.run()

    assert not page.exception
    compare = [s for s in page.selectbox if s.key.startswith("runs_compare_")][0]
    assert compare.value.endswith("(its baseline)") and "LogisticRegression" in compare.value
    metrics = _table(page, "metric")
    assert list(metrics["metric"]) == ["roc_auc", "log_loss", "brier"]
    assert metrics["delta"].notna().all()
    params = _table(page, "parameter").set_index("parameter")
    assert params.loc["estimator", "changed"]
    assert any("Metric deltas on shared validation data" in m.value and "B − A" in m.value for m in page.markdown)


def test_the_reproducibility_tab_records_and_shows_a_failed_check_after_the_data_changed(page, demo_copy):
    from lifecycle.store import Store
    s = Store(demo_copy)
    cand = next(r for r in s.artifacts("card-fraud", "training_run") if r.baseline_run)
    data = s.data_root / s.artifact(cand.snapshot).files[0].path
    s.close()
    with open(data, "ab") as fh:
        fh.write(b"tampered")
    page.session_state["runs_tab"] = "Reproducibility"
    page.run()

    page.button(key="runs_repro").click().run()

    assert not page.exception
    text = " ".join(m.value for m in page.markdown)
    assert "Last check" in text and "Could not re\\-run the spec" in text
