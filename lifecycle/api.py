"""Serve ingestion over HTTP inside the Streamlit process: starlette routes under /api/v1, bearer tokens.

The Streamlit server owns the DuckDB file, so pipelines on other machines reach the store through these routes
(`serve.py` mounts them with `st.App`). Every body goes through the same strict parsing and validation as the UI
and the CLI; anything refused is answered with `{"errors": [{"path", "message"}]}` and a 4xx status, and writes
nothing. Decisions are never taken here: approving, rejecting and waiving belong to signed-in people in the UI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .ingest import IngestError, parse_document, store_validated, validate_artifacts
from .models import TokenScope
from .store import NotFound, Store, StoreError, db_path, shared_store
from .tokens import TokenRefused, authenticate

PREFIX = "/api/v1"
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_SIGNAL_BYTES = 16 * 1024 * 1024
MAX_LOG_ROWS = 200_000
JSON_TYPES = ("application/json",)

# JSON kinds accepted per prediction-log column (bool is an int in Python, so numbers exclude it explicitly).
_TEXT = ("request_id", "timestamp", "release", "stage", "arm", "segment")
_NUMBER = ("latency_ms", "cost", "candidate_score", "baseline_score")
_FLAG = ("error", "fallback", "decision", "baseline_decision")
_LOG_COLUMNS = (*_TEXT, *_NUMBER, *_FLAG, "label")


class ApiError(Exception):
    """A refused request: an HTTP status and (field path, message) problems."""

    def __init__(self, status: int, problems: list[tuple[str, str]]):
        self.status = status
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


def errors(status: int, problems: list[tuple[str, str]], headers: dict | None = None) -> JSONResponse:
    """Return the error body every endpoint uses."""
    return JSONResponse({"errors": [{"path": p, "message": m} for p, m in problems]}, status_code=status,
                        headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """Read a JSON body, refusing a wrong content type and anything over `limit` bytes before parsing it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in JSON_TYPES:
        raise ApiError(415, [("", f"send the body as application/json (got '{kind or 'no content type'}')")])
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, [("", "Content-Length is not a number")])
        if int(declared) > limit:
            raise ApiError(413, [("", f"body is {int(declared):,} bytes; the limit is {limit:,}")])
    body = bytearray()
    async for chunk in request.stream():  # the declared length may lie: cap what is actually read
        body += chunk
        if len(body) > limit:
            raise ApiError(413, [("", f"body exceeds the limit of {limit:,} bytes")])
    if not body:
        raise ApiError(400, [("", "empty body; send a JSON document")])
    return bytes(body)


def _parse(raw: bytes, limit: int) -> Any:
    try:
        return parse_document(raw, "json", max_bytes=limit)
    except IngestError as exc:
        raise ApiError(400, exc.problems) from None


def _auth(store: Store, request: Request, scope: TokenScope | None = None, model: str | None = None):
    return authenticate(store, request.headers.get("authorization"), model=model, scope=scope)


# ---------------------------------------------------------------- the work, run in a worker thread


def submit_artifacts(store: Store, request_auth: Callable, obj: Any) -> dict:
    """Validate artifacts, check they belong to the token's model, store them all or nothing."""
    token = request_auth(TokenScope.ARTIFACTS)
    artifacts = validate_artifacts(obj)
    foreign = [(f"[{i}].model" if isinstance(obj, list) else "model",
                f"token '{token.name}' is scoped to model '{token.model}', not '{a.model}'")
               for i, a in enumerate(artifacts) if a.model != token.model]
    if foreign:
        raise ApiError(403, foreign)
    digests = store_validated(store, artifacts, actor=token.name)  # validated once, above
    return {"digests": digests, "count": len(digests), "actor": token.name}


def log_frame(obj: dict) -> pd.DataFrame:
    """Turn prediction-log rows (`rows`: list of objects, or `columns`: object of lists) into a typed frame."""
    if "rows" in obj:
        rows = obj["rows"]
        if not isinstance(rows, list) or not rows:
            raise IngestError([("rows", "give a non-empty list of prediction-log rows")])
        if len(rows) > MAX_LOG_ROWS:
            raise IngestError([("rows", f"{len(rows):,} rows; the limit is {MAX_LOG_ROWS:,} per request")])
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise IngestError([(f"rows[{i}]", "a row must be an object")])
            unknown = set(row) - set(_LOG_COLUMNS)
            if unknown:
                raise IngestError([(f"rows[{i}].{sorted(unknown)[0]}", "unknown column")])
        columns = {c: [r.get(c) for r in rows] for c in _LOG_COLUMNS if any(c in r for r in rows)}
        where = "rows"
    else:
        columns = obj["columns"]
        if not isinstance(columns, dict) or not columns:
            raise IngestError([("columns", "give an object of equally long column lists")])
        unknown = set(columns) - set(_LOG_COLUMNS)
        if unknown:
            raise IngestError([(f"columns.{sorted(unknown)[0]}", "unknown column")])
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if -1 in lengths or len(lengths) != 1 or 0 in lengths:
            raise IngestError([("columns", "every column must be a non-empty list, all of the same length")])
        if lengths.pop() > MAX_LOG_ROWS:
            raise IngestError([("columns", f"more than {MAX_LOG_ROWS:,} rows; split the batch")])
        where = "columns"
    missing = [c for c in _LOG_COLUMNS if c != "label" and c not in columns]
    if missing:
        raise IngestError([(f"{where}.{c}" if where == "columns" else f"rows[*].{c}", "required column is missing")
                           for c in missing])
    data: dict[str, Any] = {}
    for name, values in columns.items():
        allowed = ((str,) if name in _TEXT else (int, float) if name in _NUMBER else (int,) if name == "label"
                   else (bool, int))
        optional = name == "label"
        # The exact types present, found in C; only a column holding a wrong one is walked to name the row.
        exact = {str} if name in _TEXT else {int, float} if name in _NUMBER else {int} if optional else {bool, int}
        if not set(map(type, values)) <= (exact | {type(None)} if optional else exact):
            for i, v in enumerate(values):
                ok = (v is None and optional) or (isinstance(v, allowed) and not (isinstance(v, bool) and
                                                                                   name in (*_NUMBER, "label")))
                if not ok:
                    path = f"rows[{i}].{name}" if where == "rows" else f"columns.{name}[{i}]"
                    raise IngestError([(path, f"{v!r} is not a valid {name}" if v is not None else "missing")])
        if name in _TEXT:
            data[name] = pd.array(values, dtype="string")
        elif name in _NUMBER:
            data[name] = np.asarray(values, dtype="float64")
        else:
            try:
                data[name] = pd.array(values, dtype="Int64")
            except (OverflowError, TypeError, ValueError):
                raise IngestError([(f"{where}.{name}", "values must be 0 or 1")]) from None
    return pd.DataFrame(data)


def submit_signals(store: Store, request_auth: Callable, obj: Any) -> dict:
    """Store signal windows or a prediction-log batch for a release of the token's model."""
    from . import monitoring  # imported late: it pulls in the evaluation stack

    token = request_auth(TokenScope.SIGNALS)
    if not isinstance(obj, dict):
        raise IngestError([("", "send an object: {\"release\": ..., \"windows\": [...]} or with \"rows\"/\"columns\"")])
    allowed = {"release", "windows", "rows", "columns", "window_minutes"}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise IngestError([(unknown[0], "unknown field; use release, windows, rows, columns, window_minutes")])
    release_id = obj.get("release")
    if not isinstance(release_id, str) or not release_id:
        raise IngestError([("release", "missing: name the release these signals describe")])
    bodies = [k for k in ("windows", "rows", "columns") if k in obj]
    if len(bodies) != 1:
        raise IngestError([("", "send exactly one of windows (pre-aggregated), rows or columns (a prediction log)")])
    release = store.release(release_id)
    if release.model != token.model:
        raise ApiError(403, [("release", f"token '{token.name}' is scoped to model '{token.model}', not "
                                         f"'{release.model}'")])
    if bodies[0] == "windows":
        if "window_minutes" in obj:
            raise IngestError([("window_minutes", "only for a prediction log (rows or columns)")])
        result = monitoring.ingest_windows(store, release_id, {"release": release_id, "windows": obj["windows"]},
                                           actor=token.name, now=store.now())
    else:
        minutes = obj.get("window_minutes", monitoring.WINDOW_MINUTES)
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise IngestError([("window_minutes", "must be an integer number of minutes")])
        frame = log_frame(obj)
        result = monitoring.ingest_prediction_log(store, release_id, frame, window_minutes=minutes,
                                                  actor=token.name, now=store.now())
    return {**result.model_dump(mode="json"), "actor": token.name}


def submit_escalations(store: Store, request_auth: Callable, obj: Any) -> dict:
    """Store escalation cases of the token's model all or nothing, then evaluate the trigger rules."""
    from .escalations import ingest_escalations, validate_cases

    token = request_auth(TokenScope.ESCALATIONS)
    if isinstance(obj, dict) and set(obj) == {"escalations"}:
        obj = obj["escalations"]
    cases = validate_cases(obj)
    foreign = [(f"[{i}].model" if isinstance(obj, list) else "model",
                f"token '{token.name}' is scoped to model '{token.model}', not '{c.model}'")
               for i, c in enumerate(cases) if c.model != token.model]
    if foreign:
        raise ApiError(403, foreign)
    outcome = ingest_escalations(store, obj, actor=token.name, now=store.now())
    return {"stored": outcome.stored, "labels_applied": outcome.labels_applied, "message": outcome.message,
            "actor": token.name}


def release_status(store: Store, request_auth: Callable, release_id: str) -> dict:
    """Return a release's state and its gate results, each with status and reason."""
    from .releases import review

    release = store.release(release_id)
    request_auth(None, release.model)
    result = review(store, release_id, store.now())
    return {
        "id": release.id, "model": release.model, "state": release.state.value, "version": release.version,
        "candidate": release.candidate, "baseline": release.baseline, "verdict": result.verdict,
        "line": result.line,
        "gates": [{"id": g.gate.id, "title": g.gate.title, "stage": g.gate.stage.value,
                   "owner_role": g.gate.owner_role.value, "status": g.status.value, "reason": g.reason,
                   "who_must_act": g.who_must_act.value if g.who_must_act else None, "stale_decisions": g.stale}
                  for g in result.results],
    }


# ---------------------------------------------------------------- routes


Work = Callable[..., dict]


def _endpoint(get_store: Callable[[], Store], work: Work, limit: int | None, status: int = 200,
              path_param: str | None = None) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handler(request: Request) -> JSONResponse:
        try:
            store = get_store()

            def request_auth(scope: TokenScope | None, model: str | None = None):
                return _auth(store, request, scope, model)

            # check the token before reading a byte of the body or saying whether a release exists
            await run_in_threadpool(request_auth, None)
            if limit is not None:
                raw = await read_body(request, limit)
                obj = await run_in_threadpool(_parse, raw, limit)
                arg = obj
            else:
                arg = request.path_params[path_param]
            return JSONResponse(await run_in_threadpool(work, store, request_auth, arg), status_code=status)
        except ApiError as exc:
            return errors(exc.status, exc.problems)
        except TokenRefused as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="seamline"'} if exc.status == 401 else None
            return errors(exc.status, [("authorization", str(exc))], headers)
        except IngestError as exc:
            return errors(422, exc.problems)
        except NotFound as exc:
            return errors(404, [("", str(exc))])
        except StoreError as exc:
            return errors(409, [("", str(exc))])
    return handler


def warm_up() -> None:
    """Import the signal and escalation stacks now, so the first submission does not pay for it."""
    from . import escalations, monitoring, releases  # noqa: F401


async def health(request: Request) -> JSONResponse:
    """Say the API is up; no token needed."""
    return JSONResponse({"status": "ok", "api": "v1"})


async def openapi(request: Request) -> JSONResponse:
    """Return the OpenAPI document describing these routes."""
    return JSONResponse(openapi_document())


def routes(db: str | None = None) -> list[Route]:
    """Return the API's routes over the process-wide store for `db` (default: $SEAMLINE_DB)."""
    def get_store() -> Store:
        return shared_store(db or db_path())

    return [
        Route(f"{PREFIX}/health", health, methods=["GET"]),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
        Route(f"{PREFIX}/artifacts", _endpoint(get_store, submit_artifacts, MAX_BODY_BYTES, 201), methods=["POST"]),
        Route(f"{PREFIX}/signals", _endpoint(get_store, submit_signals, MAX_SIGNAL_BYTES, 201), methods=["POST"]),
        Route(f"{PREFIX}/escalations", _endpoint(get_store, submit_escalations, MAX_BODY_BYTES, 201),
              methods=["POST"]),
        Route(PREFIX + "/releases/{release_id}", _endpoint(get_store, release_status, None, 200, "release_id"),
              methods=["GET"]),
    ]


# ---------------------------------------------------------------- OpenAPI


def _err(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}


def _post(summary: str, scope: str, schema: dict, ok: dict, limit: int) -> dict:
    return {
        "summary": summary, "security": [{"bearer": []}],
        "description": f"Needs a token with the `{scope}` scope for the model concerned. Bodies over {limit:,} bytes "
                       "are refused before parsing. All or nothing: a refused request writes nothing.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {"201": {"description": "stored", "content": {"application/json": {"schema": ok}}},
                      "400": _err("malformed JSON (duplicate key, NaN, invalid syntax, empty body)"),
                      "401": _err("missing, unknown or revoked token"),
                      "403": _err("the token lacks the scope or is scoped to another model"),
                      "404": _err("an unknown release or model"),
                      "409": _err("conflicts with what is stored (e.g. a case id exists already)"),
                      "413": _err("body over the size limit"), "415": _err("not application/json"),
                      "422": _err("fails validation; each error names the field")},
    }


def openapi_document() -> dict:
    """Return the hand-written OpenAPI 3.1 description of the API."""
    any_object = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Seamline ingestion API", "version": "1.0.0",
                 "description": "Pipelines submit artifacts, signals and escalations; decisions are made only by "
                                "signed-in people in the UI."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "created by a Platform owner on the Admin page"}},
            "schemas": {
                "Errors": {"type": "object", "required": ["errors"], "properties": {"errors": {
                    "type": "array", "items": {"type": "object", "required": ["path", "message"], "properties": {
                        "path": {"type": "string", "description": "the field, e.g. [0].metrics.roc_auc"},
                        "message": {"type": "string"}}}}}},
                "Artifact": {"type": "object", "required": ["kind", "model"], "description":
                             "one of the seven artifacts (dataset_snapshot, training_run, evaluation_report, "
                             "registry_entry, rollout_note, monitoring_signals, retraining_trigger); see "
                             "lifecycle/models.py for the fields",
                             "properties": {"kind": {"type": "string"}, "model": {"type": "string"}}},
                "SignalWindow": {"type": "object", "required": ["start", "end", "stage", "arm", "requests", "metrics"],
                                 "properties": {"start": {"type": "string", "format": "date-time"},
                                                "end": {"type": "string", "format": "date-time"},
                                                "stage": {"type": "string"}, "arm": {"type": "string"},
                                                "segment": {"type": "string"},
                                                "requests": {"type": "integer", "minimum": 0},
                                                "metrics": {"type": "object",
                                                            "additionalProperties": {"type": "number"}}},
                                 "additionalProperties": False},
                "LogRow": {"type": "object", "additionalProperties": False,
                           "required": [c for c in _LOG_COLUMNS if c != "label"],
                           "properties": {**{c: {"type": "string"} for c in _TEXT},
                                          **{c: {"type": "number"} for c in _NUMBER},
                                          **{c: {"type": ["boolean", "integer"]} for c in _FLAG},
                                          "label": {"type": ["integer", "null"], "enum": [0, 1, None]}}},
                "Signals": {"type": "object", "required": ["release"], "additionalProperties": False,
                            "description": "exactly one of windows (pre-aggregated), rows or columns (a prediction "
                                           "log batch, idempotent per request_id)",
                            "properties": {"release": {"type": "string"},
                                           "windows": {"type": "array", "items": {"$ref": "#/components/schemas/SignalWindow"}},
                                           "rows": {"type": "array", "maxItems": MAX_LOG_ROWS,
                                                    "items": {"$ref": "#/components/schemas/LogRow"}},
                                           "columns": {"type": "object",
                                                       "additionalProperties": {"type": "array"}},
                                           "window_minutes": {"type": "integer", "minimum": 1}}},
                "Escalation": {"type": "object", "required": ["case_id", "at", "model", "segment", "type", "score",
                                                              "decision", "severity"],
                               "properties": {"case_id": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
                                              "model": {"type": "string"}, "release": {"type": "string"},
                                              "segment": {"type": "string"}, "type": {"type": "string"},
                                              "score": {"type": "number", "minimum": 0, "maximum": 1},
                                              "decision": {"type": "string"},
                                              "severity": {"enum": ["low", "medium", "high", "critical"]},
                                              "text": {"type": "string", "maxLength": 5000},
                                              "corrected_label": {"type": "integer"}, "request_id": {"type": "string"}}},
            },
        },
        "paths": {
            f"{PREFIX}/health": {"get": {"summary": "Is the API up?", "security": [],
                                         "responses": {"200": {"description": "up", "content": {"application/json": {
                                             "schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}}}},
            f"{PREFIX}/openapi.json": {"get": {"summary": "This document", "security": [],
                                               "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            f"{PREFIX}/artifacts": {"post": _post(
                "Submit one artifact or a list (parents may come earlier in the list)", "artifacts",
                {"oneOf": [{"$ref": "#/components/schemas/Artifact"},
                           {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Artifact"}}]},
                {"type": "object", "properties": {"digests": {"type": "array", "items": {"type": "string"}},
                                                  "count": {"type": "integer"}, "actor": {"type": "string"}}},
                MAX_BODY_BYTES)},
            f"{PREFIX}/signals": {"post": _post(
                "Submit signal windows or a prediction-log batch for a release; the stop rules act on them",
                "signals", {"$ref": "#/components/schemas/Signals"},
                {**any_object, "description": "what changed: rows stored, windows updated, stop rules tripped"},
                MAX_SIGNAL_BYTES)},
            f"{PREFIX}/escalations": {"post": _post(
                "Submit escalation cases (one, a list, or {\"escalations\": [...]})", "escalations",
                {"oneOf": [{"$ref": "#/components/schemas/Escalation"},
                           {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Escalation"}},
                           {"type": "object", "required": ["escalations"], "properties": {"escalations": {
                               "type": "array", "items": {"$ref": "#/components/schemas/Escalation"}}}}]},
                {"type": "object", "properties": {"stored": {"type": "array", "items": {"type": "string"}}}},
                MAX_BODY_BYTES)},
            PREFIX + "/releases/{release_id}": {"get": {
                "summary": "A release's state and gate results, each with status and reason",
                "security": [{"bearer": []}],
                "parameters": [{"name": "release_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the release", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "state": {"type": "string"}, "verdict": {"enum": ["go", "stop", "wait"]},
                        "gates": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "string"}, "status": {"enum": ["pass", "fail", "pending", "waived"]},
                            "reason": {"type": "string"}}}}}}}}},
                              "401": _err("missing, unknown or revoked token"),
                              "403": _err("the token is scoped to another model"),
                              "404": _err("no such release")}}},
        },
    }
