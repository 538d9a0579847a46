"""Rollout notes from the form and policy versions: validated per field, recorded, audited."""

from datetime import timedelta

import pytest

from conftest import T0
from lifecycle.identity import user_for
from lifecycle.ingest import IngestError
from lifecycle.notes import build_note, note_tables, save_note
from lifecycle.policy import change_policy, policy_yaml
from lifecycle.releases import decide, review

LATER = T0 + timedelta(hours=2)


def _form(chain, **overrides):
    tables = note_tables(chain["note"])
    fields = dict(model="fraud", candidate=chain["cand"].digest, baseline=chain["base"].digest,
                  release_object="better scores", release_owner="r@x.test", max_traffic_share=0.2,
                  excluded_segments=[], fallback_serving=chain["base"].digest, fallback_description="champion",
                  fallback_tested=True, fallback_evidence="drill", stop_rules=tables["stop_rules"],
                  stages=tables["stages"], success_metrics=tables["success_metrics"], now=LATER)
    fields.update(overrides)
    return fields


def test_the_form_tables_round_trip_into_the_same_note(store, chain):
    user = user_for(store, "r@x.test")

    note = build_note(**_form(chain), user=user)

    assert note.stop_rules == chain["note"].stop_rules
    assert note.stages == chain["note"].stages


def test_a_canary_share_above_the_blast_radius_is_refused_naming_the_stage(store, chain):
    tables = note_tables(chain["note"])
    stages = tables["stages"].copy()
    stages.loc[0, "traffic_share"] = 0.5

    with pytest.raises(IngestError) as exc:
        build_note(**_form(chain, stages=stages), user=user_for(store, "r@x.test"))

    assert "stages[0]" in str(exc.value) and "blast radius" in str(exc.value)


def test_a_stop_rule_on_an_unknown_metric_is_refused_naming_the_rule(store, chain):
    rules = note_tables(chain["note"])["stop_rules"].copy()
    rules.loc[0, "metric"] = "happiness"

    with pytest.raises(IngestError) as exc:
        build_note(**_form(chain, stop_rules=rules), user=user_for(store, "r@x.test"))

    assert any(path.startswith("stop_rules[0]") for path, _ in exc.value.problems)


def test_an_empty_release_object_is_refused(store, chain):
    with pytest.raises(IngestError, match="release_object"):
        build_note(**_form(chain, release_object="  "), user=user_for(store, "r@x.test"))


def test_a_new_note_makes_earlier_sign_offs_stale(store, chain):
    product = user_for(store, "r@x.test")
    decide(store, product, "rel-1", "signoff_product", "product", "approve", "ok", LATER)
    note = build_note(**_form(chain, release_object="scope changed: also EU"), user=product)

    save_note(store, product, note, LATER + timedelta(minutes=5), release_id="rel-1")

    result = next(r for r in review(store, "rel-1", LATER + timedelta(minutes=6)).results
                  if r.gate.id == "signoff_product")
    assert result.status == "pending" and result.stale


def test_only_the_product_owner_writes_the_note(store, chain):
    note = build_note(**_form(chain), user=user_for(store, "p@x.test"))

    with pytest.raises(PermissionError, match="Product owner"):
        save_note(store, user_for(store, "p@x.test"), note, LATER, release_id="rel-1")


def test_a_note_opens_a_draft_release(store, chain):
    product = user_for(store, "r@x.test")
    note = build_note(**_form(chain, release_object="second try"), user=product)

    release = save_note(store, product, note, LATER, title="Second try")

    assert release.state == "draft" and release.rollout_note == note.digest and release.id == "fraud-second-try"


def test_a_policy_change_is_a_recorded_version_by_product_or_platform(store, chain):
    text = policy_yaml(store.policy("fraud")).replace("max_segment_drop: 0.01", "max_segment_drop: 0.02")

    new = change_policy(store, user_for(store, "p@x.test"), text, LATER, "allow small drops")

    assert new.version == 2 and store.policy("fraud").evaluation.max_segment_drop == 0.02
    assert store.policy("fraud", 1).evaluation.max_segment_drop == 0.01
    assert any(e.action == "policy.put" and e.subject == "fraud/policy/2" for e in store.audit_events())


@pytest.mark.parametrize("email, text_change, error", [
    ("d@x.test", None, PermissionError),
    ("r@x.test", ("owner_role: data", "owner_role: janitor"), IngestError),
    ("r@x.test", ("stage: before", "stage: sometime"), IngestError),
])
def test_bad_policy_changes_are_refused_and_write_nothing(store, chain, email, text_change, error):
    text = policy_yaml(store.policy("fraud"))
    if text_change:
        text = text.replace(*text_change, 1)

    with pytest.raises(error):
        change_policy(store, user_for(store, email), text, LATER, "try")

    assert store.policy("fraud").version == 1


def test_a_release_is_judged_by_the_policy_it_was_opened_under(store, chain):
    text = policy_yaml(store.policy("fraud")).replace("- id: signoff_data", "- id: signoff_data_new", 1)
    change_policy(store, user_for(store, "r@x.test"), text, LATER, "rename a gate")

    gates = [r.gate.id for r in review(store, "rel-1", LATER).results]

    assert "signoff_data" in gates and "signoff_data_new" not in gates
