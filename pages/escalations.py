"""Escalations: the analyst's queue: filter, triage, bulk-triage and repeated error groups."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Escalations · " + model.name)
st.info("For the Analyst: the analyst's queue: filter, triage, bulk-triage and repeated error groups. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "escalations"), key="escalations_table", hide_index=True, width="stretch")
