"""Datasets: snapshots per model with sources, point-in-time rules, features and quality checks; compare two snapshots; lineage graph; the Data owner's usable/blocked decision."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Datasets · " + model.name)
st.info("For the Data owner: snapshots per model with sources, point-in-time rules, features and quality checks; compare two snapshots; lineage graph; the Data owner's usable/blocked decision. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "datasets"), key="datasets_table", hide_index=True, width="stretch")
