"""Define the pydantic models of Seamline: artifacts, releases, policies, decisions, signals, backlog."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex digest of an artifact")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=5000)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Scalar = Union[bool, int, float, str, None]


def canonical_json(obj: Any) -> str:
    """Serialise obj as canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str | bytes) -> str:
    """Return the sha256 hex digest of text."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def short(digest: str | None) -> str:
    """Return the first 10 characters of a digest, as shown in the UI."""
    return digest[:10] if digest else "—"


class Role(StrEnum):
    DATA = "data"
    MODEL = "model"
    PLATFORM = "platform"
    PRODUCT = "product"
    ANALYST = "analyst"

    @property
    def label(self) -> str:
        return {"data": "Data owner", "model": "Model owner", "platform": "Platform owner",
                "product": "Product owner", "analyst": "Analyst"}[self.value]


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    INCONCLUSIVE = "inconclusive"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Mutable(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class CheckResult(Frozen):
    """A check's outcome that explains itself: status, readable reason, evidence, thresholds used."""

    name: Name
    status: CheckStatus
    reason: Text
    evidence: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Scalar] = Field(default_factory=dict)


# ---------------------------------------------------------------- artifacts


class Artifact(Frozen):
    """Base of the seven content-addressed artifacts."""

    kind: str
    model: Name = Field(description="id of the model (use case) this artifact belongs to")
    created_by: Name
    created_at: datetime

    parent_fields: ClassVar[tuple[str, ...]] = ()
    volatile_fields: ClassVar[frozenset[str]] = frozenset()

    def body(self) -> dict[str, Any]:
        """Return the JSON body the digest is computed over (volatile measurements left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude=set(self.volatile_fields))

    def record(self) -> dict[str, Any]:
        """Return the full JSON record the store keeps."""
        return self.model_dump(mode="json", by_alias=True)

    @property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.body()))

    def parents(self) -> dict[str, str]:
        """Return {field: digest} of every parent this artifact names."""
        out = {}
        for name in self.parent_fields:
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


class Source(Frozen):
    name: Name
    uri: Name
    version: Name
    extracted_at: datetime
    legal_usage: Text = Field(description="what the data may be used for, e.g. 'fraud scoring; no marketing'")


class LabelDefinition(Frozen):
    column: Name
    definition: Text
    delay_days: int = Field(ge=0, description="days after the event before the label is final")


class PointInTime(Frozen):
    as_of: datetime = Field(description="when the snapshot was taken")
    feature_cutoff: datetime = Field(description="no feature value may be stamped after this")
    label_window_start: datetime = Field(description="earliest event time whose label is used")
    label_window_end: datetime = Field(description="latest event time whose label is used")
    event_time_column: Name = "event_time"
    feature_time_column: Name | None = Field(None, description="column stamping when features were computed")

    @model_validator(mode="after")
    def _ordered(self) -> "PointInTime":
        if self.label_window_start > self.label_window_end:
            raise ValueError("label_window_start must not be after label_window_end")
        return self


class FeatureDefinition(Frozen):
    name: Name
    dtype: Literal["int", "float", "category", "bool", "timestamp", "string"]
    source: Name
    transformation: Text
    owner: Name


class Column(Frozen):
    name: Name
    dtype: Name


class DataFile(Frozen):
    path: Annotated[str, Field(min_length=1, max_length=1000)]
    sha256: Digest
    bytes: int = Field(ge=0)


class DatasetSnapshot(Artifact):
    kind: Literal["dataset_snapshot"] = "dataset_snapshot"
    name: Name
    sources: list[Source] = Field(min_length=1)
    label: LabelDefinition
    point_in_time: PointInTime
    features: list[FeatureDefinition] = Field(min_length=1)
    schema_: list[Column] = Field(alias="schema", min_length=1)
    key_columns: list[Name] = Field(default_factory=list)
    row_count: int = Field(ge=0)
    label_rate: float | None = Field(None, ge=0.0, le=1.0)
    files: list[DataFile] = Field(min_length=1)
    data_digest: Digest = Field(description="sha256 over the sorted (path, sha256) of the data files")
    quality_checks: list[CheckResult] = Field(default_factory=list)

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)


class LogPoint(Frozen):
    step: int = Field(ge=0)
    metric: Name
    split: Literal["train", "validation"]
    value: float


class ModelArtifactRef(Frozen):
    uri: Name
    digest: Digest


class TrainingRun(Artifact):
    kind: Literal["training_run"] = "training_run"
    snapshot: Digest
    code_version: Name
    estimator: Name
    parameters: dict[str, Scalar]
    features: list[Name] = Field(min_length=1)
    dependencies: dict[str, str] = Field(description="package -> installed version")
    lock_digest: Digest
    seed: int
    experiment_log: list[LogPoint] = Field(default_factory=list)
    validation_metrics: dict[str, float] = Field(default_factory=dict)
    model_artifact: ModelArtifactRef
    baseline_run: Digest | None = None
    duration_s: float = Field(ge=0)
    stated_limits: list[Text] = Field(default_factory=list)
    spec: dict[str, Any] = Field(default_factory=dict, description="the training spec as run (training."
                                 "TrainingSpec), so the run can be re-run; empty for runs ingested without one")

    parent_fields: ClassVar[tuple[str, ...]] = ("snapshot", "baseline_run")
    # How long a run took is a measurement of the machine, not of what was trained: kept, not hashed,
    # so the same spec on the same data gives the same digest.
    volatile_fields: ClassVar[frozenset[str]] = frozenset({"duration_s"})


class ModelMetrics(Frozen):
    """Point metrics of one model on one slice; a None metric is explained in `note`."""

    n: int
    positives: int
    roc_auc: float | None = None
    pr_auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    ece: float | None = None
    precision: float | None = None
    recall: float | None = None
    fpr: float | None = None
    positive_rate: float | None = None
    note: Text = ""


class Interval(Frozen):
    estimate: float
    low: float
    high: float


class SegmentResult(Frozen):
    segment: Name = Field(description="readable segment name, e.g. 'region=APAC / channel=mobile' or 'all'")
    keys: dict[str, str] = Field(default_factory=dict)
    candidate: ModelMetrics
    baseline: ModelMetrics
    deltas: dict[str, Interval] = Field(default_factory=dict, description="candidate - baseline per metric")
    status: CheckStatus
    reason: Text


class ReliabilityBin(Frozen):
    low: float
    high: float
    mean_score: float
    observed_rate: float
    count: int


class Calibration(Frozen):
    segment: Name
    which: Literal["candidate", "baseline"]
    strategy: Literal["uniform", "quantile"]
    bins: list[ReliabilityBin]
    ece: float | None


class EvaluationReport(Artifact):
    kind: Literal["evaluation_report"] = "evaluation_report"
    candidate_run: Digest
    baseline_run: Digest
    evaluation_snapshot: Digest
    settings: dict[str, Scalar] = Field(description="bootstrap resamples, seed, confidence, bins, thresholds")
    overall: SegmentResult
    segments: list[SegmentResult]
    calibration: list[Calibration] = Field(default_factory=list)
    shift_checks: list[CheckResult] = Field(default_factory=list)
    regression_suite: list[CheckResult] = Field(default_factory=list)
    gate: CheckResult
    limits: list[Text] = Field(default_factory=list)

    parent_fields: ClassVar[tuple[str, ...]] = ("candidate_run", "baseline_run", "evaluation_snapshot")


class NumericRange(Frozen):
    min: float
    max: float


class DataContract(Frozen):
    ranges: dict[str, NumericRange] = Field(default_factory=dict)
    categories: dict[str, list[str]] = Field(default_factory=dict)
    max_staleness_hours: float = Field(gt=0)


class RegistryEntry(Artifact):
    kind: Literal["registry_entry"] = "registry_entry"
    name: Name
    version: int = Field(ge=1)
    training_run: Digest
    evaluation: Digest | None = None
    input_schema: list[Column] = Field(min_length=1)
    output_schema: list[Column] = Field(min_length=1)
    data_contract: DataContract
    artifact_uri: Name
    artifact_digest: Digest
    owners: dict[Role, Name]
    decision_threshold: float = Field(ge=0.0, le=1.0)
    rollout_rules: list[Text] = Field(default_factory=list)

    parent_fields: ClassVar[tuple[str, ...]] = ("training_run", "evaluation")


class Stage(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    RAMP = "ramp"
    FULL = "full"


class SuccessMetric(Frozen):
    metric: Name
    comparator: Literal[">=", "<=", ">", "<"]
    target: float


class BlastRadius(Frozen):
    max_traffic_share: Share
    excluded_segments: list[Name] = Field(default_factory=list)


SIGNAL_METRICS = (
    "requests", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate", "fallback_rate",
    "cost_per_1k", "disagreement_rate", "escalations", "precision", "recall", "positive_rate",
    "calibration_gap", "labelled",
)


class StopRule(Frozen):
    name: Name
    metric: Name
    comparator: Literal[">", ">=", "<", "<="] = Field(description="the window fails when `value comparator threshold`")
    threshold: float
    window_minutes: int = Field(gt=0)
    min_volume: int = Field(ge=0, description="below this many requests a window is inconclusive")
    failure_limit: int = Field(ge=0, description="failing windows tolerated; one more trips the rule")
    consecutive: bool = Field(False, description="count only consecutive failing windows")
    action: Literal["halt", "rollback"] = "halt"
    stages: list[Stage] = Field(default_factory=lambda: [Stage.SHADOW, Stage.CANARY, Stage.RAMP, Stage.FULL])

    @model_validator(mode="after")
    def _known_metric(self) -> "StopRule":
        if self.metric not in SIGNAL_METRICS:
            raise ValueError(f"unknown metric '{self.metric}'; known: {', '.join(SIGNAL_METRICS)}")
        return self


class FallbackPath(Frozen):
    serving: Name = Field(description="registry entry digest or a named rule that serves on rollback")
    description: Text
    tested: bool
    test_evidence: Text = ""


class StageCondition(Frozen):
    stage: Stage
    traffic_share: Share
    min_duration_hours: float = Field(ge=0)
    min_volume: int = Field(ge=0)


class RolloutNote(Artifact):
    kind: Literal["rollout_note"] = "rollout_note"
    candidate: Digest
    baseline: Digest | None = None
    release_object: Text = Field(min_length=1, description="what changes and why")
    release_owner: Name
    success_metrics: list[SuccessMetric] = Field(min_length=1)
    blast_radius: BlastRadius
    stop_rules: list[StopRule] = Field(min_length=1)
    fallback: FallbackPath
    stages: list[StageCondition] = Field(min_length=1)

    parent_fields: ClassVar[tuple[str, ...]] = ("candidate", "baseline")

    @model_validator(mode="after")
    def _consistent(self) -> "RolloutNote":
        for i, cond in enumerate(self.stages):
            if cond.stage in (Stage.CANARY, Stage.RAMP) and cond.traffic_share > self.blast_radius.max_traffic_share:
                raise ValueError(
                    f"stages[{i}]: {cond.stage.value} share {cond.traffic_share:.0%} is above the blast radius "
                    f"{self.blast_radius.max_traffic_share:.0%}"
                )
        order = [s.stage for s in self.stages]
        if order != sorted(order, key=list(Stage).index):
            raise ValueError("stages must be listed in order shadow, canary, ramp, full")
        return self


class SignalWindow(Frozen):
    start: datetime
    end: datetime
    stage: Stage
    arm: Literal["shadow", "canary", "treatment", "control", "baseline"]
    segment: Name = "all"
    requests: int = Field(ge=0)
    metrics: dict[str, float]

    @model_validator(mode="after")
    def _ordered(self) -> "SignalWindow":
        if self.end <= self.start:
            raise ValueError("end must be after start")
        unknown = set(self.metrics) - set(SIGNAL_METRICS)
        if unknown:
            raise ValueError(f"unknown metrics: {', '.join(sorted(unknown))}")
        return self


class MonitoringSignals(Artifact):
    kind: Literal["monitoring_signals"] = "monitoring_signals"
    release: Name
    entry: Digest = Field(description="the registry entry whose traffic these windows describe")
    windows: list[SignalWindow] = Field(min_length=1)

    parent_fields: ClassVar[tuple[str, ...]] = ("entry",)


class TriggerType(StrEnum):
    REFRESH_DATASET = "refresh_dataset"
    UPDATE_THRESHOLD = "update_threshold"
    RETRAIN_MODEL = "retrain_model"
    REVISE_POLICY = "revise_policy"


class RetrainingTrigger(Artifact):
    kind: Literal["retraining_trigger"] = "retraining_trigger"
    type: TriggerType
    rule: Name
    cause: Name = Field(description="what fired, e.g. 'psi:income:region=APAC'; one open item per cause")
    owner_role: Role
    reason: Text
    evidence: dict[str, Any] = Field(default_factory=dict)
    signals: list[Digest] = Field(default_factory=list)

    parent_fields: ClassVar[tuple[str, ...]] = ()

    def parents(self) -> dict[str, str]:
        return {f"signals[{i}]": d for i, d in enumerate(self.signals)}


ARTIFACT_TYPES: dict[str, type[Artifact]] = {
    cls.model_fields["kind"].default: cls
    for cls in (DatasetSnapshot, TrainingRun, EvaluationReport, RegistryEntry, RolloutNote,
                MonitoringSignals, RetrainingTrigger)
}
ARTIFACT_ORDER = list(ARTIFACT_TYPES)
ARTIFACT_TITLES = {
    "dataset_snapshot": "Dataset snapshot", "training_run": "Training run",
    "evaluation_report": "Evaluation report", "registry_entry": "Registry entry",
    "rollout_note": "Rollout note", "monitoring_signals": "Monitoring signals",
    "retraining_trigger": "Retraining trigger",
}
ARTIFACT_OWNERS = {
    "dataset_snapshot": Role.DATA, "training_run": Role.MODEL, "evaluation_report": Role.MODEL,
    "registry_entry": Role.PLATFORM, "rollout_note": Role.PRODUCT, "monitoring_signals": Role.PLATFORM,
    "retraining_trigger": Role.MODEL,
}
AnyArtifact = Annotated[
    Union[DatasetSnapshot, TrainingRun, EvaluationReport, RegistryEntry, RolloutNote, MonitoringSignals,
          RetrainingTrigger],
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- use cases, people, policy


class Person(Frozen):
    email: Name
    name: Name


class Model(Frozen):
    """A use case: what is predicted, for whom, and its named owners per role."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,63}$")]
    name: Name
    description: Text
    owners: dict[Role, list[Person]]


class GateStage(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


class GateKind(StrEnum):
    CHECK = "check"
    SIGNOFF = "signoff"


GATE_CHECKS = (
    "lineage_confirmed", "evaluation_gate", "baseline_comparison", "release_owner_named",
    "rollback_plan_ready", "stop_rules", "blast_radius", "post_release_review", "stability",
)


class Gate(Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    title: Name
    stage: GateStage
    owner_role: Role
    kind: GateKind
    check: Name | None = Field(None, description=f"automatic check, one of {', '.join(GATE_CHECKS)}")
    params: dict[str, Scalar] = Field(default_factory=dict)
    waivable_by: list[Role] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kind_matches(self) -> "Gate":
        if self.kind is GateKind.CHECK and self.check not in GATE_CHECKS:
            raise ValueError(f"gate '{self.id}': check must be one of {', '.join(GATE_CHECKS)}")
        if self.kind is GateKind.SIGNOFF and self.check is not None:
            raise ValueError(f"gate '{self.id}': a sign-off gate names no check")
        return self


class QualityThresholds(Frozen):
    max_null_rate: float = Field(0.02, ge=0, le=1)
    null_rate_overrides: dict[str, float] = Field(default_factory=dict)
    max_duplicate_keys: int = Field(0, ge=0)
    max_refresh_lag_hours: float = Field(48.0, gt=0)
    max_leaking_rows: int = Field(0, ge=0)


class RegressionCase(Frozen):
    """A named case of the regression suite: a slice that must keep a minimum metric or not drop too far."""

    name: Name
    slice: Text = Field(description="filter expression, e.g. \"amount > 1000 and channel == 'web'\"")
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall"] = "roc_auc"
    min_value: float | None = None
    max_drop: float | None = Field(None, ge=0, description="largest allowed baseline - candidate")

    @model_validator(mode="after")
    def _one_bound(self) -> "RegressionCase":
        if (self.min_value is None) == (self.max_drop is None):
            raise ValueError(f"case '{self.name}': give exactly one of min_value and max_drop")
        return self


class EvaluationSettings(Frozen):
    gated_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier", "ece", "precision", "recall"] = "roc_auc"
    max_segment_drop: float = Field(0.01, ge=0, description="x in 'no segment loses more than x'")
    min_segment_size: int = Field(500, ge=1)
    bootstrap: int = Field(1000, ge=0, le=20000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    calibration_bins: int = Field(10, ge=2, le=100)
    psi_warn: float = Field(0.1, ge=0)
    psi_fail: float = Field(0.25, ge=0)
    segment_columns: list[Name] = Field(default_factory=list)
    slices: dict[str, Text] = Field(default_factory=dict, description="named slice -> filter expression")
    regression_cases: list[RegressionCase] = Field(default_factory=list)


# signal -> (family, what its value is); a rule fires when the value is >= its bound
TRIGGER_SIGNALS: dict[str, tuple[str, str]] = {
    "error_group_size": ("review", "cases of one error group in one segment within `days`"),
    "error_group_growth": ("review", "cases of an error group in the last `days` minus those in the `days` before"),
    "override_count": ("review", "manual overrides in one segment within `days`"),
    "label_correction_count": ("review", "cases with a corrected label in one segment within `days`"),
    "segment_psi": ("quality", "a feature's PSI, in each of the newest `windows` evaluation reports"),
    "calibration_gap": ("quality", "|mean score - observed rate| in `windows` consecutive signal windows"),
    "outcome_quality_drop": ("quality", "confirmed-outcome metric of the first `windows` windows minus the last"),
    "disagreement_rate": ("quality", "disagreement with the baseline in `windows` consecutive signal windows"),
    "fallback_rate": ("incident", "fallback rate in `windows` consecutive signal windows"),
    "error_rate": ("incident", "error rate in `windows` consecutive signal windows"),
    "latency_p95_ms": ("incident", "p95 latency in `windows` consecutive signal windows"),
    "false_positive_cost": ("business", "confirmed false positives in one segment within `days` x cost_per_case"),
    "complaint_count": ("business", "customer complaints (support load) in one segment within `days`"),
    "regulatory_flag": ("business", "regulatory notices in one segment within `days`"),
}
TRIGGER_PARAMS: dict[str, dict[str, str]] = {
    "calibration_gap": {"min_labelled": "windows with fewer confirmed outcomes are left out"},
    "outcome_quality_drop": {"metric": "precision or recall", "min_labelled": "windows with fewer outcomes are "
                                                                             "left out"},
    "disagreement_rate": {"min_volume": "windows with fewer requests are left out"},
    "fallback_rate": {"min_volume": "windows with fewer requests are left out"},
    "error_rate": {"min_volume": "windows with fewer requests are left out"},
    "latency_p95_ms": {"min_volume": "windows with fewer requests are left out"},
    "false_positive_cost": {"cost_per_case": "cost of one false positive", "positive_decision": "the decision "
                            "value that means 'flagged' (e.g. declined)"},
}


class TriggerRule(Frozen):
    """A trigger rule of the policy: a signal, a bound and a window; when it fires it opens a typed backlog item."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,63}$")]
    title: Name
    type: TriggerType
    owner_role: Role
    signal: Name = Field(description=f"one of {', '.join(TRIGGER_SIGNALS)}")
    bound: float = Field(ge=0, description="the rule fires when the signal's value is >= bound")
    windows: int = Field(1, ge=1, le=1000, description="signal windows or evaluation reports the bound must hold in")
    days: int = Field(30, ge=1, le=3650, description="look-back in days")
    params: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_signal(self) -> "TriggerRule":
        if self.signal not in TRIGGER_SIGNALS:
            raise ValueError(f"trigger '{self.id}': unknown signal '{self.signal}'; known: "
                             f"{', '.join(TRIGGER_SIGNALS)}")
        unknown = sorted(set(self.params) - set(TRIGGER_PARAMS.get(self.signal, {})))
        if unknown:
            allowed = ", ".join(TRIGGER_PARAMS.get(self.signal, {})) or "none"
            raise ValueError(f"trigger '{self.id}': unknown params {', '.join(unknown)} for {self.signal} "
                             f"(allowed: {allowed})")
        if self.params.get("metric", "precision") not in ("precision", "recall"):
            raise ValueError(f"trigger '{self.id}': metric must be precision or recall")
        return self

    @property
    def family(self) -> str:
        return TRIGGER_SIGNALS[self.signal][0]


def _rule(rule_id: str, title: str, type_: str, role: Role, signal: str, bound: float, **kw) -> TriggerRule:
    return TriggerRule(id=rule_id, title=title, type=TriggerType(type_), owner_role=role, signal=signal,
                       bound=bound, **kw)


DEFAULT_TRIGGER_RULES: tuple[TriggerRule, ...] = (
    _rule("error-group-size", "An error group of 15+ cases in 30 days", "retrain_model", Role.MODEL,
          "error_group_size", 15, days=30),
    _rule("error-group-growth", "An error group grew by 5+ cases week over week", "retrain_model", Role.MODEL,
          "error_group_growth", 5, days=7),
    _rule("outcome-quality-drop", "Confirmed-outcome precision dropped by 0.10", "retrain_model", Role.MODEL,
          "outcome_quality_drop", 0.10, windows=6, days=30, params={"metric": "precision", "min_labelled": 30}),
    _rule("feature-drift", "Feature PSI >= 0.25 in the newest evaluation", "refresh_dataset", Role.DATA,
          "segment_psi", 0.25, windows=1),
    _rule("label-corrections", "10+ label corrections in a segment in 30 days", "refresh_dataset", Role.DATA,
          "label_correction_count", 10, days=30),
    _rule("calibration-shift", "Calibration gap >= 0.05 in 3 consecutive windows", "update_threshold", Role.MODEL,
          "calibration_gap", 0.05, windows=3, days=14, params={"min_labelled": 200}),
    _rule("false-positive-cost", "Confirmed false positives cost EUR 500+ in 30 days", "update_threshold",
          Role.PRODUCT, "false_positive_cost", 500, days=30,
          params={"cost_per_case": 25.0, "positive_decision": "declined"}),
    _rule("complaints", "20+ customer complaints in a segment in 30 days", "update_threshold", Role.PRODUCT,
          "complaint_count", 20, days=30),
    _rule("manual-overrides", "10+ manual overrides in a segment in 30 days", "revise_policy", Role.PRODUCT,
          "override_count", 10, days=30),
    _rule("regulatory-constraint", "A regulatory notice was recorded", "revise_policy", Role.PRODUCT,
          "regulatory_flag", 1, days=90),
    _rule("fallback-incidents", "Fallback rate >= 5% in 3 consecutive windows", "revise_policy", Role.PLATFORM,
          "fallback_rate", 0.05, windows=3, days=14, params={"min_volume": 25}),
    _rule("latency-incidents", "p95 latency >= 250 ms in 3 consecutive windows", "revise_policy", Role.PLATFORM,
          "latency_p95_ms", 250, windows=3, days=14, params={"min_volume": 25}),
)


class ReleasePolicy(Frozen):
    model: Name
    version: int = Field(ge=1)
    gates: list[Gate] = Field(min_length=1)
    quality: QualityThresholds = QualityThresholds()
    evaluation: EvaluationSettings = EvaluationSettings()
    stability_windows: int = Field(3, ge=1, description="stable windows before promotion")
    created_by: Name
    created_at: datetime
    note: Text = ""
    triggers: list[TriggerRule] = Field(default_factory=lambda: list(DEFAULT_TRIGGER_RULES),
                                        description="trigger rules that turn signals into backlog items")

    @model_validator(mode="after")
    def _unique_gates(self) -> "ReleasePolicy":
        ids = [g.id for g in self.gates]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate gate ids: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _unique_triggers(self) -> "ReleasePolicy":
        ids = [t.id for t in self.triggers]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate trigger ids: {', '.join(dupes)}")
        return self

    @property
    def digest(self) -> str:
        return sha256_hex(canonical_json(self.model_dump(mode="json")))


# ---------------------------------------------------------------- release, decisions, audit


class ReleaseState(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    SHADOW = "shadow"
    CANARY = "canary"
    RAMP = "ramp"
    FULL = "full"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    HALTED = "halted"
    ROLLED_BACK = "rolled_back"


class Release(Mutable):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,80}$")]
    model: Name
    title: Name
    candidate: Digest
    baseline: Digest | None
    rollout_note: Digest | None
    policy_version: int
    state: ReleaseState = ReleaseState.DRAFT
    version: int = Field(0, description="optimistic-concurrency counter, bumped on every change")
    serving: Digest | None = Field(None, description="entry serving the release's traffic share now")
    created_by: Name
    created_at: datetime


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    WAIVE = "waive"
    USABLE = "usable"
    BLOCKED = "blocked"


class Decision(Frozen):
    id: int | None = None
    release: Name | None = None
    gate: Name = Field(description="gate id, or 'snapshot' / 'evaluation' for artifact decisions")
    subject: Digest | None = Field(None, description="the artifact decided on, when it is one")
    user: Name
    role: Role
    verdict: Verdict
    comment: Text = ""
    at: datetime
    covered: dict[str, str] = Field(default_factory=dict, description="artifact name -> digest reviewed")


class EscalationType(StrEnum):
    ESCALATION = "escalation"
    LABEL_CORRECTION = "label_correction"
    OVERRIDE = "override"
    COMPLAINT = "complaint"
    REGULATORY = "regulatory"


class Escalation(Mutable):
    case_id: Name
    at: datetime
    model: Name
    release: Name | None = None
    segment: Name
    type: EscalationType
    score: float = Field(ge=0, le=1)
    decision: Name
    severity: Literal["low", "medium", "high", "critical"]
    text: Text = ""
    status: Literal["open", "triaged", "closed"] = "open"
    assignee: Name | None = None
    error_group: Name | None = None
    finding: Literal["model_error", "policy_issue", "data_issue", "not_an_error"] | None = None
    corrected_label: int | None = Field(None, ge=0, le=1)
    triaged_by: Name | None = None
    triaged_at: datetime | None = None
    request_id: Name | None = Field(None, description="the prediction-log request this case is about, if known")


class BacklogStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    CLOSED = "closed"
    WONT_DO = "wont_do"


class BacklogItem(Mutable):
    id: int | None = None
    model: Name
    type: TriggerType
    cause: Name
    title: Name
    owner_role: Role
    status: BacklogStatus = BacklogStatus.OPEN
    triggers: list[Digest] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
    resolved_by: Digest | None = None
    close_reason: Text = ""
    opened_at: datetime
    updated_at: datetime


class AuditEvent(Frozen):
    seq: int
    at: datetime
    actor: Name
    action: Name
    subject: Name
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    @staticmethod
    def compute_hash(seq: int, at: datetime, actor: str, action: str, subject: str, detail: dict, prev: str) -> str:
        """Hash an entry's content together with the previous entry's hash."""
        return sha256_hex(canonical_json({
            "seq": seq, "at": at.isoformat(), "actor": actor, "action": action, "subject": subject,
            "detail": detail, "prev": prev,
        }))


class TokenScope(StrEnum):
    """What a pipeline's API token may submit."""

    ARTIFACTS = "artifacts"
    SIGNALS = "signals"
    ESCALATIONS = "escalations"


class ApiToken(Frozen):
    """A pipeline's bearer token as stored: only the sha256 of the secret, never the secret itself."""

    name: Name = Field(description="recorded as the actor in the audit log")
    model: Name
    scopes: list[TokenScope] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_by: Name
    created_at: datetime
    revoked_by: Name | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
