"""Backlog: backlog items opened by trigger rules, with their evidence, closed by the artifact that answers them."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Backlog · " + model.name)
st.info("For the owner roles: backlog items opened by trigger rules, with their evidence, closed by the artifact that answers them. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "backlog"), key="backlog_table", hide_index=True, width="stretch")
