"""Monitoring: a release's live path — stop-rule verdicts and tripped windows, series, heatmap, evidence apart."""

import streamlit as st

import ui
from lifecycle.ingest import IngestError
from lifecycle.models import short
from lifecycle.monitoring import expand, ingest_upload, monitoring_view, promote
from lifecycle.monitoring_charts import heatmap_figure, rule_figure, stages_figure
from lifecycle.releases import DecisionRefused
from lifecycle.store import StoreError

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Monitoring · {model.name}")
releases = store.releases(model.id)
if not releases:
    st.info("No release for this model yet.")
    st.stop()
release_id = st.selectbox("Release", [r.id for r in releases], key="monitoring_release",
                          format_func=lambda r: f"{r} ({store.release(r).state.value.replace('_', ' ')})")
view = monitoring_view(store, release_id, ui.now())
release, head = view.release, view.headline

st.subheader(f"{ui.ICONS[head.status.value]} {ui.plain(release.title)} — {head.name}")
st.markdown(ui.plain(head.reason))
cols = st.columns(4)
cols[0].metric("State", release.state.value.replace("_", " "))
cols[1].metric("Stage", view.stage.value if view.stage else "—")
cols[2].metric("Serving now", short(release.serving), ui.plain(view.serving), delta_color="off")
cols[3].metric("Signal windows", f"{view.windows:,}")
for incident in view.incidents.to_dict("records"):
    st.error(f":material/emergency_home: **Incident {incident['at']:%Y-%m-%d %H:%M} UTC — stop rule "
             f"{ui.plain(incident['rule'])} tripped.** {ui.plain(incident['reason'])}")

message = st.session_state.pop("monitoring_message", None)
if message:
    (st.success if message[0] == "success" else st.error)(ui.plain(message[1]))

st.subheader(f"Stop rules{' · ' + view.stage.value if view.stage else ''}")
if not view.verdicts:
    st.caption("No signal windows for this stage yet: stop rules are judged once windows arrive.")
for check in view.verdicts:
    ui.show_check(check)
if view.earlier:
    with st.expander("Stop rules in earlier stages"):
        for check in view.earlier:
            ui.show_check(check)
if not view.tripped.empty:
    st.markdown("**Tripped windows** — the windows each tripped rule failed on, per segment")
    st.dataframe(view.tripped, key="monitoring_tripped", hide_index=True, width="stretch",
                 column_config={"start": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                                "end": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})

st.subheader("Time series per metric and arm")
st.caption("Solid: arms serving the candidate; dotted: the baseline or control on the same traffic. Dashed red: "
           "the stop rule's threshold; crosses: failing windows.")
for i, chart in enumerate(view.charts):
    st.plotly_chart(rule_figure(chart.rule, chart.series, view.stages, chart.segments), key=f"monitoring_rule_{i}",
                    width="stretch")

if view.rules:
    st.subheader("Segments × windows")
    names = list(view.rules)
    picked = st.selectbox("Stop rule", names, index=names.index(view.heatmap_rule), key="monitoring_heatmap_rule")
    st.plotly_chart(heatmap_figure(view.rules[picked], view.heatmaps[picked]), key="monitoring_heatmap",
                    width="stretch")

st.subheader("Evidence, kept apart")
shadow, canary, ab = st.tabs(["Shadow", "Canary", "A/B"])
with shadow:
    st.caption("The candidate scores real requests but serves none: agreement with the baseline, latency, cost. "
               "No user impact.")
    st.dataframe(view.evidence["shadow"], key="monitoring_shadow", hide_index=True, width="stretch")
with canary:
    st.caption("Guardrails on the traffic share the candidate really serves, beside the baseline arm on the same "
               "traffic.")
    st.dataframe(view.evidence["canary"], key="monitoring_canary", hide_index=True, width="stretch")
with ab:
    st.caption("Effects of the success metrics, treatment minus control, with confidence intervals.")
    if view.effects.empty:
        st.caption("No treatment and control windows yet.")
    else:
        st.dataframe(view.effects, key="monitoring_effects", hide_index=True, width="stretch")
    st.dataframe(view.evidence["ab"], key="monitoring_ab", hide_index=True, width="stretch")

st.subheader("Expansion and promotion")
ui.show_check(view.expansion.check, title="Expansion")
next_stage = view.expansion.next_stage.value if view.expansion.next_stage else "the next stage"
if st.button(f"Expand to {next_stage}", key="monitoring_expand", icon=":material/open_in_full:",
             disabled=view.expansion.check.status.value != "pass"):
    try:
        st.session_state["monitoring_message"] = ("success", expand(store, me, release_id, ui.now()).message)
    except (DecisionRefused, StoreError) as exc:
        st.session_state["monitoring_message"] = ("error", f"Refused: {exc}")
    st.rerun()
ui.show_check(view.promotion, title="Promotion to champion")
if st.button("Promote to champion", key="monitoring_promote", icon=":material/workspace_premium:",
             disabled=view.promotion.status.value != "pass"):
    try:
        st.session_state["monitoring_message"] = ("success", promote(store, me, release_id, ui.now()).message)
    except (DecisionRefused, StoreError) as exc:
        st.session_state["monitoring_message"] = ("error", f"Refused: {exc}")
    st.rerun()

st.subheader("Timeline")
st.plotly_chart(stages_figure(view.stages), key="monitoring_stages", width="stretch")
st.dataframe(view.timeline, key="monitoring_timeline", hide_index=True, width="stretch")

with st.expander("Ingest signals", icon=":material/upload_file:"):
    upload = st.file_uploader("Prediction log (.parquet, .csv), delayed labels (.parquet, .csv) or pre-aggregated "
                              "windows (.json, .yaml)", type=["parquet", "csv", "json", "yaml", "yml"],
                              key="monitoring_upload")
    minutes = st.number_input("Window minutes", min_value=1, max_value=10080, value=60, key="monitoring_minutes")
    labels = st.checkbox("The file holds delayed labels (request_id, label)", key="monitoring_labels")
    if st.button("Ingest", key="monitoring_ingest", disabled=upload is None):
        try:
            result = ingest_upload(store, release_id, upload.name, upload.getvalue(), window_minutes=int(minutes),
                                   labels=labels, actor=me.email, now=ui.now())
            st.session_state["monitoring_message"] = ("success", result.message)
        except (IngestError, StoreError, ValueError) as exc:
            st.session_state["monitoring_message"] = ("error", f"Refused: {exc}")
        st.rerun()
