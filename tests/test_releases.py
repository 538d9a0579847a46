"""Release review: gates from evidence, who may decide, staleness, races, the state machine, history."""

import threading
from datetime import timedelta

import pytest

from conftest import T0, make_entry, make_note, make_report, make_snapshot
from lifecycle.gates import GateStatus, evaluate_gates
from lifecycle.identity import user_for
from lifecycle.models import CheckResult, CheckStatus, DataFile, ReleaseState, Role, Verdict
from lifecycle.releases import DecisionRefused, decide, decide_artifact, release_evidence, review, serving_at, transition

LATER = T0 + timedelta(hours=1)


def _u(store, email):
    return user_for(store, email)


def _result(store, release_id, gate_id, now=LATER):
    rv = review(store, release_id, now)
    return next(r for r in rv.results if r.gate.id == gate_id)


def _sign_everything(store, chain):
    decide_artifact(store, _u(store, "d@x.test"), chain["snapshot"].digest, Verdict.USABLE, "", LATER)
    decide_artifact(store, _u(store, "m@x.test"), chain["report"].digest, Verdict.APPROVE, "", LATER)
    decide(store, _u(store, "p@x.test"), "rel-1", "signoff_platform", Role.PLATFORM, Verdict.APPROVE, "", LATER)


@pytest.mark.parametrize("gate_id, change, status", [
    ("lineage", None, GateStatus.PASS),
    ("lineage", "break_file", GateStatus.FAIL),
    ("evaluation", None, GateStatus.PASS),
    ("evaluation", "failing_report", GateStatus.FAIL),
    ("baseline", None, GateStatus.PASS),
    ("owner", None, GateStatus.PASS),
    ("rollback", None, GateStatus.PASS),
    ("signoff_product", None, GateStatus.PENDING),
    ("signoff_data", "data_usable", GateStatus.PASS),
    ("signoff_data", "data_blocked", GateStatus.FAIL),
    ("stop_rules", None, GateStatus.PENDING),
    ("stability", None, GateStatus.PENDING),
])
def test_gate_evaluation_by_kind_and_outcome(store, chain, gate_id, change, status):
    if change == "break_file":
        (store.data_root / "x.parquet").write_bytes(b"changed")
    elif change == "failing_report":
        store.put_artifact(make_report(chain["cand_run"], chain["base_run"], chain["snapshot"],
                                       gate=CheckStatus.FAIL, tag="again", at=LATER), "m@x.test", LATER)
    elif change in ("data_usable", "data_blocked"):
        verdict = Verdict.USABLE if change == "data_usable" else Verdict.BLOCKED
        decide_artifact(store, _u(store, "d@x.test"), chain["snapshot"].digest, verdict, "looked", LATER)

    result = _result(store, "rel-1", gate_id)

    assert result.status == status, result.reason
    assert result.reason


def test_a_changed_data_file_fails_lineage_naming_the_file(store, chain):
    (store.data_root / "x.parquet").write_bytes(b"tampered")

    result = _result(store, "rel-1", "lineage")

    assert result.status == GateStatus.FAIL and "x.parquet" in result.reason


def test_a_failing_quality_check_fails_lineage_with_its_reason(store, chain):
    bad = make_snapshot(name="leaky", files=chain["snapshot"].files,
                        checks=[CheckResult(name="leakage", status=CheckStatus.FAIL, reason="37 rows leak")])
    ev = release_evidence(store, "rel-1").model_copy(update={"snapshot": bad})

    results = evaluate_gates(ev.policy, ev, [], LATER)

    lineage = next(r for r in results if r.gate.id == "lineage")
    assert lineage.status == GateStatus.FAIL and "37 rows leak" in lineage.reason


@pytest.mark.parametrize("email, gate, role, verdict, comment, needle", [
    ("n@x.test", "signoff_product", Role.PRODUCT, Verdict.APPROVE, "", "does not hold the Product owner role"),
    ("a@x.test", "signoff_model", Role.MODEL, Verdict.APPROVE, "", "separation of duties"),
    ("p@x.test", "signoff_product", Role.PLATFORM, Verdict.APPROVE, "", "signed off by the Product owner"),
    ("r@x.test", "evaluation", Role.PRODUCT, Verdict.WAIVE, "  ", "needs a reason"),
    ("p@x.test", "evaluation", Role.PLATFORM, Verdict.WAIVE, "because", "may be waived only by"),
    ("r@x.test", "nope", Role.PRODUCT, Verdict.APPROVE, "", "no gate 'nope'"),
])
def test_decisions_the_rules_forbid_are_refused_with_the_rule(store, chain, email, gate, role, verdict, comment,
                                                              needle):
    before = len(store.decisions(release="rel-1"))

    with pytest.raises(DecisionRefused, match=needle):
        decide(store, _u(store, email), "rel-1", gate, role, verdict, comment, LATER)

    assert len(store.decisions(release="rel-1")) == before


def test_the_author_may_still_reject_their_own_release(store, chain):
    outcome = decide(store, _u(store, "a@x.test"), "rel-1", "signoff_model", Role.MODEL, Verdict.REJECT,
                     "found a bug", LATER)

    assert outcome.moved_to == ReleaseState.REJECTED


def test_a_decision_binds_to_every_digest_reviewed(store, chain):
    outcome = decide(store, _u(store, "r@x.test"), "rel-1", "signoff_product", Role.PRODUCT, Verdict.APPROVE, "ok",
                     LATER)

    covered = outcome.decision.covered
    assert covered["candidate"] == chain["cand"].digest
    assert covered["evaluation"] == chain["report"].digest
    assert covered["snapshot"] == chain["snapshot"].digest
    assert covered["note"] == chain["note"].digest


def test_a_changed_evaluation_report_makes_an_earlier_approval_stale(store, chain):
    decide(store, _u(store, "r@x.test"), "rel-1", "signoff_product", Role.PRODUCT, Verdict.APPROVE, "ok", LATER)
    assert _result(store, "rel-1", "signoff_product").status == GateStatus.PASS

    store.put_artifact(make_report(chain["cand_run"], chain["base_run"], chain["snapshot"], tag="rerun", at=LATER),
                       "m@x.test", LATER + timedelta(minutes=1))

    result = _result(store, "rel-1", "signoff_product", LATER + timedelta(minutes=2))
    assert result.status == GateStatus.PENDING
    assert result.stale and "stale" in result.reason


def test_a_waiver_with_a_reason_by_an_allowed_role_counts(store, chain):
    store.put_artifact(make_report(chain["cand_run"], chain["base_run"], chain["snapshot"], gate=CheckStatus.FAIL,
                                   tag="f", at=LATER), "m@x.test", LATER)

    decide(store, _u(store, "r@x.test"), "rel-1", "evaluation", Role.PRODUCT, Verdict.WAIVE,
           "segment is 0.1% of volume; accepted", LATER)

    result = _result(store, "rel-1", "evaluation")
    assert result.status == GateStatus.WAIVED and "accepted" in result.reason


def test_the_release_is_approved_once_every_before_gate_passes(store, chain):
    _sign_everything(store, chain)

    outcome = decide(store, _u(store, "r@x.test"), "rel-1", "signoff_product", Role.PRODUCT, Verdict.APPROVE,
                     "go", LATER)

    assert outcome.moved_to == ReleaseState.APPROVED
    assert store.release("rel-1").state == ReleaseState.APPROVED


def test_twenty_reviewers_at_once_lose_no_decision_and_move_the_state_once(store, chain):
    _sign_everything(store, chain)
    product = _u(store, "r@x.test")
    outcomes, errors = [], []

    def approve(i):
        try:
            outcomes.append(decide(store, product, "rel-1", "signoff_product", Role.PRODUCT, Verdict.APPROVE,
                                   f"go {i}", LATER, seen_version=1))
        except DecisionRefused as exc:
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    moved = [o for o in outcomes if o.moved_to is not None]
    approvals = [e for e in store.audit_events("rel-1") if e.action == "release.approved"]
    assert len(moved) == 1 and len(approvals) == 1
    product_decisions = [d for d in store.decisions(release="rel-1") if d.gate == "signoff_product"]
    assert len(product_decisions) + len(errors) == 20
    assert all("before-rollout decisions are taken in review" in str(e) for e in errors)
    assert store.verify_audit()[0]


def test_transitions_follow_the_state_machine_and_roles(store, chain):
    with pytest.raises(DecisionRefused, match="cannot go from in_review to canary"):
        transition(store, _u(store, "p@x.test"), "rel-1", ReleaseState.CANARY, LATER, "skip")
    with pytest.raises(DecisionRefused, match="through its sign-offs, not by hand"):
        transition(store, _u(store, "r@x.test"), "rel-1", ReleaseState.APPROVED, LATER, "force")
    with pytest.raises(DecisionRefused, match="before-rollout gates still open"):
        transition(store, None, "rel-1", ReleaseState.APPROVED, LATER, "system tries too early")


def test_a_full_release_leaves_a_verifiable_audit_log_and_history(store, chain):
    _sign_everything(store, chain)
    decide(store, _u(store, "r@x.test"), "rel-1", "signoff_product", Role.PRODUCT, Verdict.APPROVE, "go", LATER)
    store.set_alias("fraud", "champion", chain["base"].digest, "p@x.test", T0)
    platform = _u(store, "p@x.test")

    transition(store, platform, "rel-1", ReleaseState.SHADOW, LATER + timedelta(hours=1), "shadow")
    transition(store, platform, "rel-1", ReleaseState.CANARY, LATER + timedelta(hours=2), "canary")
    halted = transition(store, platform, "rel-1", ReleaseState.HALTED, LATER + timedelta(hours=3), "by hand")

    assert halted.serving == chain["base"].digest
    ok, reason = store.verify_audit()
    assert ok, reason
    during = serving_at(store, "fraud", LATER + timedelta(hours=2, minutes=30))
    assert during.champion == chain["base"].digest
    assert [x["release"] for x in during.live_releases] == ["rel-1"]
    assert any(d["gate"] == "signoff_product" for d in during.decisions_in_force)
    after = serving_at(store, "fraud", LATER + timedelta(hours=4))
    assert after.live_releases == []


def test_release_status_cli_exits_one_while_gates_are_open(store, chain, capsys):
    from lifecycle.cli import main
    store.close()

    code = main(["--db", store.path, "release", "status", "rel-1"])

    out = capsys.readouterr().out
    assert code == 1
    assert "WAIT" in out and "Product owner sign-off" in out
