"""Build the plotly figures the pages show; data in, figure out, no Streamlit."""

from __future__ import annotations

import plotly.graph_objects as go

from .chain import LifecycleMap
from .models import short

STATUS_COLORS = {"present": "#2e7d32", "missing": "#9e9e9e", "failing check": "#c62828",
                 "awaiting decision": "#f9a825", "blocked": "#6a1b9a"}


def lifecycle_figure(lmap: LifecycleMap) -> go.Figure:
    """Draw the seven artifacts as one chain, coloured by status, with digest and owner role."""
    xs = list(range(len(lmap.links)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[0] * len(xs), mode="lines", line={"color": "#bdbdbd", "width": 4},
                             hoverinfo="skip", showlegend=False))
    for status, color in STATUS_COLORS.items():
        pts = [link for link in lmap.links if link.status == status]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[link.step - 1 for link in pts], y=[0] * len(pts), mode="markers+text", name=status,
            marker={"size": 46, "color": color, "line": {"color": "white", "width": 3}},
            text=[str(link.step) for link in pts], textfont={"color": "white", "size": 16},
            customdata=[[link.title, short(link.digest), link.owner_role.label, link.status, link.detail[:160]]
                        for link in pts],
            hovertemplate="<b>%{customdata[0]}</b><br>digest %{customdata[1]}<br>owner: %{customdata[2]}"
                          "<br>%{customdata[3]}<br>%{customdata[4]}<extra></extra>"))
    for link in lmap.links:
        fig.add_annotation(x=link.step - 1, y=-0.55, showarrow=False, align="center",
                           text=f"<b>{link.title}</b><br>{short(link.digest)}<br>{link.owner_role.label}",
                           font={"size": 11})
    fig.update_layout(height=260, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"visible": False, "range": [-0.6, len(xs) - 0.4]},
                      yaxis={"visible": False, "range": [-1.0, 0.5]},
                      legend={"orientation": "h", "y": 1.15}, plot_bgcolor="rgba(0,0,0,0)")
    return fig
