"""Present the audit log for reading."""

from __future__ import annotations

import pandas as pd

from .models import canonical_json
from .store import Store


def audit_frame(store: Store, subject: str | None = None, limit: int = 2000) -> pd.DataFrame:
    """Return audit entries newest first, with short hashes and the detail as JSON text."""
    events = store.audit_events(subject=subject, limit=limit)
    return pd.DataFrame([{"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject,
                          "detail": canonical_json(e.detail)[:300], "hash": e.hash[:12], "prev": e.prev_hash[:12]}
                         for e in reversed(events)],
                        columns=["seq", "at", "actor", "action", "subject", "detail", "hash", "prev"])
