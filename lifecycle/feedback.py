"""Turn escalations and signals into typed backlog items by the policy's trigger rules, and close the loop."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import pandas as pd
from pydantic import Field

from .ingest import IngestError
from .models import (
    TRIGGER_SIGNALS, BacklogItem, BacklogStatus, CheckStatus, Frozen, ReleasePolicy, RetrainingTrigger, Role,
    TriggerRule, TriggerType, short,
)
from .store import NotFound, Store, StoreError

OPEN = (BacklogStatus.OPEN, BacklogStatus.IN_PROGRESS)
TYPE_TITLES = {TriggerType.REFRESH_DATASET: "Refresh dataset", TriggerType.UPDATE_THRESHOLD: "Update threshold",
               TriggerType.RETRAIN_MODEL: "Retrain model", TriggerType.REVISE_POLICY: "Revise operating policy"}
# What answers an item of each type: (artifact kind, readable name).
RESOLVERS = {TriggerType.REFRESH_DATASET: ("dataset_snapshot", "a new dataset snapshot"),
             TriggerType.RETRAIN_MODEL: ("training_run", "a new training run"),
             TriggerType.UPDATE_THRESHOLD: ("registry_entry", "a registry entry that changes the decision threshold"),
             TriggerType.REVISE_POLICY: ("policy", "a new policy version")}
# The subject kind names the cause, so rules reading the same thing (size and growth of an error group) share one item.
SUBJECT_KIND = {"error_group_size": "error_group", "error_group_growth": "error_group", "override_count": "overrides",
                "label_correction_count": "label_corrections", "complaint_count": "complaints",
                "regulatory_flag": "regulatory", "false_positive_cost": "false_positives", "segment_psi": "psi",
                "outcome_quality_drop": "outcome_quality"}
CASE_SIGNALS = ("error_group_size", "error_group_growth", "override_count", "label_correction_count",
                "complaint_count", "regulatory_flag", "false_positive_cost")
WINDOW_SIGNALS = ("calibration_gap", "disagreement_rate", "fallback_rate", "error_rate", "latency_p95_ms")
SERIES = ["release", "stage", "arm", "segment"]
HISTORY_LIMIT = 50


class Evidence(NamedTuple):
    """What the rules read: escalation cases, signal windows, and PSI per feature from evaluation reports."""

    cases: pd.DataFrame
    windows: pd.DataFrame
    shifts: pd.DataFrame


class RuleVerdict(Frozen):
    """One rule on one subject: fired or not, with the value, the reason and the evidence it used."""

    rule: TriggerRule
    subject: str
    cause: str
    status: CheckStatus = Field(description="fail = the rule fires; pass = quiet; inconclusive = nothing to read")
    value: float | None
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    signals: list[str] = Field(default_factory=list, description="monitoring batches the verdict read")

    @property
    def fired(self) -> bool:
        return self.status == CheckStatus.FAIL

    @property
    def name(self) -> str:
        return f"{self.rule.title} → {self.rule.type.value}"


class BacklogChange(Frozen):
    action: Literal["opened", "updated", "unchanged"]
    item: BacklogItem
    rules: list[str]
    new_cases: list[str] = Field(default_factory=list)


class TriggerEvaluation(Frozen):
    """The outcome of evaluating a model's trigger rules: every verdict and what changed in the backlog."""

    model: str
    at: datetime
    verdicts: list[RuleVerdict]
    changes: list[BacklogChange]

    @property
    def message(self) -> str:
        fired = sum(v.fired for v in self.verdicts)
        counts = {a: sum(c.action == a for c in self.changes) for a in ("opened", "updated", "unchanged")}
        return (f"{len(self.verdicts)} rule verdicts, {fired} fired: {counts['opened']} backlog item(s) opened, "
                f"{counts['updated']} updated with new evidence, {counts['unchanged']} unchanged")


# ---------------------------------------------------------------- pure rule evaluation


def cause_for(rule: TriggerRule, subject: str) -> str:
    """Return the cause key of a rule's subject: one open backlog item per cause."""
    cause = f"{rule.type.value}:{SUBJECT_KIND.get(rule.signal, rule.signal)}:{subject}"
    if len(cause) > 200:
        cause = cause[:183] + "#" + hashlib.sha256(cause.encode()).hexdigest()[:16]
    return cause


def _iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def _drop_closed(frame: pd.DataFrame, rule: TriggerRule, subjects: pd.Series, when: pd.Series,
                 since: dict[str, datetime]) -> pd.DataFrame:
    """Keep rows newer than the last closing of their cause: a closed item restarts its evidence."""
    if frame.empty or not since:
        return frame
    cutoffs = {s: since.get(cause_for(rule, s)) for s in subjects.unique()}
    cutoff = pd.to_datetime(subjects.map(cutoffs), utc=True)
    return frame[cutoff.isna() | (when > cutoff)]


def _verdict(rule: TriggerRule, subject: str, status: CheckStatus, value: float | None, reason: str,
             evidence: dict | None = None, signals: Iterable[str] = (),
             cause_subject: str | None = None) -> RuleVerdict:
    return RuleVerdict(rule=rule, subject=subject, cause=cause_for(rule, cause_subject or subject), status=status,
                       value=value, reason=reason, evidence=evidence or {}, signals=sorted(set(signals)))


def _quiet(rule: TriggerRule, values: pd.Series, what: str, nothing: str) -> list[RuleVerdict]:
    """Return the one pass (or inconclusive) verdict of a rule that fired nowhere, naming its largest value."""
    if values.empty:
        return [_verdict(rule, "-", CheckStatus.INCONCLUSIVE, None, nothing)]
    top = values.idxmax()
    return [_verdict(rule, str(top), CheckStatus.PASS, float(values.max()),
                     f"largest {what}: {values.max():.4g} in {top} (bound {rule.bound:g})")]


def _case_signal(rule: TriggerRule, cases: pd.DataFrame, now: datetime, since: dict) -> list[RuleVerdict]:
    days = timedelta(days=rule.days)
    frame = cases[(cases["at"] > now - days * (2 if rule.signal == "error_group_growth" else 1))
                  & (cases["at"] <= now)]
    sig = rule.signal
    if sig in ("error_group_size", "error_group_growth"):
        frame = frame[frame["error_group"].notna()]
        subjects = frame["error_group"].astype(str) + " in " + frame["segment"].astype(str)
    else:
        if sig == "override_count":
            keep = frame["type"] == "override"
        elif sig == "complaint_count":
            keep = frame["type"] == "complaint"
        elif sig == "regulatory_flag":
            keep = frame["type"] == "regulatory"
        elif sig == "label_correction_count":
            keep = frame["corrected_label"].notna()
        else:  # false_positive_cost: a flagged case confirmed wrong by the label or by triage
            flagged = frame["decision"] == str(rule.params.get("positive_decision", "declined"))
            keep = flagged & ((frame["corrected_label"] == 0) | (frame["finding"] == "model_error"))
        frame = frame[keep.fillna(False).astype(bool)]
        subjects = frame["segment"].astype(str)
    frame = _drop_closed(frame, rule, subjects, frame["at"], since)
    subjects = subjects.loc[frame.index]
    recent = frame["at"] > now - days
    if sig == "error_group_growth":
        per = pd.DataFrame({"subject": subjects, "recent": recent}).groupby("subject")["recent"]
        values = (per.sum() - (per.count() - per.sum())).astype(float)
    else:
        values = subjects.value_counts().astype(float)
        if sig == "false_positive_cost":
            values = values * float(rule.params.get("cost_per_case", 1.0))
    label = {"error_group_size": "error group size", "error_group_growth": "error group growth",
             "false_positive_cost": "false-positive cost"}.get(sig, sig.replace("_", " "))
    fired = values[values >= rule.bound].sort_index() if rule.bound > 0 else values[values > 0].sort_index()
    if fired.empty:
        return _quiet(rule, values, label, f"no cases for {label} in the last {rule.days} days")
    out = []
    for subject, value in fired.items():
        rows = frame[(subjects == subject) & (recent if sig == "error_group_growth" else True)]
        ids = sorted(rows["case_id"].astype(str))
        evidence: dict[str, Any] = {"cases": ids, "value": float(value), "bound": rule.bound, "days": rule.days}
        if sig in ("error_group_size", "error_group_growth"):
            group, segment = subject.split(" in ", 1)
            evidence["error_groups"] = [{"error_group": group, "segment": segment,
                                         "cases": int((subjects == subject).sum())}]
            older = int((subjects == subject).sum()) - len(ids)
            text = (f"error group '{group}' in {segment}: {len(ids)} cases in the last {rule.days} days"
                    + (f" vs {older} in the {rule.days} before (growth {value:g})" if sig == "error_group_growth"
                       else ""))
        else:
            text = f"{label} in {subject}: {value:g} in the last {rule.days} days" + \
                (f" ({len(ids)} cases)" if sig == "false_positive_cost" else "")
        out.append(_verdict(rule, str(subject), CheckStatus.FAIL, float(value), f"{text} ≥ bound {rule.bound:g}",
                            evidence))
    return out


def _psi_signal(rule: TriggerRule, shifts: pd.DataFrame, since: dict) -> list[RuleVerdict]:
    if shifts.empty:
        return [_verdict(rule, "-", CheckStatus.INCONCLUSIVE, None, "no evaluation report with shift checks")]
    newest = shifts.drop_duplicates("report").nlargest(rule.windows, "created_at")["report"]
    frame = shifts[shifts["report"].isin(newest)]
    frame = _drop_closed(frame, rule, frame["feature"], frame["created_at"], since)
    per = frame.groupby("feature")["psi"].agg(["min", "count"])
    held = per[(per["count"] >= rule.windows) & (per["min"] >= rule.bound)]
    if held.empty:
        return _quiet(rule, frame.groupby("feature")["psi"].min(), "PSI", "no shift check to read")
    out = []
    for feature, row in held.sort_index().iterrows():
        rows = frame[frame["feature"] == feature]
        reports = [{"report": r, "psi": round(float(p), 4)} for r, p in zip(rows["report"], rows["psi"])]
        out.append(_verdict(rule, str(feature), CheckStatus.FAIL, float(row["min"]),
                            f"{feature}: PSI ≥ {rule.bound:g} in the newest {rule.windows} evaluation report(s) "
                            f"(lowest {row['min']:.3f})", {"reports": reports, "value": float(row["min"])}))
    return out


def _window_cause(frame: pd.DataFrame) -> pd.Series:
    """Name a window's cause without its arm: both arms hit by one incident make one item."""
    return frame["release"] + " " + frame["stage"] + " " + frame["segment"]


def _eligible_windows(rule: TriggerRule, windows: pd.DataFrame, now: datetime, since: dict,
                      column: str) -> tuple[pd.DataFrame, pd.Series]:
    frame = windows[(windows["end"] > now - timedelta(days=rule.days)) & (windows["end"] <= now)]
    if column not in frame.columns:
        return frame.iloc[0:0], pd.Series(dtype=str)
    frame = frame[frame[column].notna()]
    if "min_volume" in rule.params:
        frame = frame[frame["requests"] >= float(rule.params["min_volume"])]
    if "min_labelled" in rule.params and "labelled" in frame.columns:
        frame = frame[frame["labelled"] >= float(rule.params["min_labelled"])]
    frame = _drop_closed(frame, rule, _window_cause(frame), frame["start"], since).sort_values([*SERIES, "start"])
    subjects = frame["release"] + " " + frame["stage"] + "/" + frame["arm"] + " " + frame["segment"]
    return frame, subjects


def _window_rows(rows: pd.DataFrame, column: str) -> list[dict]:
    return [{"release": r["release"], "stage": r["stage"], "arm": r["arm"], "segment": r["segment"],
             "start": _iso(r["start"]), "end": _iso(r["end"]), "requests": int(r["requests"]),
             column: round(float(r[column]), 6)} for r in rows.to_dict("records")]


def _window_signal(rule: TriggerRule, windows: pd.DataFrame, now: datetime, since: dict) -> list[RuleVerdict]:
    column = rule.signal
    frame, subjects = _eligible_windows(rule, windows, now, since, column)
    if frame.empty:
        return [_verdict(rule, "-", CheckStatus.INCONCLUSIVE, None, f"no signal windows with {column} in the last "
                                                                    f"{rule.days} days")]
    value = frame[column].abs() if column == "calibration_gap" else frame[column]
    fail = value >= rule.bound
    # Runs of consecutive failing windows: a new run starts whenever the series or the fail flag changes.
    run = (fail.ne(fail.shift()) | subjects.ne(subjects.shift())).cumsum()
    runs = pd.DataFrame({"subject": subjects, "run": run, "fail": fail, "value": value})
    lengths = runs[runs["fail"]].groupby(["subject", "run"]).size()
    longest = lengths.groupby(level="subject").max() if not lengths.empty else pd.Series(dtype=float)
    fired = longest[longest >= rule.windows].sort_index()
    if fired.empty:
        if longest.empty:
            return _quiet(rule, value.groupby(subjects).max(), column, "no windows")
        return _quiet(rule, longest.astype(float), f"run of windows with {column} ≥ {rule.bound:g}", "no windows")
    out = []
    for subject, count in fired.items():
        best = lengths.loc[subject].idxmax()
        rows = frame[(subjects == subject) & (run == best)]
        peak = float(value[rows.index].max())
        out.append(_verdict(rule, str(subject), CheckStatus.FAIL, peak,
                            f"{column} ≥ {rule.bound:g} in {count} consecutive windows of {subject} "
                            f"(needs {rule.windows}; peak {peak:.4g})",
                            {"windows": _window_rows(rows, column), "consecutive": int(count), "value": peak},
                            rows["batch"].astype(str) if "batch" in rows else (), _window_cause(rows).iloc[0]))
    return out


def _quality_drop(rule: TriggerRule, windows: pd.DataFrame, now: datetime, since: dict) -> list[RuleVerdict]:
    metric = str(rule.params.get("metric", "precision"))
    frame, subjects = _eligible_windows(rule, windows, now, since, metric)
    frame = frame.assign(subject=subjects)
    n = rule.windows
    sizes = frame.groupby("subject").size()
    frame = frame[frame["subject"].isin(sizes[sizes >= 2 * n].index)]
    if frame.empty:
        return [_verdict(rule, "-", CheckStatus.INCONCLUSIVE, None, f"fewer than {2 * n} windows with confirmed "
                                                                    f"{metric} in any series")]
    weighted = frame.assign(w=frame["labelled"], wm=frame["labelled"] * frame[metric]).groupby("subject")
    first, last = weighted.head(n).groupby("subject"), weighted.tail(n).groupby("subject")
    reference = first["wm"].sum() / first["w"].sum()
    current = last["wm"].sum() / last["w"].sum()
    drop = (reference - current).astype(float)
    fired = drop[drop >= rule.bound].sort_index()
    if fired.empty:
        return _quiet(rule, drop, f"{metric} drop", "no windows")
    out = []
    for subject, value in fired.items():
        rows = pd.concat([weighted.head(n), weighted.tail(n)])
        rows = rows[rows["subject"] == subject]
        out.append(_verdict(rule, str(subject), CheckStatus.FAIL, float(value),
                            f"confirmed {metric} of {subject} fell from {reference[subject]:.3f} (first {n} windows) "
                            f"to {current[subject]:.3f} (last {n}): drop {value:.3f} ≥ {rule.bound:g}",
                            {"windows": _window_rows(rows, metric), "value": float(value)},
                            rows["batch"].astype(str) if "batch" in rows else (), _window_cause(rows).iloc[0]))
    return out


def evaluate_rules(rules: Sequence[TriggerRule], evidence: Evidence, now: datetime,
                   since: dict[str, datetime] | None = None) -> list[RuleVerdict]:
    """Evaluate trigger rules over cases, windows and shift checks; evidence of a cause closed at t counts after t."""
    since = since or {}
    out: list[RuleVerdict] = []
    for rule in rules:
        if rule.signal in CASE_SIGNALS:
            out += _case_signal(rule, evidence.cases, now, since)
        elif rule.signal == "segment_psi":
            out += _psi_signal(rule, evidence.shifts, since)
        elif rule.signal == "outcome_quality_drop":
            out += _quality_drop(rule, evidence.windows, now, since)
        else:
            out += _window_signal(rule, evidence.windows, now, since)
    return out


# ---------------------------------------------------------------- the store side: evidence, backlog items


def gather_evidence(store: Store, model: str) -> Evidence:
    """Read what the rules need from the store: cases, current signal windows, PSI of evaluation reports."""
    shifts = [{"report": digest, "created_at": r.created_at, "feature": c.name.removeprefix("shift: "),
               "psi": float(c.evidence["psi"])}
              for r, digest in ((r, r.digest) for r in store.artifacts(model, "evaluation_report"))
              for c in r.shift_checks if isinstance(c.evidence.get("psi"), (int, float))]
    shift_frame = pd.DataFrame(shifts, columns=["report", "created_at", "feature", "psi"])
    shift_frame["created_at"] = pd.to_datetime(shift_frame["created_at"], utc=True)
    windows = store.signal_windows_frame(model)
    for col in ("start", "end"):
        if col in windows:
            windows[col] = pd.to_datetime(windows[col], utc=True)
    return Evidence(cases=store.escalations_frame(model), windows=windows, shifts=shift_frame)


def _closed_since(items: list[BacklogItem]) -> dict[str, datetime]:
    since: dict[str, datetime] = {}
    for item in items:
        if item.status not in OPEN:
            since[item.cause] = max(since.get(item.cause, item.updated_at), item.updated_at)
    return since


def _merge_evidence(old: dict, verdicts: list[RuleVerdict], now: datetime) -> tuple[dict, list[str], bool]:
    """Return the item's evidence with the new verdicts folded in, the new case ids, and whether anything is new."""
    cases = set(old.get("cases", []))
    windows = {(w["release"], w["stage"], w["arm"], w["segment"], w["start"]): w for w in old.get("windows", [])}
    reports = {r["report"]: r for r in old.get("reports", [])}
    groups = {(g["error_group"], g["segment"]): g for g in old.get("error_groups", [])}
    rules = dict(old.get("rules", {}))
    history = list(old.get("history", []))
    new_cases: set[str] = set()
    changed = False
    for v in verdicts:
        ev = v.evidence
        new_cases |= set(ev.get("cases", [])) - cases
        for w in ev.get("windows", []):
            key = (w["release"], w["stage"], w["arm"], w["segment"], w["start"])
            changed |= key not in windows
            windows[key] = w
        for r in ev.get("reports", []):
            changed |= r["report"] not in reports
            reports[r["report"]] = r
        for g in ev.get("error_groups", []):
            groups[(g["error_group"], g["segment"])] = g
        entry = rules.get(v.rule.id, {"title": v.rule.title, "signal": v.rule.signal, "bound": v.rule.bound,
                                      "subjects": {}})
        changed |= entry.get("subjects", {}).get(v.subject, {}).get("value") != v.value
        entry = {**entry, "bound": v.rule.bound,
                 "subjects": {**entry.get("subjects", {}), v.subject: {"value": v.value, "reason": v.reason,
                                                               "at": now.isoformat()}}}
        rules[v.rule.id] = entry
    changed |= bool(new_cases)
    cases |= new_cases
    if changed:
        history.append({"at": now.isoformat(), "rules": [v.rule.id for v in verdicts],
                        "values": [v.value for v in verdicts], "new_cases": sorted(new_cases)})
    merged = {"cases": sorted(cases), "error_groups": list(groups.values()), "windows": list(windows.values()),
              "reports": list(reports.values()), "rules": rules, "history": history[-HISTORY_LIMIT:]}
    return {k: v for k, v in merged.items() if v}, sorted(new_cases), changed


KIND_TITLES = {"error_group": "error group", "overrides": "manual overrides in", "label_corrections":
               "label corrections in", "complaints": "complaints in", "regulatory": "regulatory notices in",
               "false_positives": "false-positive cost in", "psi": "drift of", "outcome_quality":
               "confirmed-outcome quality of"}


def _title(v: RuleVerdict) -> str:
    """Name an item by its cause, without numbers: the numbers change as evidence arrives, the cause does not."""
    kind = SUBJECT_KIND.get(v.rule.signal, v.rule.signal)
    subject = v.cause.split(":", 2)[-1]
    return f"{TYPE_TITLES[v.rule.type]}: {KIND_TITLES.get(kind, kind.replace('_', ' ') + ' in')} {subject}"[:200]


def evaluate_triggers(store: Store, model: str, now: datetime, actor: str,
                      rules: Sequence[TriggerRule] | None = None) -> TriggerEvaluation:
    """Evaluate the policy's trigger rules for a model; open a backlog item per new cause, add evidence to open ones."""
    rules = store.policy(model).triggers if rules is None else rules
    items = store.backlog(model)
    verdicts = evaluate_rules(rules, gather_evidence(store, model), now, _closed_since(items))
    open_items = {i.cause: i for i in items if i.status in OPEN}
    by_cause: dict[str, list[RuleVerdict]] = {}
    for v in verdicts:
        if v.fired:
            by_cause.setdefault(v.cause, []).append(v)
    changes = []
    for cause, group in by_cause.items():
        old = open_items.get(cause)
        evidence, new_cases, changed = _merge_evidence(old.evidence if old else {}, group, now)
        rule_ids = [v.rule.id for v in group]
        if old is not None and not changed:
            changes.append(BacklogChange(action="unchanged", item=old, rules=rule_ids))
            continue
        triggers = [RetrainingTrigger(model=model, created_by=actor, created_at=now, type=v.rule.type, rule=v.rule.id,
                                      cause=cause, owner_role=v.rule.owner_role, reason=v.reason[:5000],
                                      evidence=v.evidence, signals=v.signals) for v in group]
        store.put_artifacts(triggers, actor, now)
        first = group[0]
        item = store.put_backlog_item(BacklogItem(
            model=model, type=first.rule.type, cause=cause, title=_title(first), owner_role=first.rule.owner_role,
            triggers=[t.digest for t in triggers], evidence=evidence, opened_at=now, updated_at=now), actor)
        changes.append(BacklogChange(action="updated" if old else "opened", item=item, rules=rule_ids,
                                     new_cases=new_cases))
    return TriggerEvaluation(model=model, at=now, verdicts=verdicts, changes=changes)


# ---------------------------------------------------------------- closing the loop


def _resolving_digest(store: Store, item: BacklogItem, ref: str) -> tuple[str, str]:
    """Return (digest, description) of the artifact that answers the item, or raise naming what is wrong."""
    kind, wanted = RESOLVERS[item.type]
    if len(ref) < 8:
        raise IngestError([("resolved_by", "give 8 or more characters of a digest")])
    if kind == "policy":
        latest = store.policy(item.model).version
        for version in range(latest, 0, -1):
            policy = store.policy(item.model, version)
            if policy.digest.startswith(ref.lower()):
                if policy.created_at < item.opened_at:
                    raise IngestError([("resolved_by", f"policy v{version} predates the item (opened "
                                                       f"{item.opened_at:%Y-%m-%d %H:%M}); link {wanted}")])
                return policy.digest, f"policy v{version}"
        raise IngestError([("resolved_by", f"no policy version of '{item.model}' has digest {ref[:12]}…; "
                                           f"a {item.type.value} item is answered by {wanted}")])
    try:
        artifact = store.artifact(ref.lower())
    except NotFound as exc:
        raise IngestError([("resolved_by", str(exc))]) from None
    if artifact.kind != kind:
        raise IngestError([("resolved_by", f"{short(artifact.digest)} is a {artifact.kind}; a {item.type.value} item "
                                           f"is answered by {wanted}")])
    if artifact.model != item.model:
        raise IngestError([("resolved_by", f"{short(artifact.digest)} belongs to '{artifact.model}', not "
                                           f"'{item.model}'")])
    if artifact.created_at < item.opened_at:
        raise IngestError([("resolved_by", f"{short(artifact.digest)} was created {artifact.created_at:%Y-%m-%d} "
                                           f"before the item opened; link {wanted}")])
    if kind == "registry_entry":
        older = [e for e in store.artifacts(item.model, "registry_entry")
                 if e.name == artifact.name and e.version < artifact.version]
        if not older:
            raise IngestError([("resolved_by", f"{artifact.name} v{artifact.version} is the first version: no "
                                               "threshold change to link")])
        previous = max(older, key=lambda e: e.version)
        if previous.decision_threshold == artifact.decision_threshold:
            raise IngestError([("resolved_by", f"{artifact.name} v{artifact.version} keeps the threshold "
                                               f"{artifact.decision_threshold:g} of v{previous.version}")])
        return artifact.digest, (f"{artifact.name} v{artifact.version} (threshold {previous.decision_threshold:g} → "
                                 f"{artifact.decision_threshold:g})")
    return artifact.digest, f"{kind.replace('_', ' ')} {short(artifact.digest)}"


def may_close(user, item: BacklogItem) -> bool:
    """Tell whether a user may close an item: its owner role, or the Product owner who sets priorities."""
    return user.holds(item.model, item.owner_role) or user.holds(item.model, Role.PRODUCT)


def close_item(store: Store, user, item_id: int, now: datetime, resolved_by: str = "", reason: str = "",
               wont_do: bool = False) -> BacklogItem:
    """Close an item by linking the artifact that answers it, or as won't do with a reason; audited."""
    item = store.backlog_item(item_id)
    if item.status not in OPEN:
        raise StoreError(f"backlog item {item_id} is {item.status.value.replace('_', ' ')} already")
    if not may_close(user, item):
        raise PermissionError(f"{user.email} is not {item.owner_role.label} or Product owner of '{item.model}'")
    resolved_by, reason = resolved_by.strip(), reason.strip()
    if wont_do:
        if not reason:
            raise IngestError([("reason", "say why this item will not be done")])
        closed = item.model_copy(update={"status": BacklogStatus.WONT_DO, "close_reason": reason, "updated_at": now})
        return store.update_backlog_item(closed, item.status.value, user.email, "backlog.wont_do",
                                         {"cause": item.cause, "reason": reason}, now)
    if not resolved_by:
        raise IngestError([("resolved_by", f"link {RESOLVERS[item.type][1]} that answers this item, or close it as "
                                           "won't do with a reason")])
    digest, what = _resolving_digest(store, item, resolved_by)
    closed = item.model_copy(update={"status": BacklogStatus.CLOSED, "resolved_by": digest,
                                     "close_reason": reason or f"answered by {what}", "updated_at": now})
    return store.update_backlog_item(closed, item.status.value, user.email, "backlog.close",
                                     {"cause": item.cause, "resolved_by": digest, "artifact": what, "reason": reason},
                                     now)


# ---------------------------------------------------------------- frames for the pages


def backlog_frame(store: Store, model: str, statuses: Sequence[str] = (), roles: Sequence[str] = ()) -> pd.DataFrame:
    """Return a model's backlog items as a table, optionally only some statuses and owner roles."""
    rows = [{"id": i.id, "type": i.type.value, "title": i.title, "owner": i.owner_role.label,
             "status": i.status.value, "cases": len(i.evidence.get("cases", [])),
             "windows": len(i.evidence.get("windows", [])), "rules": ", ".join(i.evidence.get("rules", {})),
             "opened_at": i.opened_at, "updated_at": i.updated_at, "resolved_by": short(i.resolved_by),
             "close_reason": i.close_reason}
            for i in store.backlog(model)
            if (not statuses or i.status.value in statuses) and (not roles or i.owner_role.value in roles)]
    columns = ["id", "type", "title", "owner", "status", "cases", "windows", "rules", "opened_at", "updated_at",
               "resolved_by", "close_reason"]
    return pd.DataFrame(rows, columns=columns)


def item_reasons(item: BacklogItem) -> list[tuple[str, str, str]]:
    """Return (rule title, reason, when it was recorded) of every rule verdict on an item, newest first."""
    out = [(rule["title"], verdict["reason"], verdict["at"][:16].replace("T", " "))
           for rule in item.evidence.get("rules", {}).values() for verdict in rule.get("subjects", {}).values()]
    return sorted(out, key=lambda r: r[2], reverse=True)


def rules_frame(policy: ReleasePolicy) -> pd.DataFrame:
    """Return the policy's trigger rules as a table."""
    return pd.DataFrame([{"id": r.id, "title": r.title, "family": r.family, "signal": r.signal, "bound": r.bound,
                          "windows": r.windows, "days": r.days, "type": r.type.value, "owner": r.owner_role.label,
                          "params": ", ".join(f"{k}={v}" for k, v in r.params.items()),
                          "reads": TRIGGER_SIGNALS[r.signal][1]} for r in policy.triggers])
