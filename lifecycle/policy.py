"""Build, parse and change release policies: the gates of the lifecycle as versioned data."""

from __future__ import annotations

from datetime import datetime

import yaml
from pydantic import ValidationError

from .ingest import IngestError, parse_document, validation_problems
from .models import Gate, GateKind, GateStage, ReleasePolicy, Role
from .store import NotFound, Store

DEFAULT_GATES = [
    Gate(id="lineage", title="Dataset lineage and input reproducibility confirmed", stage=GateStage.BEFORE,
         owner_role=Role.DATA, kind=GateKind.CHECK, check="lineage_confirmed", waivable_by=[Role.DATA]),
    Gate(id="evaluation", title="Evaluation passes the segment-level quality gate", stage=GateStage.BEFORE,
         owner_role=Role.MODEL, kind=GateKind.CHECK, check="evaluation_gate", waivable_by=[Role.PRODUCT]),
    Gate(id="baseline", title="A baseline comparison exists", stage=GateStage.BEFORE, owner_role=Role.MODEL,
         kind=GateKind.CHECK, check="baseline_comparison"),
    Gate(id="owner", title="Release owner is named", stage=GateStage.BEFORE, owner_role=Role.PRODUCT,
         kind=GateKind.CHECK, check="release_owner_named"),
    Gate(id="rollback", title="Rollback plan is ready and tested", stage=GateStage.BEFORE,
         owner_role=Role.PLATFORM, kind=GateKind.CHECK, check="rollback_plan_ready"),
    Gate(id="signoff_data", title="Data owner sign-off", stage=GateStage.BEFORE, owner_role=Role.DATA,
         kind=GateKind.SIGNOFF),
    Gate(id="signoff_model", title="Model owner sign-off", stage=GateStage.BEFORE, owner_role=Role.MODEL,
         kind=GateKind.SIGNOFF),
    Gate(id="signoff_platform", title="Platform owner sign-off", stage=GateStage.BEFORE,
         owner_role=Role.PLATFORM, kind=GateKind.SIGNOFF),
    Gate(id="signoff_product", title="Product owner sign-off", stage=GateStage.BEFORE, owner_role=Role.PRODUCT,
         kind=GateKind.SIGNOFF),
    Gate(id="stop_rules", title="Latency, cost, fallback and disagreement inside the stop rules",
         stage=GateStage.DURING, owner_role=Role.PLATFORM, kind=GateKind.CHECK, check="stop_rules"),
    Gate(id="blast_radius", title="Traffic within the allowed blast radius", stage=GateStage.DURING,
         owner_role=Role.PLATFORM, kind=GateKind.CHECK, check="blast_radius"),
    Gate(id="post_review", title="Post-release review: segments, escalations, delayed labels",
         stage=GateStage.AFTER, owner_role=Role.PRODUCT, kind=GateKind.CHECK, check="post_release_review"),
    Gate(id="stability", title="Live path and business metrics stable before promotion", stage=GateStage.AFTER,
         owner_role=Role.PLATFORM, kind=GateKind.CHECK, check="stability"),
]


def default_policy(model: str, created_by: str, at: datetime, **overrides) -> ReleasePolicy:
    """Return version 1 of a model's policy carrying the lifecycle gates of the design."""
    return ReleasePolicy(model=model, version=1, gates=DEFAULT_GATES, created_by=created_by, created_at=at,
                         note="default lifecycle gates", **overrides)


def parse_policy(text: str | bytes) -> ReleasePolicy:
    """Parse a policy from YAML or JSON strictly; problems name the field."""
    obj = parse_document(text)
    try:
        return ReleasePolicy.model_validate(obj)
    except ValidationError as exc:
        raise IngestError(validation_problems(exc)) from None


def policy_yaml(policy: ReleasePolicy) -> str:
    """Render a policy as YAML for reading and editing."""
    return yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def policy_history(store: Store, model: str):
    """Return every policy version of a model with its author, time, note and digest."""
    import pandas as pd

    rows = []
    version = store.policy(model).version
    for v in range(version, 0, -1):
        p = store.policy(model, v)
        rows.append({"version": p.version, "created_by": p.created_by, "created_at": p.created_at, "note": p.note,
                     "gates": len(p.gates), "digest": p.digest[:10]})
    return pd.DataFrame(rows)


def change_policy(store: Store, user, text: str, now: datetime, note: str) -> ReleasePolicy:
    """Record a new policy version from YAML; only the model's Product or Platform owner may."""
    parsed = parse_policy(text)
    if not ({Role.PRODUCT, Role.PLATFORM} & user.roles_for(parsed.model)):
        raise PermissionError(f"{user.email} is neither Product nor Platform owner of '{parsed.model}'")
    if not note.strip():
        raise IngestError([("note", "say why the policy changes")])
    try:
        latest = store.policy(parsed.model).version
    except NotFound:
        latest = 0
    policy = parsed.model_copy(update={"version": latest + 1, "created_by": user.email, "created_at": now,
                                       "note": note})
    store.put_policy(ReleasePolicy.model_validate(policy.model_dump()), user.email)
    return policy
