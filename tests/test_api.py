"""The HTTP API: every endpoint, bearer tokens and their scopes, size limits, malformed bodies, nothing written on error."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from apikit import (
    LIVE, LIVE0, PLATFORM, bearer, columns_of, escalation, issue, live_release, log_rows, seed_models, snapshot_body,
    window,
)
from conftest import T0
from lifecycle import api
from lifecycle.identity import user_for
from lifecycle.store import shared_store
from lifecycle.tokens import TokenRefused, create_token, revoke_token


@pytest.fixture
def store(tmp_path):
    """The process-wide store over a fresh file: the API and the test share one connection, as in serve.py."""
    return shared_store(tmp_path / "seamline.duckdb")


@pytest.fixture
def live(store, chain):
    seed_models(store)
    live_release(store, chain)
    return store


@pytest.fixture
def client(live):
    return TestClient(Starlette(routes=api.routes(live.path)))


@pytest.fixture
def tokens(live):
    return {"all": issue(live, "pipeline-all", ["artifacts", "signals", "escalations"]),
            "artifacts": issue(live, "pipeline-artifacts", ["artifacts"]),
            "churn": issue(live, "churn-all", ["artifacts", "signals", "escalations"], model="churn")}


def written(store) -> dict:
    return {"counts": store.counts(), "log": store.frame("SELECT count(*) AS n FROM prediction_log")["n"][0]}


def post(client, path, body, secret, raw: bytes | None = None, **headers):
    data = raw if raw is not None else json.dumps(body).encode()
    return client.post(f"/api/v1/{path}", content=data,
                       headers={"Content-Type": "application/json", **bearer(secret), **headers})


# ---------------------------------------------------------------- the endpoints


def test_health_answers_without_a_token(client):
    response = client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_openapi_document_describes_every_route(client):
    response = client.get("/api/v1/openapi.json")

    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    paths = {p for p in doc["paths"]}
    routes = {r.path for r in api.routes()}
    assert paths == routes
    assert doc["paths"]["/api/v1/artifacts"]["post"]["responses"]["413"]


def test_artifacts_are_stored_with_the_token_name_as_actor(client, live, tokens):
    bodies = [snapshot_body(1), snapshot_body(2)]

    response = post(client, "artifacts", bodies, tokens["artifacts"])

    assert response.status_code == 201, response.text
    digests = response.json()["digests"]
    assert all(live.has(d) for d in digests)
    actors = {e.actor for e in live.audit_events() if e.subject in digests}
    assert actors == {"pipeline-artifacts"}


def test_resending_an_artifact_is_idempotent(client, live, tokens):
    post(client, "artifacts", snapshot_body(1), tokens["all"])
    before = written(live)

    response = post(client, "artifacts", snapshot_body(1), tokens["all"])

    assert response.status_code == 201
    assert written(live) == before


def test_signal_windows_are_stored_for_a_live_release(client, live, tokens):
    body = {"release": LIVE, "windows": [window(LIVE0), window(LIVE0, "region=US")]}

    response = post(client, "signals", body, tokens["all"])

    assert response.status_code == 201, response.text
    assert response.json()["windows_updated"] == 2
    assert len(live.windows_frame(LIVE)) == 2


@pytest.mark.parametrize("shape", ["rows", "columns"])
def test_a_prediction_log_batch_is_stored_once_per_request_id(client, live, tokens, shape):
    rows = log_rows(300)
    body = {"release": LIVE, shape: rows if shape == "rows" else columns_of(rows)}

    first = post(client, "signals", body, tokens["all"])
    again = post(client, "signals", body, tokens["all"])

    assert first.status_code == 201, first.text
    assert first.json()["inserted"] == 300
    assert again.json()["inserted"] == 0 and again.json()["duplicates"] == 300
    assert written(live)["log"] == 300


def test_escalations_are_stored_and_the_trigger_rules_run(client, live, tokens):
    body = {"escalations": [escalation("c-1"), escalation("c-2")]}

    response = post(client, "escalations", body, tokens["all"])

    assert response.status_code == 201, response.text
    assert response.json()["stored"] == ["c-1", "c-2"]
    assert {c.case_id for c in live.escalations("fraud")} == {"c-1", "c-2"}


def test_a_release_reads_as_its_state_and_gate_results(client, tokens):
    response = client.get("/api/v1/releases/rel-1", headers=bearer(tokens["artifacts"]))

    body = response.json()
    assert response.status_code == 200
    assert body["state"] == "in_review"
    assert body["verdict"] in ("go", "stop", "wait")
    assert body["gates"] and all(g["status"] in ("pass", "fail", "pending", "waived") and g["reason"]
                                 for g in body["gates"])


def test_an_unknown_release_is_a_404_naming_it(client, tokens):
    response = client.get("/api/v1/releases/nope", headers=bearer(tokens["all"]))

    assert response.status_code == 404
    assert "nope" in response.json()["errors"][0]["message"]


def test_no_route_takes_a_decision(client, tokens):
    response = client.post("/api/v1/releases/rel-1", headers=bearer(tokens["all"]), json={"verdict": "approve"})

    assert response.status_code == 405


# ---------------------------------------------------------------- tokens


def test_only_the_hash_of_a_token_is_stored(live):
    issued = create_token(live, user_for(live, PLATFORM), "ci", "fraud", ["artifacts"], T0)

    dump = live.frame("SELECT * FROM api_tokens").to_csv()

    assert issued.secret not in dump
    assert issued.token.sha256 in dump


def test_only_a_platform_owner_creates_tokens(live):
    analyst = user_for(live, "n@x.test")

    with pytest.raises(TokenRefused, match="Platform owner"):
        create_token(live, analyst, "ci", "fraud", ["artifacts"], T0)

    assert live.api_tokens() == []


def test_a_token_name_is_used_once(live):
    issue(live, "ci", ["artifacts"])

    with pytest.raises(Exception, match="exists already"):
        issue(live, "ci", ["signals"])


AUTH_FAILURES = [
    # (case, headers, status, message fragment)
    ("missing", {}, 401, "missing Authorization"),
    ("not bearer", {"Authorization": "Basic abc"}, 401, "Bearer <token>"),
    ("wrong", {"Authorization": "Bearer slt_not-a-token"}, 401, "unknown token"),
]


@pytest.mark.parametrize("path", ["artifacts", "signals", "escalations"])
@pytest.mark.parametrize("case, headers, status, fragment", AUTH_FAILURES)
def test_a_request_without_a_valid_token_is_refused_and_writes_nothing(client, live, path, case, headers, status,
                                                                       fragment):
    before = written(live)

    response = client.post(f"/api/v1/{path}", content=json.dumps(snapshot_body(9)),
                           headers={"Content-Type": "application/json", **headers})

    assert response.status_code == status
    assert fragment in response.json()["errors"][0]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert written(live) == before


def test_a_revoked_token_no_longer_authenticates(client, live, tokens):
    revoke_token(live, user_for(live, PLATFORM), "pipeline-all", T0)
    before = written(live)

    response = post(client, "artifacts", snapshot_body(3), tokens["all"])

    assert response.status_code == 401
    assert "revoked" in response.json()["errors"][0]["message"]
    assert written(live) == before


SCOPE_FAILURES = [
    # (token, endpoint, body builder, message fragment)
    ("artifacts", "signals", lambda: {"release": LIVE, "windows": [window(LIVE0)]}, "not signals"),
    ("artifacts", "escalations", lambda: [escalation("c-9")], "not escalations"),
    ("churn", "artifacts", lambda: snapshot_body(4), "not 'fraud'"),
    ("churn", "signals", lambda: {"release": LIVE, "windows": [window(LIVE0)]}, "not 'fraud'"),
    ("churn", "escalations", lambda: [escalation("c-9")], "not 'fraud'"),
]


@pytest.mark.parametrize("token, path, body, fragment", SCOPE_FAILURES)
def test_a_token_acts_only_within_its_scope_and_model(client, live, tokens, token, path, body, fragment):
    before = written(live)

    response = post(client, path, body(), tokens[token])

    assert response.status_code == 403
    assert fragment in response.json()["errors"][0]["message"]
    assert written(live) == before


def test_a_token_of_another_model_cannot_read_a_release(client, tokens):
    response = client.get("/api/v1/releases/rel-1", headers=bearer(tokens["churn"]))

    assert response.status_code == 403


def test_an_unauthenticated_reader_cannot_tell_whether_a_release_exists(client):
    known = client.get("/api/v1/releases/rel-1")
    unknown = client.get("/api/v1/releases/nope")

    assert known.status_code == unknown.status_code == 401


# ---------------------------------------------------------------- size limits and malformed bodies


def test_a_body_declared_over_the_limit_is_refused_before_reading(client, live, tokens):
    before = written(live)

    response = client.post("/api/v1/artifacts", content=b"{}",
                           headers={"Content-Type": "application/json", "Content-Length": str(api.MAX_BODY_BYTES + 1),
                                    **bearer(tokens["all"])})

    assert response.status_code == 413
    assert written(live) == before


def test_a_streamed_body_over_the_limit_is_refused(client, live, tokens):
    before = written(live)

    def chunks():
        for _ in range(api.MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = client.post("/api/v1/artifacts", content=chunks(),
                           headers={"Content-Type": "application/json", **bearer(tokens["all"])})

    assert response.status_code == 413
    assert "limit" in response.json()["errors"][0]["message"]
    assert written(live) == before


MALFORMED = [
    # (case, raw body, status, path, message fragment)
    ("invalid json", b'{"kind": ', 400, "", "invalid JSON"),
    ("duplicate key", b'{"kind": "dataset_snapshot", "kind": "training_run"}', 400, "kind", "duplicate key"),
    ("nan", b'{"kind": "dataset_snapshot", "row_count": NaN}', 400, "", "NaN"),
    ("not utf-8", b'{"kind": "\xff"}', 400, "", "not UTF-8"),
    ("empty", b"", 400, "", "empty body"),
    ("missing kind", b'{"model": "fraud"}', 422, "kind", "missing"),
    ("unknown kind", b'{"kind": "poem", "model": "fraud"}', 422, "kind", ""),
    ("empty list", b"[]", 422, "", "empty"),
    ("not an object", b"[1]", 422, "[0]", "JSON object"),
]


@pytest.mark.parametrize("case, raw, status, path, fragment", MALFORMED)
def test_a_malformed_artifact_body_gets_a_clear_error_and_writes_nothing(client, live, tokens, case, raw, status,
                                                                        path, fragment):
    before = written(live)

    response = post(client, "artifacts", None, tokens["all"], raw=raw)

    assert response.status_code == status, response.text
    error = response.json()["errors"][0]
    assert error["path"] == path and fragment in error["message"]
    assert written(live) == before


def test_a_wrong_field_names_its_path(client, live, tokens):
    body = [snapshot_body(5), {**snapshot_body(6), "row_count": "many"}]
    before = written(live)

    response = post(client, "artifacts", body, tokens["all"])

    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "[1].row_count"
    assert written(live) == before


def test_a_body_that_is_not_json_is_refused_by_content_type(client, tokens):
    response = client.post("/api/v1/artifacts", content=b"kind: x", headers={"Content-Type": "text/yaml",
                                                                            **bearer(tokens["all"])})

    assert response.status_code == 415


BAD_SIGNALS = [
    # (case, body, status, path)
    ("no release", {"windows": [window(LIVE0)]}, 422, "release"),
    ("unknown release", {"release": "nope", "windows": [window(LIVE0)]}, 404, ""),
    ("unknown field", {"release": LIVE, "windows": [window(LIVE0)], "x": 1}, 422, "x"),
    ("two bodies", {"release": LIVE, "windows": [window(LIVE0)], "rows": log_rows(1)}, 422, ""),
    ("end before start", {"release": LIVE, "windows": [{**window(LIVE0), "end": T0.isoformat()}]}, 422, "windows[0]"),
    ("string number", {"release": LIVE, "rows": [{**log_rows(1)[0], "latency_ms": "40"}]}, 422, "rows[0].latency_ms"),
    ("missing column", {"release": LIVE, "rows": [{k: v for k, v in log_rows(1)[0].items() if k != "cost"}]}, 422,
     "rows[*].cost"),
    ("unknown column", {"release": LIVE, "rows": [{**log_rows(1)[0], "note": "x"}]}, 422, "rows[0].note"),
    ("ragged columns", {"release": LIVE, "columns": {**columns_of(log_rows(2)), "cost": [0.1]}}, 422, "columns"),
    ("bad stage", {"release": LIVE, "rows": [{**log_rows(1)[0], "stage": "moon"}]}, 422, "stage"),
    ("another release", {"release": LIVE, "rows": log_rows(2, release="rel-1")}, 422, "release"),
    ("bool minutes", {"release": LIVE, "rows": log_rows(1), "window_minutes": True}, 422, "window_minutes"),
]


@pytest.mark.parametrize("case, body, status, path", BAD_SIGNALS)
def test_bad_signals_are_refused_naming_the_field_and_write_nothing(client, live, tokens, case, body, status, path):
    before = written(live)

    response = post(client, "signals", body, tokens["all"])

    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["path"].startswith(path)
    assert written(live) == before


BAD_ESCALATIONS = [
    ("missing field", [{k: v for k, v in escalation("c-1").items() if k != "severity"}], 422, "[0].severity"),
    ("triage field", [{**escalation("c-1"), "status": "closed"}], 422, "[0].status"),
    ("score out of range", [{**escalation("c-1"), "score": 2}], 422, "[0].score"),
    ("duplicate case", [escalation("c-1"), escalation("c-1")], 422, "[1].case_id"),
]


@pytest.mark.parametrize("case, body, status, path", BAD_ESCALATIONS)
def test_bad_escalations_are_refused_naming_the_field_and_write_nothing(client, live, tokens, case, body, status,
                                                                        path):
    before = written(live)

    response = post(client, "escalations", body, tokens["all"])

    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["path"] == path
    assert written(live) == before


def test_an_existing_case_id_is_a_conflict_and_writes_nothing(client, live, tokens):
    post(client, "escalations", [escalation("c-1")], tokens["all"])
    before = written(live)

    response = post(client, "escalations", [escalation("c-2"), escalation("c-1")], tokens["all"])

    assert response.status_code in (409, 422)
    assert "c-1" in response.json()["errors"][0]["message"]
    assert written(live) == before


# ---------------------------------------------------------------- schemathesis against the OpenAPI document


def test_no_request_generated_from_the_openapi_document_makes_the_server_fail(live, tokens):
    """Bodies generated from the document, valid and invalid, per operation: never a 5xx, always JSON errors."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", Starlette(routes=api.routes(live.path)))
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:  # a GET without parameters has no invalid request to generate
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(headers=bearer(tokens["all"]))
                seen.append((operation.label, response.status_code))
                assert response.status_code < 500, (operation.label, response.text)
                if response.status_code >= 400:
                    assert response.json()["errors"], response.text
            check()

    labels = {label for label, _ in seen}
    assert {"POST /api/v1/artifacts", "POST /api/v1/signals", "POST /api/v1/escalations"} <= labels
    assert any(code >= 400 for _, code in seen) and any(code < 300 for _, code in seen)


def test_a_prediction_log_far_in_the_future_is_stored_not_a_server_error(client, tokens, live):
    from datetime import timedelta

    rows = log_rows(50, start=LIVE0 + timedelta(days=400_000), prefix="far")  # the year 3121: past nanosecond range

    response = post(client, "signals", {"release": LIVE, "columns": columns_of(rows)}, tokens["all"])

    assert response.status_code == 201, response.text
    assert response.json()["inserted"] == 50


def test_submissions_are_stamped_with_the_store_clock(client, tokens, live):
    from datetime import datetime, timezone

    anchor = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    live.set_clock(anchor, "a store generated for 2026-11-20")

    response = post(client, "artifacts", snapshot_body(424242), tokens["all"])

    assert response.status_code == 201, response.text
    event = live.audit_events(subject=response.json()["digests"][0])[-1]
    assert abs((event.at - anchor).total_seconds()) < 60
