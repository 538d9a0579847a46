"""Browser journey of the feedback loop: an analyst bulk-triages a segment's cases; the backlog shows the result."""


import pytest

from browser import assert_no_exception, browser_page, go, open_app, server, wait_idle
from lifecycle.escalations import QueueFilter, queue_frame
from lifecycle.store import Store

pytestmark = pytest.mark.browser

SEGMENT = "region=APAC / channel=mobile"
GROUP = "apac-mobile-topup"


def nav(page, title: str) -> None:
    """Open a page from the sidebar, unfolding the navigation first when it hides some pages."""
    more = page.locator('[data-testid="stSidebarNav"] button', has_text="more")
    if more.count() and not page.locator('[data-testid="stSidebarNav"] a', has_text=title).count():
        more.first.click()
    go(page, title)


def pick(page, testid: str, label: str, option: str, typed: bool = False) -> None:
    """Choose an option of the selectbox or multiselect with this label (typing it first when asked)."""
    page.locator(f'[data-testid="{testid}"]').filter(has_text=label).first.click()
    if typed:
        page.keyboard.type(option)
    page.locator('[role="option"]', has_text=option).first.click()
    if testid == "stMultiSelect":  # a multiselect stays open after a choice; Escape on a selectbox would clear it
        page.keyboard.press("Escape")
    wait_idle(page)


def test_an_analyst_bulk_triages_one_segment_and_the_backlog_shows_the_retrain_item_with_those_cases(demo_copy,
                                                                                                      tmp_path):
    store = Store(demo_copy)
    queue = queue_frame(store, QueueFilter(model="card-fraud", segments=[SEGMENT], statuses=["open"],
                                           types=["escalation"]), store.now())
    chosen = queue["case_id"].tolist()[:5]
    retrain = next(i for i in store.backlog("card-fraud") if i.type.value == "retrain_model")
    store.close()
    assert len(chosen) == 5 and not set(chosen) & set(retrain.evidence["cases"])

    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        pick(page, "stSelectbox", "Demo identity", "Ana Souza")
        nav(page, "Escalations")
        pick(page, "stMultiSelect", "Segment", SEGMENT)
        pick(page, "stMultiSelect", "Status", "open")
        pick(page, "stMultiSelect", "Type", "escalation")
        for case_id in chosen:
            pick(page, "stMultiSelect", "Selected cases", case_id, typed=True)
        pick(page, "stSelectbox", "Error group", GROUP, typed=True)
        page.get_by_role("button", name="Triage 5 case(s)").click()
        wait_idle(page)
        assert_no_exception(page)
        triaged = page.locator('[data-testid="stAlert"]').first.inner_text()
        nav(page, "Backlog")
        pick(page, "stSelectbox", "Item", "Retrain model")
        evidence = page.locator('[data-testid="stMarkdownContainer"]', has_text="Escalation cases").first.inner_text()
        page.screenshot(path=str(tmp_path / "backlog.png"))
        assert_no_exception(page)

    assert "5 case(s) triaged" in triaged and "error_group=apac-mobile-topup" in triaged, triaged
    assert all(case_id in evidence for case_id in chosen), evidence
    store = Store(demo_copy)
    cases = {c.case_id: c for c in store.escalations("card-fraud") if c.case_id in chosen}
    item = store.backlog_item(retrain.id)
    ok, reason = store.verify_audit()
    store.close()
    assert {(c.error_group, c.triaged_by) for c in cases.values()} == {(GROUP, "ana@seamline.example")}
    assert set(chosen) <= set(item.evidence["cases"]) and item.evidence["history"][-1]["new_cases"] == sorted(chosen)
    assert ok, reason
