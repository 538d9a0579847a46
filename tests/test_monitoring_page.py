"""AppTest of the monitoring page on the demo store: the halted churn canary, its tripped rule, the controls."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/monitoring.py"


@pytest.fixture
def monitoring(demo_copy, monkeypatch):
    monkeypatch.setenv("SEAMLINE_DB", str(demo_copy))
    monkeypatch.chdir(Path(APP).parent)

    def open_page(user: str = "priya@seamline.example", model: str = "churn") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=90)
        at.session_state["demo_user"] = user
        at.session_state["model"] = model
        at.run()
        return at.switch_page(PAGE).run()
    return open_page


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_the_platform_owner_sees_the_halted_canary_and_the_rule_that_tripped(monitoring):
    at = monitoring()

    _no_exception(at)
    metrics = {m.label: m for m in at.metric}
    tripped = at.dataframe[0].value  # the first table on the page: the tripped windows
    assert metrics["State"].value == "halted" and metrics["Stage"].value == "canary"
    assert "fallback" in metrics["Serving now"].delta
    assert "stop rule fallback rate \\(canary\\) tripped" in at.error[0].value
    assert set(tripped["rule"]) == {"fallback rate"} and "region=EU" in set(tripped["segment"])
    assert any("region=EU" in m.value and "trips, action halt" in m.value for m in at.markdown)


def test_every_stop_rule_gets_a_time_series_and_the_heatmap_follows_the_chosen_rule(monitoring):
    at = monitoring()
    charts = len(at.get("plotly_chart"))

    at.selectbox(key="monitoring_heatmap_rule").select("p95 latency").run()

    _no_exception(at)
    assert charts == 3 + 1 + 1  # three rules, the heatmap, the stage timeline
    assert at.selectbox(key="monitoring_heatmap_rule").value == "p95 latency"


def test_a_halted_release_offers_neither_expansion_nor_promotion(monitoring):
    at = monitoring()

    assert at.button(key="monitoring_expand").disabled
    assert at.button(key="monitoring_promote").disabled
    assert any("it does not expand" in m.value for m in at.markdown)


@pytest.mark.parametrize("user", ["dana@seamline.example", "paul@seamline.example", "ana@seamline.example"])
def test_a_release_in_review_shows_that_no_signals_exist_yet(monitoring, user):
    at = monitoring(user=user, model="card-fraud")

    _no_exception(at)
    assert any("No signal windows for this stage yet" in c.value for c in at.caption)
    assert at.button(key="monitoring_expand").disabled
