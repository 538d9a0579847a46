"""Browser journey: the Platform owner opens the halted churn canary and sees which rule tripped on which windows."""

import pytest

from browser import assert_no_exception, browser_page, go, open_app, server, wait_idle

pytestmark = pytest.mark.browser


def _pick(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True)).first.click()
    page.get_by_role("option", name=option).first.click()
    wait_idle(page)


def _open(page, title: str) -> None:
    more = page.locator('[data-testid="stSidebarNavViewButton"]', has_text="more")
    if more.count():  # the sidebar lists the first pages only until it is expanded
        more.first.click()
    go(page, title)


def test_the_platform_owner_finds_the_halted_canary_and_the_rule_that_tripped(demo_copy, tmp_path):
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        _pick(page, "Demo identity", "Priya Raman — Platform owner")
        _pick(page, "Model", "Subscription churn")
        _open(page, "Monitoring")
        _pick(page, "Release", "churn-v2 (halted)")
        assert_no_exception(page)

        main = page.locator('[data-testid="stMain"]')
        assert main.locator("h1").inner_text() == "Monitoring · Subscription churn"
        main.get_by_text("stop rule fallback rate (canary) tripped", exact=False).first.wait_for()
        assert "halted in canary" in main.inner_text()
        assert main.get_by_text("serving the fallback", exact=False).count() >= 1
        state = main.locator('[data-testid="stMetric"]').filter(has_text="State")
        assert "halted" in state.inner_text()
        serving = main.locator('[data-testid="stMetric"]').filter(has_text="Serving now")
        assert "fallback" in serving.inner_text()
        verdict = main.get_by_text("for segment region=EU on canary", exact=False).first
        assert verdict.is_visible() and "trips, action halt" in verdict.inner_text()
        tripped = main.locator('[data-testid="stDataFrame"]').first
        tripped.scroll_into_view_if_needed()
        assert tripped.is_visible()
        assert main.locator('[data-testid="stPlotlyChart"]').count() == 5
        page.screenshot(path=str(tmp_path / "monitoring.png"), full_page=True)
        assert_no_exception(page)
