"""Test the feedback loop: escalation intake and triage, error groups, trigger rules, the backlog, label corrections."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import T0, make_entry, make_run
from lifecycle.cli import main as cli
from lifecycle.escalations import (
    QueueFilter, Triage, add_escalation, apply_label_corrections, cluster_texts, error_groups_frame,
    ingest_escalations, label_corrections_frame, queue_frame, similar_cases_frame, triage_cases,
)
from lifecycle.feedback import Evidence, close_item, evaluate_rules, evaluate_triggers, gather_evidence
from lifecycle.identity import user_for
from lifecycle.ingest import IngestError
from lifecycle.models import (
    DEFAULT_TRIGGER_RULES, BacklogStatus, Escalation, MonitoringSignals, ReleasePolicy, SignalWindow, Stage,
    TriggerRule,
)
from lifecycle.policy import default_policy
from lifecycle.signals import aggregate_windows, ingest_log
from lifecycle.store import StoreError

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SEG = "region=APAC / channel=mobile"
OTHER = "region=EU / channel=pos"
ANALYST, PRODUCT, MODEL_OWNER, PLATFORM = "n@x.test", "r@x.test", "m@x.test", "p@x.test"


def case(i: int, days_ago: float = 1.0, segment: str = SEG, **kw) -> Escalation:
    """Return a case i, `days_ago` days before T0 (an open escalation unless told otherwise)."""
    fields = {"type": "escalation", "score": 0.8, "decision": "declined", "severity": "medium",
              "text": "legit top-up declined", **kw}
    return Escalation(case_id=f"C-{i:04d}", at=T0 - timedelta(days=days_ago), model="fraud", segment=segment,
                      **fields)


def cases(n: int, start: int = 0, **kw) -> list[Escalation]:
    return [case(start + i, **kw) for i in range(n)]


def rule(signal: str, bound: float, **kw) -> TriggerRule:
    defaults = {"type": "retrain_model", "owner_role": "model", "title": f"{signal} rule"}
    return TriggerRule(id=signal.replace("_", "-"), signal=signal, bound=bound, **{**defaults, **kw})


def window(hour: int, segment: str = "region=EU", arm: str = "canary", requests: int = 100, **metrics) -> SignalWindow:
    start = T0 - timedelta(hours=48 - hour)
    return SignalWindow(start=start, end=start + timedelta(hours=1), stage=Stage.CANARY, arm=arm, segment=segment,
                        requests=requests, metrics=metrics)


@pytest.fixture
def fb(chain, store):
    """The `chain` store (model 'fraud' with entries) plus a way to store signal windows of release rel-1."""
    def put_windows(windows: list[SignalWindow]) -> str:
        batch = MonitoringSignals(model="fraud", created_by=PLATFORM, created_at=T0, release="rel-1",
                                  entry=chain["cand"].digest, windows=windows)
        return store.put_artifact(batch, PLATFORM, T0)
    chain["put_windows"] = put_windows
    return chain


def verdicts_of(store, rules, now=T0) -> dict[str, float]:
    return {v.subject: v.value for v in evaluate_rules(rules, gather_evidence(store, "fraud"), now) if v.fired}


# ---------------------------------------------------------------- trigger rules: fires / does not fire

CASE_RULES = [
    # id, rule, cases, expected {subject: value} of fired verdicts (values computed by hand)
    ("group of 15 fires", rule("error_group_size", 15), cases(15, error_group="topup"),
     {f"topup in {SEG}": 15}),
    ("group of 14 is quiet", rule("error_group_size", 15), cases(14, error_group="topup"), {}),
    ("groups count per segment", rule("error_group_size", 15),
     cases(8, error_group="topup") + cases(7, 100, segment=OTHER, error_group="topup"), {}),
    ("cases older than the window do not count", rule("error_group_size", 15, days=30),
     cases(10, error_group="topup") + cases(5, 100, days_ago=31, error_group="topup"), {}),
    ("ungrouped cases do not count", rule("error_group_size", 3), cases(5), {}),
    ("growth of 6 fires", rule("error_group_growth", 5, days=7),
     cases(8, error_group="g") + cases(2, 100, days_ago=10, error_group="g"), {f"g in {SEG}": 6}),
    ("growth of 3 is quiet", rule("error_group_growth", 5, days=7),
     cases(5, error_group="g") + cases(2, 100, days_ago=10, error_group="g"), {}),
    ("ten overrides fire", rule("override_count", 10, type="revise_policy"), cases(10, type="override"),
     {SEG: 10}),
    ("nine overrides are quiet", rule("override_count", 10, type="revise_policy"),
     cases(9, type="override") + cases(5, 100), {}),
    ("label corrections fire", rule("label_correction_count", 3, type="refresh_dataset"),
     cases(3, type="label_correction", corrected_label=1), {SEG: 3}),
    ("complaints fire", rule("complaint_count", 4, type="update_threshold"), cases(4, type="complaint"), {SEG: 4}),
    ("one regulatory notice fires", rule("regulatory_flag", 1, type="revise_policy"),
     [case(1, type="regulatory", segment="all")], {"all": 1}),
    ("false positives cost cases x unit cost", rule("false_positive_cost", 100, type="update_threshold",
                                                     params={"cost_per_case": 25.0, "positive_decision": "declined"}),
     cases(2, corrected_label=0) + cases(2, 10, finding="model_error") + cases(5, 20, decision="approved",
                                                                              finding="model_error"),
     {SEG: 100.0}),
    ("false positives below the bound are quiet", rule("false_positive_cost", 100, type="update_threshold",
                                                       params={"cost_per_case": 25.0}),
     cases(3, corrected_label=0) + cases(3, 10, corrected_label=1), {}),
]


@pytest.mark.parametrize("name, trigger, stored, expected", CASE_RULES, ids=[r[0] for r in CASE_RULES])
def test_case_rules_fire_exactly_when_the_bound_is_reached(fb, store, name, trigger, stored, expected):
    store.put_escalations(stored, ANALYST, T0)

    fired = verdicts_of(store, [trigger])

    assert fired == expected


def _gaps(values: list[float]) -> list[SignalWindow]:
    return [window(h, calibration_gap=v, labelled=300) for h, v in enumerate(values)]


WINDOW_RULES = [
    ("three consecutive fallback windows fire", rule("fallback_rate", 0.05, windows=3, type="revise_policy"),
     [window(h, fallback_rate=r) for h, r in enumerate([0.01, 0.06, 0.07, 0.05, 0.01])],
     {"rel-1 canary/canary region=EU": 0.07}),
    ("three failing windows that are not consecutive are quiet", rule("fallback_rate", 0.05, windows=3),
     [window(h, fallback_rate=r) for h, r in enumerate([0.06, 0.07, 0.01, 0.06, 0.01, 0.08])], {}),
    ("windows below the minimum volume are left out", rule("latency_p95_ms", 200, windows=2,
                                                           params={"min_volume": 50}),
     [window(h, requests=q, latency_p95_ms=300) for h, q in enumerate([10, 100, 10, 100])],
     {"rel-1 canary/canary region=EU": 300}),
    ("a negative calibration gap counts by its size", rule("calibration_gap", 0.05, windows=2,
                                                           type="update_threshold"),
     _gaps([0.0, -0.06, -0.08, 0.01]), {"rel-1 canary/canary region=EU": 0.08}),
    ("a precision drop of 0.2 fires", rule("outcome_quality_drop", 0.1, windows=3,
                                           params={"metric": "precision", "min_labelled": 30}),
     [window(h, precision=p, labelled=100) for h, p in enumerate([0.8, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6])],
     {"rel-1 canary/canary region=EU": pytest.approx(0.2)}),
    ("a precision drop of 0.05 is quiet", rule("outcome_quality_drop", 0.1, windows=3),
     [window(h, precision=p, labelled=100) for h, p in enumerate([0.8, 0.8, 0.8, 0.75, 0.75, 0.75])], {}),
]


@pytest.mark.parametrize("name, trigger, windows, expected", WINDOW_RULES, ids=[r[0] for r in WINDOW_RULES])
def test_window_rules_need_the_bound_in_enough_consecutive_windows(fb, store, name, trigger, windows, expected):
    fb["put_windows"](windows)

    fired = verdicts_of(store, [trigger], now=T0 + timedelta(hours=1))

    assert fired == expected


def test_the_longest_failing_run_is_found_by_a_brute_force_reference():
    rng = np.random.default_rng(3)
    rates = rng.choice([0.01, 0.09], size=(40,), p=[0.45, 0.55]).tolist()
    windows = pd.DataFrame([{**w.model_dump(mode="json"), **w.metrics, "release": "rel-1", "batch": "b"}
                            for w in (window(h, fallback_rate=r) for h, r in enumerate(rates))])
    windows[["start", "end"]] = windows[["start", "end"]].apply(pd.to_datetime, utc=True)
    longest, run = 0, 0
    for r in rates:
        run = run + 1 if r >= 0.05 else 0
        longest = max(longest, run)
    evidence = Evidence(cases=pd.DataFrame(), windows=windows, shifts=pd.DataFrame())

    at_bound = evaluate_rules([rule("fallback_rate", 0.05, windows=longest)], evidence, T0 + timedelta(hours=1))
    above = evaluate_rules([rule("fallback_rate", 0.05, windows=longest + 1)], evidence, T0 + timedelta(hours=1))

    assert at_bound[0].fired and at_bound[0].evidence["consecutive"] == longest
    assert not above[0].fired


def test_feature_psi_must_hold_in_each_of_the_newest_reports(fb, store):
    from lifecycle.models import CheckResult, CheckStatus
    from conftest import make_report
    shift = lambda psi: CheckResult(name="shift: amount", status=CheckStatus.FAIL, reason="x", evidence={"psi": psi})
    older = make_report(fb["cand_run"], fb["base_run"], fb["snapshot"], tag="a", at=T0 - timedelta(days=2))
    newer = make_report(fb["cand_run"], fb["base_run"], fb["snapshot"], tag="b", at=T0 - timedelta(days=1))
    store.put_artifacts([older.model_copy(update={"shift_checks": [shift(0.1)]}),
                         newer.model_copy(update={"shift_checks": [shift(0.4)]})], "m@x.test", T0)

    one = verdicts_of(store, [rule("segment_psi", 0.25, windows=1, type="refresh_dataset")])
    two = verdicts_of(store, [rule("segment_psi", 0.25, windows=2, type="refresh_dataset")])

    assert one == {"amount": 0.4}
    assert two == {}


def test_a_rule_with_no_data_is_inconclusive_not_quiet(fb, store):
    verdicts = evaluate_rules([rule("fallback_rate", 0.05)], gather_evidence(store, "fraud"), T0)

    assert [v.status.value for v in verdicts] == ["inconclusive"]
    assert "no signal windows" in verdicts[0].reason


# ---------------------------------------------------------------- trigger rules: the backlog deduplicates


def test_a_cause_that_fires_again_updates_its_item_instead_of_duplicating(fb, store):
    store.put_escalations(cases(15, error_group="topup"), ANALYST, T0)
    rules = [rule("error_group_size", 15)]
    first = evaluate_triggers(store, "fraud", T0, "x", rules)

    again = evaluate_triggers(store, "fraud", T0, "x", rules)
    store.put_escalations([case(99, error_group="topup")], ANALYST, T0)
    grown = evaluate_triggers(store, "fraud", T0 + timedelta(hours=1), "x", rules)

    assert [c.action for c in first.changes] == ["opened"]
    assert [c.action for c in again.changes] == ["unchanged"]
    assert [c.action for c in grown.changes] == ["updated"] and grown.changes[0].new_cases == ["C-0099"]
    items = store.backlog("fraud")
    assert len(items) == 1 and len(items[0].evidence["cases"]) == 16 and len(items[0].triggers) == 2
    assert len(store.artifacts("fraud", "retraining_trigger")) == 2


def test_size_and_growth_of_one_error_group_share_one_item(fb, store):
    store.put_escalations(cases(16, error_group="topup") + cases(2, 50, days_ago=10, error_group="topup"), ANALYST,
                          T0)

    result = evaluate_triggers(store, "fraud", T0, "x", [rule("error_group_size", 15),
                                                         rule("error_group_growth", 5, days=7)])

    assert len(result.changes) == 1 and result.changes[0].rules == ["error-group-size", "error-group-growth"]
    item = store.backlog("fraud")[0]
    assert item.type.value == "retrain_model" and item.owner_role.value == "model"
    assert set(item.evidence["rules"]) == {"error-group-size", "error-group-growth"}
    assert item.title == f"Retrain model: error group topup in {SEG}"


def test_a_closed_cause_counts_only_evidence_after_its_closing(fb, store):
    store.put_escalations(cases(15, error_group="topup"), ANALYST, T0 - timedelta(days=1))
    rules = [rule("error_group_size", 15)]
    evaluate_triggers(store, "fraud", T0, "x", rules)
    item = store.backlog("fraud")[0]
    close_item(store, user_for(store, MODEL_OWNER), item.id, T0, reason="fixed in the app", wont_do=True)

    quiet = evaluate_triggers(store, "fraud", T0 + timedelta(hours=1), "x", rules)
    store.put_escalations(cases(15, 100, days_ago=-0.5, error_group="topup"), ANALYST, T0)
    again = evaluate_triggers(store, "fraud", T0 + timedelta(days=1), "x", rules)

    assert quiet.changes == []
    assert [c.action for c in again.changes] == ["opened"]
    assert sorted(again.changes[0].item.evidence["cases"]) == [f"C-{i:04d}" for i in range(100, 115)]


def test_the_default_policy_covers_incident_quality_review_and_business_signals():
    families = {r.family for r in DEFAULT_TRIGGER_RULES}
    types = {r.type.value for r in DEFAULT_TRIGGER_RULES}

    assert families == {"incident", "quality", "review", "business"}
    assert types == {"refresh_dataset", "update_threshold", "retrain_model", "revise_policy"}


@pytest.mark.parametrize("change, message", [
    ({"signal": "vibes"}, "unknown signal 'vibes'"),
    ({"params": {"colour": "red"}}, "unknown params colour"),
    ({"params": {"metric": "auc"}, "signal": "outcome_quality_drop"}, "metric must be precision or recall"),
    ({"bound": -1}, "greater than or equal to 0"),
])
def test_a_bad_trigger_rule_is_refused_naming_the_problem(change, message):
    body = {"id": "r1", "title": "t", "type": "retrain_model", "owner_role": "model", "signal": "error_group_size",
            "bound": 1, **change}

    with pytest.raises(ValueError, match=message):
        TriggerRule.model_validate(body)


def test_a_policy_with_trigger_rules_round_trips_through_json_and_the_store(store):
    from conftest import make_model
    store.put_model(make_model())
    policy = default_policy("fraud", PRODUCT, T0, triggers=[rule("override_count", 3, type="revise_policy")])

    store.put_policy(policy, PRODUCT)

    assert ReleasePolicy.model_validate_json(policy.model_dump_json()) == policy
    assert store.policy("fraud") == policy and store.policy("fraud").digest == policy.digest
    with pytest.raises(ValueError, match="duplicate trigger ids"):
        default_policy("fraud", PRODUCT, T0, triggers=[rule("override_count", 3)] * 2)


# ---------------------------------------------------------------- closing requires a resolving artifact or a reason


def _retrain_item(fb, store):
    store.put_escalations(cases(15, error_group="topup"), ANALYST, T0)
    evaluate_triggers(store, "fraud", T0 + timedelta(hours=1), "x", [rule("error_group_size", 15)])
    return store.backlog("fraud")[0]


def test_an_item_closes_with_a_new_training_run_and_the_loop_is_closed_on_the_map(fb, store):
    item = _retrain_item(fb, store)
    run = make_run(fb["snapshot"], seed=9).model_copy(update={"created_at": T0 + timedelta(days=2)})
    store.put_artifact(run, MODEL_OWNER, T0 + timedelta(days=2))

    closed = close_item(store, user_for(store, MODEL_OWNER), item.id, T0 + timedelta(days=2),
                        resolved_by=run.digest[:12])

    assert closed.status == BacklogStatus.CLOSED and closed.resolved_by == run.digest
    events = store.audit_events(subject=f"backlog/{item.id}")
    assert events[-1].action == "backlog.close" and events[-1].detail["resolved_by"] == run.digest
    from lifecycle.chain import lifecycle_map
    assert f"loop closed by {run.digest[:10]}" in lifecycle_map(store, "fraud", T0, "rel-1").links[6].detail


@pytest.mark.parametrize("resolver, message", [
    ("", "link a new training run"),
    ("snapshot", "is a dataset_snapshot; a retrain_model item is answered by a new training run"),
    ("old run", "before the item opened"),
    ("deadbeef", "no artifact"),
])
def test_an_item_does_not_close_without_the_right_artifact(fb, store, resolver, message):
    item = _retrain_item(fb, store)
    ref = {"": "", "snapshot": fb["snapshot"].digest, "old run": fb["cand_run"].digest, "deadbeef": "deadbeef"}

    with pytest.raises(IngestError, match=message):
        close_item(store, user_for(store, MODEL_OWNER), item.id, T0 + timedelta(hours=2), resolved_by=ref[resolver])

    assert store.backlog_item(item.id).status == BacklogStatus.OPEN


def test_wont_do_needs_a_reason_and_is_audited(fb, store):
    item = _retrain_item(fb, store)
    owner = user_for(store, MODEL_OWNER)

    with pytest.raises(IngestError, match="reason"):
        close_item(store, owner, item.id, T0, reason="  ", wont_do=True)
    closed = close_item(store, owner, item.id, T0, reason="duplicate of the app fix", wont_do=True)

    assert closed.status == BacklogStatus.WONT_DO and closed.close_reason == "duplicate of the app fix"
    assert store.audit_events(subject=f"backlog/{item.id}")[-1].action == "backlog.wont_do"
    with pytest.raises(StoreError, match="wont do already"):
        close_item(store, owner, item.id, T0, reason="again", wont_do=True)


def test_only_the_owner_role_or_the_product_owner_closes_an_item(fb, store):
    item = _retrain_item(fb, store)

    with pytest.raises(PermissionError):
        close_item(store, user_for(store, PLATFORM), item.id, T0, reason="not mine", wont_do=True)
    closed = close_item(store, user_for(store, PRODUCT), item.id, T0, reason="deprioritised", wont_do=True)

    assert closed.status == BacklogStatus.WONT_DO


def test_a_threshold_item_closes_only_with_an_entry_that_changes_the_threshold(fb, store):
    store.put_escalations(cases(3, type="complaint"), ANALYST, T0)
    evaluate_triggers(store, "fraud", T0, "x", [rule("complaint_count", 3, type="update_threshold")])
    item = store.backlog("fraud")[0]
    later = T0 + timedelta(days=1)
    same = make_entry(fb["cand_run"], fb["report"], 3).model_copy(update={"created_at": later})
    moved = make_entry(fb["cand_run"], fb["report"], 4).model_copy(update={"created_at": later,
                                                                            "decision_threshold": 0.6})
    store.put_artifacts([same, moved], PLATFORM, later)

    with pytest.raises(IngestError, match="keeps the threshold 0.5"):
        close_item(store, user_for(store, PRODUCT), item.id, later, resolved_by=same.digest)
    closed = close_item(store, user_for(store, PRODUCT), item.id, later, resolved_by=moved.digest)

    assert closed.resolved_by == moved.digest and "0.5 → 0.6" in closed.close_reason


def test_a_policy_item_closes_with_a_newer_policy_version(fb, store):
    store.put_escalations([case(1, type="regulatory")], ANALYST, T0)
    evaluate_triggers(store, "fraud", T0 + timedelta(hours=1), "x",
                      [rule("regulatory_flag", 1, type="revise_policy", owner_role="product")])
    item = store.backlog("fraud")[0]
    v2 = default_policy("fraud", PRODUCT, T0 + timedelta(days=1)).model_copy(update={"version": 2})
    store.put_policy(v2, PRODUCT)

    with pytest.raises(IngestError, match="predates the item"):
        close_item(store, user_for(store, PRODUCT), item.id, T0, resolved_by=store.policy("fraud", 1).digest)
    closed = close_item(store, user_for(store, PRODUCT), item.id, T0 + timedelta(days=1), resolved_by=v2.digest[:10])

    assert closed.resolved_by == v2.digest


# ---------------------------------------------------------------- intake, queue, triage


CSV_HEADER = "case_id,at,model,segment,type,score,decision,severity,text,corrected_label,request_id\n"


def test_a_csv_upload_is_stored_and_evaluated(fb, store):
    body = CSV_HEADER + "".join(f"U-{i},2026-09-30T10:00:00,fraud,{SEG},override,0.9,declined,high,manual release,,\n"
                                for i in range(10))

    outcome = ingest_escalations(store, body, ANALYST, T0)

    assert outcome.stored == [f"U-{i}" for i in range(10)]
    assert store.escalations("fraud")[0].at.tzinfo is not None
    assert [c.item.type.value for c in outcome.evaluations[0].changes] == ["revise_policy"]


def test_a_json_upload_accepts_a_list_or_an_escalations_object(fb, store):
    one = {"case_id": "J-1", "at": "2026-09-30T10:00:00Z", "model": "fraud", "segment": SEG, "type": "complaint",
           "score": 0.7, "decision": "declined", "severity": "low"}

    first = ingest_escalations(store, json.dumps([one]), ANALYST, T0)
    second = ingest_escalations(store, json.dumps({"escalations": [{**one, "case_id": "J-2"}]}), ANALYST, T0)

    assert first.stored == ["J-1"] and second.stored == ["J-2"]


ROW = "X,2026-09-30T10:00:00,fraud,s,override,{score},d,high,t,,\n"
BAD_UPLOADS = [
    ("missing column", CSV_HEADER.replace("severity,", "") + "X,2026-09-30T10:00:00,fraud,s,override,0.9,d,t,,\n",
     "severity: required column is missing"),
    ("triage column", CSV_HEADER.strip() + ",status\nX,2026-09-30T10:00:00,fraud,s,override,0.9,d,high,t,,,open\n",
     "status: unknown column (set by triage in Seamline)"),
    ("not a number", CSV_HEADER + ROW.format(score="high"), "[0].score: 'high' is not"),
    ("NaN score", CSV_HEADER + ROW.format(score="nan"), "[0].score: 'nan' is not a finite"),
    ("score above 1", CSV_HEADER + ROW.format(score="1.5"), "[0].score: Input should be"),
    ("unknown type", CSV_HEADER + "X,2026-09-30T10:00:00,fraud,s,praise,0.5,d,high,t,,\n", "[0].type: Input should be"),
    ("twice in one upload", CSV_HEADER + "X,2026-09-30T10:00:00,fraud,s,override,0.5,d,high,t,,\n" * 2,
     "[1].case_id: 'X' appears twice"),
    ("unknown model", CSV_HEADER + ROW.format(score="0.5").replace("fraud", "nope"), "[0].model: no model 'nope'"),
    ("duplicate JSON key", '[{"case_id": "X", "case_id": "Y"}]', "case_id: duplicate key"),
    ("JSON triage field", '[{"case_id": "X", "status": "closed"}]', "[0].status: set by triage"),
    ("JSON NaN", '[{"case_id": "X", "score": NaN}]', "NaN is not a valid number"),
    ("already stored", CSV_HEADER + "C-0000,2026-09-30T10:00:00,fraud,s,override,0.5,d,high,t,,\n", "exists already"),
]


@pytest.mark.parametrize("name, body, message", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_a_bad_upload_names_the_field_and_writes_nothing(fb, store, name, body, message):
    store.put_escalations([case(0)], ANALYST, T0)
    before = store.counts()

    with pytest.raises(IngestError) as err:
        ingest_escalations(store, body, ANALYST, T0)

    assert message in str(err.value)
    assert store.counts() == before


def test_one_case_typed_on_the_page_goes_through_the_same_validation(fb, store):
    fields = {"case_id": "P-1", "model": "fraud", "at": T0, "segment": SEG, "type": "complaint", "score": 0.4,
              "decision": "declined", "severity": "high", "text": "", "release": "", "corrected_label": None}

    stored = add_escalation(store, fields, ANALYST, T0)
    with pytest.raises(IngestError, match="segment"):
        add_escalation(store, {**fields, "case_id": "P-2", "segment": None}, ANALYST, T0)

    assert stored.stored == ["P-1"] and [c.case_id for c in store.escalations("fraud")] == ["P-1"]


QUEUE = [
    ({"segments": [OTHER]}, ["C-0003"]),
    ({"types": ["override"]}, ["C-0002"]),
    ({"severities": ["critical"]}, ["C-0001"]),
    ({"statuses": ["triaged"]}, ["C-0004"]),
    ({"max_age_days": 2.5}, ["C-0000", "C-0001", "C-0002"]),
    ({"releases": ["rel-1"]}, ["C-0000"]),
    ({"releases": ["(no release)"], "sort": "severity"}, ["C-0001", "C-0002", "C-0003", "C-0004"]),
    ({"sort": "score (low first)"}, ["C-0004", "C-0003", "C-0002", "C-0001", "C-0000"]),
]


@pytest.mark.parametrize("filters, expected", QUEUE)
def test_the_queue_filters_and_sorts(fb, store, filters, expected):
    store.put_escalations([
        case(0, days_ago=1, release="rel-1", score=0.9), case(1, days_ago=2, severity="critical", score=0.8),
        case(2, days_ago=2.4, type="override", score=0.7, severity="high"),
        case(3, days_ago=3, segment=OTHER, score=0.6),
        case(4, days_ago=4, status="triaged", error_group="g", score=0.5, severity="low")], ANALYST, T0)

    queue = queue_frame(store, QueueFilter(model="fraud", **filters), T0)

    assert queue["case_id"].tolist() == expected


def test_bulk_triage_records_who_and_when_and_is_audited(fb, store):
    store.put_escalations(cases(5), ANALYST, T0)
    analyst = user_for(store, ANALYST)
    ids = ["C-0001", "C-0003"]

    outcome = triage_cases(store, analyst, "fraud", ids, Triage(error_group="topup", finding="model_error",
                                                                assignee=MODEL_OWNER), T0 + timedelta(hours=2))

    triaged = {c.case_id: c for c in store.escalations("fraud")}
    assert outcome.cases == ids
    for cid in ids:
        c = triaged[cid]
        assert (c.status, c.error_group, c.finding, c.assignee) == ("triaged", "topup", "model_error", MODEL_OWNER)
        assert c.triaged_by == ANALYST and c.triaged_at == T0 + timedelta(hours=2)
    assert triaged["C-0000"].status == "open" and triaged["C-0000"].triaged_by is None
    event = [e for e in store.audit_events() if e.action == "escalation.triage"][-1]
    assert event.actor == ANALYST and event.detail["cases"] == ids and event.detail["changes"]["error_group"] == "topup"


@pytest.mark.parametrize("who, ids, triage, error", [
    (PRODUCT, ["C-0000"], Triage(finding="model_error"), PermissionError),
    (ANALYST, [], Triage(finding="model_error"), IngestError),
    (ANALYST, ["C-0000", "C-9999"], Triage(finding="model_error"), IngestError),
    (ANALYST, ["C-0000"], Triage(), IngestError),
    (ANALYST, ["C-0000"], Triage(error_group="<b>bad</b>"), IngestError),
    (ANALYST, ["C-0000"], Triage(assignee="stranger@x.test"), IngestError),
])
def test_a_refused_triage_changes_nothing(fb, store, who, ids, triage, error):
    store.put_escalations(cases(2), ANALYST, T0)
    before = [c.model_dump() for c in store.escalations("fraud")]

    with pytest.raises(error):
        triage_cases(store, user_for(store, who), "fraud", ids, triage, T0)

    assert [c.model_dump() for c in store.escalations("fraud")] == before


def test_triaging_a_group_past_its_bound_opens_the_retrain_item_with_those_cases(fb, store):
    store.put_escalations(cases(14, error_group="topup") + cases(3, 50), ANALYST, T0)
    store.put_policy(default_policy("fraud", PRODUCT, T0, triggers=[rule("error_group_size", 15)])
                     .model_copy(update={"version": 2}), PRODUCT)

    outcome = triage_cases(store, user_for(store, ANALYST), "fraud", ["C-0050", "C-0051"],
                           Triage(error_group="topup"), T0)

    assert [c.action for c in outcome.evaluation.changes] == ["opened"]
    item = store.backlog("fraud")[0]
    assert item.type.value == "retrain_model" and {"C-0050", "C-0051"} <= set(item.evidence["cases"])


# ---------------------------------------------------------------- repeated error groups


def test_error_groups_count_cases_per_segment_with_a_weekly_trend(fb, store):
    ages = [0.5, 1, 2, 6.9, 7.5, 9, 15, 22, 30]
    store.put_escalations([case(i, days_ago=a, error_group="g") for i, a in enumerate(ages)]
                          + [case(50, segment=OTHER, error_group="g")], ANALYST, T0)

    groups = error_groups_frame(store, "fraud", T0)

    assert groups[["error_group", "segment", "cases"]].values.tolist() == [["g", SEG, 9], ["g", OTHER, 1]]
    expected = [sum(1 for a in ages if w * 7 <= a < (w + 1) * 7) for w in (3, 2, 1, 0)]
    assert groups.loc[0, "trend"] == expected and groups.loc[0, "direction"] == "growing"


THEMES = {
    "topup": ["Legit mobile wallet top-up flagged, customer confirmed by phone",
              "Mobile wallet top-up flagged although the customer confirmed it",
              "customer confirmed the wallet top up by phone, flagged anyway"],
    "travel": ["Traveller abroad blocked at hotel check-in", "Card blocked at hotel check in while abroad",
               "hotel check-in abroad: card blocked, traveller stranded"],
    "sim": ["Fraud missed: account takeover after SIM swap", "Account takeover after a SIM swap was missed",
            "SIM swap account takeover not caught"],
}


def test_free_text_clusters_recover_the_crafted_themes_in_any_order():
    texts = [t for group in THEMES.values() for t in group]
    truth = [name for name, group in THEMES.items() for _ in group]
    order = np.random.default_rng(0).permutation(len(texts))

    labels = cluster_texts(texts, distance=0.8)
    shuffled = cluster_texts([texts[i] for i in order], distance=0.8)

    def partition(names, labels):
        return {frozenset(n for n, l in zip(names, labels) if l == k) for k in set(labels)}
    assert partition(range(len(texts)), labels) == partition(range(len(texts)), [list(THEMES).index(t) for t in truth])
    assert partition(order, shuffled) == partition(range(len(texts)), labels)


def test_texts_without_words_are_left_unclustered():
    assert cluster_texts(["", "!!", "Card blocked at hotel"]).tolist() == [-1, -1, 0]
    assert cluster_texts([]).tolist() == []


def test_similar_cases_are_reported_with_counts_and_the_dominant_error_group(fb, store):
    texts = [t for group in THEMES.values() for t in group]
    store.put_escalations([case(i, text=t, error_group="topup" if i < 2 else None) for i, t in enumerate(texts)],
                          ANALYST, T0)

    clusters = similar_cases_frame(store, QueueFilter(model="fraud"), T0)

    assert clusters["cases"].tolist() == [3, 3, 3]
    topup = clusters[clusters["case_ids"].map(lambda ids: "C-0000" in ids)].iloc[0]
    assert topup["error_group"] == "topup" and topup["open"] == 3 and "wallet" in topup["top_terms"]


# ---------------------------------------------------------------- label corrections reach the live path


def _log(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [f"req-{i}" for i in range(n)], "timestamp": pd.Timestamp("2026-10-01 10:05") +
        pd.to_timedelta(np.arange(n), unit="min"), "release": "rel-1", "stage": "canary", "arm": "canary",
        "segment": SEG, "latency_ms": 20.0, "error": False, "fallback": False, "cost": 0.001,
        "candidate_score": [0.9, 0.8, 0.7, 0.2, 0.1, 0.6], "baseline_score": 0.5, "decision": [1, 1, 1, 0, 0, 1],
        "baseline_decision": 0, "label": pd.array([None] * n, dtype="Int8")})


def test_label_corrections_reach_the_prediction_log_and_its_windows(fb, store):
    with store.transaction() as cur:
        ingest_log(cur, _log())
    corrections = [case(i, type="label_correction", request_id=f"req-{i}", corrected_label=label)
                   for i, label in [(0, 1), (1, 0), (3, 1)]]

    outcome = ingest_escalations(store, [c.model_dump(mode="json", exclude={"status", "assignee", "error_group",
                                                                            "finding", "triaged_by", "triaged_at"})
                                         for c in corrections], ANALYST, T0)
    cur = store.cursor()
    windows = aggregate_windows(cur, "prediction_log", window_minutes=60)
    cur.close()

    assert outcome.labels_applied == 3
    row = windows[(windows["segment"] == SEG)].iloc[0]
    decisions, labels = [1, 1, 0], [1, 0, 1]  # req-0, req-1, req-3
    tp = sum(d * y for d, y in zip(decisions, labels))
    assert row["labelled"] == 3
    assert row["precision"] == pytest.approx(tp / sum(decisions))
    assert row["recall"] == pytest.approx(tp / sum(labels))
    assert [e.action for e in store.audit_events()].count("labels.apply") == 1


def test_a_label_corrected_in_triage_reaches_the_live_path_and_the_frame(fb, store):
    with store.transaction() as cur:
        ingest_log(cur, _log())
    store.put_escalations([case(5, request_id="req-5"), case(6)], ANALYST, T0)

    outcome = triage_cases(store, user_for(store, ANALYST), "fraud", ["C-0005", "C-0006"],
                           Triage(corrected_label=0, finding="model_error"), T0)

    assert outcome.labels_applied == 1
    assert store.cursor().execute("SELECT label FROM prediction_log WHERE request_id = 'req-5'").fetchone() == (0,)
    frame = label_corrections_frame(store, "fraud")
    assert frame[["case_id", "label", "corrected_by"]].values.tolist() == [["C-0005", 0, ANALYST],
                                                                           ["C-0006", 0, ANALYST]]
    assert frame["request_id"].iloc[0] == "req-5" and pd.isna(frame["request_id"].iloc[1])
    assert apply_label_corrections(store, "fraud", ANALYST, T0) == 0


# ---------------------------------------------------------------- command line


def test_the_cli_ingests_escalations_and_evaluates_triggers(fb, store, tmp_path, capsys):
    path = tmp_path / "cases.csv"
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()  # the CLI evaluates at the real clock
    path.write_text(CSV_HEADER + "".join(f"K-{i},{yesterday},fraud,{SEG},override,0.9,declined,high,x,,\n"
                                         for i in range(10)))
    db = store.path
    store.close()

    ingested = cli(["--db", db, "escalations", "ingest", str(path), "--actor", ANALYST])
    evaluated = cli(["--db", db, "triggers", "evaluate", "fraud"])
    bad = cli(["--db", db, "escalations", "ingest", str(path)])

    out = capsys.readouterr()
    assert ingested == 0 and evaluated == 0 and bad == 2
    assert "10 case(s) stored" in out.out and "backlog/1 revise_policy" in out.out
    assert "exists already" in out.err


# ---------------------------------------------------------------- AppTest of both pages


@pytest.fixture
def app(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def start(user: str = "ana@seamline.example", page: str = "pages/escalations.py") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=90)
        at.session_state["demo_user"] = user
        at.session_state["model"] = "card-fraud"
        at.run()
        return at.switch_page(page).run()
    return start


def test_the_escalations_page_filters_and_bulk_triages_into_an_error_group(app, demo_copy):
    at = app()
    at.multiselect(key="esc_f_segment").select(SEG).run()
    at.multiselect(key="esc_f_status").select("open").run()
    at.multiselect(key="esc_f_type").select("escalation").run()
    picked = at.dataframe[0].value["case_id"].tolist()[:5]

    at.multiselect(key="esc_pick").set_value(picked).run()
    at.selectbox(key="esc_t_group").set_value("apac-mobile-topup").run()
    at.button(key="esc_t_apply").click().run()

    assert not at.exception
    assert "5 case\\(s\\) triaged" in at.success[0].value
    assert at.dataframe[0].value["case_id"].isin(picked).sum() == 0  # no longer open
    from lifecycle.store import Store
    s = Store(demo_copy)
    triaged = {c.case_id: c for c in s.escalations("card-fraud") if c.case_id in picked}
    assert {c.error_group for c in triaged.values()} == {"apac-mobile-topup"}
    assert {c.triaged_by for c in triaged.values()} == {"ana@seamline.example"}
    s.close()


def test_the_escalations_page_is_read_only_for_someone_without_a_triage_role(app):
    at = app(user="priya@seamline.example")

    assert not at.exception
    assert not [b for b in at.button if b.key == "esc_t_apply"]
    assert any("read-only" in c.value for c in at.caption)


def test_the_backlog_page_refuses_to_close_without_an_artifact_and_closes_as_wont_do_with_a_reason(app):
    at = app(user="milo@seamline.example", page="pages/backlog.py")
    retrain = at.dataframe[0].value
    item_id = int(retrain.loc[retrain["type"] == "retrain_model", "id"].iloc[0])
    at.selectbox(key="bl_item").set_value(item_id).run()

    at.button(key="bl_close").click().run()
    refused = [e.value for e in at.error]
    at.text_area(key="bl_reason").input("the APAC SDK fix removes the cause").run()
    at.button(key="bl_wont_do").click().run()

    assert refused and "resolved\\_by" in refused[0]
    assert not at.exception
    assert "wont\\_do" in at.success[0].value
    assert item_id not in at.dataframe[0].value["id"].tolist()


def test_the_backlog_page_evaluates_the_rules_on_demand(app):
    at = app(user="paul@seamline.example", page="pages/backlog.py")

    at.button(key="bl_evaluate").click().run()

    assert not at.exception
    assert any("rule verdicts" in e.label for e in at.expander)
