"""Browser journeys in Debian's chromium against a live server on 127.0.0.1."""

import pytest

from browser import assert_no_exception, browser_page, go, open_app, server

pytestmark = pytest.mark.browser

NAV_TITLES = ["Lifecycle map", "Ownership", "Datasets", "Training runs", "Evaluation", "Registry",
              "Release review", "Ingest artifacts", "Audit log", "Monitoring", "Escalations", "Backlog"]


def test_every_page_opens_in_a_real_browser_without_exception(demo_copy, tmp_path):
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        assert_no_exception(page)
        page.screenshot(path=str(tmp_path / "map.png"), full_page=True)

        for title in NAV_TITLES:
            go(page, title)
            assert_no_exception(page)
            assert page.locator("h1").first.is_visible(), title
            assert page.get_by_text("Demo identity", exact=False).count() >= 1, title
