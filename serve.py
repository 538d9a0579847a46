"""Serve the Seamline UI and its HTTP ingestion API from one process: `streamlit run serve.py`."""

from contextlib import asynccontextmanager

import streamlit as st

from lifecycle import api
from lifecycle.store import db_path, shared_store


@asynccontextmanager
async def _own_the_store(app):
    # Open the store at start-up, so this process holds the file's lock before any request or session:
    # the CLI then says the server runs and points at --server instead of writing behind its back.
    shared_store(db_path())
    api.warm_up()
    yield


app = st.App("app.py", routes=api.routes(), lifespan=_own_the_store)
