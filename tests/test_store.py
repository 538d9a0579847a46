"""The store keeps artifacts whole, refuses orphans, migrates idempotently and chains its audit log."""

import threading

import duckdb
import pytest

from conftest import T0, make_entry, make_model, make_report, make_run, make_snapshot
from lifecycle.models import Decision, Escalation, EscalationType, Release, Role, Verdict
from lifecycle.policy import default_policy
from lifecycle.store import MIGRATIONS, MissingParent, NotFound, StaleVersion, Store


def test_migrations_are_recorded_and_idempotent_on_reopen(tmp_path):
    path = tmp_path / "s.duckdb"
    first = Store(path)
    applied = first.migrations()
    first.close()

    again = Store(path)

    assert applied == list(range(1, len(MIGRATIONS) + 1))
    assert again.migrate() == []
    assert again.migrations() == applied


def test_artifact_round_trips_through_the_store(store):
    store.put_model(make_model())
    snap = make_snapshot()

    store.put_artifact(snap, "d@x.test")

    assert store.artifact(snap.digest) == snap
    assert store.artifact(snap.digest[:12]) == snap


def test_missing_parent_is_refused_and_nothing_is_written(store):
    store.put_model(make_model())
    snap = make_snapshot()
    run = make_run(snap)
    before = store.counts()

    with pytest.raises(MissingParent, match="training_run.snapshot"):
        store.put_artifact(run, "a@x.test")

    assert store.counts() == before


def test_a_batch_lands_whole_or_not_at_all(store):
    store.put_model(make_model())
    snap = make_snapshot()
    run = make_run(snap)
    orphan = make_run(make_snapshot(name="other"), seed=9)
    before = store.counts()

    with pytest.raises(MissingParent):
        store.put_artifacts([snap, run, orphan], "a@x.test")

    assert store.counts() == before
    assert not store.has(snap.digest)


def test_parents_earlier_in_the_batch_count(store):
    store.put_model(make_model())
    snap = make_snapshot()
    run = make_run(snap)

    store.put_artifacts([snap, run], "a@x.test")

    assert store.children(snap.digest) == [(run.digest, "snapshot")]


def test_unknown_digest_is_not_found(store):
    with pytest.raises(NotFound):
        store.artifact("0" * 64)


def test_models_policies_releases_decisions_escalations_round_trip(store):
    model = make_model()
    store.put_model(model)
    policy = default_policy("fraud", "r@x.test", T0)
    store.put_policy(policy, "r@x.test")
    snap = make_snapshot()
    run = make_run(snap)
    entry = make_entry(run, None, 1)
    store.put_artifacts([snap, run, entry], "a@x.test")
    release = Release(id="r1", model="fraud", title="t", candidate=entry.digest, baseline=None, rollout_note=None,
                      policy_version=1, created_by="r@x.test", created_at=T0)
    decision = Decision(release="r1", gate="signoff_product", user="r@x.test", role=Role.PRODUCT,
                        verdict=Verdict.APPROVE, at=T0, covered={"candidate": entry.digest})
    case = Escalation(case_id="E1", at=T0, model="fraud", segment="all", type=EscalationType.COMPLAINT, score=0.9,
                      decision="declined", severity="high", text="<b>hi</b>")

    store.create_release(release, "r@x.test")
    stored = store.record_decision(decision, "r@x.test")
    store.put_escalations([case], "n@x.test")

    assert store.model("fraud") == model
    assert store.policy("fraud") == policy
    assert store.release("r1") == release
    assert store.decisions(release="r1") == [stored]
    assert store.escalations("fraud") == [case]
    assert store.roles_of("a@x.test") == {"fraud": {Role.MODEL}}


def test_release_update_with_an_old_version_is_refused(store, chain):
    release = chain["release"]
    store.update_release(release, 0, "x", "release.touch", {}, T0)

    with pytest.raises(StaleVersion, match="changed meanwhile"):
        store.update_release(release, 0, "y", "release.touch", {}, T0)


def test_audit_chain_verifies_after_writes(store, chain):
    ok, reason = store.verify_audit()

    assert ok, reason


@pytest.mark.parametrize("tamper, expected", [
    ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", "entry 3"),
    ("DELETE FROM audit WHERE seq = 2", "entry 2 is missing"),
    ("UPDATE audit SET detail = '{}' WHERE seq = 1", "entry 1"),
    ("INSERT INTO audit SELECT seq + 1000, logged_at, actor, action, subject, detail, prev_hash, hash FROM audit "
     "WHERE seq = 1", "is missing"),
])
def test_audit_verification_finds_an_altered_inserted_or_deleted_entry(chain, store, tamper, expected):
    path = store.path
    store.close()
    con = duckdb.connect(path)
    con.execute(tamper)
    con.close()

    reopened = Store(path)
    ok, reason = reopened.verify_audit()

    assert not ok
    assert expected in reason


def test_truncating_the_tail_of_the_audit_log_is_detected(chain, store):
    path = store.path
    store.close()
    con = duckdb.connect(path)
    con.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    con.close()

    ok, reason = Store(path).verify_audit()

    assert not ok and "removed" in reason


def test_concurrent_writers_lose_nothing_and_keep_the_chain(store, chain):
    def write(i):
        for j in range(25):
            store.audit(f"user{i}", "note", f"subject-{i}-{j}", {"j": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    before = store.counts()["audit"]

    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert store.counts()["audit"] == before + 200
    assert store.verify_audit()[0]


def test_a_store_keeps_the_wall_clock_until_it_is_given_its_own(tmp_path):
    from datetime import datetime, timedelta, timezone

    from lifecycle.store import Store

    s = Store(tmp_path / "clock.duckdb")
    assert s.clock() is None and abs((s.now() - datetime.now(timezone.utc)).total_seconds()) < 5

    anchor = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    s.set_clock(anchor, "generated for 2026-11-20", started=datetime.now(timezone.utc) - timedelta(hours=2))
    s.close()
    again = Store(tmp_path / "clock.duckdb")

    elapsed = again.now() - anchor
    assert timedelta(hours=2) <= elapsed < timedelta(hours=2, seconds=30)
    assert again.clock()[2] == "generated for 2026-11-20"
    again.close()


def test_a_token_lookup_racing_its_revocation_does_not_keep_it_alive(store, monkeypatch):
    from datetime import datetime, timezone

    from conftest import make_model
    from lifecycle.models import ApiToken
    from lifecycle.tokens import hash_secret

    store.put_model(make_model())
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    token = ApiToken(name="pipe", sha256=hash_secret("secret"), model="fraud", scopes=["artifacts"],
                     created_by="p@x.test", created_at=at)
    store.put_api_token(token, "p@x.test")
    read = store._rows

    def read_then_revoke(sql, params=()):
        rows = read(sql, params)
        if "FROM api_tokens WHERE sha256" in sql:
            monkeypatch.setattr(store, "_rows", read)
            store.revoke_api_token("pipe", "p@x.test", at)  # commits after this lookup read the row
        return rows

    monkeypatch.setattr(store, "_rows", read_then_revoke)
    raced = store.api_token_by_hash(hash_secret("secret"))

    assert raced.revoked_at is None  # it read the table before the revocation committed
    assert store.api_token_by_hash(hash_secret("secret")).revoked_at is not None


def test_a_model_added_after_the_model_cache_filled_takes_artifacts(store):
    from conftest import make_model, make_snapshot

    store.put_model(make_model("fraud"))
    store.put_artifact(make_snapshot("fraud", name="a"), "a@x.test")  # fills the cache of model ids
    store.put_model(make_model("churn"))

    assert store.put_artifact(make_snapshot("churn", name="b"), "a@x.test")


def test_submissions_queued_for_the_write_lock_share_one_commit_and_stay_all_or_nothing(store, monkeypatch):
    import time

    from conftest import make_model, make_run, make_snapshot
    from lifecycle.store import MissingParent

    store.put_model(make_model())
    good = [make_snapshot(name=f"s{i}") for i in range(6)]
    child = make_run(good[0])  # its parent arrives in the same group, from an earlier submission
    orphan = make_run(make_snapshot(name="never-stored"))
    sizes, results, errors = [], {}, {}
    lead = store._commit_group
    monkeypatch.setattr(store, "_commit_group", lambda group: (sizes.append(len(group)), lead(group)))

    def submit(key, artifacts):
        try:
            results[key] = store.put_artifacts_grouped(artifacts, "p@x.test")
        except MissingParent as exc:
            errors[key] = exc

    jobs = [(f"good{i}", [s]) for i, s in enumerate(good)] + [("child", [child]), ("orphan", [orphan]),
                                                                ("pair", [make_snapshot(name="p"), make_run(
                                                                    make_snapshot(name="p"))])]
    before = store.counts()
    with store._write_lock:  # everyone queues while the lock is held, then one of them leads the group
        threads = [threading.Thread(target=submit, args=job) for job in jobs]
        for queued, t in enumerate(threads, start=1):  # queued in this order: the child after its parent
            t.start()
            while len(store._shared.queues.get("artifacts", [])) < queued:
                time.sleep(0.005)
    for t in threads:
        t.join()

    assert sizes[0] == len(jobs) and sum(sizes) == len(jobs)
    assert set(errors) == {"orphan"} and "parent" in str(errors["orphan"])
    assert len(results) == len(jobs) - 1 and results["child"] == [child.digest]
    assert store.counts()["artifacts"] == before["artifacts"] + len(good) + 1 + 2
    assert not store.has(orphan.digest)
    ok, reason = store.verify_audit()
    assert ok, reason


def test_when_the_shared_transaction_fails_each_submission_is_settled_on_its_own(store, monkeypatch):
    from conftest import make_model, make_snapshot
    from lifecycle.store import Queued, _Submission

    store.put_model(make_model())
    ok_a, bad, ok_b = make_snapshot(name="a"), make_snapshot(name="bad"), make_snapshot(name="b")
    write = store._write_artifact

    def failing(cur, artifact, actor, at):
        if artifact.digest == bad.digest:
            raise RuntimeError("disk full")  # not a refusal: the whole shared transaction rolls back
        write(cur, artifact, actor, at)

    monkeypatch.setattr(store, "_write_artifact", failing)
    group = [Queued(_Submission([a], "p@x.test", store.now())) for a in (ok_a, bad, ok_b)]

    with store._write_lock:
        store._commit_group(group)

    assert group[0].result == [ok_a.digest] and group[2].result == [ok_b.digest]
    assert isinstance(group[1].error, RuntimeError) and not store.has(bad.digest)
    assert store.has(ok_a.digest) and store.has(ok_b.digest) and store.verify_audit()[0]
