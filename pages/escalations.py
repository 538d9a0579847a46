"""Escalations: the analyst's queue — filter, open a case, triage one or many, and find repeated error groups."""

import streamlit as st

import ui
from lifecycle.escalations import (
    SORTS, QueueFilter, Triage, add_escalation, case_of, error_groups_frame, ingest_escalations, may_triage,
    queue_frame, queue_options, similar_cases_frame, triage_cases,
)
from lifecycle.ingest import IngestError

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Escalations · {model.name}")
opts = queue_options(store, model.id)


def _report(outcome) -> None:
    st.session_state["esc_message"] = outcome.message
    evaluations = getattr(outcome, "evaluations", None) or [outcome.evaluation]
    st.session_state["esc_changes"] = [f"{c.action} backlog #{c.item.id} — {c.item.title}"
                                       for e in evaluations for c in e.changes if c.action != "unchanged"]


def _refused(exc: Exception) -> None:
    problems = getattr(exc, "problems", None) or [("", str(exc))]
    lines = [f"`{path or '(input)'}`: {ui.plain(msg)}" for path, msg in problems]
    st.error("Refused; nothing was written:  \n" + "  \n".join(lines))


message = st.session_state.pop("esc_message", None)
if message:
    st.success(ui.plain(message))
    for line in st.session_state.pop("esc_changes", []):
        st.markdown(f":material/autorenew: {ui.plain(line)}")

queue_tab, groups_tab, add_tab = st.tabs(["Queue", "Repeated error groups", "Add cases"])
with queue_tab:
    cols = st.columns(4)
    segments = cols[0].multiselect("Segment", opts["segment"], key="esc_f_segment")
    types = cols[1].multiselect("Type", opts["type"], key="esc_f_type")
    severities = cols[2].multiselect("Severity", opts["severity"], key="esc_f_severity")
    statuses = cols[3].multiselect("Status", opts["status"], key="esc_f_status")
    cols = st.columns(4)
    releases = cols[0].multiselect("Release", opts["release"], key="esc_f_release")
    groups = cols[1].multiselect("Error group", opts["error_group"], key="esc_f_group")
    max_age = cols[2].number_input("Max age (days)", min_value=0, value=None, step=1, key="esc_f_age")
    sort = cols[3].selectbox("Sort", list(SORTS), key="esc_f_sort")
    filt = QueueFilter(model=model.id, releases=releases, segments=segments, types=types, severities=severities,
                       statuses=statuses, error_groups=groups, max_age_days=max_age, sort=sort)
    queue = queue_frame(store, filt, ui.now())
    ids = queue["case_id"].tolist()

    def _pick_rows() -> None:
        st.session_state["esc_pick"] = [ids[i] for i in st.session_state["esc_queue"].selection.rows]

    st.caption(f"{len(queue)} case(s). Select rows (or pick ids below) to triage them together.")
    st.dataframe(queue, key="esc_queue", on_select=_pick_rows, selection_mode="multi-row", hide_index=True,
                 width="stretch", column_config={"text": st.column_config.TextColumn("text", width="large")})
    st.session_state["esc_pick"] = [c for c in st.session_state.get("esc_pick", []) if c in ids]
    picked = st.multiselect("Selected cases", ids, key="esc_pick")
    if len(picked) == 1:
        with st.expander(f"Case {picked[0]}", expanded=True):
            case = case_of(store, model.id, picked[0])
            st.text(case.text or "(no text)")
            st.json(case.model_dump(mode="json"), expanded=False)
    if not may_triage(me, model.id):
        st.caption(f"{ui.plain(me.name)} is neither Analyst nor Model owner here: the queue is read-only.")
    else:
        st.subheader(f"Triage {len(picked)} selected case(s)")
        cols = st.columns(5)
        assignee = cols[0].selectbox("Assign to", opts["assignee"], index=None, placeholder="unchanged",
                                     key="esc_t_assignee")
        group = cols[1].selectbox("Error group", opts["error_group"], index=None, accept_new_options=True,
                                  placeholder="unchanged (or type a new one)", key="esc_t_group")
        finding = cols[2].selectbox("Finding", opts["finding"], index=None, placeholder="unchanged",
                                    key="esc_t_finding")
        label = cols[3].selectbox("Corrected label", [0, 1], index=None, placeholder="unchanged",
                                  format_func=lambda v: f"{v} ({'positive' if v else 'negative'})", key="esc_t_label")
        status = cols[4].radio("Status", ["triaged", "closed"], horizontal=True, key="esc_t_status")
        if st.button(f"Triage {len(picked)} case(s)", key="esc_t_apply", type="primary", icon=":material/done_all:"):
            try:
                triage = Triage(assignee=assignee, error_group=group, finding=finding, corrected_label=label,
                                status=status)
                _report(triage_cases(store, me, model.id, picked, triage, ui.now()))
                st.rerun()
            except (IngestError, PermissionError, ValueError) as exc:
                _refused(exc)

with groups_tab:
    st.subheader("By error group and segment")
    st.dataframe(error_groups_frame(store, model.id, ui.now()), key="esc_groups", hide_index=True, width="stretch",
                 column_config={"trend": st.column_config.BarChartColumn("cases per week (4 weeks)")})
    st.subheader("By similar free text")
    distance = st.slider("Cosine distance cut (lower = tighter clusters)", 0.3, 0.95, 0.8, 0.05, key="esc_distance")
    st.caption("Cases of the queue as filtered, clustered by TF-IDF of their text (character n-grams) with "
               "average-linkage agglomeration on cosine distance.")
    clusters = similar_cases_frame(store, filt, ui.now(), distance=distance)
    st.dataframe(clusters, key="esc_clusters", hide_index=True, width="stretch",
                 column_config={"trend": st.column_config.BarChartColumn("cases per week (4 weeks)"),
                                "case_ids": st.column_config.ListColumn("cases")})
    if not clusters.empty:
        pick = st.selectbox("Cluster", clusters["cluster"].tolist(), key="esc_cluster")
        chosen = clusters.loc[clusters["cluster"] == pick, "case_ids"].iloc[0]
        st.button("Select this cluster's cases for triage", key="esc_cluster_pick", icon=":material/checklist:",
                  on_click=lambda: st.session_state.update(esc_pick=list(chosen)))

with add_tab:
    st.caption("Upload escalations, label corrections, overrides, complaints or regulatory notices as CSV or JSON, "
               "or type one case. Everything is validated strictly; if anything is wrong, nothing is written. "
               "Trigger rules are evaluated after every upload.")
    upload = st.file_uploader("Cases file", type=["csv", "json"], key="esc_upload")
    if upload is not None and st.button("Validate and store", key="esc_upload_submit", type="primary"):
        try:
            _report(ingest_escalations(store, upload.getvalue(), me.email, ui.now(),
                                       fmt="csv" if upload.name.lower().endswith(".csv") else "json"))
            st.rerun()
        except (IngestError, PermissionError) as exc:
            _refused(exc)
    st.subheader("One case")
    cols = st.columns(3)
    fields = {"model": model.id, "at": ui.now(),
              "case_id": cols[0].text_input("Case id", key="esc_new_id"),
              "type": cols[1].selectbox("Type", opts["type"], key="esc_new_type"),
              "severity": cols[2].selectbox("Severity", opts["severity"], index=2, key="esc_new_severity"),
              "segment": cols[0].selectbox("Segment", opts["segment"], index=None, accept_new_options=True,
                                           key="esc_new_segment"),
              "score": cols[1].number_input("Model score", 0.0, 1.0, 0.5, 0.01, key="esc_new_score"),
              "decision": cols[2].text_input("Model decision", key="esc_new_decision"),
              "release": cols[0].text_input("Release (optional)", key="esc_new_release"),
              "request_id": cols[1].text_input("Request id (optional)", key="esc_new_request"),
              "corrected_label": cols[2].selectbox("Corrected label", [0, 1], index=None, key="esc_new_label"),
              "text": st.text_area("What happened", max_chars=5000, key="esc_new_text")}
    if st.button("Record case", key="esc_new_submit"):
        try:
            _report(add_escalation(store, fields, me.email, ui.now()))
            st.rerun()
        except (IngestError, PermissionError) as exc:
            _refused(exc)
