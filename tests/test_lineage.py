"""Lineage over stored digests: what was built from a snapshot, where an entry's data came from, the graph."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import T0, make_entry, make_model, make_note, make_report, make_run, make_snapshot
from lifecycle import lineage
from lifecycle.datasets import decide_snapshot
from lifecycle.identity import user_for
from lifecycle.models import Release, ReleaseState, Source, short
from lifecycle.store import NotFound

TRAINING, EVALUATION, BASELINE = lineage.TRAINING, lineage.EVALUATION, lineage.BASELINE


@pytest.fixture
def chain2(store):
    """Baseline trained on s1, candidate on s2 (compared with the baseline), evaluated on s3; s4 unused."""
    store.put_model(make_model())
    s1, s2, s3, s4 = (make_snapshot(name=n) for n in ("train-jun", "train-jul", "eval-aug", "unused"))
    s2 = s2.model_copy(update={"sources": [
        Source(name="ledger", uri="warehouse://ledger", version="2", extracted_at=T0, legal_usage="fraud"),
        Source(name="devices", uri="vendor://devices", version="v2.0", extracted_at=T0, legal_usage="fraud")]})
    base_run = make_run(s1, seed=1)
    cand_run = make_run(s2, seed=2, baseline=base_run.digest)
    report = make_report(cand_run, base_run, s3)
    base = make_entry(base_run, None, 1)
    cand = make_entry(cand_run, report, 2)
    note = make_note(cand, base)
    store.put_artifacts([s1, s2, s3, s4, base_run, cand_run, report, base, cand, note], "a@x.test")
    store.create_release(Release(id="rel-2", model="fraud", title="v2", candidate=cand.digest, baseline=base.digest,
                                 rollout_note=note.digest, policy_version=1, created_by="r@x.test", created_at=T0,
                                 state=ReleaseState.IN_REVIEW), "r@x.test")
    return {"s1": s1, "s2": s2, "s3": s3, "s4": s4, "base_run": base_run, "cand_run": cand_run, "report": report,
            "base": base, "cand": cand, "note": note, "release": "rel-2"}


def _ids(chain: dict, names: list[str]) -> list[str]:
    return [chain[n] if n == "release" else chain[n].digest for n in names]


@pytest.mark.parametrize("snapshot, expected", [
    ("s1", {"base_run": TRAINING, "base": TRAINING, "cand_run": BASELINE, "report": BASELINE, "release": BASELINE}),
    ("s2", {"cand_run": TRAINING, "report": TRAINING, "cand": TRAINING, "release": TRAINING}),
    ("s3", {"report": EVALUATION, "cand": EVALUATION, "release": EVALUATION}),
    ("s4", {}),
])
def test_built_from_lists_everything_downstream_with_how_it_depends_on_the_snapshot(store, chain2, snapshot,
                                                                                    expected):
    down = lineage.built_from(store, chain2[snapshot].digest)

    got = {item.id: item.relation for item in down.items}

    assert got == {ident: expected[name] for name, ident in zip(expected, _ids(chain2, list(expected)))}


def _derived_ancestors(store, digest: str) -> set[str]:
    """Walk parent fields upward on the models themselves (not the lineage table): an independent reference."""
    artifact = store.artifact(digest)
    out = set()
    for field, parent in artifact.parents().items():
        if field in lineage.DERIVED:
            out |= {parent} | _derived_ancestors(store, parent)
    return out


@pytest.mark.parametrize("snapshot", ["s1", "s2", "s3", "s4"])
def test_built_from_agrees_with_a_brute_force_walk_up_from_every_artifact(store, chain2, snapshot):
    target = chain2[snapshot].digest
    artifacts = [a for a in store.artifacts("fraud") if a.kind in lineage.DOWNSTREAM_KINDS]
    built = {a.digest for a in artifacts if target in _derived_ancestors(store, a.digest)}
    # A run's or report's baseline trained on the snapshot makes the snapshot its baseline's training data.
    compared = {a.digest for a in artifacts if a.digest not in built and getattr(a, "baseline_run", None)
                and store.artifact(a.baseline_run).snapshot == target}
    releases = {r.id for r in store.releases() if r.candidate in built or r.baseline in built}

    down = lineage.built_from(store, target)

    assert {i.id for i in down.items} == built | compared | releases
    assert {i.id for i in down.items if i.relation == BASELINE} == compared | {
        r.id for r in store.releases() if r.candidate not in built and r.baseline in built}


def test_built_from_explains_the_path_and_sums_it_up_in_one_line(store, chain2):
    down = lineage.built_from(store, chain2["s2"].digest[:12])

    release = down.of_kind("release")[0]

    assert down.snapshot == chain2["s2"].digest
    assert release.via.startswith(f"snapshot {short(chain2['s2'].digest)} → run {short(chain2['cand_run'].digest)}")
    assert release.via.endswith("release rel-2 (candidate)")
    assert down.line.startswith(f"Built from snapshot {short(chain2['s2'].digest)} 'train-jul': 1 training run, "
                                "1 evaluation report, 1 registry entry, 1 release (rel-2 (in review))")
    assert list(down.frame()["kind"]) == ["Training run", "Evaluation report", "Registry entry", "Release"]
    assert lineage.built_from(store, chain2["s4"].digest).line == (
        f"Nothing has been built from snapshot {short(chain2['s4'].digest)} 'unused' yet")


def test_data_origin_walks_from_an_entry_to_its_run_snapshot_sources_and_files(store, chain2):
    origin = lineage.data_origin(store, chain2["cand"].digest)

    assert origin.run == chain2["cand_run"] and origin.snapshot == chain2["s2"]
    assert origin.evaluation == chain2["report"] and origin.evaluation_snapshot == chain2["s3"]
    assert list(origin.steps_frame()["step"]) == ["registry entry", "training run", "training snapshot",
                                                  "evaluation", "evaluation snapshot"]
    sources = origin.sources_frame()
    assert list(zip(sources["used for"], sources["name"], sources["version"])) == [
        ("training", "ledger", "2"), ("training", "devices", "v2.0"), ("evaluation", "ledger", "1")]
    assert list(origin.files_frame()["sha256"]) == [chain2["s2"].files[0].sha256, chain2["s3"].files[0].sha256]
    assert f"on snapshot {short(chain2['s2'].digest)} 'train-jul'" in origin.line
    assert "Data owner: awaiting decision" in origin.line


def test_data_origin_carries_the_data_owners_decision(store, chain2):
    decide_snapshot(store, user_for(store, "d@x.test"), chain2["s1"].digest, "blocked", "label leak",
                    T0 + timedelta(hours=1))

    origin = lineage.data_origin(store, chain2["base"].digest)

    assert origin.status.status == "blocked" and "Data owner: blocked." in origin.line
    assert origin.evaluation is None and len(origin.steps_frame()) == 3


@pytest.mark.parametrize("call, target, message", [
    (lineage.built_from, "cand", "is a registry entry, not a dataset snapshot"),
    (lineage.data_origin, "s1", "is a dataset snapshot, not a registry entry"),
    (lineage.data_origin, "0" * 64, "no artifact with digest"),
    (lineage.built_from, "abc", "too short"),
])
def test_a_lineage_question_about_the_wrong_kind_of_digest_is_refused(store, chain2, call, target, message):
    digest = chain2[target].digest if target in chain2 else target

    with pytest.raises(NotFound, match=message):
        call(store, digest)


def test_the_lineage_graph_has_one_column_per_kind_and_the_stored_edges(store, chain2):
    graph = lineage.lineage_graph(store, "fraud")

    kinds = [n.kind for n in graph.nodes]
    expected_artifact_edges = store.lineage_frame("fraud").query("child_kind != 'rollout_note'")
    assert {k: kinds.count(k) for k in lineage.COLUMNS} == {
        "source": 3, "dataset_snapshot": 4, "training_run": 2, "evaluation_report": 1, "registry_entry": 2,
        "release": 1}
    assert {(e.parent, e.child, e.field) for e in graph.edges if e.field not in ("sources", "candidate", "baseline")
            } == set(zip(expected_artifact_edges["parent"], expected_artifact_edges["child"],
                         expected_artifact_edges["field"]))
    assert sum(e.field == "sources" for e in graph.edges) == 5
    assert {(e.parent, e.field, e.comparison) for e in graph.edges if e.child == "rel-2"} == {
        (chain2["cand"].digest, "candidate", False), (chain2["base"].digest, "baseline", True)}
    assert graph.node("source:devices@v2.0").page == "datasets"
    assert graph.node("rel-2").page == "release" and graph.node(chain2["cand"].digest).page == "registry"


def test_the_lineage_figure_shows_short_digests_and_highlights_what_was_built(store, chain2):
    graph = lineage.lineage_graph(store, "fraud")
    down = lineage.built_from(store, chain2["s2"].digest)

    fig = lineage.lineage_figure(graph, down.ids)

    markers = {t.name: t for t in fig.data if t.mode == "markers+text"}
    assert set(markers) == {lineage.TITLES[k] for k in lineage.COLUMNS}
    runs = markers["Training run"]
    sizes = dict(zip((c[0] for c in runs.customdata), runs.marker.size))
    assert sizes == {chain2["cand_run"].digest: 20, chain2["base_run"].digest: 14}
    assert any(short(chain2["cand"].digest) in text for text in markers["Registry entry"].text)
    highlighted = next(t for t in fig.data if t.name == "highlighted")
    assert len([x for x in highlighted.x if x is None]) == sum(
        1 for e in graph.edges if not e.comparison and e.parent in set(down.ids) | {"source:ledger@2",
                                                                                    "source:devices@v2.0"}
        and e.child in down.ids)


@pytest.mark.parametrize("event, expected", [
    (None, None),
    ({"selection": {"points": []}}, None),
    ({"selection": {"points": [{"customdata": ["rel-2", "Release", "in review", "v2"]}]}}, "rel-2"),
    ({"selection": {"points": [{"customdata": ["unknown"]}]}}, None),
    ({"selection": {"points": [{"x": 1}]}}, None),
])
def test_a_selected_point_of_the_graph_leads_to_its_node(store, chain2, event, expected):
    graph = lineage.lineage_graph(store, "fraud")

    node = graph.picked(event)

    assert (node.id if node else None) == expected


def test_on_the_demo_the_refresh_snapshot_fed_the_fraud_release_candidate(demo_store):
    refresh = next(a for a in demo_store.artifacts("card-fraud", "dataset_snapshot") if "refresh" in a.name)

    down = lineage.built_from(demo_store, refresh.digest)

    release = down.of_kind("release")
    assert [(r.id, r.relation) for r in release] == [("card-fraud-v2", TRAINING)]
    assert release[0].via.endswith("release card-fraud-v2 (candidate)")
    origin = lineage.data_origin(demo_store, demo_store.release("card-fraud-v2").candidate)
    assert origin.run.snapshot == refresh.digest
