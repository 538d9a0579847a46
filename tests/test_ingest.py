"""One ingestion path refuses every class of bad input by name and writes nothing."""

import json

import pytest

from conftest import make_model, make_run, make_snapshot
from lifecycle.ingest import MAX_BYTES, IngestError, ingest, parse_document


@pytest.fixture
def ready(store):
    store.put_model(make_model())
    return store


def _snapshot_json() -> dict:
    return make_snapshot().record()


def test_a_valid_artifact_is_stored_from_json_and_from_yaml(ready):
    import yaml
    body = _snapshot_json()

    digests = ingest(ready, json.dumps(body), actor="cli")
    again = ingest(ready, yaml.safe_dump(body), actor="cli", fmt="yaml")

    assert digests == again == [make_snapshot().digest]
    assert ready.counts()["artifacts"] == 1


def test_a_list_is_all_or_nothing(ready):
    snap = make_snapshot()
    run = make_run(snap)
    bad = make_run(make_snapshot(name="nope"), seed=5)
    before = ready.counts()

    with pytest.raises(IngestError, match="not in the store"):
        ingest(ready, json.dumps([snap.record(), run.record(), bad.record()]), actor="cli")

    assert ready.counts() == before


def _mutate(path: str, value):
    body = _snapshot_json()
    target = body
    parts = path.split(".")
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is KeyError:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return json.dumps(body)


@pytest.mark.parametrize("text, field", [
    (_mutate("surprise", 1), "surprise"),
    (_mutate("row_count", "100"), "row_count"),
    (_mutate("row_count", 1.5), "row_count"),
    (_mutate("label.delay_days", -1), "label.delay_days"),
    (_mutate("features.0.dtype", "complex"), "features[0].dtype"),
    (_mutate("name", KeyError), "name"),
    (_mutate("data_digest", "abc"), "data_digest"),
    (_mutate("kind", "mystery"), "kind"),
])
def test_bad_fields_are_refused_with_the_field_named(ready, text, field):
    before = ready.counts()

    with pytest.raises(IngestError) as exc:
        ingest(ready, text, actor="cli")

    assert any(path == field for path, _ in exc.value.problems), exc.value.problems
    assert ready.counts() == before


@pytest.mark.parametrize("text, needle", [
    ('{"kind": "dataset_snapshot", "kind": "training_run"}', "duplicate key"),
    ('{"row_count": NaN}', "NaN is not a valid number"),
    ('{"row_count": Infinity}', "Infinity is not a valid number"),
    ("kind: a\nkind: b\n", "duplicate key"),
    ("row_count: .nan\n", "not a valid number"),
    ('{"a": ', "invalid JSON"),
    ("[" * 100 + "]" * 100, "nested deeper"),
])
def test_malformed_documents_are_refused_before_validation(ready, text, needle):
    with pytest.raises(IngestError, match=needle):
        ingest(ready, text, actor="cli")

    assert ready.counts()["artifacts"] == 0


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(IngestError, match="limit"):
        parse_document(b" " * (MAX_BYTES + 1))


def test_unknown_model_is_refused(store):
    with pytest.raises(IngestError, match="no model 'fraud'"):
        ingest(store, json.dumps(_snapshot_json()), actor="cli")
