"""Audit log: every state change and decision, chained by hash, verifiable."""

import streamlit as st

import ui
from lifecycle.audit import audit_frame

store = ui.store()
st.title("Audit log")
if st.button("Verify the hash chain", key="audit_verify"):
    ok, reason = store.verify_audit()
    (st.success if ok else st.error)(reason)
subject = st.text_input("Filter by subject (release id, digest, model/alias)", key="audit_subject")
st.dataframe(audit_frame(store, subject.strip() or None), key="audit_table", hide_index=True, width="stretch")
