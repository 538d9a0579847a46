"""Seamline's Streamlit entry: page config, demo build, identity, model selector, navigation."""

import streamlit as st

import ui

PAGES = {
    "Overview": [
        st.Page("pages/lifecycle_map.py", title="Lifecycle map", icon=":material/account_tree:", url_path="map", default=True),
        st.Page("pages/ownership.py", title="Ownership", icon=":material/groups:", url_path="ownership"),
    ],
    "Data": [st.Page("pages/datasets.py", title="Datasets", icon=":material/dataset:", url_path="datasets")],
    "Model": [
        st.Page("pages/runs.py", title="Training runs", icon=":material/model_training:", url_path="runs"),
        st.Page("pages/evaluation.py", title="Evaluation", icon=":material/query_stats:", url_path="evaluation"),
    ],
    "Release": [
        st.Page("pages/registry.py", title="Registry", icon=":material/inventory_2:", url_path="registry"),
        st.Page("pages/release.py", title="Release review", icon=":material/fact_check:", url_path="release"),
        st.Page("pages/rollout_note.py", title="Rollout note", icon=":material/edit_note:", url_path="rollout-note"),
        st.Page("pages/policy.py", title="Release policy", icon=":material/policy:", url_path="policy"),
        st.Page("pages/ingest.py", title="Ingest artifacts", icon=":material/upload_file:", url_path="ingest"),
        st.Page("pages/audit.py", title="Audit log", icon=":material/link:", url_path="audit"),
    ],
    "Live": [st.Page("pages/monitoring.py", title="Monitoring", icon=":material/monitoring:", url_path="monitoring")],
    "Feedback": [
        st.Page("pages/escalations.py", title="Escalations", icon=":material/flag:", url_path="escalations"),
        st.Page("pages/backlog.py", title="Backlog", icon=":material/autorenew:", url_path="backlog"),
    ],
    "Admin": [st.Page("pages/admin.py", title="API tokens", icon=":material/key:", url_path="admin")],
}

st.set_page_config(page_title="Seamline", page_icon=":material/linear_scale:", layout="wide")
if ui.auth_configured():  # sign-in first: an anonymous visitor builds nothing
    st.session_state["_user"] = ui.current_user()
    ui.ensure_demo()
else:  # the demo identities come from the demo store
    ui.ensure_demo()
    st.session_state["_user"] = ui.current_user()
st.session_state["_model"] = ui.select_model()
navigation = st.navigation(PAGES)
with st.sidebar:
    me = st.session_state["_user"]
    st.caption(f"Your roles on this model: {ui.plain(me.role_labels(st.session_state['_model'].id))}")
    ui.clock_notice()
navigation.run()
