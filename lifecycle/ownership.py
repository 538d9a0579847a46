"""Describe the owner and decision matrix of a model from stored data."""

from __future__ import annotations

import pandas as pd

from .models import ARTIFACT_OWNERS, ARTIFACT_TITLES, Role
from .store import Store

SCOPE = {
    Role.DATA: ("Dataset snapshots, sources, label definitions, point-in-time rules",
                "Mark a snapshot usable or blocked; sign off lineage",
                "Models learn from leaked, stale or unlicensed data and nobody can reproduce them"),
    Role.MODEL: ("Training runs, evaluation reports, stated limits",
                 "Sign off the evaluation; accept segment trade-offs",
                 "A candidate that is better on average ships while it regresses for a segment"),
    Role.PLATFORM: ("Registry entries, rollout mechanics, monitoring, fallback path",
                    "Expand or halt stages; sign off the rollback plan",
                    "Nobody can stop a bad canary or say what was serving when"),
    Role.PRODUCT: ("Rollout note, success metrics, blast radius, policy",
                   "Approve the release; change the policy; waive with a reason",
                   "Releases launch without a stated object, target or stop rule"),
    Role.ANALYST: ("Escalation queue, error groups, label corrections",
                   "Triage cases; correct labels",
                   "Repeated mistakes never reach the backlog"),
}


def ownership_frame(store: Store, model_id: str) -> pd.DataFrame:
    """Return one row per role: scope, artifacts owned, key decisions, what breaks without it, who."""
    model = store.model(model_id)
    decisions = store.frame("""SELECT json_extract_string(body, '$.role') AS role, count(*) AS n
                               FROM decisions d WHERE release IN (SELECT id FROM releases WHERE model = ?)
                                  OR subject IN (SELECT digest FROM artifacts WHERE model = ?)
                               GROUP BY ALL""", [model_id, model_id])
    counts = dict(zip(decisions["role"], decisions["n"])) if not decisions.empty else {}
    rows = []
    for role in Role:
        scope, key_decisions, breaks = SCOPE[role]
        owned = [ARTIFACT_TITLES[k] for k, r in ARTIFACT_OWNERS.items() if r == role]
        rows.append({"role": role.label, "scope": scope, "artifacts owned": ", ".join(owned) or "—",
                     "key decisions": key_decisions, "what breaks without it": breaks,
                     "people": ", ".join(f"{p.name} <{p.email}>" for p in model.owners.get(role, [])) or "unassigned",
                     "decisions recorded": int(counts.get(role.value, 0))})
    return pd.DataFrame(rows)
