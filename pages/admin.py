"""API tokens: a Platform owner creates a pipeline's token (shown once) and revokes it."""

import streamlit as st

import ui
from lifecycle.models import TokenScope
from lifecycle.store import StoreError
from lifecycle.tokens import TokenRefused, create_token, may_manage_tokens, revoke_token, tokens_frame

store, me, model = ui.store(), ui.user(), ui.model()
st.title("API tokens")
st.caption("Pipelines submit artifacts, signals and escalations to `/api/v1/` with `Authorization: Bearer <token>`. "
           "A token is scoped to one model and to what it may submit; only its hash is stored.")
if not may_manage_tokens(me, model.id):
    st.warning(f"Only a Platform owner of {ui.plain(model.name)} manages API tokens; you hold: "
               f"{ui.plain(me.role_labels(model.id))}.")
    st.stop()

issued = st.session_state.pop("_issued_token", None)
if issued:
    st.success(f"Token **{ui.plain(issued['name'])}** created. Copy it now: it is shown once and never stored.")
    st.code(issued["secret"], language=None)

with st.form("token_create", clear_on_submit=True):
    name = st.text_input("Name (recorded as the actor in the audit log)", key="token_name")
    scopes = st.multiselect("May submit", [s.value for s in TokenScope], default=["artifacts"], key="token_scopes")
    if st.form_submit_button("Create token"):
        try:
            result = create_token(store, me, name, model.id, scopes, ui.now())
        except (ValueError, TokenRefused, StoreError) as exc:
            ui.error(exc)
        else:
            st.session_state["_issued_token"] = {"name": result.token.name, "secret": result.secret}
            st.rerun()

frame = tokens_frame(store, model.id)
st.subheader("Tokens")
st.dataframe(frame, key="token_table", hide_index=True, width="stretch")
active = frame.loc[frame["status"] == "active", "name"].tolist()
if active:
    target = st.selectbox("Token to revoke", active, key="token_revoke_name")
    if st.button("Revoke", key="token_revoke"):
        try:
            revoke_token(store, me, target, ui.now())
        except (TokenRefused, StoreError) as exc:
            ui.error(exc)
        else:
            st.toast(f"Token {ui.plain(target)} revoked.")
            st.rerun()
