"""Evaluation: candidate vs baseline per segment with bootstrap intervals, forest plot, reliability diagrams,
shift checks, regression suite, stated limits and the Model owner's sign-off."""

import streamlit as st

import ui
from lifecycle import evaluations as ev
from lifecycle.evaluation import METRIC_LABELS
from lifecycle.evaluation_charts import forest_figure, picked_segment, reliability_figure
from lifecycle.models import short
from lifecycle.store import StoreError

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Evaluation · {model.name}")
if message := st.session_state.pop("evaluation_message", None):
    st.success(ui.plain(message))
runs = ev.run_choices(store, model.id)
if len(runs) < 2:
    st.info("An evaluation compares two training runs; this model has fewer. Record runs on the Training runs page.")
    st.stop()
ids = list(runs)
ci, bi = ev.default_indices(store, model.id, ids)
left, right = st.columns(2)
cand = left.selectbox("Candidate run", ids, index=ci, format_func=runs.get, key=f"evaluation_candidate_{model.id}")
base = right.selectbox("Baseline run", ids, index=bi, format_func=runs.get, key=f"evaluation_baseline_{model.id}")
reports = ev.reports_for(store, model.id, cand, base)
report_key = f"evaluation_report_{cand[:16]}_{base[:16]}"

with st.expander("Compute a new evaluation of these two runs", expanded=not reports, icon=":material/calculate:"):
    snaps = ev.snapshot_choices(store, model.id)
    policy = store.policy(model.id).evaluation
    dflt = ev.compute_defaults(store, model.id, cand, base, list(snaps))
    refs = dflt.references
    st.caption(f"Scores a labelled snapshot with both runs' models, bootstraps with the policy's settings "
               f"(segments: {', '.join(policy.segment_columns) or 'overall only'}); cached by input digests.")
    with st.form(key="evaluation_compute_form"):
        e, r = st.columns(2)
        snap = e.selectbox("Evaluation snapshot", list(snaps), index=dflt.snapshot_index, format_func=snaps.get,
                           key="evaluation_snapshot")
        ref = r.selectbox("Reference window (shift checks)", list(refs), index=dflt.reference_index,
                          format_func=refs.get, key="evaluation_reference")
        a, b, c, d = st.columns(4)
        seed = a.number_input("Seed", 0, ev.MAX_SEED, dflt.seed, key="evaluation_seed")
        boot = b.number_input("Bootstrap resamples", 0, 20000, dflt.bootstrap, step=100, key="evaluation_boot")
        ct = c.number_input("Candidate threshold", 0.0, 1.0, dflt.candidate_threshold, format="%.4f",
                            key="evaluation_cthr")
        bt = d.number_input("Baseline threshold", 0.0, 1.0, dflt.baseline_threshold, format="%.4f",
                            key="evaluation_bthr")
        go = st.form_submit_button("Compute and store", key="evaluation_compute", type="primary", disabled=not snaps)
    if go:
        bar = st.progress(0.0, text="starting")
        try:
            request = ev.make_request(store, model.id, (cand, base), (snap, ref), (ct, bt), int(boot), int(seed))
            done = ev.compute_and_store(store, me, request, ui.now(), progress=lambda f, t: bar.progress(f, text=t))
        except (ValueError, PermissionError, StoreError) as exc:
            st.error(f"Refused, nothing was stored: {ui.plain(exc)}")
        else:
            st.session_state["evaluation_message"] = done.line
            st.session_state["evaluation_pick"] = done.report.digest
            st.rerun()

if not reports:
    st.info("No stored evaluation compares these two runs yet: compute one above.")
    st.stop()
choices = ev.report_choices(store, reports)
if st.session_state.get("evaluation_pick") in choices:  # a report stored in the last run becomes the one shown
    st.session_state[report_key] = st.session_state.pop("evaluation_pick")
digest = st.selectbox("Report", list(choices), format_func=choices.get, key=report_key)
report = next(r for r in reports if r.digest == digest)
ui.show_check(report.gate, title="Segment gate")
signoff = ev.signoff_status(store, report.digest)
st.markdown(f"{ui.ICONS[signoff.icon]} {ui.plain(signoff.line)}")
st.caption(ui.plain(ev.report_caption(store, report)))
seg_tab, shift_tab, suite_tab, limits_tab, sign_tab = st.tabs(
    ["Segments and calibration", "Shift checks", "Regression suite", "Stated limits", "Sign-off"])

with seg_tab:
    metrics, gated = ev.metric_choices(report)
    metric = st.selectbox("Metric", metrics, index=gated, format_func=METRIC_LABELS.get, key="evaluation_metric")
    seg_key, seen_key = f"evaluation_segment_{digest[:16]}", f"evaluation_seen_{digest[:16]}"
    names = ev.segment_names(report)
    if st.session_state.get(seg_key) not in names:
        st.session_state[seg_key] = report.overall.segment
    for name in ev.failing_segments(report):
        st.markdown(f"{ui.ICONS['fail']} {ui.plain(ev.segment_reason(report, name))}")
    event = st.plotly_chart(forest_figure(report, metric, st.session_state[seg_key]), on_select="rerun",
                            key=f"evaluation_forest_{metric}", selection_mode="points", width="stretch")
    frame = ev.segments_frame(report, metric)
    table = st.dataframe(frame, key=f"evaluation_table_{metric}", hide_index=True, width="stretch",
                         on_select="rerun", selection_mode="single-row")
    rows = table["selection"]["rows"] if table else []
    applied = st.session_state.setdefault(seen_key, {})  # a click applies once; the selectbox may change it after
    for source, picked in (("plot", picked_segment(event)), ("table", ev.row_segment(frame, rows))):
        if picked in names and applied.get(source) != picked:
            applied[source] = st.session_state[seg_key] = picked
    one, two = st.columns(2)
    one.download_button("Report (JSON)", ev.report_json(report), f"evaluation-{short(digest)}.json",
                        "application/json", key="evaluation_download_json", icon=":material/download:")
    two.download_button("Segment table (CSV)", ev.segments_csv(report), f"evaluation-{short(digest)}-segments.csv",
                        "text/csv", key="evaluation_download_csv", icon=":material/download:")
    segment = st.selectbox("Segment (or click one in the forest plot or the table)", names, key=seg_key)
    strategy = st.radio("Bins", ["uniform", "quantile"], horizontal=True, key="evaluation_bins",
                        format_func={"uniform": "fixed width", "quantile": "equal mass"}.get)
    st.plotly_chart(reliability_figure(ev.calibration_for(report, segment, strategy), segment),
                    key="evaluation_reliability", width="stretch")
    st.markdown(ui.plain(ev.segment_reason(report, segment)))

for tab, checks, empty in ((shift_tab, report.shift_checks, "No shift checks: no reference window was given."),
                           (suite_tab, report.regression_suite, "The policy names no regression cases.")):
    with tab:
        if not checks:
            st.info(empty)
        for check in checks:
            ui.show_check(check)

with limits_tab:
    st.markdown("\n".join(f"- {ui.plain(x)}" for x in report.limits) or "No stated limits.")
    st.caption("Carried from the candidate's training run. A Model owner's edit stores a new version of the report; "
               "a sign-off binds to the version it was given on.")
    with st.form(key="evaluation_limits_form"):
        text = st.text_area("Stated limits, one per line", "\n".join(report.limits), max_chars=20000,
                            key=f"evaluation_limits_{digest[:16]}")
        revise = st.form_submit_button("Store revised limits", key="evaluation_limits_save")
    if revise:
        try:
            revised = ev.revise_limits(store, me, digest, text, ui.now())
        except (ValueError, PermissionError, StoreError) as exc:
            st.error(f"Refused, nothing was stored: {ui.plain(exc)}")
        else:
            st.session_state["evaluation_message"] = f"Stored report {short(revised.digest)} with revised limits"
            st.session_state["evaluation_pick"] = revised.digest
            st.rerun()

with sign_tab:
    st.dataframe(ev.decisions_frame(store, digest), key="evaluation_decisions", hide_index=True, width="stretch")
    st.caption(f"The Model owner signs off the report, bound to its digest. Your roles: {me.role_labels(model.id)}.")
    with st.form(key="evaluation_signoff_form"):
        verdict = st.radio("Sign-off", ev.SIGNOFF_VERDICTS, horizontal=True, key="evaluation_verdict")
        comment = st.text_area("Comment (say why when rejecting)", key="evaluation_comment", max_chars=2000)
        submitted = st.form_submit_button("Record sign-off", key="evaluation_sign", type="primary")
    if submitted:
        try:
            d = ev.sign_off(store, me, digest, verdict, comment, ui.now())
        except (ValueError, PermissionError, StoreError) as exc:
            st.error(f"Refused, nothing was recorded: {ui.plain(exc)}")
        else:
            st.session_state["evaluation_message"] = (f"Recorded: {d.verdict.value} of evaluation {short(d.subject)} "
                                                      f"as {d.role.label}")
            st.rerun()
