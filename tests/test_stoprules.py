"""Test stop-rule semantics (pass / fail / inconclusive, limits, consecutive windows), expansion and stability."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest

from lifecycle.models import CheckResult, CheckStatus, Stage, StageCondition, StopRule
from lifecycle.signals import aggregate_windows
from lifecycle.stoprules import (
    RuleVerdict,
    evaluate_stop_rules,
    expansion_ready,
    stability,
    window_verdicts,
)

T0 = datetime(2026, 3, 2, 0, 0)
# One letter per window: F fails (412 ms), P passes (200 ms), I has too few requests, N has no value.
WINDOW = {"F": (1000, 412.0), "P": (1000, 200.0), "I": (20, 412.0), "N": (1000, None)}


def rule(**overrides) -> StopRule:
    values = dict(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=300.0, window_minutes=60,
                  min_volume=100, failure_limit=2)
    return StopRule(**(values | overrides))


def series(pattern: str, *, segment: str = "all", arm: str = "canary", stage: str = "canary",
           minutes: int = 60, start: datetime = T0, metric: str = "latency_p95_ms") -> pd.DataFrame:
    """Build windows for one series from a pattern such as 'PPFFI'; '-' leaves a slot without any row."""
    rows = []
    for i, letter in enumerate(pattern):
        if letter == "-":
            continue
        requests, value = WINDOW[letter]
        begin = start + timedelta(minutes=minutes * i)
        rows.append({"release": "rel-a", "stage": stage, "arm": arm, "segment": segment, "start": begin,
                     "end": begin + timedelta(minutes=minutes), "requests": requests,
                     metric: np.nan if value is None else value})
    frame = pd.DataFrame(rows)
    frame["start"] = frame["start"].astype("datetime64[us]")
    frame["end"] = frame["end"].astype("datetime64[us]")
    return frame


def windows(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def verdict(pattern: str, **rule_overrides) -> RuleVerdict:
    (only,) = evaluate_stop_rules([rule(**rule_overrides)], series(pattern), stage=Stage.CANARY)
    return only


# ---------------------------------------------------------------- window and rule semantics


@pytest.mark.parametrize("pattern, limit, consecutive, status, tripped", [
    ("PPP", 0, False, "pass", False),
    ("F", 0, False, "fail", True),
    ("FFP", 2, False, "pass", False),
    ("FFF", 2, False, "fail", True),
    ("FPFPF", 2, False, "fail", True),
    ("FPFPF", 2, True, "pass", False),
    ("FFPFF", 2, True, "pass", False),
    ("FFFPP", 2, True, "fail", True),
    ("FFPF", 2, True, "pass", False),
    ("FFIFP", 2, True, "fail", True),
    ("FF-FP", 2, True, "fail", True),
    ("III", 0, False, "inconclusive", False),
    ("IIIIF", 0, False, "fail", True),
    ("PPI", 2, False, "inconclusive", False),
    ("FFI", 2, False, "inconclusive", False),
    ("PPN", 2, False, "pass", False),
    ("NNN", 2, False, "inconclusive", False),
    ("PP-", 2, False, "pass", False),
])
def test_rule_status_follows_argo_semantics(pattern, limit, consecutive, status, tripped):
    result = verdict(pattern, failure_limit=limit, consecutive=consecutive)

    assert result.status == status
    assert result.tripped is tripped


@pytest.mark.parametrize("letter, status", [("F", "fail"), ("P", "pass"), ("I", "inconclusive"),
                                            ("N", "inconclusive")])
def test_each_window_is_pass_fail_or_inconclusive(letter, status):
    judged = window_verdicts(rule(), series(letter), stage=Stage.CANARY)

    assert judged["status"].tolist() == [status]


@pytest.mark.parametrize("comparator, value, fails", [
    (">", 300.0, False), (">=", 300.0, True), ("<", 300.0, False), ("<=", 300.0, True),
    (">", 300.5, True), ("<", 299.5, True),
])
def test_a_window_fails_when_value_comparator_threshold_holds(comparator, value, fails):
    frame = series("P").assign(latency_p95_ms=value)

    judged = window_verdicts(rule(comparator=comparator), frame, stage=Stage.CANARY)

    assert (judged["status"].iloc[0] == "fail") is fails


def test_inconclusive_windows_do_not_pass_and_do_not_trip():
    result = verdict("IIIIII", failure_limit=0)

    assert result.status == CheckStatus.INCONCLUSIVE
    assert not result.tripped
    assert "inconclusive, expansion pauses" in result.reason
    assert "no window yet with at least 100 requests" in result.reason


def test_a_tripped_rule_explains_itself_for_the_platform_owner():
    frame = windows(series("PPPPP"), series("PFFFP", segment="region=EU"))

    (result,) = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    assert result.reason == ("p95 latency 412 ms > 300 ms in 3 windows (limit 2) for segment region=EU on canary "
                             "in stage canary: trips, action halt")
    assert result.failing_windows == [datetime(2026, 3, 2, h, tzinfo=timezone.utc) for h in (1, 2, 3)]
    assert result.segments == ["region=EU"]
    assert result.action == "halt"


def test_a_rule_trips_when_any_segment_trips():
    frame = windows(series("PPPPP"), series("PPPPP", segment="region=US"), series("FFFPP", segment="region=EU"))

    (result,) = evaluate_stop_rules([rule(action="rollback")], frame, stage=Stage.CANARY)

    assert result.status == CheckStatus.FAIL and result.tripped
    assert result.segments == ["region=EU"]
    assert "trips, action rollback" in result.reason
    assert {row["segment"] for row in result.evidence} == {"region=EU"}


def test_a_thin_segment_keeps_the_rule_inconclusive_even_when_the_rest_passes():
    frame = windows(series("PPPP"), series("PPPI", segment="region=APAC"))

    (result,) = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    assert result.status == CheckStatus.INCONCLUSIVE
    assert "segment region=APAC on canary has 20 requests in the latest window (min 100)" in result.reason


def test_a_series_without_traffic_in_the_latest_slot_is_inconclusive():
    frame = windows(series("PPPP"), series("PP", segment="region=EU"))

    (result,) = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    assert result.status == CheckStatus.INCONCLUSIVE
    assert "region=EU" in result.reason


@pytest.mark.parametrize("rule_stages, stage, evaluated", [
    ([Stage.CANARY], Stage.CANARY, True),
    ([Stage.CANARY], Stage.SHADOW, False),
    ([Stage.SHADOW, Stage.RAMP], Stage.RAMP, True),
    ([Stage.FULL], Stage.CANARY, False),
])
def test_only_rules_for_the_stage_are_evaluated(rule_stages, stage, evaluated):
    frame = windows(series("FFF", stage=stage.value, arm="canary"))

    result = evaluate_stop_rules([rule(stages=rule_stages)], frame, stage=stage)

    assert (len(result) == 1) is evaluated


def test_windows_of_other_stages_are_not_judged():
    frame = windows(series("FFFFF", stage="shadow", arm="shadow"), series("PPPPP"))

    (result,) = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    assert result.status == CheckStatus.PASS


@pytest.mark.parametrize("arm, status", [(None, "pass"), ("baseline", "fail"), ("canary", "pass")])
def test_reference_arms_are_judged_only_when_asked_for(arm, status):
    frame = windows(series("PPPP"), series("FFFF", arm="baseline"))

    (result,) = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY, arm=arm)

    assert result.status == status


def test_a_rule_needs_windows_of_its_own_size():
    frame = series("FFFFFF", minutes=30)

    (result,) = evaluate_stop_rules([rule(window_minutes=60)], frame, stage=Stage.CANARY)

    assert result.status == CheckStatus.INCONCLUSIVE
    assert "no 60-minute windows" in result.reason and "30 minutes" in result.reason


def test_rules_pick_their_window_size_from_a_mixed_frame():
    frame = windows(series("FFFF", minutes=30), series("PP"))
    rules = [rule(name="hourly"), rule(name="half-hourly", window_minutes=30)]

    hourly, half_hourly = evaluate_stop_rules(rules, frame, stage=Stage.CANARY)

    assert hourly.status == CheckStatus.PASS
    assert half_hourly.status == CheckStatus.FAIL


def test_passing_rule_mentions_failures_within_the_limit():
    result = verdict("PFPFP", failure_limit=2)

    assert result.status == CheckStatus.PASS
    assert result.reason.startswith("p95 latency 412 ms > 300 ms in 2 windows (limit 2) for all traffic on canary")


def test_a_rule_on_a_rate_reads_as_a_percentage():
    frame = series("PPF", metric="error_rate").assign(error_rate=[0.001, 0.002, 0.05])

    (result,) = evaluate_stop_rules([rule(metric="error_rate", threshold=0.01, failure_limit=0)], frame,
                                    stage=Stage.CANARY)

    assert result.reason.startswith("error rate 5.00% > 1.00% in 1 window (limit 0)")


def test_verdicts_serialise_and_become_check_results():
    result = verdict("FFF")

    check = result.as_check()

    assert isinstance(check, CheckResult)
    assert check.status == CheckStatus.FAIL
    assert json.loads(result.model_dump_json())["evidence"][0]["status"] == "fail"
    assert RuleVerdict.model_validate_json(result.model_dump_json()) == result


def test_windows_of_several_releases_are_refused():
    frame = windows(series("PP"), series("PP").assign(release="rel-b"))

    with pytest.raises(ValueError, match="one release"):
        evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)


def test_a_slow_region_in_a_real_log_trips_the_latency_rule():
    rng = np.random.default_rng(3)
    n = 40_000
    timestamps = pd.Timestamp("2026-03-02") + pd.to_timedelta(rng.integers(0, 6 * 3600, n), unit="s")
    segment = rng.choice(["region=EU", "region=US"], n)
    latency = rng.lognormal(np.log(120), 0.3, n) * np.where((segment == "region=EU") & (timestamps.hour >= 3), 3, 1)
    scores = rng.random(n)
    log = pd.DataFrame({
        "request_id": np.arange(n).astype(str), "timestamp": timestamps, "release": "rel-a", "stage": "canary",
        "arm": "canary", "segment": segment, "latency_ms": latency, "error": False, "fallback": False, "cost": 0.001,
        "candidate_score": scores, "baseline_score": scores, "decision": 0, "baseline_decision": 0,
    })
    con = duckdb.connect()
    frame = aggregate_windows(con, log, window_minutes=60)

    (result,) = evaluate_stop_rules([rule(threshold=300.0, failure_limit=2)], frame, stage=Stage.CANARY)

    assert result.tripped
    assert result.segments[0] == "region=EU"
    assert "for segment region=EU on canary" in result.reason
    assert result.failing_windows[0] == datetime(2026, 3, 2, 3, tzinfo=timezone.utc)


# ---------------------------------------------------------------- expansion


CONDITION = StageCondition(stage=Stage.CANARY, traffic_share=0.1, min_duration_hours=4, min_volume=3000)


@pytest.mark.parametrize("pattern, hours_after_start, status, phrase", [
    ("PPPPPP", 6, "pass", "ready to expand"),
    ("PPP", 3, "inconclusive", "ran 3.0 h of the 4 h required"),
    ("PPPPPI", 6, "inconclusive", "stop rule p95 latency is inconclusive"),
    ("PPFFFP", 6, "fail", "expansion refused: stop rule p95 latency tripped"),
])
def test_expansion_needs_duration_volume_and_every_rule_passing(pattern, hours_after_start, status, phrase):
    frame = series(pattern)
    verdicts = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    result = expansion_ready(CONDITION, frame, verdicts, now=T0 + timedelta(hours=hours_after_start))

    assert result.status == status
    assert phrase in result.reason


def test_expansion_is_refused_while_volume_is_short():
    frame = series("PPPPPP").assign(requests=400)
    verdicts = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    result = expansion_ready(CONDITION, frame, verdicts, now=T0 + timedelta(hours=8))

    assert result.status == CheckStatus.INCONCLUSIVE
    assert "saw 2,400 of the 3,000 requests required" in result.reason


def test_expansion_counts_duration_from_the_stage_start_when_given():
    frame = series("PPPPPP")
    verdicts = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)
    now = datetime(2026, 3, 2, 6, tzinfo=timezone.utc)

    result = expansion_ready(CONDITION, frame, verdicts, now, started_at=now - timedelta(hours=2))

    assert result.status == CheckStatus.INCONCLUSIVE
    assert result.evidence["hours"] == 2.0


def test_expansion_does_not_count_evidence_from_the_future():
    frame = series("PPPPPP")
    verdicts = evaluate_stop_rules([rule()], frame, stage=Stage.CANARY)

    result = expansion_ready(CONDITION, frame, verdicts, now=T0 + timedelta(hours=3, minutes=30))

    assert result.status == CheckStatus.INCONCLUSIVE
    assert result.evidence["hours"] == 3.5


def test_verdicts_of_another_stage_cannot_judge_expansion():
    frame = series("PPPPPP", stage="shadow", arm="shadow")
    verdicts = evaluate_stop_rules([rule()], frame, stage=Stage.SHADOW)

    with pytest.raises(ValueError, match="shadow"):
        expansion_ready(CONDITION, frame, verdicts, now=T0 + timedelta(hours=8))


# ---------------------------------------------------------------- stability for promotion


@pytest.mark.parametrize("pattern, status", [
    ("FPPP", "pass"),
    ("PPPF", "fail"),
    ("PFPP", "fail"),
    ("PP", "inconclusive"),
    ("PPPI", "inconclusive"),
    ("PPPN", "inconclusive"),
    ("PP-P", "inconclusive"),
])
def test_promotion_needs_the_last_windows_to_pass(pattern, status):
    frame = series(pattern, stage="full", arm="treatment")

    result = stability(frame, [rule(failure_limit=5)], 3, stage=Stage.FULL)

    assert result.status == status


def test_stability_checks_every_segment():
    frame = windows(series("PPPP", stage="full", arm="treatment"),
                    series("PPPF", segment="region=EU", stage="full", arm="treatment"))

    result = stability(frame, [rule(failure_limit=5)], 3)

    assert result.status == CheckStatus.FAIL
    assert "segment region=EU on treatment" in result.reason


def test_stability_without_a_rule_for_the_stage_is_inconclusive():
    frame = series("PPPP", stage="full", arm="treatment")

    result = stability(frame, [rule(stages=[Stage.CANARY])], 3)

    assert result.status == CheckStatus.INCONCLUSIVE
