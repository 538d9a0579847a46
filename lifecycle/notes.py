"""Write rollout notes from a form or a file, and open or update the release they belong to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import ValidationError

from .identity import User
from .ingest import IngestError, validation_problems
from .models import Release, ReleaseState, Role, RolloutNote, Stage, StopRule
from .store import Store

STOP_RULE_COLUMNS = ["name", "metric", "comparator", "threshold", "window_minutes", "min_volume", "failure_limit",
                     "consecutive", "action"]
STAGE_COLUMNS = ["stage", "traffic_share", "min_duration_hours", "min_volume"]
SUCCESS_COLUMNS = ["metric", "comparator", "target"]
EDITABLE_STATES = (ReleaseState.DRAFT, ReleaseState.IN_REVIEW)


def note_tables(note: RolloutNote | None) -> dict[str, pd.DataFrame]:
    """Return the note's stop rules, stages and success metrics as editable tables (defaults when none)."""
    if note is None:
        rules = [StopRule(name="p95 latency", metric="latency_p95_ms", comparator=">", threshold=150,
                          window_minutes=60, min_volume=100, failure_limit=2)]
        stages = [{"stage": s.value, "traffic_share": share, "min_duration_hours": hours, "min_volume": vol}
                  for s, share, hours, vol in ((Stage.SHADOW, 0.0, 24, 5000), (Stage.CANARY, 0.05, 48, 5000),
                                               (Stage.RAMP, 0.2, 48, 20000), (Stage.FULL, 1.0, 0, 0))]
        success = [{"metric": "recall", "comparator": ">=", "target": 0.5}]
    else:
        rules = note.stop_rules
        stages = [s.model_dump(mode="json") for s in note.stages]
        success = [s.model_dump(mode="json") for s in note.success_metrics]
    return {"stop_rules": pd.DataFrame([{k: r.model_dump(mode="json")[k] for k in STOP_RULE_COLUMNS} for r in rules],
                                       columns=STOP_RULE_COLUMNS),
            "stages": pd.DataFrame(stages, columns=STAGE_COLUMNS),
            "success_metrics": pd.DataFrame(success, columns=SUCCESS_COLUMNS)}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.dropna(how="all")
    out = []
    for row in clean.to_dict(orient="records"):
        item = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and pd.isna(v)):
                continue
            item[k] = v.item() if hasattr(v, "item") else v
        out.append(item)
    return out


def build_note(*, model: str, candidate: str, baseline: str | None, release_object: str, release_owner: str,
               max_traffic_share: float, excluded_segments: list[str], fallback_serving: str,
               fallback_description: str, fallback_tested: bool, fallback_evidence: str, stop_rules: pd.DataFrame,
               stages: pd.DataFrame, success_metrics: pd.DataFrame, user: User, now: datetime) -> RolloutNote:
    """Validate a note from form fields and edited tables; every problem names its field."""
    body = {
        "kind": "rollout_note", "model": model, "created_by": user.email, "created_at": now, "candidate": candidate,
        "baseline": baseline, "release_object": release_object.strip(), "release_owner": release_owner.strip(),
        "success_metrics": _records(success_metrics),
        "blast_radius": {"max_traffic_share": max_traffic_share, "excluded_segments": excluded_segments},
        "stop_rules": _records(stop_rules),
        "fallback": {"serving": fallback_serving, "description": fallback_description, "tested": fallback_tested,
                     "test_evidence": fallback_evidence},
        "stages": _records(stages),
    }
    try:
        return RolloutNote.model_validate(body)
    except ValidationError as exc:
        raise IngestError(validation_problems(exc)) from None


def save_note(store: Store, user: User, note: RolloutNote, now: datetime, release_id: str | None = None,
              title: str = "") -> Release:
    """Store the note and attach it to its release (opening a draft release when none is given)."""
    if not user.holds(note.model, Role.PRODUCT):
        raise PermissionError(f"{user.email} is not the Product owner of '{note.model}': the rollout note is theirs")
    if release_id is None:
        if not title.strip():
            raise IngestError([("title", "name the release")])
        slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")[:60] or "release"
        store.put_artifact(note, user.email, now)
        policy = store.policy(note.model)
        return store.create_release(Release(
            id=f"{note.model}-{slug}", model=note.model, title=title.strip(), candidate=note.candidate,
            baseline=note.baseline, rollout_note=note.digest, policy_version=policy.version, created_by=user.email,
            created_at=now, serving=note.baseline), user.email)
    release = store.release(release_id)
    if release.state not in EDITABLE_STATES:
        raise PermissionError(f"release '{release_id}' is {release.state.value}: its note can no longer change")
    if note.candidate != release.candidate:
        raise IngestError([("candidate", "the note must describe the release's candidate")])
    store.put_artifact(note, user.email, now)
    return store.update_release(release.model_copy(update={"rollout_note": note.digest}), release.version,
                                user.email, "release.note", {"note": note.digest, "previous": release.rollout_note},
                                now)
