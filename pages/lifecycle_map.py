"""Lifecycle map: the seven artifacts of the selected model's current release as one chain."""

import streamlit as st

import ui
from lifecycle.chain import lifecycle_map
from lifecycle.charts import lifecycle_figure
from lifecycle.models import short

model = ui.model()
store = ui.store()
st.title(f"Lifecycle map · {model.name}")
releases = store.releases(model.id)
if not releases:
    st.info("This model has no release yet: ingest artifacts and open a release.")
    st.stop()
choice = st.selectbox("Release", [r.id for r in releases], key="map_release",
                      format_func=lambda rid: f"{rid} ({store.release(rid).state.value.replace('_', ' ')})")
lmap = lifecycle_map(store, model.id, ui.now(), release_id=choice)
release = lmap.release
icon = ui.ICONS[lmap.verdict]
st.subheader(f"{icon} {ui.plain(release.title)} — {release.state.value.replace('_', ' ')}")
st.caption(ui.plain(lmap.line))
st.plotly_chart(lifecycle_figure(lmap), key="lifecycle_chart", width="stretch")
blocker = lmap.first_blocker()
if blocker is not None:
    st.warning(f"Next step blocked at **{blocker.step}. {blocker.title}** ({blocker.status}): "
               f"{ui.plain(blocker.detail)} — owner: {blocker.owner_role.label}")
for link in lmap.links:
    cols = st.columns([0.4, 2.4, 1.6, 1.5, 6, 1.1])
    cols[0].markdown(f"**{link.step}**")
    cols[1].markdown(f"{ui.ICONS[link.status]} {link.title}")
    cols[2].code(short(link.digest), language=None)
    cols[3].caption(link.owner_role.label)
    cols[4].caption(f"{link.status} — {ui.plain(link.detail)}")
    cols[5].page_link(f"pages/{link.page if link.page != 'map' else 'lifecycle_map'}.py", label="Open",
                      icon=":material/arrow_forward:")
