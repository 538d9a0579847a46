"""Training runs: runs with status and metrics; a run's spec, environment, lineage and experiment log; the
comparison with its baseline run (or any other run); the reproducibility check."""

import streamlit as st

import ui
from lifecycle.models import short
from lifecycle.run_charts import experiment_log_figure
from lifecycle.runs import (
    METRIC_TOLERANCE, RunsError, check_reproducibility, compare_runs, comparison_choices, experiment_log_frame,
    last_check, run_detail, run_labels, runs_frame,
)

model, store = ui.model(), ui.store()
st.title(f"Training runs · {model.name}")
labels = run_labels(store, model.id)
if not labels:
    st.info("No training run for this model yet. Record one with `python -m lifecycle train --spec FILE.yaml`.")
    st.stop()
st.dataframe(runs_frame(store, model.id), key="runs_table", hide_index=True, width="stretch")
pick = st.selectbox("Run", list(labels), key="runs_pick")
detail = run_detail(store, labels[pick])
run = detail.run
st.subheader(ui.plain(detail.title))
cols = st.columns(len(run.validation_metrics) + 1)
for col, (metric, value) in zip(cols, run.validation_metrics.items()):
    col.metric(f"validation {metric}", f"{value:.4f}")
cols[-1].metric("duration", f"{run.duration_s:.1f} s")

# Tabs track which one is open, so the comparison (it scores both models) runs only when asked for.
spec_tab, lineage_tab, log_tab, compare_tab, repro_tab = st.tabs(
    ["Spec and environment", "Lineage", "Experiment log", "Compare", "Reproducibility"], key="runs_tab",
    on_change="rerun")

with spec_tab:
    left, right = st.columns(2)
    with left:
        st.markdown("**Spec** — re-run it with `python -m lifecycle train --spec FILE.yaml`")
        st.code(detail.spec_yaml, language="yaml")
    with right:
        st.markdown("**Environment** — recorded with the run, next to what is installed now")
        st.dataframe(detail.environment, key="runs_environment", hide_index=True, width="stretch")
        if run.stated_limits:
            st.markdown("**Stated limits**")
            for limit in run.stated_limits:
                st.markdown(f"- {ui.plain(limit)}")

with lineage_tab:
    st.dataframe([link.model_dump(exclude={"page"}) for link in detail.lineage], key="runs_lineage",
                 hide_index=True, width="stretch")
    for i, link in enumerate(detail.lineage):
        st.page_link(link.page, label=ui.plain(f"{link.relation}: {link.kind} {link.name} ({short(link.digest)})"),
                     icon=":material/arrow_upward:" if link.direction == "up" else ":material/arrow_downward:")

with log_tab:
    frame = experiment_log_frame(run)
    if frame.empty:
        st.info("This run logged no experiment curve.")
    else:
        st.plotly_chart(experiment_log_figure(frame, detail.step_label), key="runs_curves", width="stretch")
        st.caption(f"Each point is the metric after one {detail.step_label} step, on the training rows and on the "
                   "held-out validation rows.")

with compare_tab:
    choices = comparison_choices(store, run.digest) if compare_tab.open else None
    if choices == {}:
        st.info("This model has no other run to compare with.")
    elif choices:
        other = st.selectbox("Compare with (A, the reference)", list(choices), key=f"runs_compare_{run.digest[:10]}")
        try:
            with st.spinner("Scoring both runs on shared validation rows…"):
                cmp = compare_runs(store, choices[other], run.digest)
        except (RunsError, ValueError) as exc:
            ui.error(exc)
        else:
            st.caption(f"A: {ui.plain(cmp.a_title)}  \nB: {ui.plain(cmp.b_title)} (this run)")
            ui.show_check(cmp.validation, title="Metric deltas on shared validation data")
            st.dataframe(cmp.validation.metrics, key="runs_cmp_metrics", hide_index=True, width="stretch",
                         column_config={"delta": st.column_config.NumberColumn("delta (B − A)", format="%+.4f")})
            params, packages = st.columns(2)
            with params:
                st.markdown("**Parameter diff**")
                st.dataframe(cmp.parameters, key="runs_cmp_params", hide_index=True, width="stretch")
            with packages:
                st.markdown("**Package versions**")
                st.dataframe(cmp.packages, key="runs_cmp_packages", hide_index=True, width="stretch")
            st.markdown("**Data**")
            st.markdown(ui.plain(cmp.data.reason))
            st.dataframe(cmp.data.summary, key="runs_cmp_data", hide_index=True, width="stretch")
            if cmp.data.comparison is not None and cmp.data.comparison.shifts:
                st.dataframe(cmp.data.comparison.shift_frame(), key="runs_cmp_shift", hide_index=True,
                             width="stretch")

with repro_tab:
    st.caption(f"Re-runs the recorded spec on the same snapshot. Passes when the model digest comes back, or when "
               f"the validation metrics agree within {METRIC_TOLERANCE:g} for estimators that are not bit-stable.")
    if st.button("Re-run the spec and check", key="runs_repro", icon=":material/replay:"):
        bar = st.progress(0.0, text="starting")
        try:
            check_reproducibility(store, run.digest, ui.user().email, ui.now(),
                                  progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text))
        except (RunsError, ValueError) as exc:
            ui.error(exc)
        bar.empty()
    last = last_check(store, run.digest)
    if last is None:
        st.info("This run has not been checked yet.")
    else:
        ui.show_check(last.result, title=f"Last check · {last.at:%Y-%m-%d %H:%M} UTC by {last.actor}")
