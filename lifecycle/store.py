"""Keep Seamline's record in one DuckDB file: migrations, rows <-> models, transactions, the audit chain."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import TypeAdapter

from .models import (
    ARTIFACT_TYPES, AnyArtifact, ApiToken, Artifact, AuditEvent, BacklogItem, Decision, Escalation, Model, Person,
    Release, ReleasePolicy, ReleaseState, Role, canonical_json,
)

DEFAULT_DB = "data/seamline.duckdb"
_ARTIFACT = TypeAdapter(AnyArtifact)
GENESIS = "0" * 64


class StoreError(Exception):
    """A request the store refuses, with a message for the user."""


class NotFound(StoreError):
    """Nothing is stored under the given key."""


class MissingParent(StoreError):
    """An artifact names a parent digest the store does not hold."""


class StaleVersion(StoreError):
    """Someone else changed the row since it was read (optimistic concurrency)."""


def db_path() -> str:
    """Return the store path from SEAMLINE_DB, default data/seamline.duckdb."""
    return os.environ.get("SEAMLINE_DB", DEFAULT_DB)


_SHARED: dict[str, "Store"] = {}
_SHARED_LOCK = threading.Lock()


def shared_store(path: str | Path | None = None) -> "Store":
    """Return the process-wide Store for a path: the UI sessions and the HTTP API share one connection."""
    key = str(Path(path if path is not None else db_path()).resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Store(key)
        return _SHARED[key]


def utcnow() -> datetime:
    """Return the current time in UTC; only callers at the edge use it, logic takes `now`."""
    return datetime.now(timezone.utc)


MIGRATIONS: list[tuple[str, str]] = [
    ("artifacts and lineage", """
        CREATE TABLE models (id VARCHAR PRIMARY KEY, body VARCHAR NOT NULL);
        CREATE TABLE artifacts (
            digest VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, model VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, ingested_at TIMESTAMPTZ NOT NULL, body VARCHAR NOT NULL);
        CREATE INDEX artifacts_model_kind ON artifacts (model, kind);
        CREATE TABLE lineage (child VARCHAR NOT NULL, parent VARCHAR NOT NULL, field VARCHAR NOT NULL);
        CREATE TABLE team (email VARCHAR NOT NULL, name VARCHAR NOT NULL, model VARCHAR NOT NULL,
            role VARCHAR NOT NULL, PRIMARY KEY (email, model, role));
    """),
    ("releases, policies, decisions, aliases", """
        CREATE TABLE policies (model VARCHAR NOT NULL, version INTEGER NOT NULL, body VARCHAR NOT NULL,
            PRIMARY KEY (model, version));
        CREATE TABLE releases (id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, state VARCHAR NOT NULL,
            version INTEGER NOT NULL, created_at TIMESTAMPTZ NOT NULL, body VARCHAR NOT NULL);
        CREATE SEQUENCE decision_ids START 1;
        CREATE TABLE decisions (id BIGINT PRIMARY KEY, release VARCHAR, gate VARCHAR NOT NULL,
            subject VARCHAR, decided_at TIMESTAMPTZ NOT NULL, body VARCHAR NOT NULL);
        CREATE TABLE aliases (model VARCHAR NOT NULL, alias VARCHAR NOT NULL, entry VARCHAR NOT NULL,
            set_by VARCHAR NOT NULL, set_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (model, alias));
    """),
    ("signals, escalations, backlog", """
        CREATE TABLE signal_windows (batch VARCHAR NOT NULL, model VARCHAR NOT NULL, release VARCHAR NOT NULL,
            stage VARCHAR NOT NULL, arm VARCHAR NOT NULL, segment VARCHAR NOT NULL,
            start_at TIMESTAMPTZ NOT NULL, end_at TIMESTAMPTZ NOT NULL, requests BIGINT NOT NULL,
            metrics VARCHAR NOT NULL);
        CREATE TABLE escalations (case_id VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
            body VARCHAR NOT NULL);
        CREATE SEQUENCE backlog_ids START 1;
        CREATE TABLE backlog (id BIGINT PRIMARY KEY, model VARCHAR NOT NULL, cause VARCHAR NOT NULL,
            status VARCHAR NOT NULL, body VARCHAR NOT NULL);
    """),
    ("audit log", """
        CREATE TABLE audit (seq BIGINT PRIMARY KEY, logged_at TIMESTAMPTZ NOT NULL, actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL, subject VARCHAR NOT NULL, detail VARCHAR NOT NULL,
            prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL);
        CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash VARCHAR NOT NULL);
    """),
    # The prediction log keeps one row per request_id, so re-sent rows never count twice (same DDL as
    # signals.LOG_TABLE_DDL; a test keeps them equal). Windows re-aggregated after late rows or labels are stored
    # as a new batch; batch_seq orders batches so windows_frame returns the newest version of each window.
    ("prediction log and window batches", """
        CREATE TABLE IF NOT EXISTS prediction_log (
            request_id VARCHAR PRIMARY KEY,
            timestamp TIMESTAMP NOT NULL,
            release VARCHAR NOT NULL,
            stage VARCHAR NOT NULL CHECK (stage IN ('shadow', 'canary', 'ramp', 'full')),
            arm VARCHAR NOT NULL CHECK (arm IN ('shadow', 'canary', 'treatment', 'control', 'baseline')),
            segment VARCHAR NOT NULL,
            latency_ms DOUBLE NOT NULL CHECK (latency_ms >= 0),
            error BOOLEAN NOT NULL,
            fallback BOOLEAN NOT NULL,
            cost DOUBLE NOT NULL CHECK (cost >= 0),
            candidate_score DOUBLE NOT NULL CHECK (candidate_score BETWEEN 0 AND 1),
            baseline_score DOUBLE NOT NULL CHECK (baseline_score BETWEEN 0 AND 1),
            decision TINYINT NOT NULL CHECK (decision IN (0, 1)),
            baseline_decision TINYINT NOT NULL CHECK (baseline_decision IN (0, 1)),
            label TINYINT CHECK (label IN (0, 1)));
        ALTER TABLE signal_windows ADD COLUMN batch_seq BIGINT;
        UPDATE signal_windows SET batch_seq = (SELECT max(a.seq) FROM audit a
            WHERE a.subject = signal_windows.batch AND a.action = 'monitoring_signals.put');
    """),
    # Pipelines' bearer tokens: only the sha256 of each secret is kept; a revoked token stays for the record.
    ("api tokens", """
        CREATE TABLE api_tokens (name VARCHAR PRIMARY KEY, sha256 VARCHAR NOT NULL UNIQUE, model VARCHAR NOT NULL,
            revoked_at TIMESTAMPTZ, body VARCHAR NOT NULL);
    """),
    # A store whose data was generated for a fixed moment (the demo) keeps its own clock: it reads `anchor`
    # when the wall clock read `started`, and runs at the wall clock's rate from there.
    ("store clock", """
        CREATE TABLE store_clock (id INTEGER PRIMARY KEY CHECK (id = 1), anchor TIMESTAMPTZ NOT NULL,
            started TIMESTAMPTZ NOT NULL, reason VARCHAR NOT NULL);
    """),
]


class _Shared:
    """Per database file: the write lock, and caches dropped when their table changes or a transaction rolls back:
    the audit head (read and written under the lock), the model ids, tokens by the hash of their secret."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.head: tuple[int, str] | None = None
        self.head_stored = False  # whether audit_head has its row yet
        self.head_dirty = False  # the head moved in the open transaction: written once, before its commit
        self.model_ids: frozenset[str] | None = None
        self.tokens: dict[str, ApiToken | None] = {}
        self.token_generation = 0
        self.pending_lock = threading.Lock()
        self.queues: dict[str, list[Queued]] = {}  # work queued for the next leader under the write lock  # bumped when tokens change: a lookup that raced a change does not cache

    def forget(self) -> None:
        """Drop the caches (another process may have written the file since they were filled)."""
        with self.lock:
            self.head, self.head_dirty, self.model_ids = None, False, None
            self.drop_tokens()

    def drop_tokens(self) -> None:
        """Call after a token change has committed: lookups read the table again, and none in flight caches."""
        with self.lock:
            self.tokens = {}
            self.token_generation += 1


class _Submission:
    """One caller's artifacts waiting for a group commit."""

    __slots__ = ("artifacts", "actor", "at")

    def __init__(self, artifacts: list[Artifact], actor: str, at: datetime):
        self.artifacts, self.actor, self.at = artifacts, actor, at


class Queued:
    """One caller's work waiting in `Store.run_grouped`; the leader sets `result` or `error`."""

    __slots__ = ("payload", "done", "result", "error")

    def __init__(self, payload: Any):
        self.payload, self.done, self.result, self.error = payload, False, None, None


_STATE: dict[str, _Shared] = {}
_STATE_LOCK = threading.Lock()


def _shared_state(path: str) -> _Shared:
    if path == ":memory:":
        return _Shared()  # every in-memory connection is a database of its own
    key = str(Path(path).resolve())
    with _STATE_LOCK:
        state = _STATE.setdefault(key, _Shared())
    state.forget()  # opening the file: whatever was cached may predate another process's writes
    return state


class Store:
    """The one gateway to the DuckDB file; safe to share across threads (a cursor per call)."""

    def __init__(self, path: str | Path | None = None):
        self.path = str(path if path is not None else db_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._con.execute("SET enable_progress_bar = false")
        # One writer at a time inside this process: the audit chain needs a total order, and DuckDB
        # would otherwise answer concurrent appends with conflicts to retry.
        # Every Store over the same file in this process shares one write lock and the caches of what only
        # this process writes (it owns the file): DuckDB hands them the same database.
        self._shared = _shared_state(self.path)
        self._write_lock = self._shared.lock
        self.migrate()

    # ------------------------------------------------------------ the store's clock

    def set_clock(self, anchor: datetime, reason: str, started: datetime | None = None) -> None:
        """Make this store's clock read `anchor` now (or at `started`) and run on from there."""
        started = started or datetime.now(timezone.utc)
        with self.transaction() as cur:
            cur.execute("DELETE FROM store_clock")
            cur.execute("INSERT INTO store_clock VALUES (1, ?, ?, ?)", [anchor, started, reason])
        self._clock = (anchor, started, reason)

    def clock(self) -> tuple[datetime, datetime, str] | None:
        """Return (anchor, started, reason) when this store keeps its own clock, else None."""
        if not hasattr(self, "_clock"):
            rows = self._rows("SELECT anchor, started, reason FROM store_clock")
            self._clock = (rows[0][0].astimezone(timezone.utc), rows[0][1].astimezone(timezone.utc), rows[0][2]) \
                if rows else None
        return self._clock

    def now(self) -> datetime:
        """Return the time decisions and submissions are stamped with: the wall clock, or the store's own."""
        wall = datetime.now(timezone.utc)
        clock = self.clock()
        return wall if clock is None else clock[0] + (wall - clock[1])

    @property
    def data_root(self) -> Path:
        """Return the directory that relative data-file paths are resolved against."""
        return Path(".").resolve() if self.path == ":memory:" else Path(self.path).resolve().parent

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self._con.close()

    # ------------------------------------------------------------ plumbing

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return a fresh cursor; callers never share one across threads."""
        return self._con.cursor()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block as one transaction: all of it lands or none of it does."""
        with self._write_lock:
            cur = self._con.cursor()
            cur.begin()
            try:
                yield cur
                self._write_head(cur)
                cur.commit()
            except BaseException:
                cur.rollback()
                self._shared.head, self._shared.head_dirty = None, False  # the moved head did not land
                raise
            finally:
                cur.close()

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        cur = self.cursor()
        try:
            return cur.execute(sql, list(params)).fetchall()
        finally:
            cur.close()

    def frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        """Run a read query and return a DataFrame (used by the *_frame methods)."""
        cur = self.cursor()
        try:
            return cur.execute(sql, list(params)).df()
        finally:
            cur.close()

    def migrate(self) -> list[int]:
        """Apply pending numbered migrations, record them, checkpoint; return the versions applied."""
        applied = []
        with self.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                        "name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
            done = {r[0] for r in cur.execute("SELECT version FROM schema_migrations").fetchall()}
            for number, (name, sql) in enumerate(MIGRATIONS, start=1):
                if number in done:
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [number, name, utcnow()])
                applied.append(number)
        if applied and self.path != ":memory:":
            self._con.execute("CHECKPOINT")
        return applied

    def migrations(self) -> list[int]:
        """Return the schema versions recorded as applied."""
        return [r[0] for r in self._rows("SELECT version FROM schema_migrations ORDER BY version")]

    def is_empty(self) -> bool:
        """Tell whether the store holds no model yet (the demo is built then)."""
        return self._rows("SELECT count(*) FROM models")[0][0] == 0

    # ------------------------------------------------------------ audit

    def _audit(self, cur, actor: str, action: str, subject: str, detail: dict, at: datetime) -> AuditEvent:
        shared = self._shared
        if shared.head is None:
            head = cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            shared.head, shared.head_stored = ((head[0], head[1]), True) if head else ((0, GENESIS), False)
        seq, prev = shared.head[0] + 1, shared.head[1]
        detail = json.loads(canonical_json(detail))
        digest = AuditEvent.compute_hash(seq, at, actor, action, subject, detail, prev)
        cur.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [seq, at, actor, action, subject, canonical_json(detail), prev, digest])
        shared.head, shared.head_dirty = (seq, digest), True
        return AuditEvent(seq=seq, at=at, actor=actor, action=action, subject=subject, detail=detail,
                          prev_hash=prev, hash=digest)

    def _write_head(self, cur) -> None:
        """Move audit_head to the last entry appended in this transaction (one write however many entries)."""
        shared = self._shared
        if not shared.head_dirty:
            return
        if shared.head_stored:
            cur.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", list(shared.head))
        else:
            cur.execute("INSERT INTO audit_head VALUES (1, ?, ?)", list(shared.head))
            shared.head_stored = True
        shared.head_dirty = False

    def audit(self, actor: str, action: str, subject: str, detail: dict | None = None,
              at: datetime | None = None) -> AuditEvent:
        """Append one entry to the audit log in its own transaction."""
        with self.transaction() as cur:
            return self._audit(cur, actor, action, subject, detail or {}, at or self.now())

    def audit_events(self, subject: str | None = None, limit: int | None = None) -> list[AuditEvent]:
        """Return audit entries (newest last), optionally for one subject."""
        sql = "SELECT seq, logged_at, actor, action, subject, detail, prev_hash, hash FROM audit"
        params: list[Any] = []
        if subject:
            sql += " WHERE subject = ?"
            params.append(subject)
        sql += " ORDER BY seq"
        rows = self._rows(sql, params)
        if limit:
            rows = rows[-limit:]
        return [AuditEvent(seq=r[0], at=r[1], actor=r[2], action=r[3], subject=r[4], detail=json.loads(r[5]),
                           prev_hash=r[6], hash=r[7]) for r in rows]

    def verify_audit(self) -> tuple[bool, str]:
        """Recompute the hash chain; return (ok, reason) naming the first entry that breaks it."""
        events = self.audit_events()
        prev, expected_seq = GENESIS, 1
        for e in events:
            if e.seq != expected_seq:
                return False, f"entry {expected_seq} is missing (found {e.seq} next): an entry was deleted"
            if e.prev_hash != prev:
                return False, f"entry {e.seq} does not follow entry {e.seq - 1}: an entry was inserted or replaced"
            if AuditEvent.compute_hash(e.seq, e.at, e.actor, e.action, e.subject, e.detail, e.prev_hash) != e.hash:
                return False, f"entry {e.seq} ({e.action} {e.subject}) was altered: its hash does not match"
            prev, expected_seq = e.hash, expected_seq + 1
        head = self._rows("SELECT seq, hash FROM audit_head WHERE id = 1")
        head_seq, head_hash = head[0] if head else (0, GENESIS)
        if head_seq != len(events) or head_hash != prev:
            return False, f"the log ends at entry {len(events)} but its head says {head_seq}: entries were removed"
        return True, f"{len(events)} entries verified"

    # ------------------------------------------------------------ models, team, policies

    def put_model(self, model: Model, actor: str = "system", at: datetime | None = None) -> None:
        """Create or update a model (use case) and its named owners, and their team roles."""
        at = at or self.now()
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", [model.id, model.model_dump_json()])
            cur.execute("DELETE FROM team WHERE model = ?", [model.id])
            for role, people in model.owners.items():
                for p in people:
                    cur.execute("INSERT OR REPLACE INTO team VALUES (?, ?, ?, ?)",
                                [p.email, p.name, model.id, role.value])
            self._audit(cur, actor, "model.put", model.id, {"owners": {r.value: [p.email for p in ps]
                                                                         for r, ps in model.owners.items()}}, at)
            # Still under the write lock, where the cache is filled: the next writer reads the models again.
            self._shared.model_ids = None

    def models(self) -> list[Model]:
        """Return every model (use case), by id."""
        return [Model.model_validate_json(r[0]) for r in self._rows("SELECT body FROM models ORDER BY id")]

    def model(self, model_id: str) -> Model:
        """Return one model or raise NotFound."""
        rows = self._rows("SELECT body FROM models WHERE id = ?", [model_id])
        if not rows:
            raise NotFound(f"no model '{model_id}'")
        return Model.model_validate_json(rows[0][0])

    def people(self) -> list[Person]:
        """Return everyone in the team directory."""
        return [Person(email=r[0], name=r[1]) for r in
                self._rows("SELECT email, min(name) FROM team GROUP BY email ORDER BY min(name)")]

    def roles_of(self, email: str) -> dict[str, set[Role]]:
        """Return {model id: roles} that a person holds."""
        out: dict[str, set[Role]] = {}
        for model, role in self._rows("SELECT model, role FROM team WHERE email = ?", [email]):
            out.setdefault(model, set()).add(Role(role))
        return out

    def put_policy(self, policy: ReleasePolicy, actor: str) -> None:
        """Store a new policy version; versions are immutable, so an existing one is refused."""
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM policies WHERE model = ? AND version = ?",
                           [policy.model, policy.version]).fetchone():
                raise StoreError(f"policy version {policy.version} of '{policy.model}' exists; add a new version")
            cur.execute("INSERT INTO policies VALUES (?, ?, ?)",
                        [policy.model, policy.version, policy.model_dump_json()])
            self._audit(cur, actor, "policy.put", f"{policy.model}/policy/{policy.version}",
                        {"digest": policy.digest, "note": policy.note}, policy.created_at)

    def policy(self, model: str, version: int | None = None) -> ReleasePolicy:
        """Return a policy version (the newest when version is None)."""
        if version is None:
            rows = self._rows("SELECT body FROM policies WHERE model = ? ORDER BY version DESC LIMIT 1", [model])
        else:
            rows = self._rows("SELECT body FROM policies WHERE model = ? AND version = ?", [model, version])
        if not rows:
            raise NotFound(f"no policy{'' if version is None else f' version {version}'} for model '{model}'")
        return ReleasePolicy.model_validate_json(rows[0][0])

    # ------------------------------------------------------------ artifacts

    def _check_artifacts(self, cur, artifacts: list[Artifact]) -> list[Artifact]:
        """Return the artifacts not stored yet, after checking every parent and model; raise before any write."""
        earlier: set[str] = set()  # parents may come earlier in the list
        new = []
        for artifact in artifacts:
            digest = artifact.digest
            parents = artifact.parents()
            wanted = [digest, *(p for p in parents.values() if p not in earlier)]
            marks = ", ".join("?" * len(wanted))
            found = {r[0] for r in cur.execute(f"SELECT digest FROM artifacts WHERE digest IN ({marks})",
                                               wanted).fetchall()}
            if digest not in found and digest not in earlier:
                for field, parent in parents.items():
                    if parent not in earlier and parent not in found:
                        raise MissingParent(f"{artifact.kind}.{field}: parent {parent[:12]}… is not in the store; "
                                            "ingest it first")
                if artifact.model not in self._models_in(cur):
                    raise NotFound(f"{artifact.kind}.model: no model '{artifact.model}'")
                new.append(artifact)
            earlier.add(digest)
        return new

    def _write_artifact(self, cur, artifact: Artifact, actor: str, at: datetime) -> None:
        digest = artifact.digest
        cur.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                    [digest, artifact.kind, artifact.model, artifact.created_at, at,
                     canonical_json(artifact.record())])
        for field, parent in artifact.parents().items():
            cur.execute("INSERT INTO lineage VALUES (?, ?, ?)", [digest, parent, field])
        if artifact.kind == "monitoring_signals":
            self._put_windows(cur, artifact, digest)
        self._audit(cur, actor, f"{artifact.kind}.put", digest, {"model": artifact.model}, at)

    def _models_in(self, cur) -> frozenset[str]:
        if self._shared.model_ids is None:
            self._shared.model_ids = frozenset(r[0] for r in cur.execute("SELECT id FROM models").fetchall())
        return self._shared.model_ids

    def _put_windows(self, cur, signals, digest: str) -> None:
        # Batches are numbered in write order (under the write lock): the newest version of a window wins.
        (seq,) = cur.execute("SELECT coalesce(max(batch_seq), 0) + 1 FROM signal_windows").fetchall()[0]
        rows = pd.DataFrame({
            "batch": digest, "model": signals.model, "release": signals.release,
            "stage": [w.stage.value for w in signals.windows], "arm": [w.arm for w in signals.windows],
            "segment": [w.segment for w in signals.windows],
            "start_at": pd.to_datetime([w.start for w in signals.windows], utc=True),
            "end_at": pd.to_datetime([w.end for w in signals.windows], utc=True),
            "requests": [w.requests for w in signals.windows],
            "metrics": [canonical_json(w.metrics) for w in signals.windows], "batch_seq": seq})
        # One set-based insert: executemany costs about a millisecond per window.
        name = f"_windows_{digest[:16]}"
        cur.register(name, rows)
        try:
            cur.execute(f"INSERT INTO signal_windows (batch, model, release, stage, arm, segment, start_at, end_at, "
                        f"requests, metrics, batch_seq) SELECT batch, model, release, stage, arm, segment, start_at, "
                        f"end_at, requests, metrics, batch_seq FROM {name}")
        finally:
            cur.unregister(name)

    def put_artifacts(self, artifacts: list[Artifact], actor: str, at: datetime | None = None) -> list[str]:
        """Store artifacts in one transaction (parents may come earlier in the list); return their digests."""
        at = at or self.now()
        with self.transaction() as cur:
            return self.put_artifacts_in(cur, artifacts, actor, at)

    def put_artifacts_in(self, cur, artifacts: list[Artifact], actor: str, at: datetime) -> list[str]:
        """Store artifacts inside the caller's open `transaction()`, so they land with its other writes or not at all."""
        for artifact in self._check_artifacts(cur, artifacts):
            self._write_artifact(cur, artifact, actor, at)
        return [a.digest for a in artifacts]

    def put_artifacts_grouped(self, artifacts: list[Artifact], actor: str, at: datetime | None = None) -> list[str]:
        """Store artifacts all or nothing, like `put_artifacts`, sharing one transaction and one commit with the
        calls that queued for the write lock meanwhile (group commit). A call refused by its checks writes nothing
        and leaves the others' to land; if the shared transaction itself fails, each call is retried on its own."""
        return self.run_grouped("artifacts", _Submission(artifacts, actor, at or self.now()), self._commit_group)

    def run_grouped(self, queue: str, payload: Any, lead: Callable[[list[Queued]], None]) -> Any:
        """Queue `payload`; under the write lock, unless an earlier leader already did it, call `lead` with every
        item queued so far on `queue`. `lead` sets each item's result or error; this returns or raises this
        call's. Callers that arrive while a leader works are served together by the next one."""
        mine = Queued(payload)
        shared = self._shared
        with shared.pending_lock:
            shared.queues.setdefault(queue, []).append(mine)
        with self._write_lock:
            if not mine.done:
                with shared.pending_lock:
                    group = shared.queues.pop(queue, [])
                try:
                    lead(group)
                finally:
                    for item in group:
                        item.done = True
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit_group(self, group: list[Queued]) -> None:
        try:
            with self.transaction() as cur:
                for item in group:
                    sub = item.payload
                    try:
                        new = self._check_artifacts(cur, sub.artifacts)  # sees this group's earlier writes
                    except StoreError as exc:
                        item.error = exc
                        continue
                    for artifact in new:
                        self._write_artifact(cur, artifact, sub.actor, sub.at)
                    item.result = [a.digest for a in sub.artifacts]
        except Exception:  # noqa: BLE001 - the shared transaction failed: settle each call on its own
            for item in group:
                sub, item.error, item.result = item.payload, None, None
                try:
                    item.result = self.put_artifacts(sub.artifacts, sub.actor, sub.at)
                except Exception as exc:  # noqa: BLE001 - handed to the caller, raised in its thread
                    item.error = exc

    def put_artifact(self, artifact: Artifact, actor: str, at: datetime | None = None) -> str:
        """Store one artifact with its lineage and audit entry; return its digest."""
        return self.put_artifacts([artifact], actor, at)[0]

    def has(self, digest: str) -> bool:
        """Tell whether an artifact with this digest is stored."""
        return bool(self._rows("SELECT 1 FROM artifacts WHERE digest = ?", [digest]))

    def artifact(self, digest: str) -> Artifact:
        """Return the artifact stored under a digest (a unique prefix of 8+ characters also works)."""
        if len(digest) < 64:
            if len(digest) < 8:
                raise NotFound(f"'{digest}' is too short: give 8 or more characters of a digest")
            rows = self._rows("SELECT body FROM artifacts WHERE digest LIKE ? LIMIT 2", [digest + "%"])
            if len(rows) > 1:
                raise NotFound(f"'{digest}' matches more than one artifact")
        else:
            rows = self._rows("SELECT body FROM artifacts WHERE digest = ?", [digest])
        if not rows:
            raise NotFound(f"no artifact with digest {digest[:12]}…")
        return _ARTIFACT.validate_json(rows[0][0])

    def artifacts(self, model: str | None = None, kind: str | None = None) -> list[Artifact]:
        """Return artifacts, newest first, optionally of one model and kind."""
        sql, params = "SELECT body FROM artifacts WHERE 1=1", []
        if model:
            sql += " AND model = ?"
            params.append(model)
        if kind:
            if kind not in ARTIFACT_TYPES:
                raise StoreError(f"unknown artifact kind '{kind}'")
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY created_at DESC, ingested_at DESC, digest"
        return [_ARTIFACT.validate_json(r[0]) for r in self._rows(sql, params)]

    def children(self, digest: str) -> list[tuple[str, str]]:
        """Return (child digest, field) of every artifact naming this one as a parent."""
        return [(r[0], r[1]) for r in self._rows("SELECT child, field FROM lineage WHERE parent = ? ORDER BY child",
                                                 [digest])]

    def lineage_frame(self, model: str) -> pd.DataFrame:
        """Return the parent -> child edges among a model's artifacts."""
        return self.frame("""
            SELECT l.parent, p.kind AS parent_kind, l.child, c.kind AS child_kind, l.field
            FROM lineage l JOIN artifacts c ON c.digest = l.child JOIN artifacts p ON p.digest = l.parent
            WHERE c.model = ? ORDER BY l.child""", [model])

    def artifact_counts_frame(self) -> pd.DataFrame:
        """Return the number of artifacts per model and kind."""
        return self.frame("SELECT model, kind, count(*) AS n FROM artifacts GROUP BY ALL ORDER BY ALL")

    # ------------------------------------------------------------ aliases

    def set_alias(self, model: str, alias: str, entry: str, actor: str, at: datetime | None = None) -> None:
        """Point an alias (champion, challenger, ...) at a registry entry, audited."""
        at = at or self.now()
        with self.transaction() as cur:
            row = cur.execute("SELECT kind, model FROM artifacts WHERE digest = ?", [entry]).fetchone()
            if not row or row[0] != "registry_entry" or row[1] != model:
                raise NotFound(f"alias '{alias}': {entry[:12]}… is not a registry entry of '{model}'")
            old = cur.execute("SELECT entry FROM aliases WHERE model = ? AND alias = ?", [model, alias]).fetchone()
            cur.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?, ?)", [model, alias, entry, actor, at])
            self._audit(cur, actor, "alias.set", f"{model}/{alias}",
                        {"entry": entry, "previous": old[0] if old else None}, at)

    def aliases(self, model: str) -> dict[str, str]:
        """Return {alias: entry digest} for a model."""
        return dict(self._rows("SELECT alias, entry FROM aliases WHERE model = ? ORDER BY alias", [model]))

    # ------------------------------------------------------------ releases and decisions

    def create_release(self, release: Release, actor: str) -> Release:
        """Store a new release; its candidate and note must be stored artifacts."""
        with self.transaction() as cur:
            for name in ("candidate", "baseline", "rollout_note"):
                value = getattr(release, name)
                if value and not cur.execute("SELECT 1 FROM artifacts WHERE digest = ?", [value]).fetchone():
                    raise MissingParent(f"release.{name}: {value[:12]}… is not in the store")
            if cur.execute("SELECT 1 FROM releases WHERE id = ?", [release.id]).fetchone():
                raise StoreError(f"a release '{release.id}' exists already")
            cur.execute("INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?)",
                        [release.id, release.model, release.state.value, release.version, release.created_at,
                         release.model_dump_json()])
            self._audit(cur, actor, "release.create", release.id,
                        {"candidate": release.candidate, "state": release.state.value}, release.created_at)
        return release

    def update_release(self, release: Release, expected_version: int, actor: str, action: str,
                       detail: dict, at: datetime) -> Release:
        """Write a changed release if nobody changed it since `expected_version`; audit it."""
        with self.transaction() as cur:
            row = cur.execute("SELECT version, body FROM releases WHERE id = ?", [release.id]).fetchone()
            if not row:
                raise NotFound(f"no release '{release.id}'")
            if row[0] != expected_version:
                current = Release.model_validate_json(row[1])
                raise StaleVersion(f"release '{release.id}' changed meanwhile (now {current.state.value}, "
                                   f"version {row[0]}); reload and review again")
            new = release.model_copy(update={"version": expected_version + 1})
            cur.execute("UPDATE releases SET state = ?, version = ?, body = ? WHERE id = ? AND version = ?",
                        [new.state.value, new.version, new.model_dump_json(), new.id, expected_version])
            self._audit(cur, actor, action, release.id, detail, at)
        return new

    def release(self, release_id: str) -> Release:
        """Return one release or raise NotFound."""
        rows = self._rows("SELECT body FROM releases WHERE id = ?", [release_id])
        if not rows:
            raise NotFound(f"no release '{release_id}'")
        return Release.model_validate_json(rows[0][0])

    def releases(self, model: str | None = None, states: Iterable[ReleaseState] | None = None) -> list[Release]:
        """Return releases, newest first."""
        sql, params = "SELECT body FROM releases WHERE 1=1", []
        if model:
            sql += " AND model = ?"
            params.append(model)
        if states is not None:
            states = [s.value for s in states]
            sql += f" AND state IN ({', '.join('?' * len(states))})" if states else " AND false"
            params += states
        sql += " ORDER BY created_at DESC, id"
        return [Release.model_validate_json(r[0]) for r in self._rows(sql, params)]

    def record_decision(self, decision: Decision, actor: str) -> Decision:
        """Append a decision and its audit entry; decisions are never edited."""
        with self.transaction() as cur:
            return self._record_decision(cur, decision, actor)

    def _record_decision(self, cur, decision: Decision, actor: str) -> Decision:
        (new_id,) = cur.execute("SELECT nextval('decision_ids')").fetchone()
        stored = decision.model_copy(update={"id": new_id})
        cur.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                    [new_id, stored.release, stored.gate, stored.subject, stored.at, stored.model_dump_json()])
        self._audit(cur, actor, f"decision.{stored.verdict.value}", stored.release or stored.subject or stored.gate,
                    {"id": new_id, "gate": stored.gate, "role": stored.role.value, "user": stored.user,
                     "comment": stored.comment, "covered": stored.covered}, stored.at)
        return stored

    def decisions(self, release: str | None = None, subject: str | None = None,
                  gate: str | None = None) -> list[Decision]:
        """Return decisions, oldest first, filtered by release, subject digest or gate."""
        sql, params = "SELECT body FROM decisions WHERE 1=1", []
        for col, value in (("release", release), ("subject", subject), ("gate", gate)):
            if value is not None:
                sql += f" AND {col} = ?"
                params.append(value)
        sql += " ORDER BY id"
        return [Decision.model_validate_json(r[0]) for r in self._rows(sql, params)]

    # ------------------------------------------------------------ signals

    def windows_frame(self, release: str) -> pd.DataFrame:
        """Return the current signal windows of a release, metrics spread into columns.

        A window is identified by (stage, arm, segment, start, end); when late rows or labels re-aggregate it,
        the newer batch supersedes the older one, which stays stored (and audited) but is no longer returned.
        """
        frame = self.frame("""SELECT stage, arm, segment, start_at AS start, end_at AS "end", requests, metrics
                              FROM signal_windows WHERE release = ?
                              QUALIFY row_number() OVER (PARTITION BY stage, arm, segment, start_at, end_at
                                                         ORDER BY batch_seq DESC NULLS LAST, batch) = 1
                              ORDER BY start_at, stage, arm, segment""",
                           [release])
        if frame.empty:
            return frame.drop(columns=["metrics"])
        metrics = pd.DataFrame([json.loads(m) for m in frame["metrics"]], index=frame.index)
        return pd.concat([frame.drop(columns=["metrics"]), metrics], axis=1)

    # ------------------------------------------------------------ escalations and backlog

    def put_escalations(self, cases: list[Escalation], actor: str, at: datetime | None = None) -> int:
        """Store new escalation cases (an existing case id is refused); return how many were stored."""
        at = at or self.now()
        with self.transaction() as cur:
            for case in cases:
                if cur.execute("SELECT 1 FROM escalations WHERE case_id = ?", [case.case_id]).fetchone():
                    raise StoreError(f"escalation '{case.case_id}' exists already")
                cur.execute("INSERT INTO escalations VALUES (?, ?, ?, ?)",
                            [case.case_id, case.model, case.at, case.model_dump_json()])
            self._audit(cur, actor, "escalation.put", cases[0].model if cases else "-",
                        {"cases": [c.case_id for c in cases]}, at)
        return len(cases)

    def escalations(self, model: str | None = None) -> list[Escalation]:
        """Return escalation cases, newest first."""
        sql, params = "SELECT body FROM escalations", []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        sql += " ORDER BY occurred_at DESC, case_id"
        return [Escalation.model_validate_json(r[0]) for r in self._rows(sql, params)]

    def put_backlog_item(self, item: BacklogItem, actor: str) -> BacklogItem:
        """Open a backlog item, or add evidence to the open one with the same cause."""
        with self.transaction() as cur:
            row = cur.execute("SELECT id, body FROM backlog WHERE model = ? AND cause = ? AND status IN "
                              "('open', 'in_progress')", [item.model, item.cause]).fetchone()
            if row:
                old = BacklogItem.model_validate_json(row[1])
                merged = old.model_copy(update={
                    "triggers": old.triggers + [t for t in item.triggers if t not in old.triggers],
                    "evidence": {**old.evidence, **item.evidence}, "updated_at": item.updated_at})
                cur.execute("UPDATE backlog SET body = ? WHERE id = ?", [merged.model_dump_json(), row[0]])
                self._audit(cur, actor, "backlog.update", f"backlog/{row[0]}", {"cause": item.cause},
                            item.updated_at)
                return merged
            (new_id,) = cur.execute("SELECT nextval('backlog_ids')").fetchone()
            stored = item.model_copy(update={"id": new_id})
            cur.execute("INSERT INTO backlog VALUES (?, ?, ?, ?, ?)",
                        [new_id, item.model, item.cause, item.status.value, stored.model_dump_json()])
            self._audit(cur, actor, "backlog.open", f"backlog/{new_id}",
                        {"cause": item.cause, "type": item.type.value}, item.opened_at)
            return stored

    def backlog(self, model: str | None = None) -> list[BacklogItem]:
        """Return backlog items, newest first."""
        sql, params = "SELECT body FROM backlog", []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        sql += " ORDER BY id DESC"
        return [BacklogItem.model_validate_json(r[0]) for r in self._rows(sql, params)]

    def escalations_frame(self, model: str | None = None) -> pd.DataFrame:
        """Return escalation cases as one row each (newest first), the fields spread into columns."""
        sql = """SELECT case_id, model, occurred_at AS at, body->>'release' AS release, body->>'segment' AS segment,
                        body->>'type' AS type, CAST(body->>'score' AS DOUBLE) AS score, body->>'decision' AS decision,
                        body->>'severity' AS severity, body->>'status' AS status, body->>'assignee' AS assignee,
                        body->>'error_group' AS error_group, body->>'finding' AS finding,
                        CAST(body->>'corrected_label' AS INTEGER) AS corrected_label,
                        body->>'triaged_by' AS triaged_by, CAST(body->>'triaged_at' AS TIMESTAMPTZ) AS triaged_at,
                        body->>'request_id' AS request_id, body->>'text' AS text
                 FROM escalations"""
        params: list[Any] = []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        return self.frame(sql + " ORDER BY occurred_at DESC, case_id", params)

    def update_escalations(self, cases: list[Escalation], actor: str, action: str, detail: dict,
                           at: datetime) -> int:
        """Write changed escalation cases (all must exist) and one audit entry, in one transaction."""
        with self.transaction() as cur:
            for case in cases:
                if not cur.execute("SELECT 1 FROM escalations WHERE case_id = ?", [case.case_id]).fetchone():
                    raise NotFound(f"no escalation '{case.case_id}'")
                cur.execute("UPDATE escalations SET body = ? WHERE case_id = ?",
                            [case.model_dump_json(), case.case_id])
            self._audit(cur, actor, action, cases[0].model if cases else "-",
                        {"cases": [c.case_id for c in cases], **detail}, at)
        return len(cases)

    def backlog_item(self, item_id: int) -> BacklogItem:
        """Return one backlog item or raise NotFound."""
        rows = self._rows("SELECT body FROM backlog WHERE id = ?", [item_id])
        if not rows:
            raise NotFound(f"no backlog item {item_id}")
        return BacklogItem.model_validate_json(rows[0][0])

    def update_backlog_item(self, item: BacklogItem, expected_status: str, actor: str, action: str, detail: dict,
                            at: datetime) -> BacklogItem:
        """Write a changed backlog item if its status is still `expected_status`; audit it."""
        with self.transaction() as cur:
            row = cur.execute("SELECT status FROM backlog WHERE id = ?", [item.id]).fetchone()
            if not row:
                raise NotFound(f"no backlog item {item.id}")
            if row[0] != expected_status:
                raise StaleVersion(f"backlog item {item.id} is {row[0]} now, not {expected_status}; reload it")
            cur.execute("UPDATE backlog SET status = ?, body = ? WHERE id = ?",
                        [item.status.value, item.model_dump_json(), item.id])
            self._audit(cur, actor, action, f"backlog/{item.id}", detail, at)
        return item

    def signal_windows_frame(self, model: str) -> pd.DataFrame:
        """Return a model's current signal windows (newest batch of each) with release and batch digest."""
        frame = self.frame("""SELECT batch, release, stage, arm, segment, start_at AS start, end_at AS "end",
                                     requests, metrics
                              FROM signal_windows WHERE model = ?
                              QUALIFY row_number() OVER (PARTITION BY release, stage, arm, segment, start_at, end_at
                                                         ORDER BY batch_seq DESC NULLS LAST, batch) = 1
                              ORDER BY release, stage, arm, segment, start_at""",
                           [model])
        if frame.empty:
            return frame.drop(columns=["metrics"])
        metrics = pd.DataFrame([json.loads(m) for m in frame["metrics"]], index=frame.index)
        return pd.concat([frame.drop(columns=["metrics"]), metrics], axis=1)

    # ------------------------------------------------------------ API tokens

    def put_api_token(self, token: ApiToken, actor: str) -> ApiToken:
        """Store a new token (its hash only); a name in use is refused."""
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM api_tokens WHERE name = ?", [token.name]).fetchone():
                raise StoreError(f"a token named '{token.name}' exists already; pick another name")
            if not cur.execute("SELECT 1 FROM models WHERE id = ?", [token.model]).fetchone():
                raise NotFound(f"no model '{token.model}'")
            cur.execute("INSERT INTO api_tokens VALUES (?, ?, ?, NULL, ?)",
                        [token.name, token.sha256, token.model, token.model_dump_json()])
            self._audit(cur, actor, "token.create", f"token/{token.name}",
                        {"model": token.model, "scopes": [s.value for s in token.scopes]}, token.created_at)
        self._shared.drop_tokens()
        return token

    def api_token_by_hash(self, sha256: str) -> ApiToken | None:
        """Return the token stored under a secret's sha256, revoked or not; None when unknown."""
        shared = self._shared
        cached = shared.tokens
        if sha256 in cached:
            return cached[sha256]
        generation = shared.token_generation
        rows = self._rows("SELECT body FROM api_tokens WHERE sha256 = ?", [sha256])
        token = ApiToken.model_validate_json(rows[0][0]) if rows else None
        with shared.lock:
            if shared.token_generation == generation:  # no token changed while this lookup read the table
                if len(shared.tokens) > 10_000:  # guessed secrets must not grow the cache without bound
                    shared.tokens = {}
                shared.tokens[sha256] = token
        return token

    def revoke_api_token(self, name: str, actor: str, at: datetime) -> ApiToken:
        """Revoke a token by name; it stays stored (and audited) but no longer authenticates."""
        with self.transaction() as cur:
            row = cur.execute("SELECT body FROM api_tokens WHERE name = ?", [name]).fetchone()
            if not row:
                raise NotFound(f"no token named '{name}'")
            token = ApiToken.model_validate_json(row[0])
            if token.revoked_at is not None:
                raise StoreError(f"token '{name}' was revoked already")
            token = token.model_copy(update={"revoked_by": actor, "revoked_at": at})
            cur.execute("UPDATE api_tokens SET revoked_at = ?, body = ? WHERE name = ?",
                        [at, token.model_dump_json(), name])
            self._audit(cur, actor, "token.revoke", f"token/{name}", {"model": token.model}, at)
        self._shared.drop_tokens()  # after the commit: a lookup from now on reads the revocation
        return token

    def api_tokens(self, model: str | None = None) -> list[ApiToken]:
        """Return tokens (hashes only), active first, then by name."""
        sql, params = "SELECT body FROM api_tokens", []
        if model:
            sql += " WHERE model = ?"
            params.append(model)
        sql += " ORDER BY revoked_at IS NOT NULL, name"
        return [ApiToken.model_validate_json(r[0]) for r in self._rows(sql, params)]

    def counts(self) -> dict[str, int]:
        """Return row counts of the main tables (for the CLI and tests)."""
        tables = ["models", "artifacts", "lineage", "policies", "releases", "decisions", "aliases",
                  "signal_windows", "escalations", "backlog", "audit"]
        return {t: self._rows(f"SELECT count(*) FROM {t}")[0][0] for t in tables}
