"""Draw the monitoring page's plotly figures: stop-rule time series, segment x window heatmap, stage timeline."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .models import StopRule

LIVE_STATES = ("shadow", "canary", "ramp", "full")
STATE_COLORS = {"draft": "#bdbdbd", "in_review": "#90a4ae", "approved": "#64b5f6", "shadow": "#9575cd",
                "canary": "#4db6ac", "ramp": "#81c784", "full": "#2e7d32", "promoted": "#1b5e20",
                "halted": "#c62828", "rolled_back": "#6d4c41", "rejected": "#757575"}
FAIL_COLOR = "#c62828"
_PERCENT = {"error_rate", "fallback_rate", "disagreement_rate", "precision", "recall", "positive_rate"}
_LAYOUT = dict(margin={"l": 10, "r": 10, "t": 40, "b": 10}, plot_bgcolor="rgba(0,0,0,0)",
               legend={"orientation": "h", "y": -0.2})


def _naive(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values, utc=True)
    return values.dt.tz_localize(None)


def _axis_format(metric: str) -> dict:
    if metric in _PERCENT:
        return {"tickformat": ".1%"}
    if metric.startswith("latency_"):
        return {"ticksuffix": " ms"}
    return {}


def _threshold_text(rule: StopRule) -> str:
    value = f"{rule.threshold:.1%}" if rule.metric in _PERCENT else f"{rule.threshold:g}"
    return f"stop rule: fails when {rule.metric} {rule.comparator} {value}"


def rule_figure(rule: StopRule, series: pd.DataFrame, stages: pd.DataFrame | None = None,
                highlight: tuple[str, ...] | list[str] = ()) -> go.Figure:
    """Plot a stop rule's metric per window and arm with its threshold: all traffic, plus the highlighted segments.

    Failing windows of any segment are crossed out; `highlight` names the segments that tripped the rule, drawn on
    every arm of their stage so the candidate can be read against the baseline on the same traffic.
    """
    fig = go.Figure()
    frame = series.assign(start=_naive(series["start"])) if not series.empty else series
    if not frame.empty:
        failing_stages = set(frame.loc[frame["status"] == "fail", "stage"])
        for (stage, arm, segment), part in frame.groupby(["stage", "arm", "segment"], sort=True):
            if segment != "all" and not (segment in highlight and stage in failing_stages):
                continue
            reference = (part["status"] == "reference").all()
            part = part.sort_values("start")
            fig.add_trace(go.Scatter(
                x=part["start"], y=part["value"], mode="lines+markers", name=f"{arm} · {segment}",
                line={"dash": "dot" if reference else "solid", "width": 1.5 if reference else 2},
                marker={"size": 4}, customdata=part[["requests", "status", "stage"]].to_numpy(),
                hovertemplate="%{x|%Y-%m-%d %H:%M}<br>%{y}<br>%{customdata[0]} requests · %{customdata[1]} · "
                              "%{customdata[2]}<extra>" + f"{arm} · {segment}" + "</extra>"))
        failing = frame[frame["status"] == "fail"]
        if not failing.empty:
            fig.add_trace(go.Scatter(
                x=failing["start"], y=failing["value"], mode="markers", name="failing window",
                marker={"symbol": "x", "size": 11, "color": FAIL_COLOR, "line": {"width": 1, "color": FAIL_COLOR}},
                customdata=failing[["segment", "requests"]].to_numpy(),
                hovertemplate="%{x|%Y-%m-%d %H:%M}<br>%{y}<br>%{customdata[0]} · %{customdata[1]} requests"
                              "<extra>failing window</extra>"))
    fig.add_hline(y=rule.threshold, line={"color": FAIL_COLOR, "dash": "dash", "width": 1},
                  annotation_text=_threshold_text(rule), annotation_position="top left")
    if stages is not None and not stages.empty and not frame.empty:
        lo, hi = frame["start"].min(), frame["start"].max()
        for row in stages[stages["state"].isin(LIVE_STATES)].to_dict("records"):
            x0, x1 = max(_naive(pd.Series([row["start"]]))[0], lo), min(_naive(pd.Series([row["end"]]))[0], hi)
            if x0 < x1:
                fig.add_vrect(x0=x0, x1=x1, fillcolor=STATE_COLORS[row["state"]], opacity=0.08, line_width=0,
                              annotation_text=row["state"], annotation_position="top left")
    fig.update_layout(title=f"{rule.name} · {rule.window_minutes}-minute windows", height=330,
                      yaxis={"title": rule.metric, **_axis_format(rule.metric)}, **_LAYOUT)
    return fig


def heatmap_frame(windows: pd.DataFrame) -> pd.DataFrame:
    """Pivot judged windows into segment rows x window-start columns of values (the roll-up 'all' last)."""
    if windows.empty:
        return pd.DataFrame()
    frame = windows.assign(start=_naive(windows["start"]))
    several_arms = frame["arm"].nunique() > 1
    frame = frame.assign(row=frame["arm"] + " · " + frame["segment"] if several_arms else frame["segment"])
    table = frame.pivot_table(index="row", columns="start", values="value", aggfunc="first")
    order = sorted(table.index, key=lambda r: (r.endswith("all"), r))
    return table.loc[order]


def heatmap_figure(rule: StopRule, windows: pd.DataFrame) -> go.Figure:
    """Draw segments x windows coloured around the rule's threshold, failing windows crossed out."""
    table = heatmap_frame(windows)
    fig = go.Figure()
    if not table.empty:
        z = table.to_numpy(dtype=float)
        # Passing values stay pale, the threshold is light orange and failing values deepen to red, whichever
        # direction the rule fails in.
        lo = min(float(pd.Series(z.ravel()).min()), rule.threshold)
        hi = max(float(pd.Series(z.ravel()).max()), rule.threshold)
        hi = hi if hi > lo else lo + 1.0
        at = (rule.threshold - lo) / (hi - lo)
        calm, bad = "#dbe9f6", "#b2182b"
        scale = [[0.0, calm], [at, "#fdd9b5"], [1.0, bad]] if rule.comparator in (">", ">=") else \
            [[0.0, bad], [at, "#fdd9b5"], [1.0, calm]]
        fig.add_trace(go.Heatmap(z=z, x=list(table.columns), y=list(table.index), zmin=lo, zmax=hi,
                                 colorscale=scale,
                                 colorbar={"title": rule.metric, **_axis_format(rule.metric)},
                                 hovertemplate="%{y}<br>%{x|%Y-%m-%d %H:%M}<br>%{z}<extra></extra>"))
        failing = windows[windows["status"] == "fail"]
        if not failing.empty:
            several_arms = windows["arm"].nunique() > 1
            rows = failing["arm"] + " · " + failing["segment"] if several_arms else failing["segment"]
            fig.add_trace(go.Scatter(x=_naive(failing["start"]), y=rows, mode="markers", name="failing window",
                                     marker={"symbol": "x", "size": 9, "color": "black"}, hoverinfo="skip"))
    fig.update_layout(title=f"{rule.metric} per segment and window ({_threshold_text(rule)})",
                      height=120 + 40 * max(len(table), 1), **_LAYOUT)
    return fig


def stages_figure(stages: pd.DataFrame) -> go.Figure:
    """Draw the release's states over time as one horizontal band per state."""
    fig = go.Figure()
    for row in stages.to_dict("records"):
        start, end = (_naive(pd.Series([row[k]]))[0] for k in ("start", "end"))
        fig.add_trace(go.Scatter(
            x=[start, end], y=[row["state"], row["state"]], mode="lines", name=row["state"], showlegend=False,
            line={"width": 14, "color": STATE_COLORS.get(row["state"], "#9e9e9e")},
            hovertemplate=f"{row['state']}<br>{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M}<extra></extra>"))
    order = list(dict.fromkeys(stages["state"])) if not stages.empty else []
    fig.update_layout(height=80 + 28 * max(len(order), 1), yaxis={"categoryorder": "array",
                                                                  "categoryarray": order[::-1]}, **_LAYOUT)
    return fig
