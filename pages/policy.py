"""Release policy: the gates and thresholds a model's releases are judged by, versioned and audited."""

import streamlit as st

import ui
from lifecycle.ingest import IngestError
from lifecycle.policy import change_policy, policy_history, policy_yaml

model, me, store = ui.model(), ui.user(), ui.store()
st.title(f"Release policy · {model.name}")
history = policy_history(store, model.id)
st.dataframe(history, key="policy_history", hide_index=True, width="stretch")
current = store.policy(model.id)
st.caption(f"Current: version {current.version}. A release is judged by the version it was opened under.")
text = st.text_area("Policy (YAML)", value=policy_yaml(current), height=420, key="policy_text")
note = st.text_input("Why does the policy change?", key="policy_note")
if st.button("Record a new policy version", key="policy_save", type="primary"):
    try:
        new = change_policy(store, me, text, ui.now(), note)
    except IngestError as exc:
        st.error("The policy was refused; nothing was written:")
        for path, msg in exc.problems:
            st.markdown(f"- `{path or '(policy)'}`: {ui.plain(msg)}")
    except PermissionError as exc:
        ui.error(exc)
    else:
        st.success(f"Recorded policy version {new.version}.")
