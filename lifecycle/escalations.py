"""Take in escalations and review events, keep the analyst's queue, triage cases and find repeated error groups."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from .feedback import TriggerEvaluation, evaluate_triggers
from .ingest import IngestError, parse_document, validation_problems
from .models import Escalation, EscalationType, Frozen, Role
from .signals import apply_labels
from .store import NotFound, Store, StoreError

MAX_BYTES = 5 * 1024 * 1024
MAX_CASES = 20_000
INGEST_FIELDS = ("case_id", "at", "model", "release", "segment", "type", "score", "decision", "severity", "text",
                 "corrected_label", "request_id")
REQUIRED_FIELDS = ("case_id", "at", "model", "segment", "type", "score", "decision", "severity")
TRIAGE_FIELDS = ("status", "assignee", "error_group", "finding", "triaged_by", "triaged_at")
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
SORTS = {"newest": ("at", False), "oldest": ("at", True), "severity": ("severity_rank", True),
         "score (high first)": ("score", False), "score (low first)": ("score", True)}
TRIAGE_ROLES = (Role.ANALYST, Role.MODEL)
NO_RELEASE = "(no release)"
_ESCALATION = TypeAdapter(Escalation)
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _./:-]{0,79}$")


class IngestOutcome(Frozen):
    """What an escalation upload did: cases stored, labels applied to the live path, trigger rules evaluated."""

    stored: list[str]
    labels_applied: int
    evaluations: list[TriggerEvaluation]

    @property
    def message(self) -> str:
        return (f"{len(self.stored)} case(s) stored; {self.labels_applied} confirmed outcome(s) reached the live path; "
                + "; ".join(f"{e.model}: {e.message}" for e in self.evaluations))


# ---------------------------------------------------------------- ingestion


def _csv_records(text: str) -> list[dict[str, Any]]:
    """Read CSV rows as dicts of text; empty cells are absent; unknown or missing columns are refused."""
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = reader.fieldnames or []
    problems = [(c, "unknown column" + (" (set by triage in Seamline)" if c in TRIAGE_FIELDS else ""))
                for c in header if c not in INGEST_FIELDS]
    problems += [(c, "required column is missing") for c in REQUIRED_FIELDS if c not in header]
    dupes = sorted({c for c in header if header.count(c) > 1})
    problems += [(c, "duplicate column") for c in dupes]
    if problems:
        raise IngestError(problems)
    try:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in reader]
    except csv.Error as exc:
        raise IngestError([("", f"invalid CSV at line {reader.line_num}: {exc}")]) from None
    for i, row in enumerate(rows):
        if None in row:
            raise IngestError([(f"[{i}]", "more cells than columns")])
        for name, kind in (("score", float), ("corrected_label", int)):
            if name in row:
                try:
                    number = kind(row[name])
                except ValueError:
                    raise IngestError([(f"[{i}].{name}", f"'{row[name]}' is not a number")]) from None
                if not math.isfinite(number):
                    raise IngestError([(f"[{i}].{name}", f"'{row[name]}' is not a finite number")])
                row[name] = number
    return rows


def validate_cases(records: Any) -> list[Escalation]:
    """Validate escalation records strictly (no coercion, no unknown or triage fields); problems name the field."""
    items = records if isinstance(records, list) else [records]
    if not items:
        raise IngestError([("", "nothing to ingest: no cases")])
    if len(items) > MAX_CASES:
        raise IngestError([("", f"{len(items):,} cases; the limit is {MAX_CASES:,} per upload")])
    cases, problems, seen = [], [], set()
    for i, item in enumerate(items):
        prefix = f"[{i}]." if isinstance(records, list) else ""
        if not isinstance(item, dict):
            problems.append((prefix.rstrip("."), "a case must be an object"))
            continue
        triage = [k for k in item if k in TRIAGE_FIELDS]
        problems += [(f"{prefix}{k}", "set by triage in Seamline, not on ingestion") for k in triage]
        if triage:
            continue
        try:
            case = _ESCALATION.validate_json(json.dumps(item), strict=True)
        except ValidationError as exc:
            problems += validation_problems(exc, prefix)
            continue
        if case.at.tzinfo is None:  # a time without an offset is UTC, as in the prediction log
            case.at = case.at.replace(tzinfo=timezone.utc)
        if case.case_id in seen:
            problems.append((f"{prefix}case_id", f"'{case.case_id}' appears twice in this upload"))
        seen.add(case.case_id)
        cases.append(case)
    if problems:
        raise IngestError(problems)
    return cases


def parse_escalations(data: str | bytes, fmt: str | None = None) -> list[Escalation]:
    """Parse escalations from CSV or JSON (a case, a list, or {"escalations": [...]}) strictly."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        raise IngestError([("", f"input is {len(raw):,} bytes; the limit is {MAX_BYTES:,}")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError([("", f"input is not UTF-8 ({exc.reason} at byte {exc.start})")]) from None
    fmt = fmt or ("json" if text.lstrip()[:1] in ("{", "[") else "csv")
    if fmt == "csv":
        return validate_cases(_csv_records(text))
    if fmt != "json":
        raise IngestError([("", f"unknown format '{fmt}'; use csv or json")])
    obj = parse_document(raw, "json")
    if isinstance(obj, dict) and set(obj) == {"escalations"}:
        obj = obj["escalations"]
    return validate_cases(obj)


def _check_models(store: Store, cases: list[Escalation]) -> None:
    known = {m.id for m in store.models()}
    problems = [(f"[{i}].model", f"no model '{c.model}'") for i, c in enumerate(cases) if c.model not in known]
    if problems:
        raise IngestError(problems)


def ingest_escalations(store: Store, source: str | bytes | dict | list, actor: str, now: datetime,
                       fmt: str | None = None) -> IngestOutcome:
    """Validate and store escalations all or nothing, send label corrections to the live path, evaluate triggers."""
    cases = validate_cases(source) if isinstance(source, (dict, list)) else parse_escalations(source, fmt)
    _check_models(store, cases)
    try:
        store.put_escalations(cases, actor, now)
    except StoreError as exc:
        raise IngestError([("case_id", str(exc))]) from None
    models = sorted({c.model for c in cases})
    applied = sum(apply_label_corrections(store, m, actor, now) for m in models)
    evaluations = [evaluate_triggers(store, m, now, actor) for m in models]
    return IngestOutcome(stored=[c.case_id for c in cases], labels_applied=applied, evaluations=evaluations)


def add_escalation(store: Store, fields: dict[str, Any], actor: str, now: datetime) -> IngestOutcome:
    """Record one case typed in on the page, through the same validation as an upload (blank fields left out)."""
    record = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()
              if v is not None and v != ""}
    return ingest_escalations(store, [record], actor, now)


# ---------------------------------------------------------------- the queue


class QueueFilter(Frozen):
    """What the analyst's queue shows: empty lists mean any value."""

    model: str
    releases: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)
    statuses: list[str] = Field(default_factory=list)
    error_groups: list[str] = Field(default_factory=list)
    max_age_days: float | None = Field(None, ge=0)
    sort: Literal["newest", "oldest", "severity", "score (high first)", "score (low first)"] = "newest"


def cases_frame(store: Store, model: str, now: datetime) -> pd.DataFrame:
    """Return every case of a model with its age in days and severity rank."""
    frame = store.escalations_frame(model)
    frame["release"] = frame["release"].fillna(NO_RELEASE)
    frame["age_days"] = ((pd.Timestamp(now) - frame["at"]).dt.total_seconds() / 86400).round(1)
    frame["severity_rank"] = frame["severity"].map(SEVERITY_RANK)
    return frame


def queue_frame(store: Store, filt: QueueFilter, now: datetime) -> pd.DataFrame:
    """Return the analyst's queue: the model's cases filtered and sorted as asked."""
    frame = cases_frame(store, filt.model, now)
    for column, wanted in (("release", filt.releases), ("segment", filt.segments), ("type", filt.types),
                           ("severity", filt.severities), ("status", filt.statuses),
                           ("error_group", filt.error_groups)):
        if wanted:
            frame = frame[frame[column].isin(wanted)]
    if filt.max_age_days is not None:
        frame = frame[frame["age_days"] <= filt.max_age_days]
    column, ascending = SORTS[filt.sort]
    frame = frame.sort_values([column, "case_id"], ascending=[ascending, True], kind="stable")
    return frame[["case_id", "at", "age_days", "type", "severity", "status", "segment", "release", "score",
                  "decision", "error_group", "finding", "assignee", "corrected_label", "text"]].reset_index(drop=True)


def case_of(store: Store, model: str, case_id: str) -> Escalation:
    """Return one case of a model, or raise NotFound."""
    found = [c for c in store.escalations(model) if c.case_id == case_id]
    if not found:
        raise NotFound(f"no case '{case_id}' in '{model}'")
    return found[0]


def queue_options(store: Store, model: str) -> dict[str, list[str]]:
    """Return the values each queue filter and the triage form can offer for a model."""
    frame = store.escalations_frame(model)
    values = {c: sorted(frame[c].dropna().astype(str).unique()) for c in ("segment", "error_group")}
    values["release"] = sorted(frame["release"].fillna(NO_RELEASE).astype(str).unique())
    values["type"] = [t.value for t in EscalationType]
    values["severity"] = list(SEVERITY_RANK)
    values["status"] = ["open", "triaged", "closed"]
    values["finding"] = ["model_error", "policy_issue", "data_issue", "not_an_error"]
    team = store.model(model).owners
    values["assignee"] = sorted({p.email for people in team.values() for p in people})
    return values


# ---------------------------------------------------------------- triage


class Triage(Frozen):
    """What a triage sets on each selected case; a field left None is not changed."""

    assignee: str | None = None
    error_group: str | None = None
    finding: Literal["model_error", "policy_issue", "data_issue", "not_an_error"] | None = None
    corrected_label: int | None = Field(None, ge=0, le=1)
    status: Literal["triaged", "closed"] = "triaged"

    @field_validator("error_group", "assignee")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if isinstance(value, str) else value

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class TriageOutcome(Frozen):
    cases: list[str]
    changes: dict[str, Any]
    labels_applied: int
    evaluation: TriggerEvaluation

    @property
    def message(self) -> str:
        return (f"{len(self.cases)} case(s) triaged ({', '.join(f'{k}={v}' for k, v in self.changes.items())}); "
                f"{self.labels_applied} confirmed outcome(s) reached the live path; {self.evaluation.message}")


def may_triage(user, model: str) -> bool:
    """Tell whether a user may triage a model's cases: its Analyst or a Model owner."""
    return any(user.holds(model, role) for role in TRIAGE_ROLES)


def triage_cases(store: Store, user, model: str, case_ids: Sequence[str], triage: Triage,
                 now: datetime) -> TriageOutcome:
    """Triage one or many cases of a model at once, recorded with who and when and audited; then evaluate triggers."""
    if not may_triage(user, model):
        raise PermissionError(f"{user.email} is neither Analyst nor Model owner of '{model}'")
    problems = []
    if not case_ids:
        problems.append(("cases", "select at least one case"))
    changes = triage.changes()
    if set(changes) == {"status"}:
        problems.append(("triage", "set an assignee, error group, finding or corrected label"))
    if triage.error_group is not None and not _GROUP.match(triage.error_group):
        problems.append(("error_group", "1-80 letters, digits, spaces or _ . / : - starting with a letter or digit"))
    team = queue_options(store, model)["assignee"]
    if triage.assignee is not None and triage.assignee not in team:
        problems.append(("assignee", f"'{triage.assignee}' is not in the team of '{model}'"))
    cases = {c.case_id: c for c in store.escalations(model)}
    unknown = [c for c in case_ids if c not in cases]
    if unknown:
        problems.append(("cases", f"no case {', '.join(unknown[:5])} in '{model}'"))
    if problems:
        raise IngestError(problems)
    updated = [cases[c].model_copy(update={**changes, "triaged_by": user.email, "triaged_at": now})
               for c in dict.fromkeys(case_ids)]
    store.update_escalations([Escalation.model_validate(u.model_dump()) for u in updated], user.email,
                             "escalation.triage", {"changes": changes}, now)
    applied = apply_label_corrections(store, model, user.email, now) if triage.corrected_label is not None else 0
    evaluation = evaluate_triggers(store, model, now, user.email)
    return TriageOutcome(cases=[u.case_id for u in updated], changes=changes, labels_applied=applied,
                         evaluation=evaluation)


# ---------------------------------------------------------------- label corrections -> confirmed outcomes


def label_corrections_frame(store: Store, model: str) -> pd.DataFrame:
    """Return the confirmed outcomes from review (case, request, label, who, when) for snapshots and the live path."""
    frame = store.escalations_frame(model)
    frame = frame[frame["corrected_label"].notna()]
    out = pd.DataFrame({"case_id": frame["case_id"], "request_id": frame["request_id"], "at": frame["at"],
                        "segment": frame["segment"], "label": frame["corrected_label"].astype("int64"),
                        "type": frame["type"], "corrected_by": frame["triaged_by"],
                        "corrected_at": frame["triaged_at"]})
    return out.sort_values("case_id").reset_index(drop=True)


def apply_label_corrections(store: Store, model: str, actor: str, now: datetime) -> int:
    """Set corrected labels on the prediction log's requests (confirmed outcomes); return how many changed."""
    labels = label_corrections_frame(store, model)
    labels = labels[labels["request_id"].notna()][["request_id", "label"]]
    if labels.empty:
        return 0
    with store.transaction() as cur:
        changed = apply_labels(cur, labels.astype({"request_id": "string"}))
    if changed:
        store.audit(actor, "labels.apply", model, {"source": "escalation label corrections", "changed": changed},
                    now)
    return changed


# ---------------------------------------------------------------- repeated error groups


def _weekly(ats: pd.Series, now: datetime, weeks: int) -> list[int]:
    age_weeks = ((pd.Timestamp(now) - ats).dt.total_seconds() // (7 * 86400)).astype(int)
    counts = age_weeks[(age_weeks >= 0) & (age_weeks < weeks)].value_counts()
    return [int(counts.get(w, 0)) for w in range(weeks - 1, -1, -1)]


def _direction(trend: list[int]) -> str:
    last, previous = trend[-1], trend[-2] if len(trend) > 1 else 0
    return "growing" if last > previous else "shrinking" if last < previous else "steady"


def error_groups_frame(store: Store, model: str, now: datetime, weeks: int = 4) -> pd.DataFrame:
    """Return error groups by segment with case counts, open and corrected cases, and a weekly trend."""
    frame = cases_frame(store, model, now)
    frame = frame[frame["error_group"].notna()]
    rows = []
    for (group, segment), part in frame.groupby(["error_group", "segment"], sort=True):
        trend = _weekly(part["at"], now, weeks)
        rows.append({"error_group": group, "segment": segment, "cases": len(part),
                     "findings": ", ".join(f"{k} {v}" for k, v in part["finding"].value_counts().items()),
                     "last_7_days": trend[-1], "trend": trend, "direction": _direction(trend),
                     "first_seen": part["at"].min(), "last_seen": part["at"].max()})
    columns = ["error_group", "segment", "cases", "findings", "last_7_days", "trend", "direction", "first_seen",
               "last_seen"]
    return pd.DataFrame(rows, columns=columns).sort_values(["cases", "error_group"], ascending=[False, True],
                                                           ignore_index=True)


def cluster_texts(texts: Sequence[str], distance: float = 0.8) -> np.ndarray:
    """Cluster free texts by TF-IDF (character n-grams) and average-linkage agglomeration on cosine distance.

    Return a label per text (-1 for a text with no usable characters); same texts in the same order, same labels.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    labels = np.full(len(texts), -1)
    usable = np.array([bool(re.search(r"\w\w", t or "")) for t in texts], dtype=bool)
    if usable.sum() == 0:
        return labels
    if usable.sum() == 1:
        labels[usable] = 0
        return labels
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True) \
        .fit_transform([t for t, ok in zip(texts, usable) if ok])
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance, metric="cosine", linkage="average")
    found = model.fit_predict(vectors.toarray())
    # Number clusters by size, then by first appearance, so labels do not depend on scikit-learn's internal order.
    sizes = pd.Series(found).value_counts()
    first = pd.Series(range(len(found))).groupby(found).min()
    order = sorted(sizes.index, key=lambda c: (-sizes[c], first[c]))
    labels[usable] = pd.Series(found).map({c: i for i, c in enumerate(order)}).to_numpy()
    return labels


def _top_terms(texts: Sequence[str], members: np.ndarray, k: int = 4) -> list[list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z-]+\b")
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # only stop words
        return [[] for _ in set(members.tolist())]
    terms = np.array(vectorizer.get_feature_names_out())
    out = []
    for label in range(members.max() + 1):
        weights = np.asarray(matrix[members == label].mean(axis=0)).ravel()
        best = np.argsort(-weights, kind="stable")[:k]
        out.append([str(terms[i]) for i in best if weights[i] > 0])
    return out


def similar_cases_frame(store: Store, filt: QueueFilter, now: datetime, distance: float = 0.8,
                        min_size: int = 2) -> pd.DataFrame:
    """Return repeated mistakes in the queue: clusters of cases whose free text is alike, with counts and trend."""
    frame = queue_frame(store, filt, now).sort_values("case_id", ignore_index=True)
    texts = frame["text"].fillna("").astype(str).tolist()
    labels = cluster_texts(texts, distance)
    frame = frame.assign(cluster=labels)
    frame = frame[frame["cluster"] >= 0]
    terms = _top_terms(frame["text"].astype(str).tolist(), frame["cluster"].to_numpy()) if len(frame) else []
    rows = []
    for label, part in frame.groupby("cluster", sort=True):
        if len(part) < min_size:
            continue
        groups = part["error_group"].dropna().value_counts()
        trend = _weekly(part["at"], now, 4)
        rows.append({"cluster": int(label) + 1, "cases": len(part), "open": int((part["status"] == "open").sum()),
                     "top_terms": ", ".join(terms[label]), "segments": ", ".join(part["segment"].value_counts().index),
                     "error_group": groups.index[0] if len(groups) else "", "trend": trend,
                     "direction": _direction(trend), "example": part["text"].iloc[0],
                     "case_ids": list(part["case_id"])})
    columns = ["cluster", "cases", "open", "top_terms", "segments", "error_group", "trend", "direction", "example",
               "case_ids"]
    return pd.DataFrame(rows, columns=columns)

