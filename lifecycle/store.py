"""Keep Seamline's record in one DuckDB file: migrations, rows <-> models, transactions, the audit chain."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import TypeAdapter

from .models import (
    ARTIFACT_TYPES, AnyArtifact, Artifact, AuditEvent, BacklogItem, Decision, Escalation, Model, Person,
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
]


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
        self._write_lock = threading.RLock()
        self.migrate()

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
                cur.commit()
            except BaseException:
                cur.rollback()
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
        head = cur.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        detail = json.loads(canonical_json(detail))
        digest = AuditEvent.compute_hash(seq, at, actor, action, subject, detail, prev)
        cur.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [seq, at, actor, action, subject, canonical_json(detail), prev, digest])
        cur.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", [seq, digest])
        return AuditEvent(seq=seq, at=at, actor=actor, action=action, subject=subject, detail=detail,
                          prev_hash=prev, hash=digest)

    def audit(self, actor: str, action: str, subject: str, detail: dict | None = None,
              at: datetime | None = None) -> AuditEvent:
        """Append one entry to the audit log in its own transaction."""
        with self.transaction() as cur:
            return self._audit(cur, actor, action, subject, detail or {}, at or utcnow())

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
        at = at or utcnow()
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", [model.id, model.model_dump_json()])
            cur.execute("DELETE FROM team WHERE model = ?", [model.id])
            for role, people in model.owners.items():
                for p in people:
                    cur.execute("INSERT OR REPLACE INTO team VALUES (?, ?, ?, ?)",
                                [p.email, p.name, model.id, role.value])
            self._audit(cur, actor, "model.put", model.id, {"owners": {r.value: [p.email for p in ps]
                                                                         for r, ps in model.owners.items()}}, at)

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

    def _put_artifact(self, cur, artifact: Artifact, actor: str, at: datetime, batch: set[str]) -> bool:
        digest = artifact.digest
        if cur.execute("SELECT 1 FROM artifacts WHERE digest = ?", [digest]).fetchone():
            return False
        for field, parent in artifact.parents().items():
            if parent in batch:
                continue
            if not cur.execute("SELECT 1 FROM artifacts WHERE digest = ?", [parent]).fetchone():
                raise MissingParent(f"{artifact.kind}.{field}: parent {parent[:12]}… is not in the store; "
                                    "ingest it first")
        if not cur.execute("SELECT 1 FROM models WHERE id = ?", [artifact.model]).fetchone():
            raise NotFound(f"{artifact.kind}.model: no model '{artifact.model}'")
        cur.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                    [digest, artifact.kind, artifact.model, artifact.created_at, at,
                     canonical_json(artifact.record())])
        for field, parent in artifact.parents().items():
            cur.execute("INSERT INTO lineage VALUES (?, ?, ?)", [digest, parent, field])
        if artifact.kind == "monitoring_signals":
            self._put_windows(cur, artifact, digest)
        self._audit(cur, actor, f"{artifact.kind}.put", digest, {"model": artifact.model}, at)
        return True

    def _put_windows(self, cur, signals, digest: str) -> None:
        rows = [[digest, signals.model, signals.release, w.stage.value, w.arm, w.segment, w.start, w.end,
                 w.requests, canonical_json(w.metrics)] for w in signals.windows]
        cur.executemany("INSERT INTO signal_windows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def put_artifacts(self, artifacts: list[Artifact], actor: str, at: datetime | None = None) -> list[str]:
        """Store artifacts in one transaction (parents may come earlier in the list); return their digests."""
        at = at or utcnow()
        with self.transaction() as cur:
            batch: set[str] = set()
            for a in artifacts:
                self._put_artifact(cur, a, actor, at, batch)
                batch.add(a.digest)
        return [a.digest for a in artifacts]

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
        at = at or utcnow()
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
        """Return every stored signal window of a release, metrics spread into columns."""
        frame = self.frame("""SELECT stage, arm, segment, start_at AS start, end_at AS "end", requests, metrics
                              FROM signal_windows WHERE release = ? ORDER BY start_at, stage, arm, segment""",
                           [release])
        if frame.empty:
            return frame.drop(columns=["metrics"])
        metrics = pd.DataFrame([json.loads(m) for m in frame["metrics"]], index=frame.index)
        return pd.concat([frame.drop(columns=["metrics"]), metrics], axis=1)

    # ------------------------------------------------------------ escalations and backlog

    def put_escalations(self, cases: list[Escalation], actor: str, at: datetime | None = None) -> int:
        """Store new escalation cases (an existing case id is refused); return how many were stored."""
        at = at or utcnow()
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

    def counts(self) -> dict[str, int]:
        """Return row counts of the main tables (for the CLI and tests)."""
        tables = ["models", "artifacts", "lineage", "policies", "releases", "decisions", "aliases",
                  "signal_windows", "escalations", "backlog", "audit"]
        return {t: self._rows(f"SELECT count(*) FROM {t}")[0][0] for t in tables}
