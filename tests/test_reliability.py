"""Reliability: concurrent API clients beside deciding users lose nothing; fuzzed input never crashes or half-writes."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from apikit import LIVE, bearer, issue, live_release, log_rows, seed_models, snapshot_body
from lifecycle import api
from lifecycle.identity import user_for
from lifecycle.ingest import IngestError, ingest, parse_document
from lifecycle.models import Role, Verdict
from lifecycle.releases import decide, release_evidence
from lifecycle.store import shared_store

CLIENTS, ARTIFACTS_EACH, BATCHES_EACH, ROWS_EACH = 20, 5, 2, 50
DECIDERS = {"d@x.test": Role.DATA, "m@x.test": Role.MODEL, "p@x.test": Role.PLATFORM, "r@x.test": Role.PRODUCT,
            "n@x.test": Role.ANALYST}


@pytest.fixture
def store(tmp_path):
    return shared_store(tmp_path / "seamline.duckdb")


@pytest.fixture
def live(store, chain):
    seed_models(store)
    live_release(store, chain)
    return store


def _signoff_gates(store, release_id: str) -> dict[Role, str]:
    gates = release_evidence(store, release_id).policy.gates
    return {g.owner_role: g.id for g in gates if g.kind.value == "signoff"}


@pytest.mark.timeout(600)
def test_twenty_api_clients_and_five_deciding_users_lose_nothing(live):
    secret = issue(live, "load", ["artifacts", "signals"])
    gates = _signoff_gates(live, "rel-1")
    deciders = {email: role for email, role in DECIDERS.items() if role in gates}
    before = live.counts()
    failures: list[str] = []

    def client_work(k: int) -> None:
        client = TestClient(Starlette(routes=api.routes(live.path)))
        for j in range(ARTIFACTS_EACH):
            r = client.post("/api/v1/artifacts", json=snapshot_body(k * 1000 + j), headers=bearer(secret))
            if r.status_code != 201:
                failures.append(r.text)
        for j in range(BATCHES_EACH):
            rows = log_rows(ROWS_EACH, prefix=f"c{k}-{j}")
            r = client.post("/api/v1/signals", json={"release": LIVE, "rows": rows}, headers=bearer(secret))
            if r.status_code != 201:
                failures.append(r.text)

    def user_work(email: str) -> None:
        user = user_for(live, email)
        try:  # one sign-off each: once every gate passes the release is approved and review closes
            decide(live, user, "rel-1", gates[deciders[email]], deciders[email], Verdict.APPROVE, "ok",
                   live_release_now())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(f"{email}: {exc}")

    threads = [threading.Thread(target=client_work, args=(k,)) for k in range(CLIENTS)]
    threads += [threading.Thread(target=user_work, args=(e,)) for e in deciders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    after = live.counts()
    assert failures == []
    assert after["artifacts"] - before["artifacts"] >= CLIENTS * ARTIFACTS_EACH  # plus the window batches
    assert live.frame("SELECT count(*) AS n FROM artifacts WHERE kind = 'dataset_snapshot'")["n"][0] == \
        CLIENTS * ARTIFACTS_EACH + 1
    assert live.frame("SELECT count(*) AS n FROM prediction_log")["n"][0] == CLIENTS * BATCHES_EACH * ROWS_EACH
    assert after["decisions"] - before["decisions"] == len(deciders)
    assert live.verify_audit()[0], live.verify_audit()[1]


def live_release_now():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- fuzzing

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=20)
KEYS = ["kind", "model", "name", "created_by", "created_at", "row_count", "release", "windows", "rows", "columns",
        "case_id", "at", "score", "severity", "text"]
NEAR_VALID = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parse_document_refuses_any_garbage_with_an_ingest_error(data):
    try:
        parse_document(data)
    except IngestError as exc:
        assert exc.problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=JSON | NEAR_VALID | st.lists(NEAR_VALID, max_size=3))
def test_fuzzed_artifacts_never_crash_ingest_nor_write(live, body):
    before = live.counts()

    with pytest.raises(IngestError):
        ingest(live, body, actor="fuzz")

    assert live.counts() == before


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["artifacts", "signals", "escalations"]),
       body=JSON | NEAR_VALID | st.lists(NEAR_VALID, max_size=3) | st.builds(
           lambda rows, k, v: {"release": LIVE, "rows": [{**r, k: v} for r in rows]},
           st.just(log_rows(3)), st.sampled_from(list(log_rows(1)[0])), JSON))
def test_fuzzed_api_bodies_get_a_4xx_and_write_nothing(live, path, body):
    secret = getattr(live, "_fuzz_secret", None) or issue(live, "fuzz", ["artifacts", "signals", "escalations"])
    live._fuzz_secret = secret  # one token for every example on this store
    client = TestClient(Starlette(routes=api.routes(live.path)))
    before = live.counts()

    response = client.post(f"/api/v1/{path}", content=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", **bearer(secret)})

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["errors"][0]["message"]
        assert live.counts() == before
