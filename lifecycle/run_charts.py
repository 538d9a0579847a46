"""Draw training-run figures with plotly: experiment-log curves per metric and split; no Streamlit."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_STYLE = {"train": {"color": "#90a4ae", "dash": "dot"}, "validation": {"color": "#1565c0", "dash": "solid"}}
METRIC_TITLES = {"roc_auc": "ROC AUC (higher is better)", "log_loss": "log loss (lower is better)",
                 "brier": "Brier score (lower is better)"}


def experiment_log_figure(frame: pd.DataFrame, step_label: str) -> go.Figure:
    """Draw one panel per metric with a train and a validation curve over the logged steps."""
    metrics = list(dict.fromkeys(frame["metric"])) or ["no metric logged"]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_TITLES.get(m, m) for m in metrics],
                        horizontal_spacing=0.08)
    for col, metric in enumerate(metrics, start=1):
        for split, style in SPLIT_STYLE.items():
            part = frame[(frame["metric"] == metric) & (frame["split"] == split)].sort_values("step")
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["step"], y=part["value"], mode="lines+markers", name=split, legendgroup=split,
                showlegend=col == 1, line={"color": style["color"], "dash": style["dash"], "width": 2},
                marker={"size": 5},
                hovertemplate=f"{split}<br>{step_label} %{{x:,}}<br>{metric} %{{y:.4f}}<extra></extra>"),
                row=1, col=col)
        fig.update_xaxes(title_text=step_label, row=1, col=col)
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.25}, hovermode="x unified")
    return fig
