"""Run training jobs from a validated spec: allow-listed scikit-learn steps, logged, content-addressed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import pickle
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal

import duckdb
import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from .models import (
    DatasetSnapshot, Digest, Frozen, LogPoint, ModelArtifactRef, Name, Scalar, Text, TrainingRun,
    canonical_json, sha256_hex,
)

ESTIMATORS: dict[str, type] = {
    "LogisticRegression": LogisticRegression,
    "HistGradientBoostingClassifier": HistGradientBoostingClassifier,
    "GradientBoostingClassifier": GradientBoostingClassifier,
    "RandomForestClassifier": RandomForestClassifier,
}
ENCODERS = ("onehot_scaled", "ordinal")
TRACKED_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "duckdb", "pyarrow")
CATEGORICAL = ("category", "string", "bool")
LOG_ROWS = 20_000


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
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: listed twice")
        return self


def code_version(root: Path | None = None) -> str:
    """Return the project's git commit (with '+dirty' when files changed), or 'unknown'."""
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


def _experiment_log(pipe: Pipeline, spec: TrainingSpec, X_tr, y_tr, X_va, y_va) -> list[LogPoint]:
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
                for metric in spec.metrics:
                    points.append(LogPoint(step=step, metric=metric, split=split, value=_score(y, proba[:, 1], metric)))
        return points
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(y_tr))
    for step, fraction in enumerate((0.1, 0.25, 0.5, 0.75, 1.0), start=1):
        idx = order[: max(50, int(fraction * len(order)))]
        sub = _pipeline(spec, {c: ("category" if not pd.api.types.is_numeric_dtype(X_tr[c]) else "float")
                               for c in X_tr.columns}).fit(X_tr.iloc[idx], y_tr[idx])
        for split, X, y in (("train", X_tr.iloc[idx], y_tr[idx]), ("validation", X_va, y_va)):
            for metric in spec.metrics:
                points.append(LogPoint(step=len(idx), metric=metric, split=split,
                                       value=_score(y, sub.predict_proba(X)[:, 1], metric)))
    return points


def train(spec: TrainingSpec, snapshot: DatasetSnapshot, data_root: Path, models_dir: Path, *, now: datetime,
          progress: Callable[[float, str], None] | None = None, verify_data: bool = True) -> tuple[TrainingRun, Any]:
    """Fit the spec on the snapshot's data and return the run artifact and the fitted pipeline."""
    from .snapshots import verify_files

    say = progress or (lambda f, t: None)
    if spec.snapshot != snapshot.digest:
        raise TrainingError(f"snapshot: the spec names {spec.snapshot[:12]}…, not this snapshot")
    if verify_data:
        check = verify_files(snapshot, data_root)
        if check.status != "pass":
            raise TrainingError(f"snapshot: {check.reason}")
    dtypes = {f.name: f.dtype for f in snapshot.features}
    missing = [f for f in spec.features if f not in dtypes]
    if missing:
        raise TrainingError(f"features: {', '.join(missing)} not defined in snapshot '{snapshot.name}'")
    started = time.perf_counter()
    label, time_col = snapshot.label.column, snapshot.point_in_time.event_time_column
    say(0.05, f"reading {snapshot.row_count:,} rows")
    frame = read_snapshot_frame(snapshot, data_root, [*spec.features, label, time_col])
    frame = frame[frame[label].notna()]
    if spec.split.kind == "time":
        frame = frame.sort_values(time_col, kind="stable")
    else:
        frame = frame.sample(frac=1.0, random_state=spec.seed)
    cut = int(len(frame) * (1 - spec.split.validation_fraction))
    X, y = frame[spec.features], frame[label].to_numpy().astype(int)
    X_tr, X_va, y_tr, y_va = X.iloc[:cut], X.iloc[cut:], y[:cut], y[cut:]
    say(0.2, f"fitting {spec.estimator.cls} on {len(y_tr):,} rows")
    pipe = _pipeline(spec, dtypes).fit(X_tr, y_tr)
    say(0.7, "logging metrics")
    log = _experiment_log(pipe, spec, X_tr, y_tr, X_va, y_va)
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
        stated_limits=list(spec.stated_limits),
    )
    say(1.0, "done")
    return run, pipe


def load_model(run: TrainingRun, data_root: Path) -> Any:
    """Load a run's pickled pipeline after checking its digest (only artifacts this store wrote)."""
    path = data_root / run.model_artifact.uri
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != run.model_artifact.digest:
        raise TrainingError(f"model_artifact: {path.name} does not match its recorded digest")
    return pickle.loads(blob)  # noqa: S301 - digest-checked file written by train()
