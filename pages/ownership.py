"""Ownership: who owns which seam, which decisions they make, and what breaks without them."""

import streamlit as st

import ui
from lifecycle.ownership import ownership_frame

model = ui.model()
st.title(f"Ownership · {model.name}")
st.caption(ui.plain(model.description))
st.dataframe(ownership_frame(ui.store(), model.id), key="ownership_table", hide_index=True, width="stretch")
