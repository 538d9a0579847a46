"""The live path: ingestion into the store, superseded windows, stop rules the system enforces, expansion, promotion."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score

from conftest import T0
from lifecycle.identity import user_for
from lifecycle.ingest import IngestError
from lifecycle.models import (
    BlastRadius, CheckStatus, Escalation, EscalationType, FallbackPath, MonitoringSignals, Release, ReleaseState,
    RolloutNote, SignalWindow, Stage, StageCondition, StopRule, SuccessMetric,
)
from lifecycle.monitoring import (
    changed_windows, expand, expansion_status, ingest_labels, ingest_prediction_log, ingest_windows,
    monitoring_view, post_release_review, promote, promotion_status,
)
from lifecycle.monitoring_charts import heatmap_figure, heatmap_frame, rule_figure, stages_figure
from lifecycle.releases import DecisionRefused, serving_at, transition
from lifecycle.signals import LOG_TABLE_DDL
from lifecycle.store import Store

LIVE0 = T0 + timedelta(days=1)  # the release goes live here, on a whole hour
RELEASE = "rel-live"
SEGMENTS = ["region=EU", "region=US"]
FALLBACK = StopRule(name="fallback rate", metric="fallback_rate", comparator=">", threshold=0.03, window_minutes=60,
                    min_volume=20, failure_limit=1, consecutive=True)
LATENCY = StopRule(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=250, window_minutes=60,
                   min_volume=20, failure_limit=2)


# ---------------------------------------------------------------- arrange helpers


def live_note(chain) -> RolloutNote:
    cand, base = chain["cand"], chain["base"]
    return RolloutNote(
        model="fraud", created_by="r@x.test", created_at=T0, candidate=cand.digest, baseline=base.digest,
        release_object="gradient boosting v2", release_owner="r@x.test",
        success_metrics=[SuccessMetric(metric="recall", comparator=">=", target=0.4)],
        blast_radius=BlastRadius(max_traffic_share=0.2), stop_rules=[FALLBACK, LATENCY],
        fallback=FallbackPath(serving=base.digest, description="champion v1 serves", tested=True),
        stages=[StageCondition(stage=Stage.SHADOW, traffic_share=0.0, min_duration_hours=2, min_volume=300),
                StageCondition(stage=Stage.CANARY, traffic_share=0.1, min_duration_hours=3, min_volume=500),
                StageCondition(stage=Stage.RAMP, traffic_share=0.2, min_duration_hours=2, min_volume=300),
                StageCondition(stage=Stage.FULL, traffic_share=1.0, min_duration_hours=0, min_volume=0)])


def open_release(store, chain, state: ReleaseState = ReleaseState.CANARY) -> Release:
    """Store the note and a release approved at T0, then move it live as the Platform owner at LIVE0."""
    note = live_note(chain)
    store.put_artifact(note, "r@x.test", T0)
    store.create_release(Release(id=RELEASE, model="fraud", title="live v2", candidate=chain["cand"].digest,
                                 baseline=chain["base"].digest, rollout_note=note.digest, policy_version=1,
                                 state=ReleaseState.APPROVED, serving=chain["base"].digest, created_by="r@x.test",
                                 created_at=T0), "r@x.test")
    store.set_alias("fraud", "champion", chain["base"].digest, "p@x.test", T0)
    path = {ReleaseState.SHADOW: [ReleaseState.SHADOW], ReleaseState.CANARY: [ReleaseState.CANARY],
            ReleaseState.FULL: [ReleaseState.CANARY]}[state]
    for target in path:
        transition(store, user_for(store, "p@x.test"), RELEASE, target, LIVE0, "go live")
    if state == ReleaseState.FULL:
        # Ramp and full reached by hand here; their conditions are tested on their own below.
        release = store.release(RELEASE)
        store.update_release(release.model_copy(update={"state": ReleaseState.FULL}), release.version, "p@x.test",
                             "release.full", {"from": "canary", "to": "full", "reason": "test"}, LIVE0)
    return store.release(RELEASE)


def make_log(start: datetime, hours: int, stage: str = "canary", per_hour: int = 400, seed: int = 0,
             spikes: dict[tuple[str, int], float] | None = None, labelled: bool = True, prefix: str = "q",
             worse_in: str | None = None) -> pd.DataFrame:
    """Simulate requests: EU/US, candidate and baseline arms (or shadow), fallback spikes per (segment, hour)."""
    rng = np.random.default_rng(seed)
    n = hours * per_hour
    offset = np.sort(rng.integers(0, hours * 3600 * 10**6, n))
    hour = offset // (3600 * 10**6)
    segment = rng.choice(SEGMENTS, n)
    arm = np.full(n, "shadow") if stage == "shadow" else np.where(rng.random(n) < 0.5, "canary", "baseline")
    rate = np.full(n, 0.002)
    for (seg, h), r in (spikes or {}).items():
        rate[(segment == seg) & (hour == h)] = r
    candidate = rng.random(n)
    baseline = np.clip(candidate + rng.normal(0, 0.02, n), 0, 1)
    label = (rng.random(n) < candidate).astype(float)
    decision = (candidate >= 0.5).astype(int)
    if worse_in is not None:  # the candidate misses most positives in one segment
        miss = (segment == worse_in) & (label == 1) & (rng.random(n) < 0.6)
        decision = np.where(miss, 0, decision)
    return pd.DataFrame({
        "request_id": [f"{prefix}-{i}" for i in range(n)],
        "timestamp": pd.Timestamp(start.replace(tzinfo=None)) + pd.to_timedelta(offset, unit="us"),
        "release": RELEASE, "stage": stage, "arm": arm, "segment": segment,
        "latency_ms": np.round(rng.lognormal(np.log(40), 0.3, n), 2), "error": rng.random(n) < 0.001,
        "fallback": rng.random(n) < rate, "cost": 0.0002, "candidate_score": candidate, "baseline_score": baseline,
        "decision": decision, "baseline_decision": (baseline >= 0.5).astype(int),
        "label": label if labelled else np.nan,
    })


def snapshot_of(store) -> dict:
    return {"counts": store.counts(), "audit": [e.hash for e in store.audit_events()],
            "windows": store.windows_frame(RELEASE)}


def window_dict(start: datetime, segment: str, fallback: float, requests: int = 100, arm: str = "canary") -> dict:
    return {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "stage": "canary",
            "arm": arm, "segment": segment, "requests": requests,
            "metrics": {"fallback_rate": fallback, "latency_p95_ms": 80.0}}


# ---------------------------------------------------------------- storage and supersession


def test_the_migrated_prediction_log_table_matches_the_signals_ddl(store):
    reference = duckdb.connect()
    reference.execute(LOG_TABLE_DDL)

    migrated = store.frame("DESCRIBE prediction_log")
    expected = reference.execute("DESCRIBE prediction_log").df()

    pd.testing.assert_frame_equal(migrated, expected)


def test_windows_frame_returns_the_newest_version_of_each_window(store, chain):
    release = open_release(store, chain)
    start = LIVE0.replace(tzinfo=timezone.utc)
    versions = [0.01, 0.02, 0.01]

    for i, value in enumerate(versions):
        window = SignalWindow(start=start, end=start + timedelta(hours=1), stage=Stage.CANARY, arm="canary",
                              requests=100, metrics={"fallback_rate": value})
        store.put_artifact(MonitoringSignals(model="fraud", created_by="p@x.test", created_at=LIVE0 + timedelta(
            minutes=i), release=release.id, entry=release.candidate, windows=[window]), "p@x.test")

    frame = store.windows_frame(release.id)
    assert len(frame) == 1 and frame["fallback_rate"].iloc[0] == 0.01
    assert store.counts()["signal_windows"] == 3


def test_reingesting_the_same_log_changes_nothing(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=3)
    first = ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=3))
    before = snapshot_of(store)

    again = ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=4))

    after = snapshot_of(store)
    assert first.inserted == len(log) and first.batch is not None
    assert (again.inserted, again.duplicates, again.batch) == (0, len(log), None)
    assert "nothing written" in again.message
    assert after["counts"] == before["counts"] and after["audit"] == before["audit"]
    pd.testing.assert_frame_equal(after["windows"], before["windows"])


def brute_force(log: pd.DataFrame) -> pd.DataFrame:
    """Requests, fallback rate and confirmed precision/recall per (arm, segment, hour) with pandas and scikit-learn."""
    rows = []
    log = log.assign(start=log["timestamp"].dt.floor("60min"))
    for (arm, start), group in log.groupby(["arm", "start"]):
        for segment, part in [("all", group), *group.groupby("segment")]:
            known = part[part["label"].notna()]
            rows.append({"arm": arm, "segment": segment, "start": start, "requests": len(part),
                         "fallback_rate": part["fallback"].mean(), "labelled": len(known),
                         "precision": precision_score(known["label"], known["decision"], zero_division=np.nan)
                         if known["decision"].sum() else np.nan,
                         "recall": recall_score(known["label"], known["decision"], zero_division=np.nan)
                         if known["label"].sum() else np.nan})
    return pd.DataFrame(rows).sort_values(["arm", "segment", "start"]).reset_index(drop=True)


def stored_view(store) -> pd.DataFrame:
    frame = store.windows_frame(RELEASE)
    frame = frame.assign(start=frame["start"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]"))
    columns = ["arm", "segment", "start", "requests", "fallback_rate", "labelled", "precision", "recall"]
    return frame.reindex(columns=columns).sort_values(["arm", "segment", "start"]).reset_index(drop=True)


def assert_matches(store, log):
    expected = brute_force(log).astype({"start": "datetime64[us]"})
    got = stored_view(store)
    got["labelled"] = got["labelled"].fillna(0)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-9)


def test_the_same_log_in_any_row_order_gives_bit_identical_windows_and_digests(store, chain, tmp_path):
    open_release(store, chain)
    store.close()
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(Path(store.path).read_bytes())
    log = make_log(LIVE0, hours=3, per_hour=45_000, seed=4)  # more rows than one DuckDB row group
    now = LIVE0 + timedelta(hours=3)
    stores = [Store(store.path), Store(copy)]

    for target, rows in zip(stores, (log, log.sample(frac=1.0, random_state=1))):
        ingest_prediction_log(target, RELEASE, rows, 60, "p@x.test", now)

    first, second = (s.windows_frame(RELEASE) for s in stores)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert [a.digest for a in stores[0].artifacts(kind="monitoring_signals")] == \
        [a.digest for a in stores[1].artifacts(kind="monitoring_signals")]
    for s in stores:
        s.close()


def test_overlapping_and_late_rows_count_each_request_once(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=4, seed=3)
    early, late = log.iloc[: len(log) // 2], log.iloc[len(log) // 3:]
    straggler = log.iloc[::7]  # rows of every hour sent again, as a retrying client would

    for part, at in ((early, 2), (late, 4), (straggler, 5)):
        ingest_prediction_log(store, RELEASE, part, 60, "p@x.test", LIVE0 + timedelta(hours=at))

    assert_matches(store, log)


def test_late_labels_update_quality_without_double_counting(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=3, seed=5)
    ingest_prediction_log(store, RELEASE, log.assign(label=np.nan), 60, "p@x.test", LIVE0 + timedelta(hours=3))
    requests_before = stored_view(store)["requests"]
    arrived = log.iloc[::2][["request_id", "label"]].astype({"label": int})

    result = ingest_labels(store, RELEASE, arrived, "p@x.test", LIVE0 + timedelta(days=2))
    repeat = ingest_labels(store, RELEASE, arrived, "p@x.test", LIVE0 + timedelta(days=3))

    known = log.assign(label=np.where(log.index.isin(arrived.index), log["label"], np.nan))
    assert result.labels_changed == len(arrived) and result.windows_updated > 0
    assert (repeat.labels_changed, repeat.batch) == (0, None)
    assert stored_view(store)["requests"].tolist() == requests_before.tolist()
    assert_matches(store, known)


def test_corrected_labels_replace_the_earlier_ones(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=2, seed=8)
    ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=2))
    flipped = log.iloc[:40][["request_id", "label"]].assign(label=lambda f: 1 - f["label"].astype(int))

    result = ingest_labels(store, RELEASE, flipped, "p@x.test", LIVE0 + timedelta(days=1))

    corrected = log.copy()
    corrected.loc[flipped.index, "label"] = flipped["label"]
    assert result.labels_changed == 40
    assert_matches(store, corrected)


def test_labels_for_another_release_are_refused_and_nothing_is_written(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=1)
    ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=1))
    store._con.execute("UPDATE prediction_log SET release = 'rel-other' WHERE request_id = 'q-0'")
    before = snapshot_of(store)

    with pytest.raises(IngestError) as err:
        ingest_labels(store, RELEASE, log.iloc[:5][["request_id", "label"]], "p@x.test", LIVE0 + timedelta(days=1))

    assert err.value.problems[0][0] == "request_id" and "rel-other" in str(err.value)
    assert snapshot_of(store)["counts"] == before["counts"]


@pytest.mark.parametrize("mutate, field, phrase", [
    (lambda log: log.assign(release="rel-other"), "release", "not 'rel-live'"),
    (lambda log: log.assign(stage="live"), "stage", "unknown stage 'live'"),
    (lambda log: log.assign(latency_ms=-1.0), "latency_ms", "negative"),
    (lambda log: log.drop(columns="fallback"), "fallback", "required column is missing"),
    (lambda log: log.iloc[:0], "source", "no rows"),
])
def test_a_bad_log_is_refused_naming_the_field_and_nothing_is_written(store, chain, mutate, field, phrase):
    open_release(store, chain)
    before = snapshot_of(store)

    with pytest.raises(IngestError) as err:
        ingest_prediction_log(store, RELEASE, mutate(make_log(LIVE0, hours=1)), 60, "p@x.test", LIVE0)

    assert err.value.problems[0][0] == field and phrase in str(err.value)
    assert snapshot_of(store)["counts"] == before["counts"]
    assert store.frame("SELECT count(*) AS n FROM prediction_log")["n"].iloc[0] == 0


@pytest.mark.parametrize("minutes", [0, -5, 10081, 1.5, True])
def test_the_window_size_must_be_a_whole_number_of_minutes(store, chain, minutes):
    open_release(store, chain)

    with pytest.raises(IngestError, match="window_minutes"):
        ingest_prediction_log(store, RELEASE, make_log(LIVE0, hours=1), minutes, "p@x.test", LIVE0)


def test_a_release_not_yet_live_has_no_signals(store, chain):
    with pytest.raises(IngestError, match="in_review: it serves no traffic"):
        ingest_prediction_log(store, "rel-1", make_log(LIVE0, hours=1).assign(release="rel-1"), 60, "p@x.test", LIVE0)


# ---------------------------------------------------------------- stop rules the system enforces


def test_halting_writes_the_audit_entry_and_makes_the_fallback_serving(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=4, spikes={("region=EU", 1): 0.25, ("region=EU", 2): 0.25})

    result = ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=4))

    release = store.release(RELEASE)
    assert result.tripped == ["fallback rate (canary)"] and result.state == ReleaseState.HALTED
    assert release.state == ReleaseState.HALTED and release.serving == chain["base"].digest
    incident = next(e for e in store.audit_events(RELEASE) if e.action == "incident.open")
    assert incident.actor == "seamline" and incident.detail["rule"] == "fallback rate (canary)"
    assert "region=EU" in incident.detail["evidence"]["segments"]
    assert len(incident.detail["evidence"]["failing_windows"]) == 2
    halted = store.audit_events(RELEASE)[-1]
    assert (halted.action, halted.detail["to"]) == ("release.halted", "halted")
    assert "stop rule 'fallback rate (canary)' tripped" in halted.detail["reason"]
    assert store.verify_audit()[0]
    assert serving_at(store, "fraud", LIVE0 + timedelta(hours=5)).live_releases == []


def test_the_view_names_the_tripped_rule_its_windows_and_the_fallback(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=4, spikes={("region=EU", 1): 0.25, ("region=EU", 2): 0.25})
    ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=4))

    view = monitoring_view(store, RELEASE, LIVE0 + timedelta(hours=5))

    eu = view.tripped[view.tripped["segment"] == "region=EU"]
    spike_hours = [LIVE0 + timedelta(hours=1), LIVE0 + timedelta(hours=2)]
    assert view.headline.status == CheckStatus.FAIL and "fallback" in view.serving
    assert list(eu["start"]) == [pd.Timestamp(t) for t in spike_hours]
    assert set(view.tripped["rule"]) == {"fallback rate"}
    assert view.heatmap_rule == "fallback rate" and view.stage == Stage.CANARY
    assert [c.status for c in view.verdicts] == [CheckStatus.FAIL, CheckStatus.PASS]
    assert set(view.evidence["canary"]["arm"]) == {"canary", "baseline"} and view.evidence["shadow"].empty
    assert view.expansion.check.status == CheckStatus.FAIL


def test_pre_aggregated_windows_trip_the_rule_through_the_same_path(store, chain):
    open_release(store, chain)
    windows = [window_dict(LIVE0 + timedelta(hours=h), "region=EU", 0.08 if h in (2, 3) else 0.01)
               for h in range(4)]

    result = ingest_windows(store, RELEASE, json.dumps({"release": RELEASE, "windows": windows}), "p@x.test",
                            LIVE0 + timedelta(hours=4))

    assert result.windows_updated == 4 and result.state == ReleaseState.HALTED
    assert store.release(RELEASE).serving == chain["base"].digest


@pytest.mark.parametrize("document, field", [
    ('{"windows": [{"start": "2026-10-02T12:00:00Z", "end": "2026-10-02T11:00:00Z", "stage": "canary", '
     '"arm": "canary", "requests": 10, "metrics": {}}]}', "windows[0]"),
    ('[{"start": "2026-10-02T12:00:00Z", "end": "2026-10-02T13:00:00Z", "stage": "canary", "arm": "canary", '
     '"requests": "10", "metrics": {}}]', "windows[0].requests"),
    ('[{"start": "2026-10-02T12:00:00Z", "end": "2026-10-02T13:00:00Z", "stage": "canary", "arm": "canary", '
     '"requests": 10, "metrics": {"fallback_rate": NaN}}]', ""),
    ('[{"start": "2026-10-02T12:00:00Z", "end": "2026-10-02T13:00:00Z", "stage": "canary", "arm": "pilot", '
     '"requests": 10, "metrics": {}}]', "windows[0].arm"),
    ('{"release": "rel-other", "windows": []}', "release"),
    ('{"windows": [], "extra": 1}', "extra"),
    ("windows: []", "windows"),
])
def test_bad_windows_are_refused_naming_the_field_and_nothing_is_written(store, chain, document, field):
    open_release(store, chain)
    before = snapshot_of(store)

    with pytest.raises(IngestError) as err:
        ingest_windows(store, RELEASE, document, "p@x.test", LIVE0)

    assert err.value.problems[0][0] == field
    assert snapshot_of(store)["counts"] == before["counts"]


def test_a_repeated_window_in_one_document_is_refused(store, chain):
    open_release(store, chain)
    window = window_dict(LIVE0, "region=EU", 0.01)

    with pytest.raises(IngestError) as err:
        ingest_windows(store, RELEASE, [window, window], "p@x.test", LIVE0)

    assert err.value.problems == [("windows[1]", "repeats windows[0] (same stage, arm, segment, start and end)")]


def test_a_window_changed_back_at_the_same_instant_is_still_the_newest(store, chain):
    open_release(store, chain)
    now = LIVE0 + timedelta(hours=1)

    for value in (0.01, 0.02, 0.01):
        ingest_windows(store, RELEASE, [window_dict(LIVE0, "region=EU", value)], "p@x.test", now)

    assert store.windows_frame(RELEASE)["fallback_rate"].tolist() == [0.01]
    assert store.counts()["signal_windows"] == 3


def test_changed_windows_ignore_float_noise_but_not_real_changes():
    base = pd.DataFrame({"stage": ["canary"] * 2, "arm": ["canary"] * 2, "segment": ["all", "region=EU"],
                         "start": pd.to_datetime(["2026-10-02 12:00"] * 2),
                         "end": pd.to_datetime(["2026-10-02 13:00"] * 2),
                         "requests": [100, 40], "fallback_rate": [0.1, 0.2]})
    noisy = base.assign(fallback_rate=base["fallback_rate"] * (1 + 1e-13))
    moved = base.assign(requests=[100, 41])

    assert changed_windows(noisy, base).empty
    assert changed_windows(moved, base)["segment"].tolist() == ["region=EU"]
    assert len(changed_windows(base, base.iloc[:0])) == 2


# ---------------------------------------------------------------- expansion


@pytest.mark.parametrize("per_hour, hours, status, phrase", [
    (10, 4, CheckStatus.INCONCLUSIVE, "stop rule fallback rate is inconclusive"),
    (400, 1, CheckStatus.INCONCLUSIVE, "ran 1.0 h of the 3 h required"),
    (400, 2, CheckStatus.INCONCLUSIVE, "saw 4"),
    (400, 4, CheckStatus.PASS, "ready to expand"),
])
def test_expansion_needs_duration_volume_and_conclusive_passing_rules(store, chain, per_hour, hours, status, phrase):
    open_release(store, chain)
    now = LIVE0 + timedelta(hours=hours)
    ingest_prediction_log(store, RELEASE, make_log(LIVE0, hours=hours, per_hour=per_hour), 60, "p@x.test", now)

    result = expansion_status(store, RELEASE, now)

    assert result.check.status == status and phrase in result.check.reason
    assert (result.stage, result.next_stage) == (Stage.CANARY, Stage.RAMP)


def test_expansion_is_refused_while_inconclusive(store, chain):
    open_release(store, chain)
    now = LIVE0 + timedelta(hours=4)
    ingest_prediction_log(store, RELEASE, make_log(LIVE0, hours=4, per_hour=10), 60, "p@x.test", now)
    decisions = len(store.decisions(release=RELEASE))

    with pytest.raises(DecisionRefused, match="expansion refused: .*inconclusive"):
        expand(store, user_for(store, "p@x.test"), RELEASE, now)

    assert store.release(RELEASE).state == ReleaseState.CANARY
    assert len(store.decisions(release=RELEASE)) == decisions


def test_only_the_platform_owner_expands(store, chain):
    open_release(store, chain)
    now = LIVE0 + timedelta(hours=4)
    ingest_prediction_log(store, RELEASE, make_log(LIVE0, hours=4), 60, "p@x.test", now)

    with pytest.raises(DecisionRefused, match="only the Platform owner expands"):
        expand(store, user_for(store, "r@x.test"), RELEASE, now)


def test_expansion_when_ready_is_a_recorded_decision_of_the_platform_owner(store, chain):
    open_release(store, chain)
    now = LIVE0 + timedelta(hours=4)
    ingest_prediction_log(store, RELEASE, make_log(LIVE0, hours=4), 60, "p@x.test", now)

    outcome = expand(store, user_for(store, "p@x.test"), RELEASE, now)

    assert outcome.release.state == ReleaseState.RAMP and outcome.release.serving == chain["cand"].digest
    decision = store.decisions(release=RELEASE)[-1]
    assert (decision.gate, decision.user, decision.role.value) == ("expansion", "p@x.test", "platform")
    assert "canary → ramp" in decision.comment and decision.covered["note"] == store.release(RELEASE).rollout_note
    assert [e.action for e in store.audit_events(RELEASE)][-2:] == ["release.ramp", "decision.approve"]


# ---------------------------------------------------------------- post-release review and promotion


def full_rollout(store, chain, hours: int, days_ago: float, labelled: bool = True, worse_in: str | None = None,
                 per_hour: int = 500):
    """A release in full rollout with `hours` of full traffic that ended `days_ago` before NOW."""
    open_release(store, chain, ReleaseState.FULL)
    start = LIVE0 + timedelta(hours=1)
    log = make_log(start, hours=hours, per_hour=per_hour, labelled=labelled, worse_in=worse_in, seed=11)
    log = log.assign(stage="full", arm="canary")
    ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", start + timedelta(hours=hours))
    return log, start + timedelta(hours=hours, days=days_ago)


def escalate(store, count: int, at: datetime, status: str = "open") -> None:
    store.put_escalations([Escalation(case_id=f"E-{i}", at=at, model="fraud", release=RELEASE, segment="region=EU",
                                      type=EscalationType.COMPLAINT, score=0.9, decision="declined", severity="low",
                                      status=status) for i in range(count)], "n@x.test", at)


@pytest.mark.parametrize("hours, days_ago, labelled, escalations, phrase", [
    (2, 40, True, 0, "only 2 of 3 windows so far"),
    (5, 2, False, 0, "no live request is older than the 30-day label delay"),
    (5, 40, False, 0, "0% of 2,500 due requests carry their label"),
    (5, 40, True, 30, "30 escalations in 2,500 live requests: 12.00 per 1k"),
])
def test_promotion_is_refused_before_stability_and_the_post_release_review(store, chain, hours, days_ago, labelled,
                                                                           escalations, phrase):
    _, now = full_rollout(store, chain, hours, days_ago, labelled)
    if escalations:
        escalate(store, escalations, LIVE0 + timedelta(hours=2), status="closed")

    with pytest.raises(DecisionRefused) as err:
        promote(store, user_for(store, "p@x.test"), RELEASE, now)

    assert phrase in str(err.value)
    assert store.release(RELEASE).state == ReleaseState.FULL
    assert store.aliases("fraud")["champion"] == chain["base"].digest


def test_promotion_after_the_stability_windows_moves_the_champion_alias(store, chain):
    _, now = full_rollout(store, chain, hours=5, days_ago=40)

    outcome = promote(store, user_for(store, "p@x.test"), RELEASE, now)

    assert outcome.release.state == ReleaseState.PROMOTED
    assert store.aliases("fraud")["champion"] == chain["cand"].digest
    alias = [e for e in store.audit_events() if e.action == "alias.set"][-1]
    assert (alias.actor, alias.detail["entry"], alias.detail["previous"]) == (
        "p@x.test", chain["cand"].digest, chain["base"].digest)
    assert store.decisions(release=RELEASE)[-1].gate == "promotion"
    assert store.verify_audit()[0]


def test_untriaged_escalations_fail_the_human_review_in_time(store, chain):
    _, now = full_rollout(store, chain, hours=5, days_ago=40)
    escalate(store, 2, LIVE0 + timedelta(hours=2))

    review = post_release_review(store, RELEASE, now)

    assert review.status == CheckStatus.FAIL
    assert "human review: 2 escalations waited more than 72 h for review" in review.reason


def test_a_segment_regression_fails_the_review_with_recall_from_an_independent_reference(store, chain):
    log, now = full_rollout(store, chain, hours=5, days_ago=40, worse_in="region=EU")

    review = post_release_review(store, RELEASE, now)

    eu = log[log["segment"] == "region=EU"]
    segments = {s["segment"]: s for s in review.evidence["segment regressions"]["segments"]}
    assert review.status == CheckStatus.FAIL and "recall in region=EU" in review.reason
    assert segments["region=EU"]["candidate_recall"] == pytest.approx(recall_score(eu["label"], eu["decision"]))
    assert segments["region=EU"]["baseline_recall"] == pytest.approx(recall_score(eu["label"],
                                                                                  eu["baseline_decision"]))
    assert "region=US" not in review.reason


def test_the_promotion_status_is_pass_only_in_full_rollout(store, chain):
    open_release(store, chain)

    status = promotion_status(store, RELEASE, LIVE0)

    assert status.status == CheckStatus.INCONCLUSIVE and "only a release in full rollout" in status.reason


# ---------------------------------------------------------------- the CLI and the figures


def test_signals_cli_ingests_a_log_file_then_windows_and_labels(store, chain, tmp_path, capsys):
    from lifecycle.cli import main
    open_release(store, chain)
    log = make_log(LIVE0, hours=2, labelled=False)
    log.to_parquet(tmp_path / "log.parquet", index=False)
    log.iloc[:50][["request_id"]].assign(label=1).to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "windows.yaml").write_text(json.dumps([window_dict(LIVE0 + timedelta(hours=5), "region=US", 0.0)]))
    store.close()
    db = ["--db", store.path, "signals", "ingest"]

    codes = [main([*db, str(tmp_path / "log.parquet"), "--release", RELEASE, "--window-minutes", "30"]),
             main([*db, str(tmp_path / "labels.csv"), "--release", RELEASE, "--labels"]),
             main([*db, str(tmp_path / "windows.yaml"), "--release", RELEASE]),
             main([*db, str(tmp_path / "log.txt"), "--release", RELEASE])]

    out, err = capsys.readouterr()
    assert codes == [0, 0, 0, 2]
    assert f"{len(log):,} new requests stored" in out and "50 labels changed" in out and "1 windows read" in out
    assert "use .parquet or .csv" in err


def test_figures_draw_the_threshold_the_failing_windows_and_every_segment(store, chain):
    open_release(store, chain)
    log = make_log(LIVE0, hours=4, spikes={("region=EU", 1): 0.25, ("region=EU", 2): 0.25})
    ingest_prediction_log(store, RELEASE, log, 60, "p@x.test", LIVE0 + timedelta(hours=4))
    view = monitoring_view(store, RELEASE, LIVE0 + timedelta(hours=5))
    chart = next(c for c in view.charts if c.rule.name == "fallback rate")

    figure = rule_figure(chart.rule, chart.series, view.stages)
    heat = heatmap_figure(chart.rule, view.heatmaps["fallback rate"])

    failing = next(t for t in figure.data if t.name == "failing window")
    assert len(failing.x) == int((chart.series["status"] == "fail").sum())
    assert any(shape.y0 == 0.03 for shape in figure.layout.shapes)
    table = heatmap_frame(view.heatmaps["fallback rate"])
    assert list(table.index) == ["region=EU", "region=US", "all"] and table.shape[1] == 4
    assert heat.data[0].z.shape == table.shape
    assert len(stages_figure(view.stages).data) == len(view.stages)


# ---------------------------------------------------------------- the demo


def test_the_demo_canary_was_halted_by_the_eu_fallback_rule(demo_store):
    view = monitoring_view(demo_store, "churn-v2", datetime(2026, 11, 20, 9, tzinfo=timezone.utc))

    eu = view.tripped[view.tripped["segment"] == "region=EU"]
    assert view.release.state == ReleaseState.HALTED
    assert view.release.serving == demo_store.release("churn-v2").baseline
    assert set(view.tripped["rule"]) == {"fallback rate"} and len(eu) >= 3
    assert view.incidents["rule"].tolist() == ["fallback rate (canary)"]
    assert demo_store.frame("SELECT count(*) AS n FROM prediction_log")["n"].iloc[0] > 0


def test_logs_queued_meanwhile_are_stored_together_exactly_and_a_bad_one_alone_is_refused(store, chain):
    import threading
    import time

    import lifecycle.monitoring as monitoring

    open_release(store, chain)
    logs = [make_log(LIVE0 + timedelta(hours=2 * k), 3, seed=k, prefix=f"g{k}") for k in range(4)]
    bad = make_log(LIVE0, 1, seed=9, prefix="bad").assign(latency_ms=-1.0)
    groups, results, errors = [], {}, {}
    lead = monitoring._lead_logs
    monitoring_lead = lambda s, group: (groups.append(len(group)), lead(s, group))  # noqa: E731

    def send(key, log):
        try:
            results[key] = ingest_prediction_log(store, RELEASE, log, actor="pipeline", now=LIVE0 + timedelta(days=1))
        except IngestError as exc:
            errors[key] = exc

    jobs = [(f"log{k}", log) for k, log in enumerate(logs)] + [("bad", bad)]
    original = monitoring._lead_logs
    monitoring._lead_logs = monitoring_lead
    try:
        with store._write_lock:  # every log validates and queues, then one caller stores them all
            threads = [threading.Thread(target=send, args=job) for job in jobs]
            for t in threads:
                t.start()
            deadline = time.time() + 60
            while len(store._shared.queues.get("prediction_log", [])) < len(logs) and time.time() < deadline:
                time.sleep(0.01)
        for t in threads:
            t.join()
    finally:
        monitoring._lead_logs = original

    assert groups == [len(logs)]
    assert set(errors) == {"bad"} and "latency_ms" in str(errors["bad"])
    assert [results[f"log{k}"].inserted for k in range(4)] == [len(log) for log in logs]
    assert len({r.batch for r in results.values()}) == 1  # one batch of windows for the whole group
    assert_matches(store, pd.concat(logs, ignore_index=True))  # the same windows as one log aggregated at once
    assert store.verify_audit()[0]
