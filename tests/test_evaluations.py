"""The Evaluation screen's service: computing and reusing reports by their inputs, limits, sign-off, tables, figures."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from lifecycle import evaluations as ev
from lifecycle.evaluation_charts import forest_figure, picked_segment, reliability_figure
from lifecycle.identity import user_for
from lifecycle.models import EvaluationReport, canonical_json, sha256_hex

AT = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
APAC_MOBILE = "region=APAC / channel=mobile"


@pytest.fixture
def fraud(demo_store):
    cand, base = ev.release_pair(demo_store, "card-fraud")
    report = ev.reports_for(demo_store, "card-fraud", cand, base)[0]
    return demo_store, cand, base, report


def _request(store, cand, base, report, **change) -> ev.EvaluationRequest:
    ct, bt = ev.default_thresholds(store, "card-fraud", cand, base)
    fields = dict(model="card-fraud", candidate_run=cand, baseline_run=base,
                  evaluation_snapshot=report.evaluation_snapshot, candidate_threshold=ct, baseline_threshold=bt,
                  settings=store.policy("card-fraud").evaluation, seed=int(report.settings["seed"]))
    return ev.EvaluationRequest(**{**fields, **change})


def test_the_defaults_are_the_release_candidate_and_its_baseline(fraud):
    store, cand, base, report = fraud
    release = store.release("card-fraud-v2")

    assert cand == store.artifact(release.candidate).training_run
    assert base == store.artifact(release.baseline).training_run
    assert ev.in_release(store, report) == ["card-fraud-v2"]
    assert ev.default_thresholds(store, "card-fraud", cand, base) == (report.settings["candidate_threshold"],
                                                                      report.settings["baseline_threshold"])


def test_the_demo_regression_is_the_failing_segment(fraud):
    _, _, _, report = fraud

    assert ev.failing_segments(report) == [APAC_MOBILE]
    frame = ev.segments_frame(report)
    row = frame[frame["segment"] == APAC_MOBILE].iloc[0]
    assert row["status"] == "fail" and row["CI high"] < -0.01
    assert list(frame.columns[:9]) == ["segment", "status", "n", "positives", "AUC candidate", "AUC baseline",
                                       "Δ AUC", "CI low", "CI high"]
    assert frame["segment"].iloc[0] == "all" and len(frame) == 1 + len(report.segments)


def test_identical_inputs_reuse_the_stored_report_without_computing(fraud, monkeypatch):
    store, cand, base, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    request = _request(store, cand, base, report, settings=store.policy("card-fraud").evaluation.model_copy(
        update={"bootstrap": 50}))
    first = ev.compute_and_store(store, kenji, request, AT)
    monkeypatch.setattr(ev, "_compute", lambda *a, **k: pytest.fail("computed although the inputs were stored"))

    again = ev.compute_and_store(store, kenji, request, AT)

    assert not first.reused and again.reused and again.report.digest == first.report.digest
    assert first.report.settings["request"] == request.key()


def test_a_report_from_elsewhere_or_other_settings_is_never_reused(fraud):
    store, cand, base, report = fraud
    request = _request(store, cand, base, report)  # the demo's report has the same runs, seed and thresholds
    other_segments = _request(store, cand, base, report, settings=store.policy("card-fraud").evaluation.model_copy(
        update={"segment_columns": ["region"]}))

    assert ev.stored_match(store, request) is None  # computed by the demo, not from this request
    assert request.key() != other_segments.key()


def test_a_changed_snapshot_file_is_refused_before_anything_is_computed(fraud):
    store, cand, base, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    snap = store.artifact(report.evaluation_snapshot)
    path = store.data_root / snap.files[0].path
    path.write_bytes(path.read_bytes() + b"tampered")
    before = store.counts()

    with pytest.raises(ev.EvaluationRefused, match="cannot read what the evaluation needs"):
        ev.compute_and_store(store, kenji, _request(store, cand, base, report, seed=5), AT)

    assert store.counts() == before


def test_a_missing_model_file_is_refused_naming_it(fraud):
    store, cand, base, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    (store.data_root / store.artifact(base).model_artifact.uri).unlink()

    with pytest.raises(ev.EvaluationRefused, match="cannot read what the evaluation needs"):
        ev.compute_and_store(store, kenji, _request(store, cand, base, report, seed=6), AT)


def test_a_new_seed_computes_stores_and_caches_by_the_inputs_digest(fraud, monkeypatch):
    store, cand, base, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    request = _request(store, cand, base, report, seed=11, settings=store.policy("card-fraud").evaluation.model_copy(
        update={"bootstrap": 200}))
    seen = []

    done = ev.compute_and_store(store, kenji, request, AT, progress=lambda f, t: seen.append(f))

    assert not done.reused and store.has(done.report.digest)
    assert done.report.settings["seed"] == 11 and done.report.settings["bootstrap"] == 200
    assert ev.failing_segments(done.report) == [APAC_MOBILE]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert done.report.limits == store.artifact(cand).stated_limits
    calls = []
    monkeypatch.setattr(ev, "_compute", lambda *a, **k: calls.append(1))
    assert ev.compute_result(store, request).gate == done.report.gate and not calls
    assert ev.stored_match(store, request).digest == done.report.digest


def test_only_a_model_owner_stores_a_report_and_nothing_is_written_otherwise(fraud):
    store, cand, base, report = fraud
    ana = user_for(store, "ana@seamline.example")
    before = store.counts()

    with pytest.raises(PermissionError, match="Model owner"):
        ev.compute_and_store(store, ana, _request(store, cand, base, report, seed=3), AT)

    assert store.counts() == before


def test_a_snapshot_of_another_model_or_a_run_digest_is_refused(fraud, demo_store):
    store, cand, base, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    churn_snap = store.artifacts("churn", "dataset_snapshot")[0].digest

    with pytest.raises(ev.EvaluationRefused, match="not a dataset snapshot of 'card-fraud'"):
        ev.compute_and_store(store, kenji, _request(store, cand, base, report, seed=4,
                                                    evaluation_snapshot=churn_snap), AT)
    with pytest.raises(ev.EvaluationRefused, match="not a training run"):
        ev.compute_and_store(store, kenji, _request(store, cand, base, report, seed=4, candidate_run=churn_snap), AT)


def test_revised_limits_make_a_new_report_and_earlier_sign_offs_stay_with_the_old_digest(fraud):
    store, _, _, report = fraud
    kenji = user_for(store, "kenji@seamline.example")
    ev.sign_off(store, kenji, report.digest, "approve", "segment gate reviewed", AT)

    revised = ev.revise_limits(store, kenji, report.digest, "- no holiday season seen\n\n* not for corporate cards\n",
                               AT)

    assert revised.limits == ["no holiday season seen", "not for corporate cards"]
    assert revised.digest != report.digest and revised.gate == report.gate and revised.segments == report.segments
    assert ev.signoff_status(store, report.digest).status == "approved"
    assert ev.signoff_status(store, revised.digest).status == "awaiting sign-off"
    with pytest.raises(ev.EvaluationRefused, match="unchanged"):
        ev.revise_limits(store, kenji, revised.digest, "no holiday season seen\nnot for corporate cards", AT)
    with pytest.raises(PermissionError):
        ev.revise_limits(store, user_for(store, "paul@seamline.example"), revised.digest, "anything", AT)


def test_limits_are_parsed_one_per_line_with_bounds():
    assert ev.parse_limits("  a \n\n- b\n• c") == ["a", "b", "c"]
    with pytest.raises(ev.EvaluationRefused, match="at most 30"):
        ev.parse_limits("\n".join(f"limit {i}" for i in range(31)))
    with pytest.raises(ev.EvaluationRefused, match="longer than 1000"):
        ev.parse_limits("x" * 1001)


def test_sign_off_binds_to_the_digest_and_refuses_wrong_verdicts_roles_and_silent_rejections(fraud):
    store, _, _, report = fraud
    kenji, paul = user_for(store, "kenji@seamline.example"), user_for(store, "paul@seamline.example")

    with pytest.raises(ev.EvaluationRefused, match="approve or reject"):
        ev.sign_off(store, kenji, report.digest, "waive", "", AT)
    with pytest.raises(PermissionError, match="Model owner"):
        ev.sign_off(store, paul, report.digest, "approve", "", AT)
    with pytest.raises(PermissionError, match="say why"):
        ev.sign_off(store, kenji, report.digest, "reject", "  ", AT)
    assert ev.decisions_frame(store, report.digest).empty

    d = ev.sign_off(store, kenji, report.digest, "reject", "APAC mobile loses 0.10 AUC", AT)

    assert d.subject == report.digest and d.covered == {"evaluation": report.digest}
    status = ev.signoff_status(store, report.digest)
    assert status.status == "rejected" and status.icon == "fail" and "APAC mobile loses" in status.line


def test_downloads_carry_the_digest_and_every_segment(fraud):
    _, _, _, report = fraud

    body = json.loads(ev.report_json(report))
    csv = ev.segments_csv(report).decode("utf-8")

    digest = body.pop("digest")
    assert digest == report.digest == sha256_hex(canonical_json(EvaluationReport.model_validate(body).body()))
    assert csv.count("\n") == 2 + len(report.segments) and APAC_MOBILE in csv


def test_the_forest_plot_draws_failures_in_red_with_the_gate_bound(fraud):
    _, _, _, report = fraud

    fig = forest_figure(report, "roc_auc", selected=APAC_MOBILE)

    fail = [t for t in fig.data if t.name == "fails the gate"][0]
    assert list(fail.y) == [APAC_MOBILE] and fail.marker.color == "#c62828"
    assert max(fail.marker.size) == 14
    bounds = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(bounds) == 1 and bounds[0].x0 == -0.01
    assert not [s for s in forest_figure(report, "log_loss").layout.shapes if s.line.dash == "dash"]


def test_a_click_in_the_forest_plot_names_its_segment():
    event = {"selection": {"points": [{"customdata": [APAC_MOBILE, 4138], "y": APAC_MOBILE}]}}

    assert picked_segment(event) == APAC_MOBILE
    assert picked_segment({"selection": {"points": [{"y": "region=EU"}]}}) == "region=EU"
    assert picked_segment({"selection": {"points": []}}) is None and picked_segment(None) is None


def test_the_reliability_diagram_has_one_curve_per_model_over_non_empty_bins(fraud):
    _, _, _, report = fraud

    curves = ev.calibration_for(report, APAC_MOBILE, "quantile")
    fig = reliability_figure(curves, APAC_MOBILE)

    assert sorted(c.which for c in curves) == ["baseline", "candidate"]
    assert [t.name.split(" ")[0] for t in fig.data[1:]] == [c.which for c in curves]
    assert sum(fig.data[1].customdata[i][2] for i in range(len(fig.data[1].x))) == report.segments[
        [s.segment for s in report.segments].index(APAC_MOBILE)].candidate.n
