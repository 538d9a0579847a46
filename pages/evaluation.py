"""Evaluation: candidate vs baseline per segment with bootstrap intervals, forest plot, reliability diagrams, shift checks, regression suite and the Model owner's sign-off."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Evaluation · " + model.name)
st.info("For the Model owner: candidate vs baseline per segment with bootstrap intervals, forest plot, reliability diagrams, shift checks, regression suite and the Model owner's sign-off. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "evaluation"), key="evaluation_table", hide_index=True, width="stretch")
