"""Monitoring: signal windows per stage and arm, stop-rule verdicts, shadow / canary / A-B evidence apart."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Monitoring · " + model.name)
st.info("For the Platform owner: signal windows per stage and arm, stop-rule verdicts, shadow / canary / A-B evidence apart. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "monitoring"), key="monitoring_table", hide_index=True, width="stretch")
