"""Real sign-in end to end: oidc-provider-mock on 127.0.0.1, the app with an [auth] section pointing at it, and
Debian's chromium signing in, seeing the roles its groups give, being refused a decision, and signing out."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from browser import ROOT, assert_no_exception, browser_page, free_port, go, server, wait_idle

pytestmark = pytest.mark.browser
ALICE = {"sub": "alice", "email": "alice@example.com", "name": "Alice Example", "groups": ["fraud-model-owners"]}


@contextmanager
def oidc_provider(tmp_path, *users: dict):
    """Start oidc-provider-mock with predefined users; yield its issuer URL; stop it by PID."""
    port = free_port()
    cmd = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)]
    for user in users:
        cmd += ["--user-claims", json.dumps(user)]
    log = open(tmp_path / "oidc.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("provider did not start: " + (tmp_path / "oidc.log").read_text()[-2000:])
            time.sleep(0.2)
        yield issuer
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _secrets(tmp_path, issuer: str, port: int):
    path = tmp_path / "secrets.toml"
    path.write_text(f'''[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "seamline-browser-test-cookie-secret-0123456789"
client_id = "seamline"
client_secret = "seamline-secret"
server_metadata_url = "{issuer}/.well-known/openid-configuration"
''')
    return path


def test_a_user_signs_in_sees_their_roles_is_refused_a_role_they_lack_and_signs_out(demo_copy, tmp_path):
    port = free_port()
    with oidc_provider(tmp_path, ALICE) as issuer, \
            server(demo_copy, port=port, args=("--secrets.files", str(_secrets(tmp_path, issuer, port)))) as base, \
            browser_page() as page:
        page.goto(base + "/")
        page.get_by_text("Sign in to review releases.").wait_for(timeout=90000)
        assert page.get_by_text("Demo identity").count() == 0
        page.goto(base + "/evaluation")  # a deep link is refused too
        page.get_by_text("Sign in to review releases.").wait_for(timeout=60000)
        assert page.locator('[data-testid="stMain"] h1').inner_text() == "Seamline"
        assert "Evaluation" not in page.locator('[data-testid="stMain"]').inner_text()

        page.goto(base + "/")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("button", name="alice").click()  # the provider's page: a predefined user
        page.get_by_text("Signed in as", exact=False).wait_for(timeout=60000)
        wait_idle(page)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "Alice Example" in sidebar and "card-fraud: Model owner" in sidebar
        assert "Demo identity" not in sidebar
        page.screenshot(path=str(tmp_path / "signed-in.png"), full_page=True)

        go(page, "Datasets")
        page.get_by_role("tab", name="Decision").click()
        page.locator('[data-testid="stRadio"]').get_by_text("usable", exact=True).click()
        page.get_by_role("button", name="Record decision").click()
        wait_idle(page)
        refusal = page.get_by_text("alice@example.com does not hold the Data owner role", exact=False)
        refusal.first.wait_for(timeout=30000)
        assert_no_exception(page)

        page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="End session").click()  # the provider's end-session page
        page.get_by_text("Sign in to review releases.").wait_for(timeout=60000)
        assert page.get_by_text("Signed in as", exact=False).count() == 0
