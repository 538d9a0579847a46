"""Backlog: typed items opened by trigger rules, with their evidence, closed only by the artifact that answers them."""

import streamlit as st

import ui
from lifecycle.feedback import (
    RESOLVERS, TYPE_TITLES, backlog_frame, close_item, evaluate_triggers, item_reasons, may_close, rules_frame,
)
from lifecycle.ingest import IngestError
from lifecycle.models import BacklogStatus, Role, short
from lifecycle.store import StoreError

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Backlog · {model.name}")
st.caption("Trigger rules of the policy turn review, quality, incident and business signals into typed items. An "
           "item closes only by linking the artifact that answers it, or as won't do with a reason.")
message = st.session_state.pop("bl_message", None)
if message:
    (st.success if message[0] == "ok" else st.error)(ui.plain(message[1]))

cols = st.columns([2, 2, 1.3])
statuses = cols[0].multiselect("Status", [s.value for s in BacklogStatus], default=["open", "in_progress"],
                               key="bl_status")
roles = cols[1].multiselect("Owner role", [r.value for r in Role], format_func=lambda r: Role(r).label,
                            key="bl_role")
if cols[2].button("Evaluate trigger rules now", key="bl_evaluate", icon=":material/bolt:"):
    st.session_state["bl_evaluation"] = evaluate_triggers(store, model.id, ui.now(), me.email)
evaluation = st.session_state.get("bl_evaluation")
if evaluation is not None and evaluation.model == model.id:
    with st.expander(ui.plain(evaluation.message), expanded=True):
        for verdict in evaluation.verdicts:
            ui.show_check(verdict)

frame = backlog_frame(store, model.id, statuses, roles)
st.dataframe(frame, key="bl_table", hide_index=True, width="stretch")
if frame.empty:
    st.info("No backlog item matches these filters.")
else:
    titles = dict(zip(frame["id"], frame["title"]))
    item_id = st.selectbox("Item", list(titles), key="bl_item", format_func=lambda i: f"#{i} · {titles[i]}")
    item = store.backlog_item(int(item_id))
    st.subheader(f"#{item.id} {TYPE_TITLES[item.type]} — {item.status.value.replace('_', ' ')}")
    st.markdown(f"**Owner:** {item.owner_role.label} · **cause:** {ui.plain(item.cause)} · opened "
                f"{item.opened_at:%Y-%m-%d %H:%M}, updated {item.updated_at:%Y-%m-%d %H:%M} UTC")
    for title, reason, at in item_reasons(item):
        st.markdown(f"{ui.ICONS['fail']} **{ui.plain(title)}** fired — {ui.plain(reason)} (as of {at} UTC)")
    evidence = item.evidence
    if evidence.get("cases"):
        st.markdown(f"**Escalation cases ({len(evidence['cases'])}):** " + ui.plain(", ".join(evidence["cases"])))
    for key, label in (("error_groups", "Error groups"), ("windows", "Signal windows"), ("reports", "Reports")):
        if evidence.get(key):
            st.markdown(f"**{label}**")
            st.dataframe(evidence[key], key=f"bl_ev_{key}", hide_index=True, width="stretch")
    with st.expander("Trigger artifacts and history"):
        st.json({"triggers": item.triggers, "history": evidence.get("history", [])}, expanded=False)
    if item.resolved_by:
        st.markdown(f":green[:material/check_circle:] **Loop closed by** `{short(item.resolved_by)}` — "
                    f"{ui.plain(item.close_reason)}")
    elif item.status == BacklogStatus.WONT_DO:
        st.markdown(f"**Won't do:** {ui.plain(item.close_reason)}")
    elif not may_close(me, item):
        st.caption(f"Closing needs the {item.owner_role.label} or the Product owner.")
    else:
        st.markdown(f"**Close the loop** — answered by {RESOLVERS[item.type][1]}")
        resolved_by = st.text_input("Digest of the resolving artifact (8+ characters)", key="bl_resolved_by")
        reason = st.text_area("Comment (required to close as won't do)", max_chars=2000, key="bl_reason")
        close, wont = st.columns(2)
        clicked = "close" if close.button("Close with this artifact", key="bl_close", type="primary") else \
            "wont" if wont.button("Close as won't do", key="bl_wont_do") else None
        if clicked:
            try:
                done = close_item(store, me, item.id, ui.now(), resolved_by=resolved_by, reason=reason,
                                  wont_do=clicked == "wont")
                st.session_state["bl_message"] = ("ok", f"Backlog item #{done.id} is {done.status.value}: "
                                                        f"{done.close_reason}")
                st.rerun()
            except (IngestError, StoreError, PermissionError) as exc:
                ui.error(exc)

with st.expander("Trigger rules of the policy"):
    st.dataframe(rules_frame(store.policy(model.id)), key="bl_rules", hide_index=True, width="stretch")
