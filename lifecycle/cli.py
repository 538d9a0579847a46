"""Seamline's command line: demo, ingest, show, audit, release status — the same validation as the UI."""

from __future__ import annotations

import argparse
import json
import sys
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
            raise CliError(f"{path} is locked by a running Seamline server; send the data to its API instead: "
                           "`python -m lifecycle ingest FILE --server http://127.0.0.1:8501` with the token in "
                           "SEAMLINE_TOKEN (create one on the API tokens page), or stop the server") from None
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
    if getattr(args, "server", None):
        digests = _send_artifacts(args.server, path.read_bytes(), fmt)
    else:
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
    rv = review(store, args.release, store.now())
    print(f"{rv.evidence.release.id}: {rv.evidence.release.state.value} — {rv.line}")
    for r in rv.results:
        who = f" [{r.who_must_act.label}]" if r.who_must_act else ""
        print(f"  {r.status.value:8} {r.gate.stage.value:6} {r.gate.title}{who}: {r.reason}")
    return 0 if rv.verdict == "go" else 1


def cmd_snapshot_create(args) -> int:
    """Check a data file against its YAML manifest and store the snapshot, all or nothing."""
    from .datasets import create_snapshot_from_file
    from .snapshots import MANIFEST_MAX_BYTES

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise CliError(f"--manifest: {manifest}: no such file")
    if manifest.stat().st_size > MANIFEST_MAX_BYTES:
        raise CliError(f"--manifest: {manifest} is larger than {MANIFEST_MAX_BYTES:,} bytes")
    if not Path(args.data).exists():
        raise CliError(f"--data: {args.data}: no such file")
    store = _open(args)
    created = create_snapshot_from_file(store, Path(args.data), manifest.read_bytes(), store.now(),
                                        actor=args.actor)
    print(created.digest)
    print(created.line)
    for check in created.checks:
        print(f"  {check.status.value:12} {check.name}: {check.reason}")
    return 0


def cmd_snapshot_verify(args) -> int:
    """Re-hash a snapshot's data files; exit 0 when they match, 1 when one changed or is missing."""
    from .datasets import reverify
    from .models import CheckStatus

    result = reverify(_open(args), args.digest)
    print(result.reason)
    return 0 if result.status == CheckStatus.PASS else 1


def cmd_escalations_ingest(args) -> int:
    """Validate and store escalations from a CSV or JSON file (all or nothing), then evaluate the trigger rules."""
    from .escalations import ingest_escalations

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    fmt = "csv" if path.suffix.lower() == ".csv" else "json" if path.suffix.lower() == ".json" else None
    store = _open(args)
    outcome = ingest_escalations(store, path.read_bytes(), args.actor, store.now(), fmt=fmt)
    print(outcome.message)
    for evaluation in outcome.evaluations:
        for change in evaluation.changes:
            print(f"  {change.action:9} backlog/{change.item.id} {change.item.type.value}: {change.item.title}")
    return 0


def cmd_triggers_evaluate(args) -> int:
    """Evaluate a model's trigger rules now; print every verdict and the backlog items opened or updated."""
    from .feedback import evaluate_triggers

    store = _open(args)
    store.model(args.model)
    evaluation = evaluate_triggers(store, args.model, store.now(), args.actor)
    for v in evaluation.verdicts:
        print(f"  {'fires' if v.fired else v.status.value:12} {v.rule.id}: {v.reason}")
    for change in evaluation.changes:
        print(f"  {change.action:9} backlog/{change.item.id} {change.item.type.value}: {change.item.title}")
    print(evaluation.message)
    return 0


def cmd_train(args) -> int:
    """Run a training job from a YAML or JSON spec and record the run; a refused spec records nothing."""
    from .training import parse_spec, run_spec

    path = Path(args.spec)
    if not path.is_file():
        raise CliError(f"--spec: {path}: no such file")
    spec = parse_spec(path.read_bytes(), "json" if path.suffix == ".json" else "yaml")
    store = _open(args)
    run = run_spec(store, spec, now=store.now(),
                   progress=lambda f, t: print(f"[{f:4.0%}] {t}", file=sys.stderr, flush=True))
    print(json.dumps({"run": run.digest, "model_artifact": run.model_artifact.model_dump(),
                      "validation_metrics": run.validation_metrics, "duration_s": run.duration_s}, indent=2))
    return 0


def cmd_reproduce(args) -> int:
    """Re-run a recorded run's spec on its snapshot and record the check; exit 0 when reproduced, 1 when not."""
    from .runs import check_reproducibility

    store = _open(args)
    result = check_reproducibility(store, store.artifact(args.run).digest, args.actor, store.now(),
                                   progress=lambda f, t: print(f"[{f:4.0%}] {t}", file=sys.stderr, flush=True))
    print(f"{result.status.value}: {result.reason}")
    return 0 if result.status.value == "pass" else 1


def cmd_signals_ingest(args) -> int:
    """Ingest a prediction log, delayed labels or pre-aggregated windows for a release; stop rules act on it."""
    from .monitoring import ingest_file

    store = _open(args)
    result = ingest_file(store, args.release, args.file, window_minutes=args.window_minutes, labels=args.labels,
                         actor=args.actor, now=store.now())
    print(f"{result.release}: {result.message}")
    if result.batch:
        print(result.batch)
    return 0


def _send_artifacts(server: str, data: bytes, fmt: str | None) -> list[str]:
    """Parse a file as strictly as a local ingest, then POST it to a running server's API; return the digests."""
    import os
    import urllib.error
    import urllib.request

    from .ingest import parse_document

    token = os.environ.get("SEAMLINE_TOKEN", "").strip()
    if not token:
        raise CliError("--server needs a token: set SEAMLINE_TOKEN (a Platform owner creates one on the API tokens "
                       "page)")
    body = json.dumps(parse_document(data, fmt)).encode("utf-8")
    url = server.rstrip("/") + "/api/v1/artifacts"
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - a URL the user gave
            return json.loads(response.read())["digests"]
    except urllib.error.HTTPError as exc:
        try:
            problems = json.loads(exc.read())["errors"]
            detail = "; ".join(f"{p['path']}: {p['message']}" if p["path"] else p["message"] for p in problems)
        except (ValueError, KeyError, TypeError):
            detail = exc.reason
        raise CliError(f"{url} refused the submission ({exc.code}): {detail}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach {url}: {exc.reason}") from None


def _evaluation_settings(args, store: Store | None):
    from .models import EvaluationSettings

    base = store.policy(args.model).evaluation if store is not None and args.model else EvaluationSettings()
    change = {name: value for name, value in (
        ("bootstrap", args.bootstrap), ("calibration_bins", args.bins), ("min_segment_size", args.min_segment_size),
        ("max_segment_drop", args.max_drop), ("gated_metric", args.metric), ("confidence", args.confidence))
        if value is not None}
    return EvaluationSettings.model_validate({**base.model_dump(), **change})


def cmd_evaluate(args) -> int:
    """Compute an evaluation report from a scored file; store it when the runs and snapshot are named."""
    from .evaluations import MAX_SEED, evaluate_frames, read_table, store_result

    if not 0 <= args.seed <= MAX_SEED:
        raise CliError(f"--seed must be between 0 and {MAX_SEED}, got {args.seed}")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise CliError(f"--out: the directory {Path(args.out).resolve().parent} does not exist")
    keep = [args.candidate_run, args.baseline_run, args.snapshot]
    if any(keep) and not all(keep):
        raise CliError("to store the report give all of --candidate-run, --baseline-run and --snapshot")
    if any(keep) and not args.model:
        raise CliError("to store the report give --model too")
    store = _open(args) if args.model else None
    settings = _evaluation_settings(args, store)
    segments = [c.strip() for c in (args.segments or "").split(",") if c.strip()] or settings.segment_columns
    scores = read_table(args.scores)
    reference = read_table(args.reference) if args.reference else None
    cand_thr = args.candidate_threshold if args.candidate_threshold is not None else args.threshold
    base_thr = args.baseline_threshold if args.baseline_threshold is not None else args.threshold
    result = evaluate_frames(scores, label=args.label, candidate=args.candidate, baseline=args.baseline,
                             segments=segments, settings=settings, candidate_threshold=cand_thr,
                             baseline_threshold=base_thr, reference=reference, weight=args.weight, seed=args.seed,
                             progress=lambda f, t: print(f"[{f:4.0%}] {t}", file=sys.stderr, flush=True)
                             if args.progress else None)
    body = result.model_dump(mode="json")
    if all(keep):
        report = store_result(store, result, model=args.model, candidate_run=args.candidate_run,
                              baseline_run=args.baseline_run, evaluation_snapshot=args.snapshot, actor=args.actor,
                              now=store.now())
        body = {"digest": report.digest, **report.record()}
        print(f"stored evaluation report {report.digest}")
    if args.out:
        Path(args.out).write_text(json.dumps(body, indent=2, sort_keys=True))
    print(f"gate {result.gate.status.value}: {result.gate.reason}")
    for seg in result.segments:
        if seg.status.value == "fail":
            print(f"  fail: {seg.reason}")
    return 1 if result.gate.status.value == "fail" else 0


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
    snap_parser = sub.add_parser("snapshot", help="dataset snapshot commands")
    snap_sub = snap_parser.add_subparsers(dest="snapshot_command", required=True)
    snap_create = snap_sub.add_parser("create", help="check a data file against its YAML manifest and store the "
                                      "snapshot (all or nothing)")
    snap_create.add_argument("--data", required=True,
                             help="Parquet or CSV file; copied under the store's data root unless already there")
    snap_create.add_argument("--manifest", required=True, help="YAML manifest: model, name, created_by, sources, "
                             "label, point_in_time, features, key_columns")
    snap_create.add_argument("--actor", help="who is ingesting (default: the manifest's created_by)")
    snap_create.set_defaults(func=cmd_snapshot_create)
    snap_verify = snap_sub.add_parser("verify", help="re-hash a snapshot's data files; exit 1 when one changed")
    snap_verify.add_argument("digest")
    snap_verify.set_defaults(func=cmd_snapshot_verify)
    esc_parser = sub.add_parser("escalations", help="escalation commands")
    esc_sub = esc_parser.add_subparsers(dest="escalations_command", required=True)
    esc_ingest = esc_sub.add_parser("ingest", help="validate and store escalations from a CSV or JSON file (all or "
                                    "nothing), then evaluate the trigger rules")
    esc_ingest.add_argument("file")
    esc_ingest.add_argument("--actor", default="cli", help="who is ingesting (recorded in the audit log)")
    esc_ingest.set_defaults(func=cmd_escalations_ingest)
    trig_parser = sub.add_parser("triggers", help="trigger rule commands")
    trig_sub = trig_parser.add_subparsers(dest="triggers_command", required=True)
    trig_eval = trig_sub.add_parser("evaluate", help="evaluate a model's trigger rules and open or update backlog "
                                    "items")
    trig_eval.add_argument("model")
    trig_eval.add_argument("--actor", default="cli", help="who evaluates (recorded in the audit log)")
    trig_eval.set_defaults(func=cmd_triggers_evaluate)
    train_parser = sub.add_parser("train", help="run a training job from a spec file and record the run")
    train_parser.add_argument("--spec", required=True, help="YAML or JSON training spec: model, snapshot, features, "
                              "encoder, estimator {name, class, params}, split, seed, metrics, created_by")
    train_parser.set_defaults(func=cmd_train)
    repro_parser = sub.add_parser("reproduce", help="re-run a run's recorded spec; exit 1 when not reproduced")
    repro_parser.add_argument("run", help="run digest or a unique prefix of 8+ characters")
    repro_parser.add_argument("--actor", default="cli", help="who checks (recorded in the audit log)")
    repro_parser.set_defaults(func=cmd_reproduce)
    sig_parser = sub.add_parser("signals", help="live signal commands")
    sig_sub = sig_parser.add_subparsers(dest="signals_command", required=True)
    sig_ingest = sig_sub.add_parser("ingest", help="ingest a prediction log (.parquet/.csv), delayed labels "
                                    "(--labels) or pre-aggregated windows (.json/.yaml); the stop rules act on it")
    sig_ingest.add_argument("file")
    sig_ingest.add_argument("--release", required=True, help="the release whose traffic the file describes")
    sig_ingest.add_argument("--window-minutes", type=int, default=60, help="window size for a prediction log")
    sig_ingest.add_argument("--labels", action="store_true", help="the file holds delayed labels: request_id, label")
    sig_ingest.add_argument("--actor", default="cli", help="who is ingesting (recorded in the audit log)")
    sig_ingest.set_defaults(func=cmd_signals_ingest)
    ev = sub.add_parser("evaluate", help="compare candidate and baseline scores by segment with paired bootstrap "
                        "intervals; exit 1 when the segment gate fails")
    ev.add_argument("--scores", required=True, help="Parquet or CSV: label, both scores, segment columns, features")
    ev.add_argument("--label", required=True, help="0/1 label column")
    ev.add_argument("--candidate", required=True, help="candidate score column, in [0, 1]")
    ev.add_argument("--baseline", required=True, help="baseline score column, in [0, 1]")
    ev.add_argument("--segments", help="segment columns, comma-separated; several are also crossed (default: the "
                    "policy's with --model)")
    ev.add_argument("--reference", help="Parquet or CSV reference window for the shift checks")
    ev.add_argument("--weight", help="optional row weight column")
    ev.add_argument("--bootstrap", type=int, help="paired bootstrap resamples (default 1000 or the policy's)")
    ev.add_argument("--seed", type=int, default=0, help="the same seed gives the same report")
    ev.add_argument("--threshold", type=float, default=0.5, help="decision threshold of both models")
    ev.add_argument("--candidate-threshold", type=float, help="the candidate's own decision threshold")
    ev.add_argument("--baseline-threshold", type=float, help="the baseline's own decision threshold")
    ev.add_argument("--bins", type=int, help="calibration bins")
    ev.add_argument("--min-segment-size", type=int, help="segments smaller than this are inconclusive")
    ev.add_argument("--max-drop", type=float, help="x in 'no segment loses more than x'")
    ev.add_argument("--metric", help="gated metric: roc_auc, pr_auc, log_loss, brier, ece, precision or recall")
    ev.add_argument("--confidence", type=float, help="interval level, e.g. 0.95")
    ev.add_argument("--out", help="write the report as JSON here")
    ev.add_argument("--model", help="read the policy's evaluation settings (and slices, regression cases) from the "
                    "store")
    ev.add_argument("--candidate-run", help="with --baseline-run and --snapshot: store the report against them")
    ev.add_argument("--baseline-run")
    ev.add_argument("--snapshot", help="the evaluation snapshot the scores come from")
    ev.add_argument("--actor", default="cli", help="who stores the report (recorded in the audit log)")
    ev.add_argument("--progress", action="store_true", help="print progress to stderr")
    ev.set_defaults(func=cmd_evaluate)
    sub.choices["ingest"].add_argument("--server", help="send to a running Seamline server's API (e.g. "
                                       "http://127.0.0.1:8501) with the token in SEAMLINE_TOKEN; the actor "
                                       "recorded is the token's name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; print one line and return non-zero on failure."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, IngestError, StoreError, NotFound, PermissionError, ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
