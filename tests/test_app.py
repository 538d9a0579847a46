"""AppTest runs of every page on the demo store, for every demo role, plus key interactions."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_project_rules import _navigation_pages

PAGES = sorted(_navigation_pages())
APP = str(Path(__file__).resolve().parent.parent / "app.py")
ROLES = ["dana@seamline.example", "milo@seamline.example", "priya@seamline.example", "paul@seamline.example",
         "ana@seamline.example"]


@pytest.fixture
def app(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def start(user: str = ROLES[0], model: str = "card-fraud") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["demo_user"] = user
        at.session_state["model"] = model
        return at.run()
    return start


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("user", ROLES)
def test_every_page_runs_without_exception_for_every_role(app, user):
    at = app(user)
    _no_exception(at)

    for page in PAGES:
        at.switch_page(page).run()
        _no_exception(at)


@pytest.mark.parametrize("model", ["card-fraud", "churn"])
def test_the_lifecycle_map_shows_seven_links_with_digests(app, model):
    at = app(model=model)

    text = " ".join(m.value for m in at.markdown)

    assert "Dataset snapshot" in text and "Retraining trigger" in text
    assert len(at.get("plotly_chart")) == 1


def test_the_fraud_map_is_blocked_at_the_data_step(app):
    at = app(model="card-fraud")

    warnings = " ".join(w.value for w in at.warning)

    assert "Next step blocked at **1. Dataset snapshot**" in warnings
    assert "leakage" in warnings


def test_the_demo_identity_is_marked_in_the_sidebar(app):
    at = app()

    assert any("Demo identity" in c.value for c in at.sidebar.caption)
    assert at.sidebar.selectbox(key="demo_user").value == ROLES[0]


def test_the_ownership_page_names_people_from_the_store(app):
    at = app()

    at.switch_page("pages/ownership.py").run()
    table = at.dataframe[0].value

    assert set(table["role"]) == {"Data owner", "Model owner", "Platform owner", "Product owner", "Analyst"}
    assert "Dana Okafor" in " ".join(table["people"])


def test_audit_page_verifies_the_chain(app):
    at = app()
    at.switch_page("pages/audit.py").run()

    at.button(key="audit_verify").click().run()

    assert at.success and "entries verified" in at.success[0].value
