"""Shared fixtures: a fresh real store per test, and factories for a small valid artifact chain."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lifecycle.models import (  # noqa: E402
    BlastRadius, CheckResult, CheckStatus, Column, DataContract, DataFile, DatasetSnapshot, EvaluationReport,
    FallbackPath, FeatureDefinition, LabelDefinition, ModelArtifactRef, ModelMetrics, Model, Person, PointInTime,
    RegistryEntry, Role, RolloutNote, SegmentResult, Source, Stage, StageCondition, StopRule, SuccessMetric,
    TrainingRun, sha256_hex,
)
from lifecycle.policy import default_policy  # noqa: E402
from lifecycle.store import Store  # noqa: E402

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc)
PEOPLE = {
    "data": Person(email="d@x.test", name="Dee Data"),
    "model": Person(email="m@x.test", name="Mo Model"),
    "author": Person(email="a@x.test", name="Al Author"),
    "platform": Person(email="p@x.test", name="Pia Platform"),
    "product": Person(email="r@x.test", name="Ray Product"),
    "analyst": Person(email="n@x.test", name="Nan Analyst"),
}


@pytest.fixture
def store(tmp_path) -> Store:
    """A fresh real DuckDB file per test."""
    s = Store(tmp_path / "seamline.duckdb")
    yield s
    s.close()


@pytest.fixture
def mem_store() -> Store:
    return Store(":memory:")


def make_model(model_id: str = "fraud") -> Model:
    p = PEOPLE
    return Model(id=model_id, name="Fraud", description="test model",
                 owners={Role.DATA: [p["data"]], Role.MODEL: [p["model"], p["author"]],
                         Role.PLATFORM: [p["platform"]], Role.PRODUCT: [p["product"]], Role.ANALYST: [p["analyst"]]})


def make_snapshot(model: str = "fraud", name: str = "s1", checks: list[CheckResult] | None = None,
                  files: list[DataFile] | None = None) -> DatasetSnapshot:
    files = files or [DataFile(path="x.parquet", sha256=sha256_hex(name), bytes=10)]
    from lifecycle.snapshots import data_digest
    return DatasetSnapshot(
        model=model, created_by=PEOPLE["data"].email, created_at=T0, name=name,
        sources=[Source(name="ledger", uri="warehouse://ledger", version="1", extracted_at=T0, legal_usage="fraud")],
        label=LabelDefinition(column="y", definition="chargeback", delay_days=30),
        point_in_time=PointInTime(as_of=T0, feature_cutoff=T0, label_window_start=T0 - timedelta(days=60),
                                  label_window_end=T0 - timedelta(days=30)),
        features=[FeatureDefinition(name="amount", dtype="float", source="ledger", transformation="raw", owner="d")],
        schema=[Column(name="amount", dtype="DOUBLE"), Column(name="y", dtype="TINYINT")],
        row_count=100, label_rate=0.1, files=files, data_digest=data_digest(files),
        quality_checks=checks or [CheckResult(name="schema", status=CheckStatus.PASS, reason="ok")])


def make_run(snapshot: DatasetSnapshot, by: str = "a@x.test", seed: int = 1, baseline: str | None = None) -> TrainingRun:
    return TrainingRun(model=snapshot.model, created_by=by, created_at=T0, snapshot=snapshot.digest,
                       code_version="abc", estimator="LogisticRegression", parameters={"C": 1.0},
                       features=["amount"], dependencies={"scikit-learn": "1.9.1"}, lock_digest=sha256_hex("lock"),
                       seed=seed, model_artifact=ModelArtifactRef(uri="models/x.pkl", digest=sha256_hex(f"m{seed}")),
                       baseline_run=baseline, duration_s=1.5)


def _metrics() -> ModelMetrics:
    return ModelMetrics(n=1000, positives=100, roc_auc=0.8)


def make_report(cand: TrainingRun, base: TrainingRun, snapshot: DatasetSnapshot,
                gate: CheckStatus = CheckStatus.PASS, tag: str = "", at=T0) -> EvaluationReport:
    seg = SegmentResult(segment="all", candidate=_metrics(), baseline=_metrics(), status=CheckStatus.PASS,
                        reason="ok")
    return EvaluationReport(model=cand.model, created_by="m@x.test", created_at=at, candidate_run=cand.digest,
                            baseline_run=base.digest, evaluation_snapshot=snapshot.digest,
                            settings={"bootstrap": 10, "tag": tag}, overall=seg, segments=[seg],
                            gate=CheckResult(name="segment gate", status=gate, reason=f"gate {gate.value}"))


def make_entry(run: TrainingRun, report: EvaluationReport | None, version: int, by: str = "a@x.test") -> RegistryEntry:
    return RegistryEntry(model=run.model, created_by=by, created_at=T0, name="fraud-scorer", version=version,
                         training_run=run.digest, evaluation=report.digest if report else None,
                         input_schema=[Column(name="amount", dtype="float")],
                         output_schema=[Column(name="score", dtype="float")],
                         data_contract=DataContract(max_staleness_hours=24), artifact_uri="models/x.pkl",
                         artifact_digest=run.model_artifact.digest, owners={Role.PLATFORM: "p@x.test"},
                         decision_threshold=0.5)


def make_note(candidate: RegistryEntry, baseline: RegistryEntry | None, tested: bool = True,
              owner: str = "r@x.test") -> RolloutNote:
    return RolloutNote(
        model=candidate.model, created_by="r@x.test", created_at=T0, candidate=candidate.digest,
        baseline=baseline.digest if baseline else None, release_object="better fraud scores", release_owner=owner,
        success_metrics=[SuccessMetric(metric="recall", comparator=">=", target=0.5)],
        blast_radius=BlastRadius(max_traffic_share=0.2),
        stop_rules=[StopRule(name="p95", metric="latency_p95_ms", comparator=">", threshold=100, window_minutes=60,
                             min_volume=10, failure_limit=1)],
        fallback=FallbackPath(serving=baseline.digest if baseline else "rules-only", description="champion",
                              tested=tested),
        stages=[StageCondition(stage=Stage.CANARY, traffic_share=0.05, min_duration_hours=1, min_volume=10)])


@pytest.fixture
def chain(store):
    """A stored model, policy and full chain up to a release in review; returns a dict of the pieces."""
    from lifecycle.models import Release, ReleaseState
    store.put_model(make_model())
    store.put_policy(default_policy("fraud", "r@x.test", T0), "r@x.test")
    data = store.data_root / "x.parquet"
    data.write_bytes(b"rows of the snapshot")
    from lifecycle.snapshots import file_sha256
    snap = make_snapshot(files=[DataFile(path="x.parquet", sha256=file_sha256(data), bytes=data.stat().st_size)])
    base_run = make_run(snap, seed=1)
    cand_run = make_run(snap, seed=2, baseline=base_run.digest)
    report = make_report(cand_run, base_run, snap)
    base = make_entry(base_run, None, 1)
    cand = make_entry(cand_run, report, 2)
    note = make_note(cand, base)
    store.put_artifacts([snap, base_run, cand_run, report, base, cand, note], "a@x.test")
    release = store.create_release(Release(id="rel-1", model="fraud", title="v2", candidate=cand.digest,
                                           baseline=base.digest, rollout_note=note.digest, policy_version=1,
                                           created_by="r@x.test", created_at=T0,
                                           state=ReleaseState.IN_REVIEW), "r@x.test")
    return {"snapshot": snap, "base_run": base_run, "cand_run": cand_run, "report": report, "base": base,
            "cand": cand, "note": note, "release": release}


# ---------------------------------------------------------------- the demo store, built once per test session

@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Build the real demo once (generate, train, evaluate, release) into a session directory."""
    from lifecycle.demo import build_demo
    root = tmp_path_factory.mktemp("demo")
    s = Store(root / "seamline.duckdb")
    build_demo(s)
    s.close()
    return root


@pytest.fixture
def demo_copy(demo_dir, tmp_path) -> Path:
    """Return the path of a private copy of the demo store, for tests that write."""
    import shutil
    target = tmp_path / "demo"
    shutil.copytree(demo_dir, target)
    return target / "seamline.duckdb"


@pytest.fixture
def demo_store(demo_copy) -> Store:
    s = Store(demo_copy)
    yield s
    s.close()


# ---------------------------------------------------------------- small real training data (issue 9)

TRAIN_MANIFEST = {
    "model": "fraud", "created_by": "d@x.test",
    "sources": [{"name": "ledger", "uri": "warehouse://ledger", "version": "1", "extracted_at": T0.isoformat(),
                 "legal_usage": "fraud scoring"}],
    "label": {"column": "label", "definition": "chargeback within 7 days", "delay_days": 7},
    "features": [{"name": n, "dtype": d, "source": "ledger", "transformation": "raw", "owner": "d@x.test"}
                 for n, d in (("amount", "float"), ("n_items", "int"), ("channel", "category"),
                              ("is_intl", "bool"), ("seen_at", "timestamp"))],
    "key_columns": ["id"],
}


def make_training_snapshot(store: Store, name: str = "txns-1", n: int = 3000, seed: int = 5,
                           as_of: datetime = T0, first_id: int = 0):
    """Write a small Parquet file with a non-linear label, snapshot it through build_snapshot and store it."""
    import numpy as np
    import pandas as pd

    from lifecycle.snapshots import build_snapshot

    rng = np.random.default_rng(seed)
    naive = as_of.replace(tzinfo=None)
    event_time = (naive - pd.to_timedelta(np.sort(rng.uniform(1, 90 * 24, n))[::-1], unit="h")).floor("s")
    amount, channel = rng.lognormal(3, 1, n), rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2])
    n_items, intl = rng.integers(1, 9, n), rng.random(n) < 0.2
    logit = -2.6 + 2.2 * ((amount > 40) & (channel == "web")) + 1.2 * intl - 0.2 * n_items + 0.8 * (channel == "app")
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    mature = event_time <= naive - timedelta(days=7)
    frame = pd.DataFrame({
        "id": np.arange(first_id, first_id + n, dtype="int64"), "event_time": event_time.astype("datetime64[us]"),
        "feature_time": (event_time - pd.Timedelta(minutes=5)).astype("datetime64[us]"), "amount": amount,
        "n_items": n_items, "channel": channel, "is_intl": intl,
        "seen_at": (event_time - pd.Timedelta(minutes=1)).astype("datetime64[us]"),
        "label": pd.Series(label, dtype="Int64").where(mature),
    })
    path = store.data_root / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    manifest = {**TRAIN_MANIFEST, "name": name, "point_in_time": {
        "as_of": as_of.isoformat(), "feature_cutoff": as_of.isoformat(),
        "label_window_start": (as_of - timedelta(days=90)).isoformat(),
        "label_window_end": (as_of - timedelta(days=7)).isoformat(),
        "event_time_column": "event_time", "feature_time_column": "feature_time"}}
    from lifecycle.models import QualityThresholds
    snap = build_snapshot(path, manifest, data_root=store.data_root,
                          thresholds=QualityThresholds(null_rate_overrides={"label": 0.2}), now=as_of)
    store.put_artifact(snap, "d@x.test", as_of)
    return snap
