"""Release review: the gate checklist, the stop-or-go line, sign-offs bound to digests, the timeline."""

import streamlit as st

import ui
from lifecycle.models import Role, Verdict, short
from lifecycle.releases import (
    DecisionRefused, checklist_frame, decidable_gates, decide, review, serving_at, timeline_frame,
)
from lifecycle.store import StaleVersion

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Release review · {model.name}")
releases = store.releases(model.id)
if not releases:
    st.info("No release for this model yet.")
    st.stop()
release_id = st.selectbox("Release", [r.id for r in releases], key="release_id",
                          format_func=lambda r: f"{r} ({store.release(r).state.value.replace('_', ' ')})")
rv = review(store, release_id, ui.now())
ev, release = rv.evidence, rv.evidence.release
icon = ui.ICONS[rv.verdict]
st.subheader(f"{icon} {ui.plain(release.title)} — {release.state.value.replace('_', ' ')}")
st.markdown(f"**{ui.plain(rv.line)}**")
cols = st.columns(4)
cols[0].metric("Candidate", f"{ev.candidate.name} v{ev.candidate.version}", short(ev.candidate.digest),
               delta_color="off")
cols[1].metric("Baseline", f"v{ev.baseline.version}" if ev.baseline else "none",
               short(ev.baseline.digest) if ev.baseline else None, delta_color="off")
cols[2].metric("Policy", f"v{ev.policy.version}", short(ev.policy.digest), delta_color="off")
cols[3].metric("Serving now", short(release.serving))
if ev.note is not None:
    with st.expander("Rollout note", expanded=False):
        st.markdown(f"**What changes and why:** {ui.plain(ev.note.release_object)}")
        st.markdown(f"**Release owner:** {ui.plain(ev.note.release_owner)} · **blast radius:** "
                    f"{ev.note.blast_radius.max_traffic_share:.0%}")
        st.json(ev.note.model_dump(mode="json"), expanded=False)

st.subheader("Checklist")
for stage in ("before", "during", "after"):
    st.markdown(f"**{stage.title()} rollout**")
    for r in [r for r in rv.results if r.gate.stage.value == stage]:
        ui.show_check(r, title=f"{r.gate.title} · {r.gate.owner_role.label}")
st.dataframe(checklist_frame(rv), key="checklist_table", hide_index=True, width="stretch")

st.subheader("Your decision")
options = decidable_gates(rv, me)
if not options:
    st.caption(f"{ui.plain(me.name)} holds no role that decides on this release ({me.role_labels(model.id)}).")
else:
    labels = {f"{g} · {role.label}": (g, role, vs) for g, role, vs in options}
    picked = st.selectbox("Gate and role", list(labels), key="decision_gate")
    gate_id, role, verdicts = labels[picked]
    verdict = st.radio("Decision", [v.value for v in verdicts], key="decision_verdict", horizontal=True)
    comment = st.text_area("Comment (a waiver needs a reason)", key="decision_comment", max_chars=2000)
    if st.button("Review and confirm…", key="decision_prepare"):
        st.session_state["pending_decision"] = {"release": release_id, "gate": gate_id, "role": role.value,
                                                "verdict": verdict, "comment": comment,
                                                "version": release.version}
pending = st.session_state.get("pending_decision")
if pending and pending["release"] == release_id:
    with st.container(border=True):
        st.markdown(f"You are about to **{pending['verdict']}** gate **{pending['gate']}** of release "
                    f"**{release_id}** as **{Role(pending['role']).label}**, covering:")
        st.table({"artifact": list(ev.covered()), "digest": [short(d) for d in ev.covered().values()]})
        confirm, cancel = st.columns(2)
        if confirm.button("Confirm decision", key="decision_confirm", type="primary"):
            st.session_state.pop("pending_decision")
            try:
                outcome = decide(store, me, release_id, pending["gate"], Role(pending["role"]),
                                 Verdict(pending["verdict"]), pending["comment"], ui.now(),
                                 seen_version=pending["version"])
                st.session_state["decision_message"] = ("success", outcome.message)
            except (DecisionRefused, StaleVersion) as exc:
                st.session_state["decision_message"] = ("error", f"Refused: {exc}")
            st.rerun()
        if cancel.button("Cancel", key="decision_cancel"):
            st.session_state.pop("pending_decision")
            st.rerun()
message = st.session_state.pop("decision_message", None)
if message:
    (st.success if message[0] == "success" else st.error)(ui.plain(message[1]))

st.subheader("Timeline")
st.dataframe(timeline_frame(store, release_id), key="timeline_table", hide_index=True, width="stretch")
with st.expander("What was serving at a given time?"):
    day = st.date_input("Date", value=ui.now().date(), key="serving_date")
    at = ui.now().replace(year=day.year, month=day.month, day=day.day)
    answer = serving_at(store, model.id, at)
    st.markdown(ui.plain(answer.line))
    st.dataframe(answer.decisions_in_force, key="serving_table", width="stretch")
