"""Draw evaluation figures with plotly: the forest plot of segment deltas and reliability diagrams; no Streamlit."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from .evaluation import HIGHER_IS_BETTER, METRIC_LABELS
from .models import Calibration, EvaluationReport

STATUS_STYLE = {"fail": ("#c62828", "fails the gate"), "inconclusive": ("#9e9e9e", "inconclusive"),
                "warn": ("#ef6c00", "warning"), "pass": ("#2e7d32", "passes")}
MODEL_STYLE = {"candidate": "#1565c0", "baseline": "#90a4ae"}


def forest_figure(report: EvaluationReport, metric: str, selected: str | None = None) -> go.Figure:
    """Draw each segment's delta (candidate - baseline) with its interval; the gate bound dashed, failures in red."""
    label = METRIC_LABELS[metric]
    gated = metric == report.settings.get("gated_metric")
    rows = [s for s in [report.overall, *report.segments] if metric in s.deltas]
    rows.sort(key=lambda s: (s is not report.overall, -s.deltas[metric].estimate))
    order = [s.segment for s in rows][::-1]  # plotly draws the first category at the bottom
    fig = go.Figure()
    for status, (color, name) in STATUS_STYLE.items():
        part = [s for s in rows if s.status.value == status]
        if not part:
            continue
        d = [s.deltas[metric] for s in part]
        fig.add_trace(go.Scatter(
            x=[i.estimate for i in d], y=[s.segment for s in part], mode="markers", name=name,
            error_x={"type": "data", "symmetric": False, "array": [i.high - i.estimate for i in d],
                     "arrayminus": [i.estimate - i.low for i in d], "color": color, "thickness": 2, "width": 4},
            marker={"color": color, "size": [14 if s.segment == selected else 9 for s in part],
                    "line": {"color": "#000000", "width": [2 if s.segment == selected else 0 for s in part]}},
            customdata=[[s.segment, s.candidate.n] for s in part],
            hovertemplate=(f"%{{customdata[0]}}<br>Δ {label} %{{x:+.4f}}<br>n = %{{customdata[1]:,}}"
                           "<extra></extra>")))
    fig.add_vline(x=0, line={"color": "#616161", "width": 1})
    bound = report.settings.get("max_segment_drop")
    if gated and isinstance(bound, (int, float)):
        x = -float(bound) if HIGHER_IS_BETTER[metric] else float(bound)
        fig.add_vline(x=x, line={"color": "#c62828", "dash": "dash", "width": 2},
                      annotation_text=f"gate bound {x:+g}", annotation_position="top")
    better = "higher" if HIGHER_IS_BETTER.get(metric, True) else "lower"
    fig.update_layout(height=max(320, 26 * len(rows) + 120), margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title=f"Δ {label}, candidate − baseline ({better} is better for the candidate)",
                      yaxis={"categoryorder": "array", "categoryarray": order, "automargin": True},
                      legend={"orientation": "h", "y": 1.06}, clickmode="event+select", dragmode=False)
    return fig


def picked_segment(event: Any) -> str | None:
    """Return the segment of the first point selected in the forest plot, if any."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for point in points or []:
        custom = point.get("customdata")
        if custom:
            return str(custom[0])
        if point.get("y") is not None:
            return str(point["y"])
    return None


def reliability_figure(curves: list[Calibration], segment: str) -> go.Figure:
    """Draw observed rate against mean score per bin for each model, with the diagonal of perfect calibration."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"color": "#bdbdbd", "dash": "dot"}, hoverinfo="skip"))
    for curve in curves:
        bins = [b for b in curve.bins if b.count > 0]
        ece = "n/a" if curve.ece is None else f"{curve.ece:.4f}"
        fig.add_trace(go.Scatter(
            x=[b.mean_score for b in bins], y=[b.observed_rate for b in bins], mode="lines+markers",
            name=f"{curve.which} (ECE {ece})", line={"color": MODEL_STYLE[curve.which], "width": 2},
            marker={"size": [max(5.0, min(16.0, 3 + b.count ** 0.5 / 4)) for b in bins]},
            customdata=[[b.low, b.high, b.count] for b in bins],
            hovertemplate=(f"{curve.which}<br>bin [%{{customdata[0]:.3f}}, %{{customdata[1]:.3f}}]<br>mean score "
                           "%{x:.4f}<br>observed rate %{y:.4f}<br>%{customdata[2]:,} rows<extra></extra>")))
    fig.update_layout(title=f"Reliability · {segment}", height=380, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      xaxis={"title": "mean predicted score in bin", "range": [0, 1]},
                      yaxis={"title": "observed positive rate", "range": [0, 1]},
                      legend={"orientation": "h", "y": -0.2})
    return fig
