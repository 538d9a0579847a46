"""Start a Seamline server on 127.0.0.1 and drive Debian's chromium with Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str:
    """Return Debian's chromium, or skip (fail under CI) when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium was found: install Debian's chromium (scripts/test does)")
    pytest.skip("no chromium found: install Debian's chromium to run the browser journeys")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(db: Path, target: str = "app.py", extra_env: dict | None = None, port: int | None = None,
           args: tuple[str, ...] = ()):
    """Run `streamlit run` on a free port over the given store; yield the base URL; stop it by PID."""
    port = port or free_port()
    env = {**os.environ, "SEAMLINE_DB": str(db), **(extra_env or {})}
    log = open(db.parent / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", target, "--server.headless", "true", "--server.address",
         "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start: " + (db.parent / "server.log").read_text()[-2000:])
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def browser_page():
    """Yield a Playwright page in headless Debian chromium."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(30000)
        try:
            yield page
        finally:
            browser.close()


def wait_idle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(400)
    page.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'; }", timeout=90000)
    page.wait_for_timeout(300)


def open_app(page, base: str) -> None:
    """Load / first (a deep link as the very first visit shows 'Page not found'), then wait for the map."""
    page.goto(base + "/")
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=90000)
    wait_idle(page)


def go(page, title: str) -> None:
    """Navigate with the sidebar link of a page and wait for its run to finish."""
    more = page.locator('[data-testid="stSidebarNav"]').get_by_text("View", exact=False).filter(has_text="more")
    if more.count():
        more.first.click()
        page.wait_for_timeout(300)
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    wait_idle(page)
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=60000)


def pick(page, label: str, option: str) -> None:
    """Choose an option in the selectbox with this label and wait for the rerun."""
    open_options(page, page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first)
    page.get_by_role("option", name=option).first.click()
    wait_idle(page)


def open_options(page, box) -> None:
    """Open a selectbox's option list with its own 'Open' button; retry when a rerun closed it again."""
    box.scroll_into_view_if_needed()
    for _ in range(3):
        opener = box.get_by_role("button", name="Open")
        (opener if opener.count() else box).first.click()
        try:
            page.get_by_role("option").first.wait_for(timeout=5000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; try again
            page.keyboard.press("Escape")
            wait_idle(page)
    page.get_by_role("option").first.wait_for(timeout=5000)


def assert_no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()
