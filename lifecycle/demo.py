"""Build the embedded demo store by really running the pipeline: generate, snapshot, train, evaluate, release."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import datagen
from .evaluation import evaluate
from .feedback import evaluate_triggers
from .identity import user_for
from .models import (
    BlastRadius, Column, DataContract, DatasetSnapshot, Escalation, EscalationType, EvaluationReport,
    EvaluationSettings, FallbackPath, Model, NumericRange, Person, RegistryEntry,
    RegressionCase, Release, ReleaseState, Role, RolloutNote, Stage, StageCondition, StopRule, SuccessMetric,
    TrainingRun, Verdict,
)
from .policy import default_policy
from .releases import decide, decide_artifact, transition
from .monitoring import ingest_prediction_log
from .snapshots import build_snapshot
from .store import Store
from .training import Step, TrainingSpec, train

Progress = Callable[[float, str], None]
DEMO_SEED = 7
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
UTC = timezone.utc

PEOPLE = {
    "dana": Person(email="dana@seamline.example", name="Dana Okafor"),
    "milo": Person(email="milo@seamline.example", name="Milo Brandt"),
    "priya": Person(email="priya@seamline.example", name="Priya Raman"),
    "paul": Person(email="paul@seamline.example", name="Paul Weber"),
    "ana": Person(email="ana@seamline.example", name="Ana Souza"),
    "kenji": Person(email="kenji@seamline.example", name="Kenji Sato"),
    "lea": Person(email="lea@seamline.example", name="Lea Novak"),
}


def _at(days: float, base: datetime = NOW) -> datetime:
    return base - timedelta(days=days)


def demo_models() -> list[Model]:
    """Return the two demo use cases with their named owners."""
    p = PEOPLE
    return [
        Model(id="card-fraud", name="Card fraud scoring",
              description="Scores card transactions for fraud before authorisation; high scores go to review.",
              owners={Role.DATA: [p["dana"]], Role.MODEL: [p["milo"], p["kenji"]], Role.PLATFORM: [p["priya"]],
                      Role.PRODUCT: [p["paul"]], Role.ANALYST: [p["ana"]]}),
        Model(id="churn", name="Subscription churn",
              description="Predicts churn within 60 days to target retention offers.",
              owners={Role.DATA: [p["dana"]], Role.MODEL: [p["kenji"]], Role.PLATFORM: [p["priya"]],
                      Role.PRODUCT: [p["lea"]], Role.ANALYST: [p["ana"]]}),
    ]


def _manifest(model: str, name: str, sources: list[dict], label: str, label_def: str, delay: int,
              as_of: datetime, start: datetime, features: dict[str, tuple[str, str, str]], key: str,
              created_by: str) -> dict:
    return {
        "model": model, "name": name, "sources": sources,
        "label": {"column": label, "definition": label_def, "delay_days": delay},
        "point_in_time": {"as_of": as_of.isoformat(), "feature_cutoff": as_of.isoformat(),
                          "label_window_start": start.isoformat(),
                          "label_window_end": (as_of - timedelta(days=delay)).isoformat(),
                          "event_time_column": "event_time", "feature_time_column": "feature_time"},
        "features": [{"name": f, "dtype": d, "source": s, "transformation": tr, "owner": created_by}
                     for f, (d, s, tr) in features.items()],
        "key_columns": [key], "created_by": created_by,
    }


FRAUD_FEATURES = {
    "region": ("category", "card_ledger", "issuer country mapped to region"),
    "channel": ("category", "card_ledger", "authorisation channel"),
    "merchant_category": ("category", "card_ledger", "MCC grouped into 8 families"),
    "amount": ("float", "card_ledger", "transaction amount in EUR"),
    "avg_amount_30d": ("float", "card_ledger", "mean amount over the previous 30 days"),
    "account_age_days": ("int", "accounts", "days since account opening"),
    "txn_count_24h": ("int", "card_ledger", "transactions in the previous 24 h"),
    "distance_from_home_km": ("float", "geo", "distance between merchant and billing address"),
    "device_risk": ("float", "device_vendor", "vendor device risk score in [0, 1]"),
    "is_international": ("bool", "card_ledger", "merchant country differs from issuer"),
    "chargebacks_90d": ("int", "disputes", "chargebacks in the previous 90 days"),
    "hour_of_day": ("int", "card_ledger", "local hour of the transaction"),
}
CHURN_FEATURES = {
    "region": ("category", "crm", "billing region"),
    "channel": ("category", "crm", "acquisition channel"),
    "plan": ("category", "billing", "current plan"),
    "contract": ("category", "billing", "monthly or annual"),
    "tenure_months": ("int", "billing", "months since first payment"),
    "monthly_spend": ("float", "billing", "last invoice amount"),
    "support_tickets_90d": ("int", "support", "tickets in the previous 90 days"),
    "last_login_days": ("int", "product_events", "days since last login"),
    "payment_failures_90d": ("int", "billing", "failed charges in the previous 90 days"),
    "discount_pct": ("float", "billing", "active discount"),
    "nps": ("int", "surveys", "latest NPS answer"),
    "usage_trend": ("float", "product_events", "30-day usage change vs previous 30 days"),
}


def _sources(names: list[str], version: str, at: datetime, usage: str) -> list[dict]:
    return [{"name": n, "uri": f"warehouse://prod/{n}", "version": version, "extracted_at": at.isoformat(),
             "legal_usage": usage} for n in names]


def _entry(run: TrainingRun, report: EvaluationReport | None, train_frame: pd.DataFrame, snapshot: DatasetSnapshot,
           name: str, version: int, threshold: float, owners: dict[Role, str], created_by: str,
           at: datetime) -> RegistryEntry:
    dtypes = {f.name: f.dtype for f in snapshot.features}
    ranges = {f: NumericRange(min=float(train_frame[f].min()), max=float(train_frame[f].max()))
              for f in run.features if dtypes[f] in ("int", "float")}
    cats = {f: sorted(map(str, train_frame[f].unique())) for f in run.features if dtypes[f] == "category"}
    return RegistryEntry(
        model=run.model, created_by=created_by, created_at=at, name=name, version=version,
        training_run=run.digest, evaluation=report.digest if report else None,
        input_schema=[Column(name=f, dtype=dtypes[f]) for f in run.features],
        output_schema=[Column(name="score", dtype="float"), Column(name="decision", dtype="int")],
        data_contract=DataContract(ranges=ranges, categories=cats, max_staleness_hours=24),
        artifact_uri=run.model_artifact.uri, artifact_digest=run.model_artifact.digest, owners=owners,
        decision_threshold=threshold,
        rollout_rules=["shadow before any user impact", "canary limited to the blast radius"],
    )


def _threshold(scores: np.ndarray, positive_rate: float) -> float:
    return float(np.round(np.quantile(scores, 1 - positive_rate), 4))


class _Pipeline:
    """Carry one model's demo through snapshot, training, scoring and evaluation."""

    def __init__(self, store: Store, data_dir: Path, say: Progress):
        self.store, self.data_dir, self.say = store, data_dir, say

    def snapshot(self, frame: pd.DataFrame, filename: str, manifest: dict) -> DatasetSnapshot:
        path = self.data_dir / filename
        frame.to_parquet(path, index=False)
        policy = self.store.policy(manifest["model"])
        snap = build_snapshot(path, manifest, data_root=self.store.data_root, thresholds=policy.quality,
                              now=datetime.fromisoformat(manifest["point_in_time"]["as_of"]))
        self.store.put_artifact(snap, manifest["created_by"], snap.created_at)
        return snap

    def train(self, spec: TrainingSpec, snap: DatasetSnapshot, at: datetime) -> tuple[TrainingRun, object]:
        run, pipe = train(spec, snap, self.store.data_root, self.store.data_root / "models", now=at)
        self.store.put_artifact(run, spec.created_by, at)
        return run, pipe

    def evaluate(self, model: str, eval_frame: pd.DataFrame, reference: pd.DataFrame, cand: tuple, base: tuple,
                 snap: DatasetSnapshot, segments: list[str], at: datetime, by: str, seed: int) -> EvaluationReport:
        (c_run, c_pipe, c_thr), (b_run, b_pipe, b_thr) = cand, base
        label = snap.label.column
        scored = eval_frame[eval_frame[label].notna()].copy()
        scored[label] = scored[label].astype(int)
        scored["candidate_score"] = c_pipe.predict_proba(scored[c_run.features])[:, 1]
        scored["baseline_score"] = b_pipe.predict_proba(scored[b_run.features])[:, 1]
        scored.to_parquet(self.data_dir / f"{model}_scored.parquet", index=False)
        settings = self.store.policy(model).evaluation
        result = evaluate(scored, label=label, candidate="candidate_score", baseline="baseline_score",
                          segments=segments, settings=settings, candidate_threshold=c_thr, baseline_threshold=b_thr,
                          reference=reference, features=c_run.features, seed=seed)
        report = EvaluationReport(
            model=model, created_by=by, created_at=at, candidate_run=c_run.digest, baseline_run=b_run.digest,
            evaluation_snapshot=snap.digest, settings=result.settings_used, overall=result.overall,
            segments=result.segments, calibration=result.calibration, shift_checks=result.shift_checks,
            regression_suite=result.regression_suite, gate=result.gate, limits=c_run.stated_limits)
        self.store.put_artifact(report, by, at)
        return report


def build_demo(store: Store, data_dir: Path | None = None, seed: int = DEMO_SEED,
               progress: Progress | None = None) -> dict[str, str]:
    """Build both demo use cases into an empty store; same seed, same digests. Return key ids."""
    say = progress or (lambda f, t: None)
    data_dir = data_dir or store.data_root / "demo"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pipe = _Pipeline(store, data_dir, say)
    out: dict[str, str] = {}
    p = PEOPLE
    say(0.01, "recording models, owners and policies")
    for m in demo_models():
        store.put_model(m, actor="seamline-demo", at=_at(200))
    fraud_settings = EvaluationSettings(
        gated_metric="roc_auc", max_segment_drop=0.01, min_segment_size=800, bootstrap=1000,
        segment_columns=["region", "channel"],
        slices={"big_web": "amount > 250 and channel == 'web'", "night": "hour_of_day < 5"},
        regression_cases=[RegressionCase(name="Large web purchases keep AUC >= 0.75",
                                         slice="amount > 250 and channel == 'web'", metric="roc_auc", min_value=0.75),
                          RegressionCase(name="Night traffic loses at most 0.02 AUC", slice="hour_of_day < 5",
                                         metric="roc_auc", max_drop=0.02)])
    store.put_policy(default_policy("card-fraud", p["paul"].email, _at(200), evaluation=fraud_settings),
                     p["paul"].email)
    churn_settings = EvaluationSettings(gated_metric="roc_auc", max_segment_drop=0.02, min_segment_size=500,
                                        bootstrap=1000, segment_columns=["region", "plan"])
    store.put_policy(default_policy("churn", p["lea"].email, _at(200), evaluation=churn_settings,
                                    stability_windows=24), p["lea"].email)

    # ---------------------------------------------------------------- card fraud
    say(0.04, "generating 290 000 card transactions (152 days)")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    fraud = datagen.fraud_events(rng, start.replace(tzinfo=None), 152, 1900)
    s1_asof, s2_asof, ev_asof = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC), \
        datetime(2026, 10, 31, tzinfo=UTC)
    f1 = datagen.window(fraud, datetime(2026, 6, 1), datetime(2026, 9, 1), s1_asof, "is_fraud", 30)
    f2 = datagen.window(fraud, datetime(2026, 7, 1), datetime(2026, 10, 1), s2_asof, "is_fraud", 30)
    # The refresh pulled device_risk from the vendor's v2 API, whose APAC mobile SDK reports 1 - risk.
    bug = (f2["region"] == "APAC") & (f2["channel"] == "mobile")
    f2.loc[bug, "device_risk"] = (1.0 - f2.loc[bug, "device_risk"]).round(4)
    # ... and the disputes backfill re-stamped some chargeback counts after the transaction.
    leak = f2.index[(f2["chargebacks_90d"] > 0) & (f2["event_time"] > pd.Timestamp("2026-08-10"))][:37]
    f2.loc[leak, "feature_time"] = f2.loc[leak, "event_time"] + pd.Timedelta(hours=30)
    fe = datagen.window(fraud, datetime(2026, 9, 1), datetime(2026, 10, 31), ev_asof, "is_fraud", 30)
    usage = "fraud prevention under PSD2 legitimate interest; no marketing use"
    srcs = ["card_ledger", "accounts", "disputes", "geo", "device_vendor"]
    say(0.10, "snapshotting and checking the fraud data")
    s1 = pipe.snapshot(f1, "card_fraud_2026_08.parquet", _manifest(
        "card-fraud", "transactions Jun–Aug 2026", _sources(srcs, "2026.08.31", s1_asof, usage), "is_fraud",
        "confirmed chargeback or issuer fraud report within 30 days", 30, s1_asof, datetime(2026, 6, 1, tzinfo=UTC),
        FRAUD_FEATURES, "txn_id", p["dana"].email))
    srcs2 = _sources(srcs, "2026.09.30", s2_asof, usage)
    srcs2[4]["version"] = "v2.0 (API refresh)"
    s2 = pipe.snapshot(f2, "card_fraud_2026_09.parquet", _manifest(
        "card-fraud", "transactions Jul–Sep 2026 (refresh)", srcs2, "is_fraud",
        "confirmed chargeback or issuer fraud report within 30 days", 30, s2_asof, datetime(2026, 7, 1, tzinfo=UTC),
        FRAUD_FEATURES, "txn_id", p["dana"].email))
    srcs3 = _sources(srcs, "2026.10.31", ev_asof, usage)
    srcs3[4]["version"] = "v2.1 (APAC SDK fix)"
    se = pipe.snapshot(fe, "card_fraud_eval_2026_09.parquet", _manifest(
        "card-fraud", "evaluation window Sep–Oct 2026", srcs3, "is_fraud",
        "confirmed chargeback or issuer fraud report within 30 days", 30, ev_asof, datetime(2026, 9, 1, tzinfo=UTC),
        FRAUD_FEATURES, "txn_id", p["dana"].email))
    feats = list(FRAUD_FEATURES)
    say(0.18, "training the fraud baseline: logistic regression")
    spec_b = TrainingSpec(model="card-fraud", snapshot=s1.digest, features=feats, encoder="onehot_scaled",
                          estimator=Step(name="clf", **{"class": "LogisticRegression"}, params={"C": 0.5, "max_iter": 500}),
                          seed=seed, created_by=p["kenji"].email,
                          stated_limits=["linear in its features: misses interactions such as amount x channel",
                                         "not validated for corporate cards"])
    run_b, model_b = pipe.train(spec_b, s1, _at(75))
    say(0.26, "training the fraud candidate: gradient boosting")
    spec_c = TrainingSpec(model="card-fraud", snapshot=s2.digest, features=feats, encoder="ordinal",
                          estimator=Step(name="clf", **{"class": "HistGradientBoostingClassifier"},
                                         params={"max_iter": 150, "learning_rate": 0.08, "max_leaf_nodes": 31,
                                                 "early_stopping": False, "l2_regularization": 1.0}),
                          seed=seed, baseline_run=run_b.digest, created_by=p["milo"].email,
                          stated_limits=["trained on Jul–Sep 2026 only: no holiday season seen",
                                         "scores are not calibrated for amounts above EUR 10 000"])
    run_c, model_c = pipe.train(spec_c, s2, _at(40))
    labelled1 = f1[f1["is_fraud"].notna()]
    labelled2 = f2[f2["is_fraud"].notna()]
    thr_b = _threshold(model_b.predict_proba(labelled1[feats])[:, 1], 0.03)
    thr_c = _threshold(model_c.predict_proba(labelled2[feats])[:, 1], 0.03)
    say(0.36, "scoring the evaluation window with both models; bootstrapping segment deltas")
    report = pipe.evaluate("card-fraud", fe, labelled2[feats], (run_c, model_c, thr_c), (run_b, model_b, thr_b),
                           se, ["region", "channel"], _at(30), p["milo"].email, seed)
    owners = {Role.DATA: p["dana"].email, Role.MODEL: p["milo"].email, Role.PLATFORM: p["priya"].email,
              Role.PRODUCT: p["paul"].email}
    entry_b = _entry(run_b, None, labelled1, s1, "card-fraud-scorer", 1, thr_b, owners, p["kenji"].email, _at(74))
    entry_c = _entry(run_c, report, labelled2, s2, "card-fraud-scorer", 2, thr_c, owners, p["milo"].email, _at(29))
    store.put_artifacts([entry_b, entry_c], p["priya"].email, _at(29))
    store.set_alias("card-fraud", "champion", entry_b.digest, p["priya"].email, _at(70))
    store.set_alias("card-fraud", "challenger", entry_c.digest, p["priya"].email, _at(29))
    for snap in (s1, se):
        decide_artifact(store, user_for(store, p["dana"].email), snap.digest, Verdict.USABLE,
                        "sources, label window and checks reviewed", _at(60 if snap is s1 else 25))
    note = RolloutNote(
        model="card-fraud", created_by=p["paul"].email, created_at=_at(20), candidate=entry_c.digest,
        baseline=entry_b.digest,
        release_object="Replace the logistic-regression scorer with gradient boosting trained on the Jul–Sep "
                       "refresh: catches interaction patterns (large web purchases, night velocity) the linear "
                       "model misses.",
        release_owner=p["paul"].email,
        success_metrics=[SuccessMetric(metric="recall", comparator=">=", target=0.55),
                         SuccessMetric(metric="precision", comparator=">=", target=0.2)],
        blast_radius=BlastRadius(max_traffic_share=0.2, excluded_segments=["region=LATAM"]),
        stop_rules=[
            StopRule(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=120, window_minutes=60,
                     min_volume=200, failure_limit=2),
            StopRule(name="fallback rate", metric="fallback_rate", comparator=">", threshold=0.02,
                     window_minutes=60, min_volume=200, failure_limit=2, consecutive=True),
            StopRule(name="disagreement with champion", metric="disagreement_rate", comparator=">",
                     threshold=0.06, window_minutes=60, min_volume=200, failure_limit=3, action="rollback"),
        ],
        fallback=FallbackPath(serving=entry_b.digest, description="champion v1 serves all traffic; the router "
                              "flag seamline.card-fraud.v2 is switched off", tested=True,
                              test_evidence="failover drill 2026-10-28: switch in 40 s, no dropped requests"),
        stages=[StageCondition(stage=Stage.SHADOW, traffic_share=0.0, min_duration_hours=48, min_volume=20000),
                StageCondition(stage=Stage.CANARY, traffic_share=0.05, min_duration_hours=72, min_volume=5000),
                StageCondition(stage=Stage.RAMP, traffic_share=0.2, min_duration_hours=72, min_volume=20000),
                StageCondition(stage=Stage.FULL, traffic_share=1.0, min_duration_hours=0, min_volume=0)])
    store.put_artifact(note, p["paul"].email, _at(20))
    rel = store.create_release(Release(
        id="card-fraud-v2", model="card-fraud", title="Gradient boosting scorer v2", candidate=entry_c.digest,
        baseline=entry_b.digest, rollout_note=note.digest, policy_version=1, created_by=p["paul"].email,
        created_at=_at(20), serving=entry_b.digest), p["paul"].email)
    transition(store, user_for(store, p["paul"].email), rel.id, ReleaseState.IN_REVIEW, _at(19.9),
               "ready for review")
    decide(store, user_for(store, p["priya"].email), rel.id, "signoff_platform", Role.PLATFORM, Verdict.APPROVE,
           "latency budget checked in load test: p95 61 ms", _at(18))
    out.update(fraud_release=rel.id, fraud_candidate=entry_c.digest, fraud_snapshot=s2.digest)

    # ---------------------------------------------------------------- churn
    say(0.50, "generating 135 000 churn scorings (150 days)")
    churn = datagen.churn_events(rng, start.replace(tzinfo=None), 150, 900)
    c1_asof, c2_asof, ce_asof = datetime(2026, 8, 15, tzinfo=UTC), datetime(2026, 9, 15, tzinfo=UTC), \
        datetime(2026, 10, 29, tzinfo=UTC)
    c1 = datagen.window(churn, datetime(2026, 6, 1), datetime(2026, 8, 15), c1_asof, "churned_60d", 60)
    c2 = datagen.window(churn, datetime(2026, 6, 1), datetime(2026, 9, 15), c2_asof, "churned_60d", 60)
    ce = datagen.window(churn, datetime(2026, 7, 17), datetime(2026, 10, 29), ce_asof, "churned_60d", 60)
    usage = "retention offers to existing customers under contract; no third-party sharing"
    csrcs = ["crm", "billing", "support", "product_events", "surveys"]
    say(0.55, "snapshotting and training the churn models")
    cs1 = pipe.snapshot(c1, "churn_2026_08.parquet", _manifest(
        "churn", "customers Jun–mid-Aug 2026", _sources(csrcs, "2026.08.15", c1_asof, usage), "churned_60d",
        "subscription cancelled or lapsed within 60 days", 60, c1_asof, datetime(2026, 6, 1, tzinfo=UTC),
        CHURN_FEATURES, "customer_id", p["dana"].email))
    cs2 = pipe.snapshot(c2, "churn_2026_09.parquet", _manifest(
        "churn", "customers Jun–mid-Sep 2026", _sources(csrcs, "2026.09.15", c2_asof, usage), "churned_60d",
        "subscription cancelled or lapsed within 60 days", 60, c2_asof, datetime(2026, 6, 1, tzinfo=UTC),
        CHURN_FEATURES, "customer_id", p["dana"].email))
    cse = pipe.snapshot(ce, "churn_eval_2026_10.parquet", _manifest(
        "churn", "evaluation window mid-Jul–Oct 2026", _sources(csrcs, "2026.10.29", ce_asof, usage), "churned_60d",
        "subscription cancelled or lapsed within 60 days", 60, ce_asof, datetime(2026, 7, 17, tzinfo=UTC),
        CHURN_FEATURES, "customer_id", p["dana"].email))
    cfeats = list(CHURN_FEATURES)
    cspec_b = TrainingSpec(model="churn", snapshot=cs1.digest, features=cfeats, encoder="onehot_scaled",
                           estimator=Step(name="clf", **{"class": "LogisticRegression"}, params={"max_iter": 500}),
                           seed=seed, created_by=p["kenji"].email,
                           stated_limits=["new customers (tenure < 1 month) are under-represented"])
    crun_b, cmodel_b = pipe.train(cspec_b, cs1, _at(60))
    cspec_c = TrainingSpec(model="churn", snapshot=cs2.digest, features=cfeats, encoder="ordinal",
                           estimator=Step(name="clf", **{"class": "HistGradientBoostingClassifier"},
                                          params={"max_iter": 120, "learning_rate": 0.08, "early_stopping": False}),
                           seed=seed, baseline_run=crun_b.digest, created_by=p["kenji"].email,
                           stated_limits=["family plans have few churners: wide intervals"])
    crun_c, cmodel_c = pipe.train(cspec_c, cs2, _at(35))
    cl1, cl2 = c1[c1["churned_60d"].notna()], c2[c2["churned_60d"].notna()]
    cthr_b = _threshold(cmodel_b.predict_proba(cl1[cfeats])[:, 1], 0.15)
    cthr_c = _threshold(cmodel_c.predict_proba(cl2[cfeats])[:, 1], 0.15)
    say(0.66, "evaluating the churn candidate")
    creport = pipe.evaluate("churn", ce, cl2[cfeats], (crun_c, cmodel_c, cthr_c), (crun_b, cmodel_b, cthr_b), cse,
                            ["region", "plan"], _at(32), p["kenji"].email, seed)
    cowners = {Role.DATA: p["dana"].email, Role.MODEL: p["kenji"].email, Role.PLATFORM: p["priya"].email,
               Role.PRODUCT: p["lea"].email}
    centry_b = _entry(crun_b, None, cl1, cs1, "churn-scorer", 1, cthr_b, cowners, p["kenji"].email, _at(59))
    centry_c = _entry(crun_c, creport, cl2, cs2, "churn-scorer", 2, cthr_c, cowners, p["kenji"].email, _at(31))
    store.put_artifacts([centry_b, centry_c], p["priya"].email, _at(31))
    store.set_alias("churn", "champion", centry_b.digest, p["priya"].email, _at(58))
    store.set_alias("churn", "challenger", centry_c.digest, p["priya"].email, _at(31))
    cnote = RolloutNote(
        model="churn", created_by=p["lea"].email, created_at=_at(30), candidate=centry_c.digest,
        baseline=centry_b.digest,
        release_object="Gradient boosting churn scorer v2: better ranking of at-risk monthly customers so "
                       "retention offers reach more of them.",
        release_owner=p["lea"].email,
        success_metrics=[SuccessMetric(metric="recall", comparator=">=", target=0.45)],
        blast_radius=BlastRadius(max_traffic_share=0.25),
        stop_rules=[
            StopRule(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=150, window_minutes=60,
                     min_volume=25, failure_limit=3),
            StopRule(name="fallback rate", metric="fallback_rate", comparator=">", threshold=0.03,
                     window_minutes=60, min_volume=25, failure_limit=2, consecutive=True),
            StopRule(name="error rate", metric="error_rate", comparator=">", threshold=0.05, window_minutes=60,
                     min_volume=25, failure_limit=3),
        ],
        fallback=FallbackPath(serving=centry_b.digest, description="champion v1 serves; offers pause for 1 h",
                              tested=True, test_evidence="staging drill 2026-10-12"),
        stages=[StageCondition(stage=Stage.SHADOW, traffic_share=0.0, min_duration_hours=24, min_volume=5000),
                StageCondition(stage=Stage.CANARY, traffic_share=0.1, min_duration_hours=72, min_volume=5000),
                StageCondition(stage=Stage.RAMP, traffic_share=0.25, min_duration_hours=72, min_volume=10000),
                StageCondition(stage=Stage.FULL, traffic_share=1.0, min_duration_hours=0, min_volume=0)])
    store.put_artifact(cnote, p["lea"].email, _at(30))
    crel = store.create_release(Release(
        id="churn-v2", model="churn", title="Gradient boosting churn scorer v2", candidate=centry_c.digest,
        baseline=centry_b.digest, rollout_note=cnote.digest, policy_version=1, created_by=p["lea"].email,
        created_at=_at(30), serving=centry_b.digest), p["lea"].email)
    lea, dana, kenji, priya = (user_for(store, p[k].email) for k in ("lea", "dana", "kenji", "priya"))
    transition(store, lea, crel.id, ReleaseState.IN_REVIEW, _at(29.9), "ready for review")
    decide_artifact(store, dana, cs2.digest, Verdict.USABLE, "checks pass; sources as contracted", _at(29))
    decide_artifact(store, kenji, creport.digest, Verdict.APPROVE, "gains in every region; family plan wide",
                    _at(28.5))
    decide(store, priya, crel.id, "signoff_platform", Role.PLATFORM, Verdict.APPROVE, "capacity reserved", _at(28))
    decide(store, lea, crel.id, "signoff_product", Role.PRODUCT, Verdict.APPROVE, "go for shadow", _at(27.5))
    say(0.74, "simulating live traffic: shadow then canary")
    live_start = _at(6)
    transition(store, priya, crel.id, ReleaseState.SHADOW, live_start, "approved; shadow for 48 h")
    log = _churn_prediction_log(rng, live_start, ce, cfeats, cmodel_c, cmodel_b, cthr_c, cthr_b)
    _store_signals(store, crel.id, log[log["stage"] == "shadow"],
                   live_start + timedelta(hours=48), priya.email)
    transition(store, priya, crel.id, ReleaseState.CANARY, live_start + timedelta(hours=48, minutes=1),
               "shadow held its stop rules for 48 h")
    say(0.84, "ingesting canary windows every 6 hours; the system evaluates the stop rules each time")
    canary = log[log["stage"] == "canary"]
    batch_start = live_start + timedelta(hours=48)
    while batch_start < live_start + timedelta(hours=120):
        batch_end = batch_start + timedelta(hours=6)
        lo, hi = pd.Timestamp(batch_start.replace(tzinfo=None)), pd.Timestamp(batch_end.replace(tzinfo=None))
        part = canary[(canary["timestamp"] >= lo) & (canary["timestamp"] < hi)]
        # The live path's ingestion aggregates the windows and enforces the stop rules, as in production.
        if _store_signals(store, crel.id, part, batch_end, priya.email):
            break  # halted: the router stopped sending canary traffic
        batch_start = batch_end
    out.update(churn_release=crel.id)

    say(0.90, "recording analyst escalations and evaluating trigger rules")
    cases = _escalations(rng, "card-fraud", entry_b.digest)
    store.put_escalations(cases, p["ana"].email, _at(1))
    evaluate_triggers(store, "card-fraud", NOW, actor="seamline-demo")
    evaluate_triggers(store, "churn", NOW, actor="seamline-demo")  # the halted canary's EU fallbacks -> Platform
    # The data was generated for NOW: the store's clock starts there, so the story stays current however late
    # it is opened (trigger windows, staleness, canary durations all read the store's clock).
    store.set_clock(NOW, f"demo store: generated for {NOW:%Y-%m-%d %H:%M} UTC; the clock runs on from there")
    say(1.0, "demo ready")
    return out


def _churn_prediction_log(rng: np.random.Generator, start: datetime, frame: pd.DataFrame, feats: list[str],
                          cand, base, c_thr: float, b_thr: float) -> pd.DataFrame:
    """Simulate 5 days of requests: 48 h shadow, then canary, where EU fallbacks spike on day 4."""
    hours = 120
    per_hour = 2000
    n = hours * per_hour
    rows = frame.sample(n=n, replace=True, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)
    offset = np.sort(rng.integers(0, hours * 3600, n))
    ts = pd.Timestamp(start.replace(tzinfo=None)) + pd.to_timedelta(offset, unit="s")
    stage = np.where(offset < 48 * 3600, "shadow", "canary")
    in_canary = (stage == "canary") & (rng.random(n) < 0.1)
    arm = np.where(stage == "shadow", "shadow", np.where(in_canary, "canary", "baseline"))
    c_score = cand.predict_proba(rows[feats])[:, 1]
    b_score = base.predict_proba(rows[feats])[:, 1]
    latency = rng.lognormal(np.log(38), 0.35, n)
    degraded = (offset > 78 * 3600) & (offset < 90 * 3600) & (rows["region"].to_numpy() == "EU")
    fallback = rng.random(n) < np.where(degraded, 0.12, 0.006)
    error = rng.random(n) < 0.002
    decision = np.where(arm == "baseline", b_score >= b_thr, c_score >= c_thr).astype(int)
    label = rows["churned_60d"].astype("float").to_numpy()
    label = np.where(rng.random(n) < 0.3, label, np.nan)  # a third of outcomes known so far
    return pd.DataFrame({
        "request_id": pd.Series(np.arange(n)).map("req-{:07d}".format).astype(str), "timestamp": ts,
        "release": "churn-v2", "stage": stage, "arm": arm, "segment": "region=" + rows["region"].astype(str),
        "latency_ms": np.round(latency, 2), "error": error, "fallback": fallback, "cost": 0.00021,
        "candidate_score": c_score, "baseline_score": b_score, "decision": decision,
        "baseline_decision": (b_score >= b_thr).astype(int), "label": pd.array(label, dtype="Float64").astype("Int8"),
    })


def _store_signals(store: Store, release: str, log: pd.DataFrame, at: datetime, actor: str) -> list[str]:
    """Ingest a slice of the prediction log through the live path; return the stop rules that tripped."""
    return ingest_prediction_log(store, release, log, window_minutes=60, actor=actor, now=at).tripped


ESCALATION_TEXTS = {
    "topup": ["Legit mobile wallet top-up flagged, customer confirmed by phone",
              "Customer topping up prepaid wallet on phone was declined again",
              "False positive: recurring top-up via mobile app, known device"],
    "travel": ["Traveller abroad blocked at hotel check-in", "Card blocked on airline purchase, customer travelling"],
    "missed": ["Fraud missed: account takeover after SIM swap", "Chargeback on gaming credits not flagged"],
    "override": ["Analyst override: whitelisted merchant", "Manual release after KYC call"],
}


def _escalations(rng: np.random.Generator, model: str, entry: str) -> list[Escalation]:
    cases = []
    plan = [("topup", "region=APAC / channel=mobile", EscalationType.ESCALATION, 46, "apac-mobile-topup"),
            ("travel", "region=EU / channel=pos", EscalationType.COMPLAINT, 14, None),
            ("missed", "region=NA / channel=web", EscalationType.LABEL_CORRECTION, 12, None),
            ("override", "region=APAC / channel=mobile", EscalationType.OVERRIDE, 11, None)]
    k = 0
    for theme, segment, kind, count, group in plan:
        for i in range(count):
            k += 1
            days_ago = float(rng.uniform(0.5, 28.0)) if theme != "topup" else float(rng.gamma(2.0, 3.5))
            triaged = group is not None and i < count // 2
            text = ESCALATION_TEXTS[theme][int(rng.integers(len(ESCALATION_TEXTS[theme])))]
            cases.append(Escalation(
                case_id=f"ESC-{k:04d}", at=_at(min(days_ago, 29.0)), model=model, release=None, segment=segment,
                type=kind, score=float(np.round(rng.uniform(0.55, 0.97) if theme != "missed" else
                                                rng.uniform(0.02, 0.3), 3)),
                decision="declined" if theme != "missed" else "approved",
                severity=str(rng.choice(["low", "medium", "high"], p=[0.3, 0.5, 0.2])), text=text,
                status="triaged" if triaged else "open", error_group=group if triaged else None,
                finding="model_error" if triaged else None, assignee="ana@seamline.example" if triaged else None,
                triaged_by="ana@seamline.example" if triaged else None,
                triaged_at=_at(min(days_ago, 29.0) - 0.2) if triaged else None,
                corrected_label=1 if kind == EscalationType.LABEL_CORRECTION else None))
    return cases


def ensure_demo(store: Store, progress: Progress | None = None) -> bool:
    """Build the demo when the store is empty; return whether it was built."""
    if not store.is_empty():
        return False
    build_demo(store, progress=progress)
    return True
