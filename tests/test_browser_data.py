"""Browser journeys of the Data owner in Debian's chromium: block a leaking snapshot, upload a new one."""

from __future__ import annotations

import re

import pytest

from browser import assert_no_exception, browser_page, go, open_app, open_options, server, wait_idle
from test_datasets import frame, manifest_text

pytestmark = pytest.mark.browser


def pick(page, label: str, option: str, sidebar: bool = False) -> None:
    """Open the selectbox with this label and choose the option whose text contains `option`."""
    area = page.locator('[data-testid="stSidebar"]' if sidebar else '[data-testid="stMain"]')
    open_options(page, area.locator('[data-testid="stSelectbox"]').filter(has_text=label).first)
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()
    wait_idle(page)


def act_as_dana(page) -> None:
    pick(page, "Demo identity", "Dana Okafor", sidebar=True)
    assert page.locator('[data-testid="stSidebar"]').get_by_text("Data owner", exact=False).count() >= 1


def test_the_data_owner_blocks_a_leaking_snapshot_and_the_map_shows_the_release_blocked(demo_copy, tmp_path):
    comment = "37 chargeback counts were stamped after the transaction by the disputes backfill"
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        act_as_dana(page)
        go(page, "Datasets")
        pick(page, "Snapshot", "transactions Jul–Sep 2026 (refresh)")
        assert_no_exception(page)

        reason = page.get_by_text("37 row(s) have 'feature_time' after their 'event_time'", exact=False)
        assert reason.first.is_visible()
        page.screenshot(path=str(tmp_path / "datasets-leakage.png"), full_page=True)
        page.get_by_role("tab", name="Decision").click()
        page.locator('[data-testid="stRadio"]').get_by_text("blocked", exact=True).click()
        page.get_by_label("Comment (say why when blocking)").fill(comment)
        page.get_by_role("button", name="Record decision").click()
        wait_idle(page)
        assert_no_exception(page)
        assert page.get_by_text("Recorded: blocked on snapshot", exact=False).first.is_visible()

        go(page, "Lifecycle map")
        assert_no_exception(page)
        warning = page.locator('[data-testid="stAlert"]').filter(has_text="Next step blocked at")
        assert "Next step blocked at 1. Dataset snapshot (blocked)" in warning.first.inner_text()
        assert page.get_by_text(f"blocked — blocked by dana@seamline.example: {comment}", exact=False).count() == 1
        page.screenshot(path=str(tmp_path / "map-blocked.png"), full_page=True)


def test_the_data_owner_uploads_a_data_file_and_manifest_and_gets_a_checked_snapshot(demo_copy, tmp_path):
    data = tmp_path / "card_fraud_2026_10.parquet"
    frame(n=800, leaks=3).to_parquet(data, index=False)
    manifest = tmp_path / "card_fraud_2026_10.yaml"
    manifest.write_text(manifest_text(model="card-fraud", name="transactions Oct 2026 (upload)",
                                      created_by="dana@seamline.example"))
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        act_as_dana(page)
        go(page, "Datasets")

        page.get_by_text("New snapshot from a data file and a YAML manifest").click()
        inputs = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
        inputs.nth(0).set_input_files(str(data))
        inputs.nth(1).set_input_files(str(manifest))
        wait_idle(page)
        page.get_by_role("button", name="Check and store").click()
        wait_idle(page)

        assert_no_exception(page)
        assert page.get_by_text("Stored snapshot", exact=False).first.is_visible()
        assert page.get_by_text("1 check(s) fail: leakage", exact=False).first.is_visible()
        assert page.get_by_text("3 row(s) have 'feature_time' after their 'event_time'", exact=False).count() >= 1
        assert (demo_copy.parent / "uploads" / "card-fraud").is_dir()
