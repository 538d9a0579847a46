"""AppTest of the Evaluation page on the demo store: the failing segment, a click, limits, compute, sign-off."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_app import ROLES

APP = str(Path(__file__).resolve().parent.parent / "app.py")
APAC_MOBILE = "region=APAC / channel=mobile"


@pytest.fixture
def start(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def run(user: str, model: str = "card-fraud") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["demo_user"] = user
        at.session_state["model"] = model
        at.run()
        return at.switch_page("pages/evaluation.py").run()
    return run


def _text(at: AppTest) -> str:
    return " ".join(m.value for m in [*at.markdown, *at.caption, *at.info]).replace("\\", "")


def _keyed(widgets, prefix: str):
    """Return the widget whose key starts with prefix (keys carry a report's digest)."""
    return next(w for w in widgets if (w.key or "").startswith(prefix))


@pytest.mark.parametrize("user", ROLES)
def test_the_page_runs_for_every_role_on_both_models(start, user):
    for model in ("card-fraud", "churn"):
        at = start(user, model)

        assert not at.exception, [e.value for e in at.exception]


def test_the_regressing_demo_segment_is_shown_failing_and_focused(start):
    at = start("kenji@seamline.example")

    text = _text(at)
    assert "Segment gate" in text and "fails 'no segment loses more than 0.01'" in text
    assert f"{APAC_MOBILE}: AUC 0.772 -> 0.667" in text
    table = at.dataframe[0].value
    assert table.loc[table["segment"] == APAC_MOBILE, "status"].item() == "fail"
    assert _keyed(at.selectbox, "evaluation_segment_").value == "all"
    assert "read by the gates of card-fraud-v2" in text
    assert "Awaiting the Model owner's sign-off" in text


def test_a_click_on_a_segment_in_the_forest_plot_shows_its_reliability_diagram(start):
    at = start("kenji@seamline.example")

    at.session_state["evaluation_forest_roc_auc"] = {"selection": {"points": [{"customdata": ["region=EU", 17101]}],
                                                                   "point_indices": [0], "box": [], "lasso": []}}
    at.run()

    assert not at.exception
    assert _keyed(at.selectbox, "evaluation_segment_").value == "region=EU"
    assert "region=EU: AUC 0.797 -> 0.827" in _text(at)


def test_the_model_owner_signs_off_and_the_decision_binds_to_the_report(start, demo_store):
    at = start("kenji@seamline.example")
    digest = _keyed(at.selectbox, "evaluation_report_").value

    at.radio(key="evaluation_verdict").set_value("approve")
    at.text_area(key="evaluation_comment").input("APAC mobile regression accepted for the canary only")
    at.button(key="evaluation_sign").click().run()

    assert not at.exception and "Recorded: approve of evaluation" in at.success[0].value.replace("\\", "")
    decision = demo_store.decisions(subject=digest, gate="evaluation")[-1]
    assert decision.user == "kenji@seamline.example" and decision.covered == {"evaluation": digest}


def test_an_analyst_is_refused_a_sign_off_and_nothing_is_recorded(start, demo_store):
    at = start("ana@seamline.example")
    before = len(demo_store.decisions(gate="evaluation"))

    at.radio(key="evaluation_verdict").set_value("approve")
    at.button(key="evaluation_sign").click().run()

    assert "does not hold the Model owner role" in at.error[0].value.replace("\\", "")
    assert len(demo_store.decisions(gate="evaluation")) == before


def test_the_model_owner_revises_the_stated_limits_into_a_new_report(start, demo_store):
    at = start("kenji@seamline.example")
    before = len(demo_store.artifacts("card-fraud", "evaluation_report"))
    _keyed(at.text_area, "evaluation_limits_").input("no holiday season seen\nnot validated for corporate cards")
    at.button(key="evaluation_limits_save").click().run()

    assert not at.exception and "with revised limits" in at.success[0].value
    newest = demo_store.artifacts("card-fraud", "evaluation_report")
    assert len(newest) == before + 1 and newest[0].limits[1] == "not validated for corporate cards"
    assert "not validated for corporate cards" in _text(at)


def test_computing_with_a_new_seed_stores_a_report_and_an_analyst_cannot(start, demo_store):
    before = len(demo_store.artifacts("card-fraud", "evaluation_report"))
    ana = start("ana@seamline.example")
    ana.number_input(key="evaluation_seed").set_value(99)
    ana.number_input(key="evaluation_boot").set_value(100)
    ana.button(key="evaluation_compute").click().run()
    assert "Refused, nothing was stored" in ana.error[0].value
    assert len(demo_store.artifacts("card-fraud", "evaluation_report")) == before

    at = start("kenji@seamline.example")
    at.number_input(key="evaluation_seed").set_value(99)
    at.number_input(key="evaluation_boot").set_value(100)
    at.button(key="evaluation_compute").click().run()

    assert not at.exception and "Stored report" in at.success[0].value
    newest = demo_store.artifacts("card-fraud", "evaluation_report")[0]
    assert len(demo_store.artifacts("card-fraud", "evaluation_report")) == before + 1
    assert newest.settings["seed"] == 99 and newest.settings["bootstrap"] == 100
    assert newest.created_by == "kenji@seamline.example"


def test_a_chosen_reference_window_is_the_one_the_shift_checks_read(start, demo_store):
    at = start("kenji@seamline.example")
    # the baseline's training window, not the default (the candidate's)
    chosen = next(s for s in demo_store.artifacts("card-fraud", "dataset_snapshot") if "Jun–Aug" in s.name)
    refs = at.selectbox(key="evaluation_reference")
    assert refs.value != chosen.digest

    refs.select(chosen.digest)
    at.number_input(key="evaluation_boot").set_value(100)
    at.button(key="evaluation_compute").click().run()

    assert not at.exception and "Stored report" in at.success[0].value
    newest = demo_store.artifacts("card-fraud", "evaluation_report")[0]
    assert newest.settings["reference_snapshot"] == chosen.digest and newest.shift_checks
