"""Browser journey: a product manager approves a release in review; the model's author is refused."""

import pytest

from browser import assert_no_exception, browser_page, go, open_app, pick, server, wait_idle

pytestmark = pytest.mark.browser


def _act_as(page, name: str) -> None:
    pick(page, "Demo identity", name)


def _decide(page, gate_label: str, comment: str) -> None:
    pick(page, "Gate and role", gate_label)
    page.get_by_label("Comment (a waiver needs a reason)").fill(comment)
    page.get_by_role("button", name="Review and confirm…").click()
    wait_idle(page)
    page.get_by_role("button", name="Confirm decision").click()
    wait_idle(page)


def test_a_product_manager_approves_and_the_author_is_refused(demo_copy, tmp_path):
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        _act_as(page, "Paul Weber — Product owner")
        go(page, "Release review")
        assert_no_exception(page)

        main = page.locator('[data-testid="stMain"]')
        assert "STOP" in main.inner_text()
        assert main.get_by_text("Evaluation passes the segment-level quality gate").count() >= 1
        _decide(page, "signoff_product · Product owner", "Object, blast radius and stop rules reviewed")
        page.get_by_text("Recorded: approve of 'signoff_product'").wait_for()
        page.screenshot(path=str(tmp_path / "approved.png"), full_page=True)

        _act_as(page, "Milo Brandt — Model owner")
        go(page, "Release review")
        _decide(page, "signoff_model · Model owner", "my model is fine")
        refusal = page.get_by_text("separation of duties")
        refusal.wait_for()
        assert refusal.is_visible()
        assert_no_exception(page)
