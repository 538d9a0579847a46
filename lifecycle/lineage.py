"""Answer lineage questions over stored digests and draw the lineage graph from sources to releases."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go
from pydantic import Field

from .datasets import SnapshotStatus, snapshot_status
from .models import (
    ARTIFACT_TITLES, Artifact, DatasetSnapshot, EvaluationReport, Frozen, RegistryEntry, Release, TrainingRun,
    short,
)
from .store import NotFound, Store

Relation = Literal["training data", "evaluation data", "baseline's training data"]
TRAINING: Relation = "training data"
EVALUATION: Relation = "evaluation data"
BASELINE: Relation = "baseline's training data"
_RANK = {TRAINING: 0, EVALUATION: 1, BASELINE: 2}
# Lineage fields along which an artifact is derived from its parent. Baseline fields are comparisons, not
# derivations: a candidate is compared with the champion, it is not built from the champion's data.
DERIVED = ("snapshot", "evaluation_snapshot", "candidate_run", "training_run", "evaluation")
COMPARED = ("baseline_run", "baseline")
DOWNSTREAM_KINDS = ("training_run", "evaluation_report", "registry_entry")
WORDS = {"dataset_snapshot": "snapshot", "training_run": "run", "evaluation_report": "evaluation",
         "registry_entry": "entry", "release": "release", "source": "source"}
COLUMNS = ("source", "dataset_snapshot", "training_run", "evaluation_report", "registry_entry", "release")
TITLES = {"source": "Source", **ARTIFACT_TITLES, "release": "Release"}
PAGES = {"source": "datasets", "dataset_snapshot": "datasets", "training_run": "runs",
         "evaluation_report": "evaluation", "registry_entry": "registry", "release": "release"}
COLORS = {"source": "#546e7a", "dataset_snapshot": "#1565c0", "training_run": "#6a1b9a",
          "evaluation_report": "#ef6c00", "registry_entry": "#2e7d32", "release": "#c62828"}


def _describe(artifact: Artifact) -> str:
    if isinstance(artifact, DatasetSnapshot):
        return artifact.name
    if isinstance(artifact, TrainingRun):
        return f"{artifact.estimator} run"
    if isinstance(artifact, EvaluationReport):
        return f"evaluation ({artifact.gate.status.value})"
    if isinstance(artifact, RegistryEntry):
        return f"{artifact.name} v{artifact.version}"
    return artifact.kind


def _release_label(release: Release) -> str:
    return f"{release.id} ({release.state.value.replace('_', ' ')})"


def _typed(store: Store, digest: str, cls: type, what: str) -> tuple[str, Any]:
    """Return (stored digest, artifact) of the right kind; a unique prefix of 8+ characters also works."""
    artifact = store.artifact(digest)
    if not isinstance(artifact, cls):
        raise NotFound(f"{digest[:12]}… is a {TITLES[artifact.kind].lower()}, not a {what}")
    # The stored key is what lineage edges name; use it rather than recomputing the digest.
    return (digest if len(digest) == 64 else artifact.digest), artifact


# ---------------------------------------------------------------- what was built from this snapshot?


class LineageItem(Frozen):
    """One artifact or release downstream of a snapshot, with how it depends on it."""

    kind: str
    id: str = Field(description="digest of an artifact, or a release id")
    label: str
    relation: Relation = Field(description="what the snapshot is to this item")
    via: str = Field(description="the path from the snapshot, hop by hop")
    created_by: str
    created_at: datetime


class Downstream(Frozen):
    """Everything built from one snapshot: runs, evaluations, registry entries and releases."""

    snapshot: str
    name: str
    items: list[LineageItem]
    line: str

    def of_kind(self, kind: str) -> list[LineageItem]:
        """Return the items of one kind (training_run, evaluation_report, registry_entry, release)."""
        return [i for i in self.items if i.kind == kind]

    @property
    def ids(self) -> list[str]:
        """Return the snapshot's digest and every downstream id, for highlighting in the graph."""
        return [self.snapshot, *(i.id for i in self.items)]

    def frame(self) -> pd.DataFrame:
        """Return the items as a table in lifecycle order."""
        return pd.DataFrame([{"kind": TITLES[i.kind], "what": i.label, "id": short(i.id) if i.kind != "release"
                              else i.id, "this snapshot is its": i.relation, "via": i.via,
                              "created_by": i.created_by, "created_at": i.created_at} for i in self.items],
                            columns=["kind", "what", "id", "this snapshot is its", "via", "created_by",
                                     "created_at"])


def built_from(store: Store, snapshot_digest: str) -> Downstream:
    """Answer 'what was built from this snapshot?' by walking stored lineage edges downstream."""
    digest, snap = _typed(store, snapshot_digest, DatasetSnapshot, "dataset snapshot")
    found: dict[str, tuple[Relation, list[str], Artifact]] = {}
    queue: deque[tuple[str, Relation | None, list[str]]] = deque([(digest, None, [f"snapshot {short(digest)}"])])
    while queue:
        parent, relation, path = queue.popleft()
        for child, field in store.children(parent):
            if field in DERIVED:
                rel: Relation = relation or (EVALUATION if field == "evaluation_snapshot" else TRAINING)
            elif field in COMPARED and relation == TRAINING:
                rel = BASELINE
            else:
                continue
            artifact = store.artifact(child)
            if artifact.kind not in DOWNSTREAM_KINDS:
                continue
            if child in found and _RANK[found[child][0]] <= _RANK[rel]:
                continue
            hop = [*path, f"{WORDS[artifact.kind]} {short(child)} ({field})"]
            found[child] = (rel, hop, artifact)
            if rel != BASELINE:
                queue.append((child, rel, hop))
    items = [LineageItem(kind=a.kind, id=d, label=_describe(a), relation=rel, via=" → ".join(hop),
                         created_by=a.created_by, created_at=a.created_at) for d, (rel, hop, a) in found.items()]
    for release in store.releases():
        for field, entry in (("candidate", release.candidate), ("baseline", release.baseline)):
            if entry in found:
                rel = found[entry][0] if field == "candidate" else BASELINE
                hop = [*found[entry][1], f"release {release.id} ({field})"]
                items.append(LineageItem(kind="release", id=release.id, label=_release_label(release), relation=rel,
                                         via=" → ".join(hop), created_by=release.created_by,
                                         created_at=release.created_at))
                break
    order = {k: i for i, k in enumerate(COLUMNS)}
    items.sort(key=lambda i: (order[i.kind], _RANK[i.relation], i.created_at, i.id))
    return Downstream(snapshot=digest, name=snap.name, items=items, line=_downstream_line(digest, snap, items))


def _downstream_line(digest: str, snap: DatasetSnapshot, items: list[LineageItem]) -> str:
    if not items:
        return f"Nothing has been built from snapshot {short(digest)} '{snap.name}' yet"
    parts = []
    for kind in COLUMNS[2:]:
        of_kind = [i for i in items if i.kind == kind]
        if of_kind:
            title = TITLES[kind].lower() + ("s" if len(of_kind) > 1 else "")
            parts.append(f"{len(of_kind)} {title}" + (f" ({', '.join(i.label for i in of_kind)})"
                                                       if kind == "release" else ""))
    uses = sorted({i.relation for i in items}, key=_RANK.get)
    return (f"Built from snapshot {short(digest)} '{snap.name}': " + ", ".join(parts)
            + f"; it is their {' / '.join(uses)}")


# ---------------------------------------------------------------- where did this entry's data come from?


class Origin(Frozen):
    """Where a registry entry's data came from: its run, the run's snapshot, sources and files."""

    entry_digest: str
    entry: RegistryEntry
    run: TrainingRun
    snapshot: DatasetSnapshot
    status: SnapshotStatus
    evaluation: EvaluationReport | None = None
    evaluation_snapshot: DatasetSnapshot | None = None
    line: str

    def _snapshots(self) -> list[tuple[str, str, DatasetSnapshot]]:
        out = [("training", self.run.snapshot, self.snapshot)]
        if self.evaluation is not None and self.evaluation_snapshot is not None:
            out.append(("evaluation", self.evaluation.evaluation_snapshot, self.evaluation_snapshot))
        return out

    def steps_frame(self) -> pd.DataFrame:
        """Return the chain from the entry back to its data, one artifact per row."""
        rows = [("registry entry", self.entry_digest, self.entry), ("training run", self.entry.training_run, self.run),
                ("training snapshot", self.run.snapshot, self.snapshot)]
        if self.evaluation is not None:
            rows.append(("evaluation", self.entry.evaluation, self.evaluation))
            rows.append(("evaluation snapshot", self.evaluation.evaluation_snapshot, self.evaluation_snapshot))
        return pd.DataFrame([{"step": step, "what": _describe(a), "digest": short(d),
                              "created_by": a.created_by, "created_at": a.created_at} for step, d, a in rows],
                            columns=["step", "what", "digest", "created_by", "created_at"])

    def sources_frame(self) -> pd.DataFrame:
        """Return the sources of the training (and evaluation) snapshot."""
        return pd.DataFrame([{"used for": use, "snapshot": short(d), **src.model_dump()}
                             for use, d, s in self._snapshots() for src in s.sources],
                            columns=["used for", "snapshot", "name", "uri", "version", "extracted_at",
                                     "legal_usage"])

    def files_frame(self) -> pd.DataFrame:
        """Return the data files of the training (and evaluation) snapshot with their recorded sha256."""
        return pd.DataFrame([{"used for": use, "snapshot": short(d), **f.model_dump()}
                             for use, d, s in self._snapshots() for f in s.files],
                            columns=["used for", "snapshot", "path", "sha256", "bytes"])


def data_origin(store: Store, entry_digest: str) -> Origin:
    """Answer 'where did this entry's data come from?' by walking stored digests upstream."""
    digest, entry = _typed(store, entry_digest, RegistryEntry, "registry entry")
    run: TrainingRun = store.artifact(entry.training_run)
    snap: DatasetSnapshot = store.artifact(run.snapshot)
    evaluation: EvaluationReport | None = store.artifact(entry.evaluation) if entry.evaluation else None
    eval_snap = store.artifact(evaluation.evaluation_snapshot) if evaluation else None
    status = snapshot_status(store, run.snapshot)
    sources = ", ".join(f"{s.name} {s.version}" for s in snap.sources)
    line = (f"{entry.name} v{entry.version} ({short(digest)}) was trained by run {short(entry.training_run)} "
            f"({run.estimator}, code {run.code_version[:12]}, seed {run.seed}) on snapshot {short(run.snapshot)} "
            f"'{snap.name}': {snap.row_count:,} rows as of {snap.point_in_time.as_of:%Y-%m-%d} from "
            f"{len(snap.sources)} source(s) ({sources}), {len(snap.files)} file(s) with data digest "
            f"{short(snap.data_digest)}. Data owner: {status.status}.")
    if evaluation is not None and eval_snap is not None:
        line += f" Evaluated on snapshot {short(evaluation.evaluation_snapshot)} '{eval_snap.name}'."
    return Origin(entry_digest=digest, entry=entry, run=run, snapshot=snap, status=status, evaluation=evaluation,
                  evaluation_snapshot=eval_snap, line=line)


def entry_choices(store: Store, model: str) -> dict[str, str]:
    """Return {digest: label} of a model's registry entries, newest version first, for a selector."""
    entries = sorted(store.artifacts(model, "registry_entry"), key=lambda e: -e.version)
    aliases: dict[str, list[str]] = {}
    for alias, digest in store.aliases(model).items():
        aliases.setdefault(digest, []).append(alias)
    return {e.digest: f"{e.name} v{e.version} · {short(e.digest)}"
            + (f" ({', '.join(sorted(aliases[e.digest]))})" if e.digest in aliases else "") for e in entries}


# ---------------------------------------------------------------- the graph


class LineageNode(Frozen):
    id: str = Field(description="digest, release id, or 'source:<name>@<version>'")
    kind: Literal["source", "dataset_snapshot", "training_run", "evaluation_report", "registry_entry", "release"]
    label: str
    short: str
    detail: str
    page: str = Field(description="the page (file stem under pages/) that shows this node")
    created_at: datetime | None = None

    @property
    def title(self) -> str:
        """Return the node's kind as a title, e.g. 'Registry entry'."""
        return TITLES[self.kind]


class LineageEdge(Frozen):
    parent: str
    child: str
    field: str
    comparison: bool = Field(description="a baseline comparison rather than a derivation")


class LineageGraph(Frozen):
    """A model's lineage from sources through snapshots, runs, evaluations and entries to releases."""

    model: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]

    def node(self, node_id: str) -> LineageNode | None:
        """Return a node by id, or None."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def picked(self, event: Any) -> LineageNode | None:
        """Return the node a plotly selection event points at, or None when nothing is selected."""
        try:
            points = event["selection"]["points"]
        except (KeyError, TypeError, AttributeError):
            return None
        for point in points or []:
            data = point.get("customdata") if isinstance(point, dict) else None
            node_id = data[0] if isinstance(data, (list, tuple)) and data else data
            if isinstance(node_id, str) and self.node(node_id) is not None:
                return self.node(node_id)
        return None


def lineage_graph(store: Store, model: str) -> LineageGraph:
    """Return a model's lineage graph from stored artifacts, lineage edges and releases."""
    nodes: dict[str, LineageNode] = {}
    edges: list[LineageEdge] = []
    for kind in COLUMNS[1:-1]:
        for a in store.artifacts(model, kind):
            nodes[a.digest] = LineageNode(id=a.digest, kind=a.kind, label=_describe(a), short=short(a.digest),
                                          detail=f"by {a.created_by} on {a.created_at:%Y-%m-%d}", page=PAGES[a.kind],
                                          created_at=a.created_at)
            if isinstance(a, DatasetSnapshot):
                for src in a.sources:
                    sid = f"source:{src.name}@{src.version}"
                    nodes.setdefault(sid, LineageNode(
                        id=sid, kind="source", label=src.name, short=src.version[:24], page="datasets",
                        detail=f"{src.uri}; extracted {src.extracted_at:%Y-%m-%d}; {src.legal_usage}"[:300],
                        created_at=src.extracted_at))
                    edges.append(LineageEdge(parent=sid, child=a.digest, field="sources", comparison=False))
    for row in store.lineage_frame(model).itertuples(index=False):
        if row.parent in nodes and row.child in nodes:
            edges.append(LineageEdge(parent=row.parent, child=row.child, field=row.field,
                                     comparison=row.field in COMPARED))
    for r in store.releases(model):
        nodes[r.id] = LineageNode(id=r.id, kind="release", label=r.id, short=r.state.value.replace("_", " "),
                                  detail=r.title, page="release", created_at=r.created_at)
        for field, entry in (("candidate", r.candidate), ("baseline", r.baseline)):
            if entry in nodes:
                edges.append(LineageEdge(parent=entry, child=r.id, field=field, comparison=field == "baseline"))
    return LineageGraph(model=model, nodes=list(nodes.values()), edges=edges)


def _layout(graph: LineageGraph) -> dict[str, tuple[int, float]]:
    """Place nodes in one column per kind; order each column by the mean height of its neighbours."""
    column = {k: i for i, k in enumerate(COLUMNS)}
    by_col: dict[int, list[LineageNode]] = {i: [] for i in range(len(COLUMNS))}
    for n in graph.nodes:
        by_col[column[n.kind]].append(n)
    pos: dict[str, tuple[int, float]] = {}

    def place(col: int, key) -> None:
        ordered = sorted(by_col[col], key=key)
        for i, n in enumerate(ordered):
            pos[n.id] = (col, (len(ordered) - 1) / 2 - i)

    def mean_y(node_id: str, ids: Iterable[str]) -> float:
        ys = [pos[i][1] for i in ids if i in pos]
        return -sum(ys) / len(ys) if ys else 0.0

    place(1, lambda n: (n.created_at, n.id))
    children = {n.id: [e.child for e in graph.edges if e.parent == n.id] for n in by_col[0]}
    place(0, lambda n: (mean_y(n.id, children[n.id]), n.label))
    for col in range(2, len(COLUMNS)):
        parents = {n.id: [e.parent for e in graph.edges if e.child == n.id and not e.comparison]
                   for n in by_col[col]}
        place(col, lambda n: (mean_y(n.id, parents[n.id]), n.created_at, n.id))
    return pos


def _edge_style(edge: LineageEdge, lit: set[str]) -> str:
    if not edge.comparison and edge.parent in lit and edge.child in lit:
        return "highlighted"
    return "baseline comparison" if edge.comparison else "derivation"


def lineage_figure(graph: LineageGraph, highlight: Iterable[str] = ()) -> go.Figure:
    """Draw the lineage graph left to right with short digests; highlighted nodes and their sources stand out."""
    pos = _layout(graph)
    lit = set(highlight)
    lit |= {e.parent for e in graph.edges if e.field == "sources" and e.child in lit}
    fig = go.Figure()
    styles = {"derivation": ("#b0bec5", 1.5, "solid"), "baseline comparison": ("#cfd8dc", 1.5, "dot"),
              "highlighted": ("#1565c0", 3.0, "solid")}
    for style, (color, width, dash) in styles.items():
        xs: list[float | None] = []
        ys: list[float | None] = []
        for e in graph.edges:
            (x0, y0), (x1, y1) = pos[e.parent], pos[e.child]
            # A run's baseline run sits in the same column; that comparison shows through the evaluation.
            if x0 != x1 and _edge_style(e, lit) == style:
                xs += [x0, x1, None]
                ys += [y0, y1, None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=style, hoverinfo="skip",
                                     line={"color": color, "width": width, "dash": dash}))
    for kind in COLUMNS:
        nodes = [n for n in graph.nodes if n.kind == kind]
        if not nodes:
            continue
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in nodes], y=[pos[n.id][1] for n in nodes], mode="markers+text", name=TITLES[kind],
            marker={"size": [20 if n.id in lit else 14 for n in nodes], "color": COLORS[kind],
                    "opacity": [1.0 if not lit or n.id in lit else 0.35 for n in nodes],
                    "line": {"color": "white", "width": 2}},
            text=[f"{n.label[:28]}<br>{n.short}" for n in nodes], textposition="top center",
            textfont={"size": 10}, customdata=[[n.id, TITLES[n.kind], n.short, n.detail[:160]] for n in nodes],
            hovertemplate="<b>%{customdata[1]}</b> %{customdata[2]}<br>%{customdata[3]}<extra></extra>"))
    for i, kind in enumerate(COLUMNS):
        fig.add_annotation(x=i, y=1, yref="paper", yanchor="bottom", showarrow=False, text=f"<b>{TITLES[kind]}</b>",
                           font={"size": 12})
    tallest = max([sum(1 for n in graph.nodes if n.kind == k) for k in COLUMNS] + [1])
    fig.update_layout(height=max(320, 48 * tallest + 110), margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"visible": False, "range": [-0.5, len(COLUMNS) - 0.5]},
                      yaxis={"visible": False}, legend={"orientation": "h", "y": -0.02, "yanchor": "top"},
                      plot_bgcolor="rgba(0,0,0,0)", clickmode="event+select", dragmode=False)
    return fig
