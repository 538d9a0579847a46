"""Models round-trip through JSON, digests are stable, and validation names what is wrong."""

import json

import pytest
from pydantic import ValidationError

from conftest import make_entry, make_note, make_report, make_run, make_snapshot
from lifecycle.models import ARTIFACT_TYPES, RolloutNote, StopRule, canonical_json


def _chain():
    snap = make_snapshot()
    base = make_run(snap, seed=1)
    cand = make_run(snap, seed=2, baseline=base.digest)
    report = make_report(cand, base, snap)
    e1, e2 = make_entry(base, None, 1), make_entry(cand, report, 2)
    return [snap, base, cand, report, e1, e2, make_note(e2, e1)]


@pytest.mark.parametrize("artifact", _chain(), ids=lambda a: a.kind)
def test_every_artifact_round_trips_through_json_with_the_same_digest(artifact):
    text = artifact.model_dump_json(by_alias=True)

    back = type(artifact).model_validate_json(text)

    assert back == artifact
    assert back.digest == artifact.digest


def test_digest_is_sha256_of_canonical_json_and_ignores_key_order():
    snap = make_snapshot()
    body = snap.body()
    shuffled = json.loads(json.dumps(dict(reversed(list(body.items())))))

    import hashlib
    assert snap.digest == hashlib.sha256(canonical_json(shuffled).encode()).hexdigest()


def test_any_field_change_changes_the_digest():
    a, b = make_snapshot(name="s1"), make_snapshot(name="s2")

    assert a.digest != b.digest


def test_run_duration_is_kept_but_not_hashed():
    snap = make_snapshot()
    run = make_run(snap)

    slower = run.model_copy(update={"duration_s": 99.0})

    assert slower.digest == run.digest
    assert slower.record()["duration_s"] == 99.0


def test_artifacts_are_frozen():
    snap = make_snapshot()

    with pytest.raises(ValidationError):
        snap.row_count = 5


def test_seven_artifact_kinds_exist():
    assert len(ARTIFACT_TYPES) == 7


def test_canary_share_above_blast_radius_is_refused_with_the_stage_named():
    entries = _chain()
    note = make_note(entries[5], entries[4])
    body = note.model_dump(mode="json")
    body["stages"][0]["traffic_share"] = 0.5

    with pytest.raises(ValidationError) as exc:
        RolloutNote.model_validate(body)

    assert "stages[0]" in str(exc.value) and "blast radius" in str(exc.value)


def test_stop_rule_on_an_unknown_metric_is_refused():
    with pytest.raises(ValidationError, match="unknown metric 'happiness'"):
        StopRule(name="x", metric="happiness", comparator=">", threshold=1, window_minutes=60, min_volume=1,
                 failure_limit=0)
