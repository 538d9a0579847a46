"""Datasets: a model's snapshots with definitions, quality checks, comparison, lineage and the Data owner's decision."""

import streamlit as st

import ui
from lifecycle import datasets, lineage
from lifecycle.models import short
from lifecycle.store import StoreError

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Datasets · {model.name}")
message = st.session_state.pop("datasets_message", None)
if message:
    st.success(ui.plain(message))
st.dataframe(datasets.snapshots_frame(store, model.id), key="datasets_table", hide_index=True, width="stretch")
pick_key = f"datasets_snapshot_{model.id}"

with st.expander("New snapshot from a data file and a YAML manifest", icon=":material/upload_file:"):
    st.caption("The manifest declares model, name, created_by (your email), sources, label, point_in_time, "
               "features and key_columns. The file is checked against it; if anything is wrong, nothing is written.")
    data = st.file_uploader("Data file (Parquet or CSV)", type=["parquet", "csv"], key="datasets_upload_data")
    manifest = st.file_uploader("Manifest (YAML)", type=["yaml", "yml"], key="datasets_upload_manifest")
    if st.button("Check and store", key="datasets_upload_submit", disabled=data is None or manifest is None):
        try:
            created = datasets.create_snapshot_from_upload(store, me, data.getvalue(), data.name,
                                                           manifest.getvalue(), ui.now())
        except (ValueError, PermissionError, StoreError) as exc:
            st.error(f"Refused, nothing was written: {ui.plain(exc)}")
        else:
            st.session_state["datasets_message"] = created.line
            st.session_state[f"datasets_snapshot_{created.model}"] = created.digest
            st.rerun()

choices = datasets.snapshot_choices(store, model.id)
if not choices:
    st.info("No snapshot for this model yet: create one from a data file and its manifest above.")
    st.stop()
digest = st.selectbox("Snapshot", list(choices), format_func=choices.get, key=pick_key)
detail = datasets.snapshot_detail(store, digest)
snap, status = detail.snapshot, detail.status
st.subheader(f"{ui.ICONS.get(status.status, ui.ICONS['pass'])} {ui.plain(snap.name)}")
st.markdown(ui.plain(status.line))
cols = st.columns(4)
cols[0].metric("Rows", f"{snap.row_count:,}")
cols[1].metric("Label rate", "—" if snap.label_rate is None else f"{snap.label_rate:.2%}")
cols[2].metric("Data digest", short(snap.data_digest))
cols[3].metric("As of", f"{snap.point_in_time.as_of:%Y-%m-%d}")
checks, rules, files, compare, lineage_tab, decision = st.tabs(
    ["Quality checks", "Definition", "Files", "Compare", "Lineage", "Decision"])

with checks:
    for check in snap.quality_checks:
        ui.show_check(check)
        sample = datasets.sample_rows(check)
        if sample:
            st.caption(f"Sample of the offending rows ({check.name})")
            st.dataframe(sample, key=f"datasets_sample_{check.name}", hide_index=True, width="stretch")

with rules:
    st.markdown("**Sources**")
    st.dataframe(detail.sources_frame(), key="datasets_sources", hide_index=True, width="stretch")
    st.markdown("**Label and point-in-time rules**")
    st.dataframe(detail.rules_frame(), key="datasets_rules", hide_index=True, width="stretch")
    st.markdown("**Feature definitions**")
    st.dataframe(detail.features_frame(), key="datasets_features", hide_index=True, width="stretch")
    st.markdown("**Schema of the data file(s)**")
    st.dataframe(detail.schema_frame(), key="datasets_schema", hide_index=True, width="stretch")

with files:
    st.markdown(f"Data digest `{snap.data_digest}` over {len(snap.files)} file(s):")
    st.dataframe(detail.files_frame(), key="datasets_files", hide_index=True, width="stretch")
    if st.button("Re-verify files", key="datasets_verify", icon=":material/verified:"):
        ui.show_check(datasets.reverify(store, digest), title="Reproducibility")

with compare:
    left, right = st.columns(2)
    ref, cur = datasets.compare_defaults(list(choices), digest)
    a = left.selectbox("Reference (A)", list(choices), index=ref, format_func=choices.get,
                       key=f"datasets_cmp_a_{digest[:16]}")
    b = right.selectbox("Current (B)", list(choices), index=cur, format_func=choices.get,
                        key=f"datasets_cmp_b_{digest[:16]}")
    if st.button("Compare", key="datasets_compare", icon=":material/compare_arrows:"):
        st.session_state["datasets_comparison"] = datasets.compare(store, a, b)
    cmp = st.session_state.get("datasets_comparison")
    if cmp is not None and (cmp.a, cmp.b) == (a, b):
        st.markdown("\n".join(f"- {ui.plain(line)}" for line in datasets.comparison_lines(cmp)))
        st.markdown("**Schema, feature, source and rule changes**")
        st.dataframe(datasets.changes_frame(cmp), key="datasets_changes", hide_index=True, width="stretch")
        st.markdown("**Distribution shift per feature (PSI; bins from A)**")
        st.dataframe(cmp.shift_frame(), key="datasets_psi", hide_index=True, width="stretch")

with lineage_tab:
    graph = lineage.lineage_graph(store, model.id)
    down = lineage.built_from(store, digest)
    event = st.plotly_chart(lineage.lineage_figure(graph, down.ids), key="datasets_lineage", on_select="rerun",
                            selection_mode="points", width="stretch")
    node = graph.picked(event)
    if node is not None:
        st.markdown(f"**{node.title}** {ui.plain(node.label)} `{node.short}` — {ui.plain(node.detail)}")
        st.page_link(f"pages/{node.page}.py", label=f"Open {node.title.lower()}s", icon=":material/arrow_forward:")
    st.markdown("**What was built from this snapshot?**")
    st.markdown(ui.plain(down.line))
    st.dataframe(down.frame(), key="datasets_downstream", hide_index=True, width="stretch")
    st.markdown("**Where did this entry's data come from?**")
    entries = lineage.entry_choices(store, model.id)
    if entries:
        entry = st.selectbox("Registry entry", list(entries), format_func=entries.get, key=f"datasets_entry_{model.id}")
        origin = lineage.data_origin(store, entry)
        st.markdown(ui.plain(origin.line))
        st.dataframe(origin.steps_frame(), key="datasets_origin_steps", hide_index=True, width="stretch")
        st.dataframe(origin.sources_frame(), key="datasets_origin_sources", hide_index=True, width="stretch")
        st.dataframe(origin.files_frame(), key="datasets_origin_files", hide_index=True, width="stretch")

with decision:
    st.markdown(ui.plain(status.line))
    st.dataframe(detail.decisions_frame(), key="datasets_decisions", hide_index=True, width="stretch")
    st.caption(f"The Data owner marks a snapshot usable or blocked. Your roles here: {me.role_labels(model.id)}.")
    with st.form(key="datasets_decision_form"):
        verdict = st.radio("Decision", datasets.SNAPSHOT_VERDICTS, horizontal=True, key="datasets_verdict")
        comment = st.text_area("Comment (say why when blocking)", key="datasets_comment", max_chars=2000)
        submitted = st.form_submit_button("Record decision", key="datasets_decide", type="primary")
    if submitted:
        try:
            d = datasets.decide_snapshot(store, me, digest, verdict, comment, ui.now())
        except (PermissionError, ValueError, StoreError) as exc:
            st.error(f"Refused, nothing was recorded: {ui.plain(exc)}")
        else:
            st.session_state["datasets_message"] = (f"Recorded: {d.verdict.value} on snapshot {short(d.subject)} "
                                                    f"as {d.role.label}")
            st.rerun()
