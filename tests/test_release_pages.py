"""AppTest of the registry, release review, rollout note and policy pages, per role, with decisions."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_app import ROLES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/registry.py", "pages/release.py", "pages/rollout_note.py", "pages/policy.py"]


@pytest.fixture
def start(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def run(user: str, page: str, model: str = "card-fraud") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["demo_user"] = user
        at.session_state["model"] = model
        at.run()
        return at.switch_page(page).run()
    return run


@pytest.mark.parametrize("user", ROLES)
@pytest.mark.parametrize("page", PAGES)
def test_release_pages_run_for_every_role(start, user, page):
    at = start(user, page)

    assert not at.exception, [e.value for e in at.exception]


def _plain(text: str) -> str:
    """Undo the Markdown escaping that ui.plain applies to shown text."""
    return text.replace("\\", "")


def _decide(at: AppTest, gate_label: str, verdict: str, comment: str) -> AppTest:
    at.selectbox(key="release_id").select("card-fraud-v2").run()
    at.selectbox(key="decision_gate").select(gate_label).run()
    at.radio(key="decision_verdict").set_value(verdict).run()
    at.text_area(key="decision_comment").input(comment).run()
    at.button(key="decision_prepare").click().run()
    return at.button(key="decision_confirm").click().run()


def test_the_product_owner_approves_and_the_decision_is_bound_to_digests(start, demo_store):
    at = start("paul@seamline.example", "pages/release.py")

    at = _decide(at, "signoff_product · Product owner", "approve", "object and stop rules are clear")

    assert at.success and "Recorded: approve of 'signoff_product'" in _plain(at.success[0].value)
    decision = [d for d in demo_store.decisions(release="card-fraud-v2") if d.gate == "signoff_product"][-1]
    assert decision.user == "paul@seamline.example" and len(decision.covered) == 7


def test_the_author_of_the_candidate_is_refused_with_the_reason(start):
    at = start("milo@seamline.example", "pages/release.py")

    at = _decide(at, "signoff_model · Model owner", "approve", "looks good to me")

    assert at.error and "separation of duties" in _plain(at.error[0].value)


def test_a_user_without_a_deciding_role_sees_no_form(start):
    at = start("ana@seamline.example", "pages/release.py")

    keys = [w.key for w in at.selectbox]
    assert "decision_gate" not in keys
    assert "holds no role" in " ".join(_plain(c.value) for c in at.caption)


def test_the_checklist_shows_the_failing_gates_and_the_stop_line(start):
    at = start("paul@seamline.example", "pages/release.py")

    table = at.dataframe[0].value
    text = " ".join(_plain(m.value) for m in at.markdown)

    assert "STOP" in text
    assert set(table["status"]) >= {"fail", "pending", "pass"}


def test_a_policy_change_by_someone_without_the_role_is_refused(start):
    at = start("dana@seamline.example", "pages/policy.py")

    at.text_input(key="policy_note").input("tighten").run()
    at.button(key="policy_save").click().run()

    assert at.error and "neither Product nor Platform owner" in _plain(at.error[0].value)
