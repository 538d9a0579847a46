"""Browser journey: a model owner opens the candidate's training run, sees its curves, compares it with the baseline."""

import re

import pytest

from browser import assert_no_exception, browser_page, go, open_app, server, wait_idle

pytestmark = pytest.mark.browser


def _act_as(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Demo identity") \
        .locator("input").click()
    page.get_by_role("option", name=name).first.click()
    wait_idle(page)


def test_a_model_owner_opens_the_candidates_run_sees_its_curves_and_compares_it_with_the_baseline(demo_copy,
                                                                                                   tmp_path):
    with server(demo_copy) as base, browser_page() as page:
        open_app(page, base)
        _act_as(page, "Milo Brandt — Model owner")
        go(page, "Training runs")
        assert_no_exception(page)
        main = page.locator('[data-testid="stMain"]')
        assert main.locator("h1").first.inner_text().startswith("Training runs · Card fraud scoring")

        main.locator('[data-testid="stSelectbox"]').filter(has_text="Run").first.locator("input").click()
        page.get_by_role("option", name=re.compile("HistGradientBoostingClassifier")).first.click()
        wait_idle(page)
        assert "HistGradientBoostingClassifier" in main.locator("h3").first.inner_text()

        main.get_by_role("tab", name="Experiment log").click()
        wait_idle(page)
        chart = main.locator('[data-testid="stPlotlyChart"]').first
        chart.locator(".js-plotly-plot").wait_for()
        assert chart.is_visible()
        assert chart.get_by_text("ROC AUC (higher is better)").count() >= 1
        assert chart.get_by_text("boosting iteration").count() >= 1

        main.get_by_role("tab", name="Compare").click()
        wait_idle(page)
        main.get_by_text("Metric deltas on shared validation data").wait_for(timeout=120000)
        text = main.inner_text()
        assert re.search(r"A: \w{10} · LogisticRegression · kenji@seamline\.example", text)
        assert re.search(r"B: \w{10} · HistGradientBoostingClassifier · milo@seamline\.example .* \(this run\)", text)
        assert re.search(r"B − A: roc_auc [+-]\d\.\d{4}, log_loss [+-]\d\.\d{4}, brier [+-]\d\.\d{4}", text)
        assert "Parameter diff" in text and "Package versions" in text
        assert main.locator('[data-testid="stDataFrame"]').filter(visible=True).count() >= 3
        assert_no_exception(page)
        page.screenshot(path=str(tmp_path / "runs_compare.png"), full_page=True)
