"""Security rules: hostile user text is shown as text on every page, and one user's session never leaks into another's."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lifecycle.escalations import ingest_escalations
from lifecycle.models import Decision, Role, Verdict
from lifecycle.store import Store
from test_project_rules import _navigation_pages

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = sorted(_navigation_pages())
PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))"]
HOSTILE = " ".join(PAYLOADS)
RAW_HTML = re.compile(r"(?<!\\)<\s*(script|img)", re.IGNORECASE)
ACTIVE_LINK = re.compile(r"(?<!\\)\]\s*(?<!\\)\(\s*javascript:", re.IGNORECASE)
TEXT_ELEMENTS = ("markdown", "caption", "title", "header", "subheader", "info", "warning", "error", "success",
                 "code", "latex")
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def hostile_demo(demo_copy, monkeypatch):
    """The demo store with hostile text as a release title, a decision comment and an escalation's text."""
    store = Store(demo_copy)
    release = store.releases(model="card-fraud")[0]
    store.update_release(release.model_copy(update={"title": HOSTILE}), release.version, "test", "release.retitle",
                         {}, NOW)
    store.record_decision(Decision(release=release.id, gate="product_signoff", user="paul@seamline.example",
                                   role=Role.PRODUCT, verdict=Verdict.REJECT, comment=HOSTILE, at=NOW, covered={}),
                          actor="paul@seamline.example")
    ingest_escalations(store, [{"case_id": "XSS-1", "at": NOW.isoformat(), "model": "card-fraud",
                                "segment": "region=EU", "type": "complaint", "score": 0.5, "decision": "block",
                                "severity": "critical", "text": HOSTILE}], "test", NOW)
    store.close()
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)
    return release.id


def start(user: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["demo_user"] = user
    at.session_state["model"] = "card-fraud"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def rendered_text(at: AppTest) -> list[tuple[str, str, bool]]:
    """Return (element type, text, allows HTML) for every text element on the page and in the sidebar."""
    out = []
    for kind in TEXT_ELEMENTS:
        for el in getattr(at, kind, []):
            proto = getattr(el, "proto", None)
            allow = bool(getattr(proto, "allow_html", False)) if proto is not None else False
            out.append((kind, str(el.value), allow))
    return out


def test_hostile_text_renders_as_text_on_every_page(hostile_demo):
    at = start("paul@seamline.example", release_id=hostile_demo, esc_pick=["XSS-1"])
    shown: list[tuple[str, str, str, bool]] = []

    for page in PAGES:
        at.switch_page(page).run()
        # a page that fails is test_app.py's concern; here every page that renders is checked
        shown += [(page, *t) for t in rendered_text(at)]

    hostile = [s for s in shown if "alert" in s[2]]
    assert hostile, "the hostile text should be shown somewhere (release title, comment, escalation)"
    assert [s for s in hostile if s[3]] == [], "no element that allows HTML may carry user text"
    assert [s[:3] for s in hostile if RAW_HTML.search(s[2])] == []
    assert [s[:3] for s in hostile if ACTIVE_LINK.search(s[2])] == []


def test_no_page_passes_unsafe_html_with_a_variable():
    root = Path(APP).parent
    sources = [root / "app.py", root / "ui.py", *sorted((root / "pages").glob("*.py"))]

    offenders = [f"{p.name}:{n}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
                 if "unsafe_allow_html=True" in line and ("{" in line or "+" in line)]

    assert offenders == []


def test_two_sessions_with_different_identities_do_not_share_state(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)
    priya = start("priya@seamline.example")
    dana = start("dana@seamline.example")

    priya.switch_page("pages/admin.py").run()
    dana.switch_page("pages/admin.py").run()
    priya.session_state["token_note"] = "priya's secret"

    assert priya.session_state["_user"].email == "priya@seamline.example"
    assert dana.session_state["_user"].email == "dana@seamline.example"
    assert "token_note" not in dana.session_state
    assert priya.session_state["_user"].roles != dana.session_state["_user"].roles
