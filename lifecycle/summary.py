"""List stored records per screen, for screens that show a plain table."""

from __future__ import annotations

import pandas as pd

from .models import short
from .store import Store

KINDS = {"datasets": "dataset_snapshot", "runs": "training_run", "evaluation": "evaluation_report",
         "registry": "registry_entry", "release": "rollout_note", "monitoring": "monitoring_signals",
         "backlog": "retraining_trigger", "escalations": None}


def artifact_frame(store: Store, model: str, screen: str) -> pd.DataFrame:
    """Return a screen's stored records as a table: artifacts by kind, or escalation cases."""
    if screen == "escalations":
        return pd.DataFrame([c.model_dump(mode="json") for c in store.escalations(model)])
    kind = KINDS[screen]
    rows = [{"digest": short(a.digest), "created_at": a.created_at, "created_by": a.created_by,
             "parents": ", ".join(f"{k}={short(v)}" for k, v in a.parents().items())}
            for a in store.artifacts(model, kind)]
    return pd.DataFrame(rows, columns=["digest", "created_at", "created_by", "parents"])
