"""Turn escalations and signals into typed backlog items by trigger rules, with their evidence."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from .models import BacklogItem, CheckStatus, RetrainingTrigger, Role, TriggerType
from .store import Store

ERROR_GROUP_MIN = 15
OVERRIDE_MIN = 10
WINDOW_DAYS = 30


def evaluate_triggers(store: Store, model: str, now: datetime, actor: str) -> list[BacklogItem]:
    """Evaluate the trigger rules for a model; open or update one backlog item per cause."""
    since = now - timedelta(days=WINDOW_DAYS)
    cases = [c for c in store.escalations(model) if c.at >= since]
    fired: list[RetrainingTrigger] = []
    groups = Counter((c.segment, c.error_group) for c in cases if c.error_group)
    for (segment, group), count in groups.items():
        if count >= ERROR_GROUP_MIN:
            ids = sorted(c.case_id for c in cases if c.error_group == group and c.segment == segment)
            fired.append(RetrainingTrigger(
                model=model, created_by=actor, created_at=now, type=TriggerType.RETRAIN_MODEL,
                rule=f"error group with >= {ERROR_GROUP_MIN} cases in {WINDOW_DAYS} days", owner_role=Role.MODEL,
                cause=f"error_group:{group}:{segment}",
                reason=f"error group '{group}' in {segment}: {count} cases in {WINDOW_DAYS} days "
                       f"(limit {ERROR_GROUP_MIN})", evidence={"cases": ids, "count": count}))
    overrides = Counter(c.segment for c in cases if c.type == "override")
    for segment, count in overrides.items():
        if count >= OVERRIDE_MIN:
            ids = sorted(c.case_id for c in cases if c.type == "override" and c.segment == segment)
            fired.append(RetrainingTrigger(
                model=model, created_by=actor, created_at=now, type=TriggerType.REVISE_POLICY,
                rule=f"manual overrides >= {OVERRIDE_MIN} in {WINDOW_DAYS} days", owner_role=Role.PRODUCT,
                cause=f"overrides:{segment}",
                reason=f"{count} manual overrides in {segment} in {WINDOW_DAYS} days (limit {OVERRIDE_MIN})",
                evidence={"cases": ids, "count": count}))
    reports = store.artifacts(model, "evaluation_report")
    if reports:
        drifted = [c for c in reports[0].shift_checks if c.status == CheckStatus.FAIL]
        for check in drifted:
            fired.append(RetrainingTrigger(
                model=model, created_by=actor, created_at=now, type=TriggerType.REFRESH_DATASET,
                rule="feature shift PSI above the policy's fail bound", owner_role=Role.DATA,
                cause=f"shift:{check.name}", reason=check.reason, evidence=check.evidence))
    items = []
    for trig in fired:
        store.put_artifact(trig, actor, now)
        items.append(store.put_backlog_item(BacklogItem(
            model=model, type=trig.type, cause=trig.cause, title=trig.reason[:200], owner_role=trig.owner_role,
            triggers=[trig.digest], evidence=trig.evidence, opened_at=now, updated_at=now), actor))
    return items
