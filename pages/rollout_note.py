"""Rollout note: what changes, success metrics, blast radius, stop rules, fallback and stage conditions."""

import streamlit as st

import ui
from lifecycle.ingest import IngestError
from lifecycle.notes import build_note, note_tables, save_note
from lifecycle.registry import entries

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Rollout note · {model.name}")
releases = {r.id: r for r in store.releases(model.id)}
target = st.selectbox("Release", ["(open a new release)", *releases], key="note_release")
release = releases.get(target)
note = store.artifact(release.rollout_note) if release and release.rollout_note else None
versions = {f"v{e.version} · {e.digest[:10]}": e.digest for e in entries(store, model.id)}
if not versions:
    st.info("Register a candidate first: a note describes a registry entry.")
    st.stop()
champion = store.aliases(model.id).get("champion")
digests = list(versions.values())
cand = st.selectbox("Candidate", list(versions), key="note_candidate",
                    index=digests.index(release.candidate) if release else 0, disabled=release is not None)
title = st.text_input("Release title", key="note_title", disabled=release is not None)
text = st.text_area("What changes and why", value=note.release_object if note else "", key="note_object")
owner = st.text_input("Release owner (email)", value=note.release_owner if note else me.email, key="note_owner")
c1, c2 = st.columns(2)
share = c1.number_input("Blast radius: max traffic share", 0.0, 1.0, step=0.05, key="note_share",
                        value=note.blast_radius.max_traffic_share if note else 0.2)
excluded = c2.text_input("Excluded segments (comma separated)", key="note_excluded",
                         value=", ".join(note.blast_radius.excluded_segments) if note else "")
tables = note_tables(note)
st.markdown("**Success metrics**")
success = st.data_editor(tables["success_metrics"], num_rows="dynamic", key="note_success", width="stretch")
st.markdown("**Stop rules** — a window fails when `value comparator threshold`")
rules = st.data_editor(tables["stop_rules"], num_rows="dynamic", key="note_rules", width="stretch")
st.markdown("**Stages** — traffic share and expansion conditions")
stages = st.data_editor(tables["stages"], num_rows="dynamic", key="note_stages", width="stretch")
st.markdown("**Fallback path**")
fallback = st.text_input("Serving on rollback (entry digest or a named rule)", key="note_fallback",
                         value=note.fallback.serving if note else (champion or ""))
f_desc = st.text_input("How the fallback works", value=note.fallback.description if note else "", key="note_fdesc")
f_tested = st.checkbox("The fallback was tested", value=note.fallback.tested if note else False, key="note_ftested")
f_evidence = st.text_input("Test evidence", value=note.fallback.test_evidence if note else "", key="note_fevidence")
if st.button("Validate and save the note", key="note_save", type="primary"):
    try:
        built = build_note(model=model.id, candidate=versions[cand], baseline=release.baseline if release else champion,
                           release_object=text, release_owner=owner, max_traffic_share=share,
                           excluded_segments=[s.strip() for s in excluded.split(",") if s.strip()],
                           fallback_serving=fallback, fallback_description=f_desc, fallback_tested=f_tested,
                           fallback_evidence=f_evidence, stop_rules=rules, stages=stages, success_metrics=success,
                           user=me, now=ui.now())
        saved = save_note(store, me, built, ui.now(), release_id=release.id if release else None, title=title)
    except IngestError as exc:
        st.error("The note was refused; nothing was saved:")
        for path, msg in exc.problems:
            st.markdown(f"- `{path or '(note)'}`: {ui.plain(msg)}")
    except PermissionError as exc:
        ui.error(exc)
    else:
        st.success(f"Saved note {built.digest[:10]} on release {saved.id}. Earlier sign-offs on this release are "
                   "now stale and must be given again.")
