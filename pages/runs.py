"""Training runs: runs with their spec, environment, experiment-log curves and the comparison against the baseline run."""

import streamlit as st

import ui
from lifecycle.summary import artifact_frame

model = ui.model()
st.title("Training runs · " + model.name)
st.info("For the Model owner: runs with their spec, environment, experiment-log curves and the comparison against the baseline run. This screen is being built; below is what the store holds today.")
st.dataframe(artifact_frame(ui.store(), model.id, "runs"), key="runs_table", hide_index=True, width="stretch")
