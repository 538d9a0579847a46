"""Registry: model versions with aliases, schemas, contracts and links up the chain; compare two versions."""

import streamlit as st

import ui
from lifecycle.registry import compare_entries, entries, entries_frame

model, store = ui.model(), ui.store()
st.title(f"Registry · {model.name}")
versions = entries(store, model.id)
if not versions:
    st.info("No registry entry for this model yet.")
    st.stop()
st.dataframe(entries_frame(store, model.id), key="registry_table", hide_index=True, width="stretch")
by_label = {f"v{e.version} · {e.digest[:10]}": e for e in versions}
pick = st.selectbox("Entry", list(by_label), key="registry_entry")
entry = by_label[pick]
left, right = st.columns(2)
with left:
    st.markdown("**Input schema**")
    st.dataframe([c.model_dump() for c in entry.input_schema], key="registry_input", width="stretch")
    st.markdown("**Output schema**")
    st.dataframe([c.model_dump() for c in entry.output_schema], key="registry_output", width="stretch")
with right:
    st.markdown("**Data contract**")
    st.json(entry.data_contract.model_dump(mode="json"), expanded=False)
    st.markdown("**Owners, artifact, rollout rules**")
    st.json({"owners": {r.label: p for r, p in entry.owners.items()}, "artifact_uri": entry.artifact_uri,
             "artifact_digest": entry.artifact_digest, "rollout_rules": entry.rollout_rules,
             "training_run": entry.training_run, "evaluation": entry.evaluation}, expanded=False)
if len(versions) >= 2:
    st.subheader("Compare two versions")
    c1, c2 = st.columns(2)
    a = c1.selectbox("A", list(by_label), index=len(by_label) - 1, key="registry_a")
    b = c2.selectbox("B", list(by_label), index=0, key="registry_b")
    cmp = compare_entries(store, by_label[a].digest, by_label[b].digest)
    tabs = st.tabs(["Schema", "Parameters", "Metrics", "Data contract"])
    tabs[0].dataframe(cmp.schema_diff, key="cmp_schema", width="stretch")
    tabs[1].dataframe(cmp.parameters, key="cmp_params", width="stretch")
    tabs[2].dataframe(cmp.metrics, key="cmp_metrics", width="stretch")
    tabs[3].dataframe(cmp.contract, key="cmp_contract", width="stretch")
