"""Describe registry entries: versions with aliases and links up the chain, and side-by-side comparisons."""

from __future__ import annotations

import pandas as pd

from .models import EvaluationReport, Frozen, RegistryEntry, TrainingRun, short
from .store import Store


def entries(store: Store, model: str) -> list[RegistryEntry]:
    """Return a model's registry entries, newest version first."""
    return sorted(store.artifacts(model, "registry_entry"), key=lambda e: -e.version)


def entries_frame(store: Store, model: str) -> pd.DataFrame:
    """Return one row per version: aliases, status, owners, threshold, links up the chain."""
    aliases: dict[str, list[str]] = {}
    for alias, digest in store.aliases(model).items():
        aliases.setdefault(digest, []).append(alias)
    live = {r.candidate: r for r in store.releases(model)}
    rows = []
    for e in entries(store, model):
        run: TrainingRun = store.artifact(e.training_run)
        release = live.get(e.digest)
        rows.append({"version": e.version, "name": e.name, "aliases": ", ".join(sorted(aliases.get(e.digest, []))),
                     "release": f"{release.id} ({release.state.value})" if release else "",
                     "digest": short(e.digest), "estimator": run.estimator, "threshold": e.decision_threshold,
                     "run": short(e.training_run), "snapshot": short(run.snapshot), "evaluation": short(e.evaluation),
                     "artifact": e.artifact_uri, "created_by": e.created_by, "created_at": e.created_at})
    return pd.DataFrame(rows)


class EntryComparison(Frozen):
    a: str
    b: str
    schema_diff: list[dict]
    parameters: list[dict]
    metrics: list[dict]
    contract: list[dict]


def compare_entries(store: Store, a_digest: str, b_digest: str) -> EntryComparison:
    """Compare two versions side by side: input schema, run parameters, headline metrics, data contract."""
    a: RegistryEntry = store.artifact(a_digest)
    b: RegistryEntry = store.artifact(b_digest)
    ra: TrainingRun = store.artifact(a.training_run)
    rb: TrainingRun = store.artifact(b.training_run)
    sa, sb = {c.name: c.dtype for c in a.input_schema}, {c.name: c.dtype for c in b.input_schema}
    schema = [{"column": n, "a": sa.get(n, "—"), "b": sb.get(n, "—"),
               "change": "added" if n not in sa else "removed" if n not in sb else
               "retyped" if sa[n] != sb[n] else ""} for n in sorted(set(sa) | set(sb))]
    pa = {"estimator": ra.estimator, "threshold": a.decision_threshold, **ra.parameters}
    pb = {"estimator": rb.estimator, "threshold": b.decision_threshold, **rb.parameters}
    params = [{"parameter": k, "a": str(pa.get(k, "—")), "b": str(pb.get(k, "—")),
               "changed": pa.get(k) != pb.get(k)} for k in sorted(set(pa) | set(pb))]
    metrics = []
    for name in sorted(set(ra.validation_metrics) | set(rb.validation_metrics)):
        va, vb = ra.validation_metrics.get(name), rb.validation_metrics.get(name)
        metrics.append({"metric": f"validation {name}", "a": va, "b": vb,
                        "delta": None if va is None or vb is None else vb - va})
    for entry, col in ((a, "a"), (b, "b")):
        if entry.evaluation:
            report: EvaluationReport = store.artifact(entry.evaluation)
            metrics.append({"metric": f"evaluation AUC ({col}'s report, candidate)", "a": None, "b": None,
                            col: report.overall.candidate.roc_auc, "delta": None})
    ca, cb = a.data_contract, b.data_contract
    contract = [{"feature": f, "a": f"{ca.ranges[f].min:g}..{ca.ranges[f].max:g}" if f in ca.ranges else "—",
                 "b": f"{cb.ranges[f].min:g}..{cb.ranges[f].max:g}" if f in cb.ranges else "—"}
                for f in sorted(set(ca.ranges) | set(cb.ranges))]
    contract += [{"feature": f, "a": ", ".join(ca.categories.get(f, [])) or "—",
                  "b": ", ".join(cb.categories.get(f, [])) or "—"} for f in sorted(set(ca.categories) | set(cb.categories))]
    return EntryComparison(a=a.digest, b=b.digest, schema_diff=schema, parameters=params, metrics=metrics,
                           contract=contract)
