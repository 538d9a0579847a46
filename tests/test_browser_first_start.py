"""The README's run command on a fresh machine: serve.py over an empty store builds the demo on first start,
showing progress, then opens on the lifecycle map of the release in review."""

from __future__ import annotations

import pytest

from browser import assert_no_exception, browser_page, server
from lifecycle.store import Store

pytestmark = pytest.mark.browser


def test_the_first_start_builds_the_demo_with_progress_and_opens_the_map(tmp_path):
    db = tmp_path / "fresh" / "seamline.duckdb"
    db.parent.mkdir()
    with server(db, target="serve.py") as base, browser_page() as page:
        page.goto(base + "/")
        page.get_by_text("First start: building the demo store", exact=False).wait_for(timeout=60000)
        bar = page.locator('[data-testid="stProgress"]')
        bar.wait_for(timeout=30000)
        assert bar.inner_text().strip(), "the progress bar names the step it is on"
        page.get_by_text("Lifecycle map · Card fraud scoring").wait_for(timeout=240000)
        assert_no_exception(page)
        assert page.get_by_text("STOP — 2 before-rollout gate(s) fail", exact=False).count() == 1

    store = Store(db)
    try:
        assert {m.id for m in store.models()} == {"card-fraud", "churn"}
        assert store.clock() is not None and store.verify_audit()[0]
    finally:
        store.close()
