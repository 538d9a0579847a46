"""Run training jobs from a validated spec: allow-listed scikit-learn steps, logged, content-addressed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import pickle
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, model_validator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

from .models import (
    DatasetSnapshot, Digest, Frozen, LogPoint, ModelArtifactRef, Name, Scalar, Text, TrainingRun,
    canonical_json, sha256_hex, short,
)
from .store import NotFound, Store

ESTIMATORS: dict[str, type] = {
    "LogisticRegression": LogisticRegression,
    "HistGradientBoostingClassifier": HistGradientBoostingClassifier,
    "GradientBoostingClassifier": GradientBoostingClassifier,
    "RandomForestClassifier": RandomForestClassifier,
}
ENCODERS = ("onehot_scaled", "ordinal")
TRACKED_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "duckdb", "pyarrow")
CATEGORICAL = ("category", "string", "bool")
TRAINABLE = ("int", "float", "category", "string", "bool")
LOG_ROWS = 20_000
SPEC_MAX_BYTES = 256 * 1024
# One thread for OpenMP and BLAS while training: a fitted HistGradientBoosting pickles its thread count, so the
# model digest would otherwise depend on the machine's cores; and on a shared 2-core host two contended OpenMP
# threads fit ~10x slower than one (measured 12.5 s vs 1.3 s for 94k rows, 150 iterations).
TRAIN_THREADS = 1
# Estimators whose experiment log follows boosting stages; the others log learning-curve points.
STAGED = frozenset(name for name, cls in ESTIMATORS.items() if hasattr(cls, "staged_predict_proba"))


def fixed_threads() -> threadpool_limits:
    """Limit OpenMP and BLAS to TRAIN_THREADS while fitting and scoring (see TRAIN_THREADS)."""
    return threadpool_limits(limits=TRAIN_THREADS)


class TrainingError(ValueError):
    """A spec or its data refused before any run is recorded; the message names the field."""


class Step(Frozen):
    name: Name
    cls: Name = Field(alias="class", description="an allow-listed class name")
    params: dict[str, Scalar] = Field(default_factory=dict)


class Split(Frozen):
    kind: Literal["time", "random"] = "time"
    validation_fraction: float = Field(0.2, gt=0, lt=0.9)


class TrainingSpec(Frozen):
    """What a training job runs: data, features, steps, split, seed and metrics."""

    model: Name
    snapshot: Digest
    features: list[Name] = Field(min_length=1)
    encoder: Literal["onehot_scaled", "ordinal"] = "onehot_scaled"
    estimator: Step
    split: Split = Split()
    seed: int = 0
    metrics: list[Literal["roc_auc", "log_loss", "brier"]] = Field(default_factory=lambda: ["roc_auc", "log_loss"])
    baseline_run: Digest | None = None
    stated_limits: list[Text] = Field(default_factory=list)
    created_by: Name

    @model_validator(mode="after")
    def _allowed(self) -> "TrainingSpec":
        cls = ESTIMATORS.get(self.estimator.cls)
        if cls is None:
            raise ValueError(f"estimator.class: '{self.estimator.cls}' is not allowed; "
                             f"use one of {', '.join(ESTIMATORS)}")
        known = set(cls().get_params())
        for key in self.estimator.params:
            if key not in known:
                raise ValueError(f"estimator.params.{key}: not a parameter of {self.estimator.cls}")
        if "random_state" in self.estimator.params:
            raise ValueError("estimator.params.random_state: set the spec's seed instead, so the run records it")
        try:
            # sklearn checks types and ranges only in fit(); check them here, before any data is read.
            cls(**self.estimator.params)._validate_params()
        except InvalidParameterError as exc:
            named = re.match(r"The '(\w+)' parameter", str(exc))
            raise ValueError(f"estimator.params.{named.group(1) if named else '?'}: {exc}") from None
        for i, name in enumerate(self.features):
            if name in self.features[:i]:
                raise ValueError(f"features[{i}]: '{name}' is listed twice")
        return self

    def document(self) -> dict[str, Any]:
        """Return the spec as the JSON document a run records and `parse_spec` reads back."""
        return self.model_dump(mode="json", by_alias=True)


def parse_spec(data: str | bytes | dict, fmt: str | None = None) -> TrainingSpec:
    """Parse a training spec (YAML or JSON) strictly; raise TrainingError naming every field at fault."""
    from .ingest import IngestError, parse_document, validation_problems

    try:
        obj = data if isinstance(data, dict) else parse_document(data, fmt, max_bytes=SPEC_MAX_BYTES)
    except IngestError as exc:
        raise TrainingError(f"spec: {exc}") from None
    if not isinstance(obj, dict):
        raise TrainingError(f"spec: the top level must be a mapping of fields, not {type(obj).__name__}")
    try:
        return TrainingSpec.model_validate(obj, strict=True)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise TrainingError("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)) from None


def code_version(root: Path | None = None) -> str:
    """Return the project's git commit, or 'unknown' outside a git checkout."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit or "unknown"


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that decide a model's bytes."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def read_snapshot_frame(snapshot: DatasetSnapshot, data_root: Path, columns: list[str]) -> pd.DataFrame:
    """Read the named columns of a snapshot's data files with DuckDB."""
    from .snapshots import resolve

    paths = [str(resolve(f.path, data_root)) for f in snapshot.files]
    quoted = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    con = duckdb.connect()
    try:
        reader = "read_parquet" if paths[0].endswith(".parquet") else "read_csv_auto"
        return con.execute(f"SELECT {quoted} FROM {reader}(?)", [paths]).df()
    finally:
        con.close()


def _pipeline(spec: TrainingSpec, dtypes: dict[str, str]) -> Pipeline:
    categorical = [f for f in spec.features if dtypes[f] in CATEGORICAL]
    numeric = [f for f in spec.features if f not in categorical]
    if spec.encoder == "onehot_scaled":
        encode = ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ])
    else:
        encode = ColumnTransformer([
            ("num", "passthrough", numeric),
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), categorical),
        ])
    params: dict[str, Any] = dict(spec.estimator.params)
    cls = ESTIMATORS[spec.estimator.cls]
    if "random_state" in cls().get_params():
        params.setdefault("random_state", spec.seed)
    if spec.estimator.cls == "HistGradientBoostingClassifier" and spec.encoder == "ordinal":
        params.setdefault("categorical_features", list(range(len(numeric), len(numeric) + len(categorical))))
    return Pipeline([("encode", encode), (spec.estimator.name, cls(**params))])


def _score(y: np.ndarray, p: np.ndarray, metric: str) -> float:
    if metric == "roc_auc":
        return float(roc_auc_score(y, p))
    if metric == "log_loss":
        return float(log_loss(y, p, labels=[0, 1]))
    return float(brier_score_loss(y, p))


def _curve_score(y: np.ndarray, p: np.ndarray, metric: str) -> float | None:
    """Score one experiment-log point in plain numpy (sklearn's input checks cost ~10 ms a call); None if undefined."""
    if metric == "roc_auc":
        positives = int(y.sum())
        negatives = len(y) - positives
        if not positives or not negatives:
            return None
        ranks = rankdata(p)  # midranks: ties count one half, as in roc_auc_score
        return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
    if metric == "log_loss":
        eps = np.finfo(p.dtype).eps
        q = np.clip(p, eps, 1 - eps)
        return float(-np.mean(np.where(y == 1, np.log(q), np.log(1 - q))))
    return float(np.mean((p - y) ** 2))


def _experiment_log(pipe: Pipeline, spec: TrainingSpec, dtypes: dict[str, str], X_tr, y_tr, X_va,
                    y_va) -> list[LogPoint]:
    """Log metrics per boosting iteration where the estimator has stages, else on growing subsets."""
    points: list[LogPoint] = []
    est = pipe[-1]
    if hasattr(est, "staged_predict_proba"):
        # Staged prediction costs one pass per logged step: log on a fixed subsample of each split.
        rng = np.random.default_rng(spec.seed)
        tr = np.sort(rng.permutation(len(y_tr))[:LOG_ROWS])
        va = np.sort(rng.permutation(len(y_va))[:LOG_ROWS])
        X_tr, y_tr, X_va, y_va = X_tr.iloc[tr], y_tr[tr], X_va.iloc[va], y_va[va]
        enc_tr, enc_va = pipe[0].transform(X_tr), pipe[0].transform(X_va)
        n_stages = getattr(est, "n_iter_", None) or getattr(est, "n_estimators_", None) or est.n_estimators
        every = max(1, int(n_stages) // 25)
        for split, X, y in (("train", enc_tr, y_tr), ("validation", enc_va, y_va)):
            for step, proba in enumerate(est.staged_predict_proba(X), start=1):
                if step % every and step != n_stages:
                    continue
                points += _points(step, split, y, proba[:, 1], spec.metrics)
        return points
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(y_tr))
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        idx = order[: max(50, int(fraction * len(order)))]
        if len(np.unique(y_tr[idx])) < 2:
            continue  # a subset with one class cannot be fitted or scored
        # The last point is the final model itself rather than a second fit on the same rows.
        sub = pipe if fraction == 1.0 else _pipeline(spec, dtypes).fit(X_tr.iloc[idx], y_tr[idx])
        for split, X, y in (("train", X_tr.iloc[idx], y_tr[idx]), ("validation", X_va, y_va)):
            points += _points(len(idx), split, y, sub.predict_proba(X)[:, 1], spec.metrics)
    return points


def _points(step: int, split: str, y: np.ndarray, p: np.ndarray, metrics: list[str]) -> list[LogPoint]:
    scores = {m: _curve_score(y, p, m) for m in metrics}
    return [LogPoint(step=step, metric=m, split=split, value=v) for m, v in scores.items() if v is not None]


def check_features(spec: TrainingSpec, snapshot: DatasetSnapshot) -> None:
    """Refuse features the snapshot's data does not hold, or holds only as a label, key or timestamp."""
    declared = {f.name: f.dtype for f in snapshot.features}
    columns = {c.name for c in snapshot.schema_}
    for i, name in enumerate(spec.features):
        if name == snapshot.label.column:
            raise TrainingError(f"features[{i}]: '{name}' is the label of snapshot '{snapshot.name}'")
        if name not in columns:
            raise TrainingError(f"features[{i}]: '{name}' is not a column of the data of snapshot "
                                f"'{snapshot.name}' ({short(snapshot.digest)})")
        if name not in declared:
            raise TrainingError(f"features[{i}]: '{name}' is in the data but not a declared feature of snapshot "
                                f"'{snapshot.name}'; declare it in the manifest first")
        if declared[name] not in TRAINABLE:
            raise TrainingError(f"features[{i}]: '{name}' is a {declared[name]}; derive a numeric or "
                                "categorical feature from it")


def check_data(snapshot: DatasetSnapshot, data_root: Path) -> None:
    """Refuse to read a snapshot whose data files no longer match their recorded digests."""
    from .snapshots import verify_files

    check = verify_files(snapshot, data_root)
    if check.status != "pass":
        raise TrainingError(f"snapshot: {check.reason}")


def split_frame(frame: pd.DataFrame, spec: TrainingSpec, label: str,
                time_col: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (training rows, validation rows): labelled rows only, split by time or at random with the seed."""
    frame = frame[frame[label].notna()]
    if spec.split.kind == "time":
        frame = frame.sort_values(time_col, kind="stable")
    else:
        frame = frame.sample(frac=1.0, random_state=spec.seed)
    cut = int(len(frame) * (1 - spec.split.validation_fraction))
    return frame.iloc[:cut], frame.iloc[cut:]


def read_split(spec: TrainingSpec, snapshot: DatasetSnapshot, data_root: Path,
               columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the snapshot's data and return the same training and validation rows train() uses."""
    label, time_col = snapshot.label.column, snapshot.point_in_time.event_time_column
    wanted = list(dict.fromkeys([*columns, label, time_col]))
    return split_frame(read_snapshot_frame(snapshot, data_root, wanted), spec, label, time_col)


def train(spec: TrainingSpec, snapshot: DatasetSnapshot, data_root: Path, models_dir: Path, *, now: datetime,
          progress: Callable[[float, str], None] | None = None, verify_data: bool = True) -> tuple[TrainingRun, Any]:
    """Fit the spec on the snapshot's data and return the run artifact (carrying its spec) and the fitted pipeline."""
    say = progress or (lambda f, t: None)
    if spec.snapshot != snapshot.digest:
        raise TrainingError(f"snapshot: the spec names {spec.snapshot[:12]}…, not this snapshot")
    check_features(spec, snapshot)
    if verify_data:
        say(0.02, "checking the data files against the snapshot")
        check_data(snapshot, data_root)
    dtypes = {f.name: f.dtype for f in snapshot.features}
    started = time.perf_counter()
    label = snapshot.label.column
    say(0.05, f"reading {snapshot.row_count:,} rows")
    train_rows, valid_rows = read_split(spec, snapshot, data_root, list(spec.features))
    X_tr, X_va = train_rows[spec.features], valid_rows[spec.features]
    y_tr, y_va = train_rows[label].to_numpy().astype(int), valid_rows[label].to_numpy().astype(int)
    if len(np.unique(y_tr)) < 2 or len(np.unique(y_va)) < 2:
        raise TrainingError(f"split: the training ({len(y_tr):,} rows) and validation ({len(y_va):,} rows) parts "
                            f"must both hold positive and negative labels of '{label}'")
    say(0.2, f"fitting {spec.estimator.cls} on {len(y_tr):,} rows")
    with fixed_threads():
        pipe = _pipeline(spec, dtypes).fit(X_tr, y_tr)
        say(0.7, "logging metrics")
        log = _experiment_log(pipe, spec, dtypes, X_tr, y_tr, X_va, y_va)
        p_va = pipe.predict_proba(X_va)[:, 1]
    validation = {m: _score(y_va, p_va, m) for m in spec.metrics}
    blob = pickle.dumps(pipe, protocol=5)
    digest = hashlib.sha256(blob).hexdigest()
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{digest}.pkl"
    path.write_bytes(blob)
    deps = package_versions()
    run = TrainingRun(
        model=spec.model, created_by=spec.created_by, created_at=now, snapshot=snapshot.digest,
        code_version=code_version(), estimator=spec.estimator.cls,
        parameters={**{k: v for k, v in spec.estimator.params.items()}, "encoder": spec.encoder,
                    "split": spec.split.kind, "validation_fraction": spec.split.validation_fraction},
        features=list(spec.features), dependencies=deps, lock_digest=sha256_hex(canonical_json(deps)),
        seed=spec.seed, experiment_log=log, validation_metrics=validation,
        model_artifact=ModelArtifactRef(uri=f"models/{digest}.pkl", digest=digest),
        baseline_run=spec.baseline_run, duration_s=round(time.perf_counter() - started, 3),
        stated_limits=list(spec.stated_limits), spec=spec.document(),
    )
    say(1.0, "done")
    return run, pipe


def check_spec(store: Store, spec: TrainingSpec) -> DatasetSnapshot:
    """Check what a spec names against the store and the data; return its snapshot or raise TrainingError."""
    try:
        store.model(spec.model)
    except NotFound:
        raise TrainingError(f"model: no model '{spec.model}' in the store") from None
    named = [("snapshot", spec.snapshot, "dataset_snapshot")]
    if spec.baseline_run:
        named.append(("baseline_run", spec.baseline_run, "training_run"))
    found = {}
    for field, digest, kind in named:
        if not store.has(digest):
            raise TrainingError(f"{field}: the store holds no artifact {short(digest)}…; ingest it first")
        artifact = store.artifact(digest)
        if artifact.kind != kind or artifact.model != spec.model:
            raise TrainingError(f"{field}: {short(digest)}… is a {artifact.kind} of model '{artifact.model}', "
                                f"not a {kind} of '{spec.model}'")
        found[field] = artifact
    snapshot: DatasetSnapshot = found["snapshot"]
    check_features(spec, snapshot)
    check_data(snapshot, store.data_root)
    return snapshot


def run_spec(store: Store, spec: TrainingSpec, *, now: datetime,
             progress: Callable[[float, str], None] | None = None) -> TrainingRun:
    """Check the spec, train it and record the run; nothing is recorded when a check or the fit fails."""
    snapshot = check_spec(store, spec)
    run, _ = train(spec, snapshot, store.data_root, store.data_root / "models", now=now, progress=progress,
                   verify_data=False)
    store.put_artifact(run, spec.created_by, now)
    return run


def load_model(run: TrainingRun, data_root: Path) -> Any:
    """Load a run's pickled pipeline after checking its digest (only artifacts this store wrote)."""
    path = data_root / run.model_artifact.uri
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != run.model_artifact.digest:
        raise TrainingError(f"model_artifact: {path.name} does not match its recorded digest")
    return pickle.loads(blob)  # noqa: S301 - digest-checked file written by train()
