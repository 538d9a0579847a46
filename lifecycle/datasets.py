"""Serve the Datasets screen: snapshot lists and details, the Data owner's decision, comparisons, new snapshots."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from .identity import User
from .models import (
    CheckResult, CheckStatus, DatasetSnapshot, Decision, Frozen, Name, ReleasePolicy, Role, Text, Verdict,
    short,
)
from .quality import CHECK_NAMES, CSV_SUFFIXES, PARQUET_SUFFIXES
from .releases import decide_artifact, last_artifact_decision
from .snapshots import (
    SnapshotComparison, SnapshotError, build_snapshot, compare_snapshots, file_sha256, parse_manifest, verify_files,
)
from .store import NotFound, Store

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
UPLOAD_DIR = "uploads"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
DecisionState = Literal["usable", "blocked", "awaiting decision"]
SNAPSHOT_VERDICTS = (Verdict.USABLE.value, Verdict.BLOCKED.value)


# ---------------------------------------------------------------- listing and detail


class SnapshotStatus(Frozen):
    """Where the Data owner's decision on a snapshot stands; the newest decision counts."""

    digest: str
    status: DecisionState
    decision: Decision | None = None
    line: Text


def snapshot_status(store: Store, digest: str) -> SnapshotStatus:
    """Return the Data owner's current decision on a snapshot: usable, blocked or awaiting decision."""
    last, said = last_artifact_decision(store, digest, "snapshot")
    if last is None:
        return SnapshotStatus(digest=digest, status="awaiting decision",
                              line="Awaiting the Data owner's decision (usable or blocked)")
    status: DecisionState = "blocked" if last.verdict == Verdict.BLOCKED else "usable"
    return SnapshotStatus(digest=digest, status=status, decision=last, line=f"Marked {status} {said}")


def snapshots(store: Store, model: str) -> list[DatasetSnapshot]:
    """Return a model's snapshots, newest first."""
    return store.artifacts(model, "dataset_snapshot")


def _failing(snapshot: DatasetSnapshot) -> list[str]:
    return [c.name for c in snapshot.quality_checks if c.status == CheckStatus.FAIL]


def snapshot_choices(store: Store, model: str) -> dict[str, str]:
    """Return {digest: label} of a model's snapshots, newest first, for a selector."""
    out = {}
    for snap in snapshots(store, model):
        failing = _failing(snap)
        checks = f"{len(failing)} check(s) fail" if failing else "checks pass"
        out[snap.digest] = (f"{snap.name} · {short(snap.digest)} · {checks} · "
                            f"{snapshot_status(store, snap.digest).status}")
    return out


def compare_defaults(choices: list[str], digest: str) -> tuple[int, int]:
    """Return the (reference, current) positions that compare a snapshot with the one before it (newest first)."""
    current = choices.index(digest)
    return min(current + 1, len(choices) - 1), current


def snapshots_frame(store: Store, model: str) -> pd.DataFrame:
    """Return one row per snapshot, newest first: size, label rate, each check's status and the decision."""
    rows = []
    for snap in snapshots(store, model):
        checks = {c.name: c.status.value for c in snap.quality_checks}
        rows.append({"snapshot": snap.name, "digest": short(snap.digest), "as_of": snap.point_in_time.as_of,
                     "rows": snap.row_count, "label_rate": snap.label_rate,
                     "decision": snapshot_status(store, snap.digest).status,
                     **{name: checks.get(name, "—") for name in CHECK_NAMES}, "created_by": snap.created_by,
                     "created_at": snap.created_at})
    columns = ["snapshot", "digest", "as_of", "rows", "label_rate", "decision", *CHECK_NAMES, "created_by",
               "created_at"]
    return pd.DataFrame(rows, columns=columns)


class SnapshotDetail(Frozen):
    """A snapshot with its decision status and decision history, plus its parts as tables."""

    snapshot: DatasetSnapshot
    status: SnapshotStatus
    decisions: list[Decision]

    def sources_frame(self) -> pd.DataFrame:
        """Return the sources: name, uri, version, extraction time, legal usage."""
        return pd.DataFrame([s.model_dump() for s in self.snapshot.sources],
                            columns=["name", "uri", "version", "extracted_at", "legal_usage"])

    def features_frame(self) -> pd.DataFrame:
        """Return the feature definitions: name, dtype, source, transformation, owner."""
        return pd.DataFrame([f.model_dump() for f in self.snapshot.features],
                            columns=["name", "dtype", "source", "transformation", "owner"])

    def schema_frame(self) -> pd.DataFrame:
        """Return the file schema with each column's role (feature, label, key, time)."""
        snap, pit = self.snapshot, self.snapshot.point_in_time
        roles = {f.name: "feature" for f in snap.features}
        roles.update({k: "key" for k in snap.key_columns})
        roles[pit.event_time_column] = "event time"
        if pit.feature_time_column:
            roles[pit.feature_time_column] = "feature time"
        roles[snap.label.column] = "label"
        return pd.DataFrame([{"column": c.name, "dtype": c.dtype, "role": roles.get(c.name, "undeclared")}
                             for c in snap.schema_], columns=["column", "dtype", "role"])

    def decisions_frame(self) -> pd.DataFrame:
        """Return the decisions on this snapshot, oldest first."""
        return pd.DataFrame([{"at": d.at, "verdict": d.verdict.value, "user": d.user, "role": d.role.label,
                              "comment": d.comment} for d in self.decisions],
                            columns=["at", "verdict", "user", "role", "comment"])

    def files_frame(self) -> pd.DataFrame:
        """Return the data files with their recorded sha256 and size."""
        return pd.DataFrame([f.model_dump() for f in self.snapshot.files], columns=["path", "sha256", "bytes"])

    def rules(self) -> dict[str, Any]:
        """Return the label definition and point-in-time rules as one readable mapping."""
        snap, pit = self.snapshot, self.snapshot.point_in_time
        return {"label column": snap.label.column, "label definition": snap.label.definition,
                "label delay (days)": snap.label.delay_days, "as_of": pit.as_of.isoformat(),
                "feature cutoff": pit.feature_cutoff.isoformat(),
                "label window": f"{pit.label_window_start.isoformat()} .. {pit.label_window_end.isoformat()}",
                "event time column": pit.event_time_column, "feature time column": pit.feature_time_column,
                "key columns": ", ".join(snap.key_columns) or "—", "row count": f"{snap.row_count:,}",
                "label rate": "—" if snap.label_rate is None else f"{snap.label_rate:.2%}",
                "data digest": snap.data_digest}

    def rules_frame(self) -> pd.DataFrame:
        """Return the label definition and point-in-time rules as a two-column table."""
        return pd.DataFrame([{"rule": k, "value": "—" if v is None else str(v)} for k, v in self.rules().items()],
                            columns=["rule", "value"])


def _snapshot(store: Store, digest: str) -> DatasetSnapshot:
    artifact = store.artifact(digest)
    if not isinstance(artifact, DatasetSnapshot):
        raise NotFound(f"{short(artifact.digest)} is a {artifact.kind}, not a dataset snapshot")
    return artifact


def snapshot_detail(store: Store, digest: str) -> SnapshotDetail:
    """Return a snapshot with its decision status and the history of decisions on it."""
    snap = _snapshot(store, digest)
    return SnapshotDetail(snapshot=snap, status=snapshot_status(store, snap.digest),
                          decisions=store.decisions(subject=snap.digest, gate="snapshot"))


def sample_rows(check: CheckResult) -> list[dict[str, Any]]:
    """Return the offending rows a check sampled as evidence (leakage, immature labels, duplicates), or []."""
    sample = check.evidence.get("sample")
    return sample if isinstance(sample, list) else []


def reverify(store: Store, digest: str) -> CheckResult:
    """Re-hash a snapshot's data files and compare them with the recorded digests."""
    return verify_files(_snapshot(store, digest), store.data_root)


def compare(store: Store, a_digest: str, b_digest: str) -> SnapshotComparison:
    """Compare snapshot b with reference a, with the PSI limits of b's model policy."""
    a, b = _snapshot(store, a_digest), _snapshot(store, b_digest)
    return compare_snapshots(a, b, store.data_root, settings=store.policy(b.model).evaluation)


def changes_frame(cmp: SnapshotComparison) -> pd.DataFrame:
    """Return schema, feature, source and rule changes of a comparison as one table."""
    rows = [{"part": "column", "name": c.name, "change": "added", "detail": c.dtype} for c in cmp.added_columns]
    rows += [{"part": "column", "name": c.name, "change": "removed", "detail": c.dtype} for c in cmp.removed_columns]
    rows += [{"part": "column", "name": c.name, "change": "retyped", "detail": f"{c.a_dtype} -> {c.b_dtype}"}
             for c in cmp.retyped_columns]
    for part, changes in (("feature", cmp.feature_changes), ("source", cmp.source_changes)):
        for ch in changes:
            detail = ", ".join(f"{f}: {getattr(ch.a, f)} -> {getattr(ch.b, f)}" for f in ch.fields)
            rows.append({"part": part, "name": ch.name, "change": ch.change, "detail": detail[:600]})
    for line in cmp.other_changes:
        name, _, detail = line.partition(": ")
        rows.append({"part": "rule", "name": name, "change": "changed", "detail": detail})
    return pd.DataFrame(rows, columns=["part", "name", "change", "detail"])


def comparison_lines(cmp: SnapshotComparison) -> list[str]:
    """Return the headline changes of a comparison: rows, label rate, file checks, shift status."""
    lines = [f"Rows: {cmp.row_count_a:,} → {cmp.row_count_b:,} ({cmp.row_count_change:+,})"]
    if cmp.label_rate_change is None:
        lines.append("Label rate: not comparable (one snapshot has no 0/1 label)")
    else:
        lines.append(f"Label rate: {cmp.label_rate_a:.2%} → {cmp.label_rate_b:.2%} "
                     f"({cmp.label_rate_change * 100:+.2f} pp)")
    lines.append(f"Data files: A {cmp.files_a.status.value}, B {cmp.files_b.status.value}")
    moved = [s for s in cmp.shifts if s.status in (CheckStatus.WARN, CheckStatus.FAIL)]
    lines.append(cmp.shift_note or (f"Shift: {len(moved)} of {len(cmp.shifts)} features at or above the PSI "
                                    f"warning limit" + (": " + ", ".join(s.feature for s in moved) if moved else "")))
    return lines


def decide_snapshot(store: Store, user: User, digest: str, verdict: str, comment: str, now: datetime) -> Decision:
    """Record the Data owner's usable or blocked on a snapshot; the role check lives in decide_artifact."""
    snap = _snapshot(store, digest)
    if verdict not in SNAPSHOT_VERDICTS:
        raise SnapshotError(f"verdict: '{verdict}' is not a snapshot decision; use usable or blocked")
    return decide_artifact(store, user, snap.digest, Verdict(verdict), comment.strip(), now)


# ---------------------------------------------------------------- creating snapshots


class SnapshotCreated(Frozen):
    """The outcome of creating a snapshot: its digest, where its data lives, and how its checks came out."""

    digest: str
    model: Name
    name: Name
    path: str = Field(description="the data file's path as recorded, relative to the data root")
    new: bool = Field(description="False when the identical snapshot was stored already")
    checks: list[CheckResult]
    line: Text


def _manifest_text(manifest: str | bytes) -> str:
    if isinstance(manifest, bytes):
        try:
            return manifest.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SnapshotError(f"manifest: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return manifest


def _target_name(filename: str) -> str:
    name = PurePath(str(filename).replace("\\", "/")).name
    if not _SAFE_NAME.match(name):
        raise SnapshotError(f"data file name: '{str(filename)[:80]}' must be letters, digits, '.', '_' or '-' "
                            "(at most 120 characters)")
    if not name.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES):
        raise SnapshotError(f"data file name: '{name}' is neither Parquet (.parquet) nor CSV (.csv)")
    return name


def _prepare(store: Store, manifest_text: str | bytes,
             user: User | None) -> tuple[dict[str, Any], ReleasePolicy]:
    """Parse the manifest and check the model, its policy and who creates the snapshot; write nothing."""
    manifest = parse_manifest(_manifest_text(manifest_text))
    model_id = manifest["model"]
    try:
        store.model(model_id)
        policy = store.policy(model_id)
    except NotFound as err:
        raise SnapshotError(f"model: {err}") from None
    if user is not None:
        if not user.holds(model_id, Role.DATA):
            raise PermissionError(f"{user.email} does not hold the {Role.DATA.label} role on '{model_id}'")
        if manifest["created_by"] != user.email:
            raise SnapshotError(f"created_by: the manifest says '{manifest['created_by']}' but you are "
                                f"{user.email}; a snapshot names who created it")
    return manifest, policy


def _place(store: Store, model: str, name: str, write: Callable[[Path], object]) -> tuple[Path, bool]:
    """Put a data file under <data root>/uploads/<model>/ named by its content; return (path, created now)."""
    folder = store.data_root / UPLOAD_DIR / model
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{uuid.uuid4().hex}.part"
    try:
        write(part)
        target = folder / f"{file_sha256(part)[:16]}-{name}"
        if target.exists():
            if file_sha256(target) != file_sha256(part):
                raise SnapshotError(f"data: '{target.name}' exists with other content; rename the file")
            return target, False
        # Written under a temporary name and renamed, so a reader never sees a half-written file.
        os.replace(part, target)
        return target, True
    finally:
        part.unlink(missing_ok=True)


def _remove(path: Path, root: Path) -> None:
    """Remove a file this call placed, and the upload folders it leaves empty."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        if folder.resolve().is_relative_to(root.resolve() / UPLOAD_DIR):
            try:
                folder.rmdir()
            except OSError:
                break


def _store(store: Store, manifest: dict[str, Any], policy: ReleasePolicy, path: Path, created: bool, actor: str,
           now: datetime) -> SnapshotCreated:
    """Build, check and store the snapshot; remove a file this call placed when anything fails."""
    try:
        snap = build_snapshot(path, manifest, data_root=store.data_root, thresholds=policy.quality, now=now)
        new = not store.has(snap.digest)
        store.put_artifact(snap, actor, now)
    except BaseException:
        if created:
            _remove(path, store.data_root)
        raise
    failing = _failing(snap)
    verdict = f"{len(failing)} check(s) fail: {', '.join(failing)}" if failing else \
        f"all {len(snap.quality_checks)} checks pass"
    line = (f"{'Stored' if new else 'Already stored'} snapshot {short(snap.digest)} '{snap.name}': "
            f"{snap.row_count:,} rows, {verdict}")
    return SnapshotCreated(digest=snap.digest, model=snap.model, name=snap.name, path=snap.files[0].path, new=new,
                           checks=snap.quality_checks, line=line)


def create_snapshot_from_upload(store: Store, user: User, data_bytes: bytes, filename: str,
                                manifest_text: str | bytes, now: datetime,
                                max_bytes: int = MAX_UPLOAD_BYTES) -> SnapshotCreated:
    """Write an uploaded data file under the data root and store its checked snapshot, all or nothing."""
    if len(data_bytes) > max_bytes:
        raise SnapshotError(f"data: {len(data_bytes):,} bytes; the limit is {max_bytes:,}")
    if not data_bytes:
        raise SnapshotError("data: the file is empty")
    name = _target_name(filename)
    manifest, policy = _prepare(store, manifest_text, user)
    path, created = _place(store, manifest["model"], name, lambda p: p.write_bytes(data_bytes))
    return _store(store, manifest, policy, path, created, user.email, now)


def create_snapshot_from_file(store: Store, data_path: Path | str, manifest_text: str | bytes, now: datetime,
                              actor: str | None = None) -> SnapshotCreated:
    """Store the checked snapshot of a data file; a file outside the data root is copied under it first."""
    data_path = Path(data_path)
    if not data_path.exists():
        raise SnapshotError(f"data: file '{data_path}' does not exist")
    manifest, policy = _prepare(store, manifest_text, None)
    actor = actor or manifest["created_by"]
    root = store.data_root.resolve()
    if data_path.resolve().is_relative_to(root):
        # Already under the data root: recorded where it is, as the demo's files are.
        return _store(store, manifest, policy, data_path.resolve(), False, actor, now)
    if not data_path.is_file():
        raise SnapshotError(f"data: '{data_path}' is a directory outside the data root {root}; "
                            "give one file, or move the directory under the data root")
    name = _target_name(data_path.name)
    try:
        path, created = _place(store, manifest["model"], name, lambda p: shutil.copyfile(data_path, p))
    except OSError as err:
        raise SnapshotError(f"data: cannot copy '{data_path}': {err.strerror}") from None
    return _store(store, manifest, policy, path, created, actor, now)
