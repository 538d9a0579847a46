"""Seamline's command line: demo, ingest, show, audit, release status — the same validation as the UI."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from .ingest import IngestError, ingest
from .store import NotFound, Store, StoreError, db_path


class CliError(Exception):
    """A failure reported as one line and a non-zero exit code."""


def _open(args) -> Store:
    path = args.db or db_path()
    try:
        return Store(path)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise CliError(f"{path} is locked by a running Seamline server; stop it or send the data to "
                           "its ingestion API instead") from None
        raise CliError(str(exc).splitlines()[0]) from None


def cmd_demo(args) -> int:
    """Build the demo store."""
    from .demo import build_demo

    store = _open(args)
    if not store.is_empty() and not args.force:
        raise CliError(f"{store.path} is not empty; use --db with a new path")
    ids = build_demo(store, seed=args.seed,
                     progress=lambda f, t: print(f"[{f:4.0%}] {t}", file=sys.stderr, flush=True))
    print(json.dumps(ids, indent=2))
    return 0


def cmd_ingest(args) -> int:
    """Validate and store artifacts from a JSON or YAML file, all or nothing."""
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    fmt = "json" if path.suffix == ".json" else "yaml" if path.suffix in (".yaml", ".yml") else None
    store = _open(args)
    digests = ingest(store, path.read_bytes(), actor=args.actor, fmt=fmt)
    for d in digests:
        print(d)
    return 0


def cmd_show(args) -> int:
    """Print a stored artifact as JSON."""
    store = _open(args)
    artifact = store.artifact(args.digest)
    print(json.dumps({"digest": artifact.digest, **artifact.record()}, indent=2, ensure_ascii=False))
    return 0


def cmd_audit_verify(args) -> int:
    """Verify the audit log's hash chain."""
    ok, reason = _open(args).verify_audit()
    print(reason)
    return 0 if ok else 1


def cmd_release_status(args) -> int:
    """Print a release's gate checklist; exit 0 when it may take its next step, 1 when not."""
    from .releases import find_release, review

    store = _open(args)
    find_release(store, args.release)
    rv = review(store, args.release, datetime.now(timezone.utc))
    print(f"{rv.evidence.release.id}: {rv.evidence.release.state.value} — {rv.line}")
    for r in rv.results:
        who = f" [{r.who_must_act.label}]" if r.who_must_act else ""
        print(f"  {r.status.value:8} {r.gate.stage.value:6} {r.gate.title}{who}: {r.reason}")
    return 0 if rv.verdict == "go" else 1


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m lifecycle", description="Seamline: the ML release desk.")
    parser.add_argument("--db", help=f"DuckDB file (default: $SEAMLINE_DB or {db_path()})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the demo store (generate data, train, evaluate, release)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("ingest", help="validate and store artifacts from a JSON or YAML file (all or nothing)")
    p.add_argument("file")
    p.add_argument("--actor", default="cli", help="who is ingesting (recorded in the audit log)")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("show", help="print a stored artifact (a digest or a unique prefix of 8+ characters)")
    p.add_argument("digest")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("audit", help="audit log commands")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="verify the audit log's hash chain")
    v.set_defaults(func=cmd_audit_verify)
    p = sub.add_parser("release", help="release commands")
    rsub = p.add_subparsers(dest="release_command", required=True)
    s = rsub.add_parser("status", help="gate checklist; exit 0 when the next step may go, 1 when not")
    s.add_argument("release")
    s.set_defaults(func=cmd_release_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; print one line and return non-zero on failure."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, IngestError, StoreError, NotFound, PermissionError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
