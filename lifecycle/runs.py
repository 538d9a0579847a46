"""Describe training runs for the Model owner: the run list, a run's detail and lineage, its experiment log,
side-by-side comparison of two runs, and the reproducibility check that re-runs a recorded spec."""

from __future__ import annotations

import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, ValidationError
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from .models import (
    ARTIFACT_TITLES, CheckResult, CheckStatus, DatasetSnapshot, Digest, EvaluationSettings, Frozen, Name,
    RegistryEntry, Text, TrainingRun, short,
)
from .snapshots import SnapshotComparison, compare_snapshots, resolve
from .store import NotFound, Store
from .training import (
    STAGED, TrainingError, TrainingSpec, check_data, code_version, fixed_threads, load_model, package_versions,
    read_split, train,
)

REPRODUCIBILITY = "training_run.reproducibility"
BIT_TOLERANCE = 1e-9
METRIC_TOLERANCE = 1e-6
SHARED_METRICS = ("roc_auc", "log_loss", "brier")
Progress = Callable[[float, str], None]

MEMO_SIZE = 16

_active: set[str] = set()
_active_lock = threading.Lock()
_memo: dict[tuple, "RunComparison"] = {}
_memo_lock = threading.Lock()


class RunsError(ValueError):
    """A request about runs that cannot be answered; the message says why."""


class RecordedCheck(Frozen):
    """A reproducibility check as recorded in the audit log."""

    at: datetime
    actor: Name
    result: CheckResult


class LineageLink(Frozen):
    direction: str = Field(description="'up' (what the run was made from) or 'down' (what was made from it)")
    relation: Text
    kind: Name
    name: Text
    digest: Digest
    page: Name = Field(description="the page that shows this artifact")


class RunDetail(Frozen):
    run: TrainingRun
    digest: Digest
    title: Text
    spec_yaml: Text = Field(description="the recorded spec as YAML, ready for `python -m lifecycle train --spec`")
    environment: list[dict[str, Any]]
    lineage: list[LineageLink]
    step_label: Name
    last_check: RecordedCheck | None


class DataDiff(Frozen):
    same_snapshot: bool
    reason: Text
    summary: list[dict[str, Any]] = Field(description="aspect, a, b")
    comparison: SnapshotComparison | None = None


class SharedValidation(Frozen):
    """Both runs' models scored on the same validation rows, with B - A deltas per metric."""

    status: CheckStatus
    reason: Text
    snapshot: Digest | None = None
    split_of: Digest | None = Field(None, description="the run whose validation split the rows are")
    rows: int = 0
    positives: int = 0
    overlap: int | None = Field(None, description="validation rows the other run trained on; None when unchecked")
    metrics: list[dict[str, Any]] = Field(default_factory=list, description="metric, a, b, delta (b - a)")


class RunComparison(Frozen):
    a: Digest
    b: Digest
    a_title: Text
    b_title: Text
    parameters: list[dict[str, Any]] = Field(description="parameter, a, b, changed")
    packages: list[dict[str, Any]] = Field(description="package, a, b, changed")
    data: DataDiff
    validation: SharedValidation


# ---------------------------------------------------------------- lists


def runs(store: Store, model: str) -> list[TrainingRun]:
    """Return a model's training runs, newest first."""
    return store.artifacts(model, "training_run")


def run_title(run: TrainingRun) -> str:
    """Return a run's one-line name: short digest, estimator, author and day."""
    return f"{short(run.digest)} · {run.estimator} · {run.created_by} · {run.created_at:%Y-%m-%d}"


def run_labels(store: Store, model: str) -> dict[str, str]:
    """Return {title: digest} of a model's runs, newest first, for a picker."""
    return {run_title(r): r.digest for r in runs(store, model)}


def comparison_choices(store: Store, run_digest: str) -> dict[str, str]:
    """Return {title: digest} of the runs to compare a run with: the baseline it names first, then newest first."""
    run = _run(store, run_digest)
    others = [r for r in runs(store, run.model) if r.digest != run.digest]
    others.sort(key=lambda r: r.digest != run.baseline_run)  # stable: keeps newest-first after the baseline
    return {run_title(r) + (" (its baseline)" if r.digest == run.baseline_run else ""): r.digest for r in others}


def key_parameters(run: TrainingRun) -> str:
    """Return the estimator's own parameters as 'name=value, ...'."""
    return ", ".join(f"{k}={v}" for k, v in sorted(_estimator_params(run).items())) or "defaults"


def _entries_by_run(store: Store, model: str) -> dict[str, list[RegistryEntry]]:
    out: dict[str, list[RegistryEntry]] = {}
    for entry in store.artifacts(model, "registry_entry"):
        out.setdefault(entry.training_run, []).append(entry)
    return out


def run_status(entries: list[RegistryEntry], aliases: dict[str, str], evaluated: bool) -> str:
    """Say where a run stands: champion / challenger / registered (version), evaluated, or logged only."""
    for alias in ("champion", "challenger"):
        for entry in entries:
            if aliases.get(alias) == entry.digest:
                return f"{alias} (v{entry.version})"
    if entries:
        return "registered (" + ", ".join(f"v{e.version}" for e in sorted(entries, key=lambda e: e.version)) + ")"
    return "evaluated" if evaluated else "logged"


def runs_frame(store: Store, model: str) -> pd.DataFrame:
    """Return one row per run: status, estimator, snapshot, key parameters, validation metrics, last check."""
    entries, aliases = _entries_by_run(store, model), store.aliases(model)
    evaluated = {r.candidate_run for r in store.artifacts(model, "evaluation_report")}
    snapshots = {s.digest: s.name for s in store.artifacts(model, "dataset_snapshot")}
    rows = []
    for run in runs(store, model):
        check = last_check(store, run.digest)
        rows.append({
            "run": short(run.digest),
            "status": run_status(entries.get(run.digest, []), aliases, run.digest in evaluated),
            "estimator": run.estimator, "snapshot": f"{snapshots.get(run.snapshot, '?')} · {short(run.snapshot)}",
            "key parameters": key_parameters(run),
            **{f"validation {m}": run.validation_metrics.get(m) for m in ("roc_auc", "log_loss")},
            "baseline run": short(run.baseline_run), "reproducibility":
                f"{check.result.status.value} ({check.at:%Y-%m-%d %H:%M})" if check else "not checked",
            "created_by": run.created_by, "created_at": run.created_at})
    return pd.DataFrame(rows, columns=["run", "status", "estimator", "snapshot", "key parameters",
                                       "validation roc_auc", "validation log_loss", "baseline run", "reproducibility",
                                       "created_by", "created_at"])


# ---------------------------------------------------------------- one run


def _run(store: Store, digest: str) -> TrainingRun:
    artifact = store.artifact(digest)
    if artifact.kind != "training_run":
        raise RunsError(f"run: {short(artifact.digest)} is a {ARTIFACT_TITLES[artifact.kind].lower()}, "
                        "not a training run")
    return artifact


def step_label(run: TrainingRun) -> str:
    """Say what an experiment-log step counts for this run's estimator."""
    return "boosting iteration" if run.estimator in STAGED else "training rows"


def environment_rows(run: TrainingRun) -> list[dict[str, Any]]:
    """Return the recorded environment next to the one installed now, marking what differs."""
    now = package_versions()
    rows = [{"item": "code version", "recorded": run.code_version, "now": code_version()},
            *({"item": p, "recorded": v, "now": now.get(p, "not tracked")}
              for p, v in sorted(run.dependencies.items()))]
    for row in rows:
        row["same"] = row["recorded"] == row["now"]
    rows += [{"item": "lock digest", "recorded": run.lock_digest, "now": "", "same": None},
             {"item": "seed", "recorded": str(run.seed), "now": "", "same": None},
             {"item": "duration", "recorded": f"{run.duration_s:.1f} s", "now": "", "same": None}]
    return rows


def lineage(store: Store, run: TrainingRun) -> list[LineageLink]:
    """Return the run's links up (snapshot, baseline run) and down (entries, evaluations, releases, later runs)."""
    links = []
    snap = store.artifact(run.snapshot)
    links.append(LineageLink(direction="up", relation="trained on", kind="Dataset snapshot", name=snap.name,
                             digest=snap.digest, page="pages/datasets.py"))
    if run.baseline_run:
        base = store.artifact(run.baseline_run)
        links.append(LineageLink(direction="up", relation="compared against (baseline run)", kind="Training run",
                                 name=run_title(base), digest=base.digest, page="pages/runs.py"))
    entries: list[RegistryEntry] = []
    for child, field in store.children(run.digest):
        artifact = store.artifact(child)
        if artifact.kind == "registry_entry":
            entries.append(artifact)
            links.append(LineageLink(direction="down", relation="registered as", kind="Registry entry",
                                     name=f"{artifact.name} v{artifact.version}", digest=child,
                                     page="pages/registry.py"))
        elif artifact.kind == "evaluation_report":
            role = "candidate" if field == "candidate_run" else "baseline"
            links.append(LineageLink(direction="down", relation=f"evaluated as {role}", kind="Evaluation report",
                                     name=f"gate {artifact.gate.status.value}", digest=child,
                                     page="pages/evaluation.py"))
        elif artifact.kind == "training_run":
            links.append(LineageLink(direction="down", relation="baseline of", kind="Training run",
                                     name=run_title(artifact), digest=child, page="pages/runs.py"))
    by_entry = {e.digest: e for e in entries}
    for release in store.releases(run.model):
        for role, digest in (("candidate", release.candidate), ("baseline", release.baseline)):
            if digest in by_entry:
                links.append(LineageLink(
                    direction="down", relation=f"released as {role} in {release.id} ({release.state.value})",
                    kind="Release", name=release.title, digest=digest, page="pages/release.py"))
    return links


def spec_yaml(run: TrainingRun) -> str:
    """Return the recorded spec as YAML, or a comment saying none was recorded."""
    if not run.spec:
        return "# this run was recorded without its spec: it cannot be re-run from here\n"
    return yaml.safe_dump(run.spec, sort_keys=False, allow_unicode=True)


def run_detail(store: Store, digest: str) -> RunDetail:
    """Return a run with its spec, environment, lineage, experiment-log axis and last reproducibility check."""
    run = _run(store, digest)
    return RunDetail(run=run, digest=run.digest, title=run_title(run), spec_yaml=spec_yaml(run),
                     environment=environment_rows(run), lineage=lineage(store, run), step_label=step_label(run),
                     last_check=last_check(store, run.digest))


def experiment_log_frame(run: TrainingRun) -> pd.DataFrame:
    """Return the experiment log as rows of step, metric, split and value."""
    return pd.DataFrame([p.model_dump() for p in run.experiment_log], columns=["step", "metric", "split", "value"])


# ---------------------------------------------------------------- comparison


RUNNER_KEYS = ("encoder", "split", "validation_fraction")


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def _estimator_params(run: TrainingRun) -> dict[str, Any]:
    params = (run.spec.get("estimator") or {}).get("params") if run.spec else None
    return params if params is not None else {k: v for k, v in run.parameters.items() if k not in RUNNER_KEYS}


def _parameter_rows(a: TrainingRun, b: TrainingRun) -> list[dict[str, Any]]:
    def settings(run: TrainingRun) -> dict[str, Any]:
        return {"estimator": run.estimator,
                **{f"estimator.params.{k}": v for k, v in _estimator_params(run).items()},
                "encoder": run.parameters.get("encoder"), "split": run.parameters.get("split"),
                "validation fraction": run.parameters.get("validation_fraction"), "seed": run.seed,
                "features": ", ".join(run.features), "metrics": ", ".join(sorted(run.validation_metrics)),
                "snapshot": short(run.snapshot)}

    sa, sb = settings(a), settings(b)
    params = sorted({k for k in [*sa, *sb] if k.startswith("estimator.params.")})
    keys = ["estimator", *params, *[k for k in sa if k != "estimator" and not k.startswith("estimator.params.")]]
    return _diff_rows(sa, sb, "parameter", keys)


def _diff_rows(a: dict[str, Any], b: dict[str, Any], name: str, keys: list[str] | None = None) -> list[dict[str, Any]]:
    keys = keys or list(dict.fromkeys([*a, *b]))
    return [{name: k, "a": _cell(a.get(k)), "b": _cell(b.get(k)), "changed": a.get(k) != b.get(k)} for k in keys]


def _stamps(store: Store, runs_: tuple[TrainingRun, ...], snaps: tuple[DatasetSnapshot, ...]) -> tuple:
    """Return size and mtime of every file a comparison reads, so a memoised result dies with a changed file."""
    paths = [store.data_root / r.model_artifact.uri for r in runs_]
    paths += [resolve(f.path, store.data_root) for s in snaps for f in s.files]
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(path), None, None))
    return tuple(out)


def compare_runs(store: Store, a: str, b: str, settings: EvaluationSettings | None = None) -> RunComparison:
    """Compare run b with reference run a: parameters, packages, data, and metrics on shared validation rows."""
    ra, rb = _run(store, a), _run(store, b)
    if ra.model != rb.model:
        raise RunsError(f"runs {short(ra.digest)} and {short(rb.digest)} belong to different models "
                        f"('{ra.model}', '{rb.model}'): their metrics are not comparable")
    sa, sb = store.artifact(ra.snapshot), store.artifact(rb.snapshot)
    if settings is None:
        try:
            settings = store.policy(ra.model).evaluation
        except NotFound:
            settings = EvaluationSettings()
    # Scoring both models and comparing the snapshots reads every row (seconds on the demo); artifacts are
    # immutable, so a result stays true until one of the files it read changes.
    key = (store.path, ra.digest, rb.digest, settings.model_dump_json(), _stamps(store, (ra, rb), (sa, sb)))
    with _memo_lock:
        cached = _memo.get(key)
    if cached is not None:
        return cached
    packages = _diff_rows({"code version": ra.code_version, **ra.dependencies},
                          {"code version": rb.code_version, **rb.dependencies}, "package")
    result = RunComparison(a=ra.digest, b=rb.digest, a_title=run_title(ra), b_title=run_title(rb),
                           parameters=_parameter_rows(ra, rb), packages=packages,
                           data=_data_diff(store, sa, sb, settings), validation=shared_validation(store, ra, rb))
    with _memo_lock:
        _memo[key] = result
        while len(_memo) > MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
    return result


def _data_diff(store: Store, sa: DatasetSnapshot, sb: DatasetSnapshot, settings: EvaluationSettings) -> DataDiff:
    def describe(s: DatasetSnapshot) -> dict[str, Any]:
        return {"snapshot": f"{s.name} · {short(s.digest)}", "as of": f"{s.point_in_time.as_of:%Y-%m-%d}",
                "rows": f"{s.row_count:,}", "label rate": "—" if s.label_rate is None else f"{s.label_rate:.2%}",
                "features": str(len(s.features)), "data digest": short(s.data_digest)}

    da, db = describe(sa), describe(sb)
    summary = [{"aspect": k, "a": da[k], "b": db[k]} for k in da]
    if sa.digest == sb.digest:
        return DataDiff(same_snapshot=True, summary=summary,
                        reason=f"Both runs trained on the same snapshot '{sa.name}' ({short(sa.digest)}).")
    cmp = compare_snapshots(sa, sb, store.data_root, settings=settings)
    parts = [f"B trained on '{sb.name}' ({short(sb.digest)}), A on '{sa.name}' ({short(sa.digest)})",
             f"rows {cmp.row_count_change:+,}"]
    if cmp.label_rate_change is not None:
        parts.append(f"label rate {cmp.label_rate_change * 100:+.2f} points")
    if cmp.source_changes:
        parts.append("sources changed: " + ", ".join(f"{c.name} ({', '.join(c.fields) or c.change})"
                                                      for c in cmp.source_changes))
    if cmp.feature_changes:
        parts.append("features changed: " + ", ".join(f"{c.name} ({c.change})" for c in cmp.feature_changes))
    shifted = [s for s in cmp.shifts if s.status in (CheckStatus.FAIL, CheckStatus.WARN)]
    if shifted:
        parts.append("shifted: " + ", ".join(f"{s.feature} (PSI {s.psi:.2f}, {s.status.value})" for s in shifted))
    if cmp.shift_note:
        parts.append(cmp.shift_note)
    return DataDiff(same_snapshot=False, summary=summary, reason="; ".join(parts) + ".", comparison=cmp)


def _score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    if metric == "roc_auc":
        return float(roc_auc_score(y, p))
    if metric == "log_loss":
        return float(log_loss(y, p, labels=[0, 1]))
    return float(brier_score_loss(y, p))


def _spec(run: TrainingRun) -> TrainingSpec | None:
    try:
        return TrainingSpec.model_validate(run.spec) if run.spec else None
    except ValidationError:
        return None


def shared_validation(store: Store, ra: TrainingRun, rb: TrainingRun) -> SharedValidation:
    """Score both runs' models on the validation rows of the newer snapshot and return B - A per metric."""
    sa, sb = store.artifact(ra.snapshot), store.artifact(rb.snapshot)
    b_hosts = (sb.point_in_time.as_of, sb.created_at) >= (sa.point_in_time.as_of, sa.created_at)
    host, snap, other, other_snap = (rb, sb, ra, sa) if b_hosts else (ra, sa, rb, sb)
    which = "B" if b_hosts else "A"

    def inconclusive(reason: str) -> SharedValidation:
        return SharedValidation(status=CheckStatus.INCONCLUSIVE, reason="Metric deltas not computed: " + reason,
                                snapshot=snap.digest, split_of=host.digest)

    spec = _spec(host)
    if spec is None:
        return inconclusive(f"run {which} ({short(host.digest)}) carries no valid spec, so its validation rows "
                            "cannot be derived again")
    if other_snap.label.column != snap.label.column:
        return inconclusive(f"the snapshots label different columns ('{sa.label.column}', '{sb.label.column}')")
    columns = {c.name for c in snap.schema_}
    missing = [f for f in other.features if f not in columns]
    if missing:
        return inconclusive(f"snapshot '{snap.name}' lacks features of the other run: {', '.join(missing)}")
    try:
        check_data(snap, store.data_root)
        models = load_model(ra, store.data_root), load_model(rb, store.data_root)
    except (TrainingError, OSError) as exc:
        return inconclusive(str(exc))
    keys = [k for k in snap.key_columns if k in columns]
    _, rows = read_split(spec, snap, store.data_root, list(dict.fromkeys([*ra.features, *rb.features, *keys])))
    y = rows[snap.label.column].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        return inconclusive(f"the {len(y):,} validation rows hold a single class")
    with fixed_threads():
        pa = models[0].predict_proba(rows[ra.features])[:, 1]
        pb = models[1].predict_proba(rows[rb.features])[:, 1]
    metrics = [{"metric": m, "a": _score(m, y, pa), "b": _score(m, y, pb)} for m in SHARED_METRICS]
    for row in metrics:
        row["delta"] = row["b"] - row["a"]
    overlap = _overlap(store, other, other_snap, rows, keys)
    deltas = ", ".join(f"{r['metric']} {r['delta']:+.4f}" for r in metrics)
    reason = (f"Both models scored on the same {len(y):,} validation rows ({int(y.sum()):,} positives) of snapshot "
              f"'{snap.name}', the part run {which} held out; B − A: {deltas}.")
    status = CheckStatus.PASS
    other_name = "A" if b_hosts else "B"
    if overlap:
        status = CheckStatus.WARN
        reason += f" Caution: run {other_name} trained on {overlap:,} of these rows, which flatters run {other_name}."
    elif overlap is None:
        reason += f" Whether run {other_name} trained on any of these rows was not checked (no shared key columns " \
                  "or no spec)."
    return SharedValidation(status=status, reason=reason, snapshot=snap.digest, split_of=host.digest, rows=len(y),
                            positives=int(y.sum()), overlap=overlap, metrics=metrics)


def _overlap(store: Store, other: TrainingRun, other_snap: DatasetSnapshot, rows: pd.DataFrame,
             keys: list[str]) -> int | None:
    """Count the validation rows the other run trained on, matched by the snapshots' key columns."""
    spec = _spec(other)
    if spec is None or not keys or [k for k in other_snap.key_columns if k in keys] != keys:
        return None
    trained, _ = read_split(spec, other_snap, store.data_root, keys)
    return int(rows[keys].merge(trained[keys].drop_duplicates(), on=keys, how="inner").shape[0])


# ---------------------------------------------------------------- reproducibility


def last_check(store: Store, run_digest: str) -> RecordedCheck | None:
    """Return the newest recorded reproducibility check of a run, or None."""
    events = [e for e in store.audit_events(subject=run_digest) if e.action == REPRODUCIBILITY]
    if not events:
        return None
    e = events[-1]
    return RecordedCheck(at=e.at, actor=e.actor, result=CheckResult.model_validate(e.detail["result"]))


def check_reproducibility(store: Store, run_digest: str, actor: str, now: datetime,
                          progress: Progress | None = None, tolerance: float = METRIC_TOLERANCE) -> CheckResult:
    """Re-run a run's recorded spec on its snapshot, compare model digest and metrics, and record the result."""
    run = _run(store, run_digest)
    with _active_lock:
        if run.digest in _active:
            raise RunsError(f"a reproducibility check of run {short(run.digest)} is already running; "
                            "its result will show here when it ends")
        _active.add(run.digest)
    try:
        result = reproduce(store, run, progress, tolerance)
    finally:
        with _active_lock:
            _active.discard(run.digest)
    store.audit(actor, REPRODUCIBILITY, run.digest, {"result": result.model_dump(mode="json")}, at=now)
    return result


def reproduce(store: Store, run: TrainingRun, progress: Progress | None = None,
              tolerance: float = METRIC_TOLERANCE) -> CheckResult:
    """Re-run a recorded spec into a scratch directory and say whether the model or its metrics came back."""
    thresholds = {"bit_tolerance": BIT_TOLERANCE, "metric_tolerance": tolerance}

    def result(status: CheckStatus, reason: str, evidence: dict[str, Any] | None = None) -> CheckResult:
        return CheckResult(name="reproducibility", status=status, reason=reason, evidence=evidence or {},
                           thresholds=thresholds)

    if not run.spec:
        return result(CheckStatus.INCONCLUSIVE, "The run was recorded without its spec, so it cannot be re-run.")
    try:
        spec = TrainingSpec.model_validate(run.spec)
    except ValidationError as exc:
        return result(CheckStatus.FAIL, "The recorded spec no longer validates: "
                      + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors(include_url=False)))
    try:
        snapshot = store.artifact(spec.snapshot)
    except NotFound:
        return result(CheckStatus.FAIL, f"The run's snapshot {short(spec.snapshot)} is not in the store.")
    drift = {r["item"]: {"recorded": r["recorded"], "now": r["now"]} for r in environment_rows(run)
             if r["same"] is False}
    with tempfile.TemporaryDirectory(prefix="seamline-repro-") as scratch:
        try:
            again, _ = train(spec, snapshot, store.data_root, Path(scratch), now=run.created_at, progress=progress)
        except TrainingError as exc:
            return result(CheckStatus.FAIL, f"Could not re-run the spec: {exc}", {"environment_changes": drift})
    metrics = {m: {"recorded": v, "reproduced": again.validation_metrics.get(m),
                   "abs_diff": None if again.validation_metrics.get(m) is None
                   else abs(again.validation_metrics[m] - v)} for m, v in run.validation_metrics.items()}
    worst = max((d["abs_diff"] for d in metrics.values() if d["abs_diff"] is not None), default=0.0)
    missing = [m for m, d in metrics.items() if d["abs_diff"] is None]
    same_model = again.model_artifact.digest == run.model_artifact.digest
    evidence = {"recorded_model_digest": run.model_artifact.digest,
                "reproduced_model_digest": again.model_artifact.digest,
                "run_digest_reproduced": again.digest == run.digest, "metrics": metrics,
                "environment_changes": drift, "duration_s": again.duration_s}
    env = (" Environment now differs in " + ", ".join(drift) + ".") if drift else ""
    if missing:
        return result(CheckStatus.FAIL, f"The re-run did not produce {', '.join(missing)}.{env}", evidence)
    if same_model and worst <= BIT_TOLERANCE:
        return result(CheckStatus.PASS, f"Bit-identical: the re-run produced model digest "
                      f"{short(again.model_artifact.digest)} again; validation metrics agree "
                      f"(max |Δ| {worst:.1e}).{env}", evidence)
    if worst <= tolerance:
        return result(CheckStatus.PASS, f"The model bytes differ ({short(run.model_artifact.digest)} → "
                      f"{short(again.model_artifact.digest)}) but the validation metrics agree within {tolerance:g} "
                      f"(max |Δ| {worst:.1e}).{env}", evidence)
    off = ", ".join(f"{m} {d['recorded']:.6f} → {d['reproduced']:.6f}" for m, d in metrics.items()
                    if d["abs_diff"] > tolerance)
    return result(CheckStatus.FAIL, f"Not reproduced: {off} (tolerance {tolerance:g}); model digest "
                  f"{'unchanged' if same_model else 'differs'}.{env}", evidence)
