"""Ingest artifacts: upload JSON or YAML; the same validation as the CLI and the API."""

import streamlit as st

import ui
from lifecycle.ingest import IngestError, ingest
from lifecycle.models import short

st.title("Ingest artifacts")
st.caption("Upload one artifact or a list (JSON or YAML). Everything is validated strictly; "
           "if anything is wrong, nothing is written.")
upload = st.file_uploader("Artifact file", type=["json", "yaml", "yml"], key="ingest_file")
if upload is not None and st.button("Validate and store", key="ingest_submit", type="primary"):
    fmt = "json" if upload.name.endswith(".json") else "yaml"
    try:
        digests = ingest(ui.store(), upload.getvalue(), actor=ui.user().email, fmt=fmt)
    except IngestError as exc:
        st.error(f"Refused, nothing was written ({len(exc.problems)} problem(s)):")
        for path, msg in exc.problems:
            st.markdown(f"- `{path or '(document)'}`: {ui.plain(msg)}")
    else:
        st.success(f"Stored {len(digests)} artifact(s): " + ", ".join(short(d) for d in digests))
