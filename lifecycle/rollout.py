"""Enforce stop rules on a live release: a tripped rule halts or rolls back, serves the fallback, is audited."""

from __future__ import annotations

from datetime import datetime

from .models import CheckStatus, ReleaseState
from .releases import LIVE, release_evidence, transition
from .store import Store


def enforce_stop_rules(store: Store, release_id: str, now: datetime) -> list[str]:
    """Evaluate the release's stop rules over its stored windows; act on the first tripped rule."""
    evidence = release_evidence(store, release_id, verify_files=False)
    release = evidence.release
    if release.state not in LIVE or evidence.note is None:
        return []
    tripped = [r for r in evidence.stop_rules if r.status == CheckStatus.FAIL]
    if not tripped:
        return []
    first = tripped[0]
    target = ReleaseState.ROLLED_BACK if first.evidence.get("action") == "rollback" else ReleaseState.HALTED
    store.audit("seamline", "incident.open", release_id,
                {"rule": first.name, "verdict": first.status.value, "reason": first.reason,
                 "evidence": first.evidence}, now)
    transition(store, None, release_id, target, now, f"stop rule '{first.name}' tripped: {first.reason}")
    return [r.name for r in tripped]
