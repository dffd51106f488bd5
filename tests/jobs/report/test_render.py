"""Tests for the morning report: all panels present, numbers readable, text escaped, failed runs render."""
from __future__ import annotations

import base64
import copy
import re

import matplotlib.image as mpimg
import pytest

from jobs.contract import STAGES
from jobs.report import render as r

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PANEL_WORDS = ("Row funnel", "Stage durations", "Data quality", "Feature drift", "Model", "ROC")
FEATURES = ("ret_1", "ret_5", "realized_vol_15", "spread_rel", "iv_proxy", "log_volume")
PSI = (0.005, 0.012, 0.31, 0.14, 0.04, 0.0)


def _band(psi: float) -> str:
    return "stable" if psi < 0.1 else "moderate" if psi < 0.25 else "major"


@pytest.fixture
def full() -> dict:
    grid = [i / 10 for i in range(11)]
    return {
        "dag_run": {"dag_id": "ml_pipeline", "run_id": "scheduled__2026-11-25T00:00:00+00:00",
                    "trade_date": "2026-11-25", "state": "success",
                    "mlflow_url": "http://mlflow:5000/#/experiments/1/runs/abc",
                    "airflow_url": "http://airflow:8080/dags/ml_pipeline/runs/x"},
        "funnel": [["RAW", 333333], ["Bronze", 333333], ["Silver", 332666], ["Quarantine", 667],
                   ["Gold bars", 16162], ["Features", 16162], ["Predictions", 16162]],
        "stages": [{"stage": s, "status": "FINISHED", "duration_seconds": 5.0 + i, "rows_in": 333333,
                    "rows_out": 333333, "rows_rejected": 0} for i, s in enumerate(STAGES)],
        "quality": {"rejected_share": 0.002,
                    "rejected_by_reason": {"null_key": 167, "non_positive_price": 166, "crossed_quote": 167,
                                           "outside_trade_date": 0, "duplicate": 167}},
        "drift": {"threshold": 0.25, "drift_share": 1 / 6, "prediction_psi": 0.02,
                  "features": [{"feature": f, "psi": p, "band": _band(p), "ks_pvalue": 0.003,
                                "wasserstein_norm": 0.07, "drifted": p >= 0.25}
                               for f, p in zip(FEATURES, PSI, strict=False)]},
        "model": {"challenger_version": "3", "champion_version": "2", "decision": "kept_champion",
                  "challenger": {"auc": 0.655, "accuracy": 0.61, "f1": 0.58, "log_loss": 0.66},
                  "champion": {"auc": 0.664, "accuracy": 0.62, "f1": 0.59, "log_loss": 0.65},
                  "roc": {"fpr": grid, "tpr": [x ** 0.6 for x in grid], "auc": 0.655}},
    }


@pytest.fixture
def failed() -> dict:
    return {
        "dag_run": {"dag_id": "ml_pipeline", "run_id": "manual__1", "trade_date": "2026-11-26",
                    "state": "failed", "mlflow_url": None},
        "funnel": [["RAW", 333333], ["Bronze", 333333], ["Silver", None]],
        "stages": [{"stage": "raw_to_bronze", "status": "FINISHED", "duration_seconds": 6.9,
                    "rows_in": 333333, "rows_out": 333333, "rows_rejected": 0},
                   {"stage": "bronze_to_silver", "status": "FAILED", "duration_seconds": None},
                   {"stage": "silver_to_gold"}],
        "quality": {"rejected_share": None, "rejected_by_reason": None},
        "drift": None,
        "model": None,
    }


def _titles(report: dict) -> list[str]:
    return [ax.get_title() for ax in r.build_figure(report).axes]


def _png_shape(path) -> tuple[int, ...]:
    return mpimg.imread(path).shape


def _text_only(page: str) -> str:
    """The page without the embedded image, so searches cannot hit base64 noise."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def test_figure_has_every_panel_with_its_numbers(full):
    titles = _titles(full)
    assert len(titles) == 6
    for word in PANEL_WORDS:
        assert sum(word in t for t in titles) >= 1, (word, titles)
    joined = " | ".join(titles)
    assert "0.20%" in joined                    # rejected share in the quality title
    assert "16.7%" in joined and "0.020" in joined  # drift share and prediction PSI
    assert "kept champion" in joined            # the decision in the model title


def test_drift_panel_is_sorted_and_draws_both_lines(full):
    fig = r.build_figure(full)
    ax = next(a for a in fig.axes if "Feature drift" in a.get_title())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # y axis is inverted, so tick order is top-to-bottom: highest PSI first.
    assert labels == sorted(FEATURES, key=lambda f: -dict(zip(FEATURES, PSI, strict=False))[f])
    vlines = {round(line.get_xdata()[0], 3) for line in ax.get_lines()}
    assert {0.1, 0.25} <= vlines


def test_failed_stage_gets_a_distinct_colour(full):
    full["stages"][5]["status"] = "FAILED"
    ax = next(a for a in r.build_figure(full).axes if "Stage durations" in a.get_title())
    colours = [p.get_facecolor() for p in ax.patches[:len(STAGES)]]
    assert colours[5] != colours[0]
    assert colours.count(colours[0]) == len(STAGES) - 1
    assert "1 failed" in ax.get_title()


def test_quarantine_bar_differs_from_the_flow(full):
    ax = next(a for a in r.build_figure(full).axes if "Row funnel" in a.get_title())
    colours = [p.get_facecolor() for p in ax.patches[:7]]
    assert colours[3] != colours[0] and colours.count(colours[0]) == 6


def test_png_is_a_real_image_of_the_expected_size(full, tmp_path):
    path = r.render_png(full, tmp_path / "sub" / "x.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 30_000 < len(data) < 3_000_000
    height, width = _png_shape(path)[:2]
    assert (width, height) == (1600, 1000)


def test_html_has_sections_numbers_links_and_image(full, tmp_path):
    png = r.render_png(full, tmp_path / "x.png")
    page = r.render_html(full, png)
    text = _text_only(page)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    for word in PANEL_WORDS:
        assert f"<h2>{word}" in text, word
    for number in ("333,333", "332,666", "16,162", "667", "0.20%", "0.655", "0.664", "0.310"):
        assert number in text, number
    assert "kept_champion" in text and "2026-11-25" in text
    assert 'href="http://airflow:8080/dags/ml_pipeline/runs/x"' in page
    assert 'href="http://mlflow:5000/#/experiments/1/runs/abc"' in page
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match and base64.b64decode(match.group(1)) == png.read_bytes()
    assert "http" not in re.sub(r'href="http[^"]*"', "", text)  # no external assets
    assert "major" in text and "stable" in text and "moderate" in text  # drift band per feature


def test_html_without_image_has_no_img(full):
    page = r.render_html(full)
    assert "<img" not in page and "<h2>Row funnel" in page


def test_dict_text_is_escaped_in_html_and_harmless_in_png(full, tmp_path):
    evil = "<script>alert(1)</script>"
    full["dag_run"]["run_id"] = evil
    full["dag_run"]["airflow_url"] = "javascript:alert(1)"
    full["drift"]["features"][0]["feature"] = 'x"><img src=y onerror=alert(1)>'
    full["funnel"][0][0] = "$RAW$ \\frac{"  # would be mathtext (and fail to parse) if unescaped
    page = r.render_html(full)
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=y" not in page
    assert "javascript:" not in page
    assert r.render_png(full, tmp_path / "evil.png").read_bytes()[:8] == PNG_MAGIC


def test_failed_run_renders_with_na(failed, tmp_path):
    titles = _titles(failed)
    for word in PANEL_WORDS:
        assert any(word in t for t in titles), (word, titles)
    path = r.render_png(failed, tmp_path / "failed.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    page = r.render_html(failed, path)
    text = _text_only(page)
    for word in PANEL_WORDS:
        assert f"<h2>{word}" in text, word
    assert "n/a" in text and "failed" in text
    assert 'class="badge bad"' in text
    assert re.search(r'<td class="bad">FAILED</td>', text)  # the failed stage is coloured
    assert "href=" not in text                            # no URL given, no dead link


def test_first_model_without_champion_or_roc(full):
    full["model"]["champion"] = None
    full["model"]["champion_version"] = None
    full["model"]["roc"] = None
    full["model"]["decision"] = "promoted"
    titles = _titles(full)
    assert any("Model" in t and "promoted" in t for t in titles)
    assert any(t.startswith("ROC") for t in titles)
    text = r.render_html(full)
    assert "promoted" in text and "n/a" in text and "0.655" in text


@pytest.mark.parametrize("report", [{}, None, {"dag_run": None, "funnel": "garbage", "stages": [None, 3],
                                               "quality": [], "drift": {"features": None}, "model": {}}])
def test_empty_or_malformed_input_still_renders(report, tmp_path):
    paths = r.write_report(report, tmp_path)
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    assert "n/a" in paths["html"].read_text(encoding="utf-8")


def test_number_formatting():
    assert r.fmt_int(333333) == "333,333"
    assert r.fmt_int(None) == "n/a" and r.fmt_float(float("nan")) == "n/a"
    assert r.fmt_float(float("inf")) == "inf"
    assert r.fmt_pct(0.002) == "0.20%" and r.fmt_pct(None) == "n/a"


def test_write_report_writes_both_files(full, tmp_path):
    paths = r.write_report(copy.deepcopy(full), tmp_path / "out")
    assert set(paths) == {"png", "html"}
    assert paths["png"] == tmp_path / "out" / "morning_report.png"
    assert paths["html"] == tmp_path / "out" / "morning_report.html"
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    page = paths["html"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "333,333" in page


def test_a_retraining_run_with_only_model_stages_renders(tmp_path):
    """ml_retraining runs no data stages: the funnel is unknown except the predictions."""
    from jobs.report.render import write_report

    report = {
        "dag_run": {"dag_id": "ml_retraining", "run_id": "asset_triggered__x", "trade_date": "2026-11-26",
                    "state": "success"},
        "funnel": [["RAW", None], ["Bronze", None], ["Silver", None], ["Quarantine", None],
                   ["Gold bars", None], ["Features", None], ["Predictions", 16156.0]],
        "stages": [{"stage": "model_training", "status": "FINISHED", "duration_seconds": 20.0},
                   {"stage": "model_deployment", "status": "FINISHED", "duration_seconds": 15.0}],
        "quality": {"rejected_share": None, "rejected_by_reason": {}},
        "drift": None,
        "model": {"challenger_version": "4", "champion_version": "3", "decision": "promoted",
                  "challenger": {"auc": 0.6}, "champion": {"auc": 0.55}, "roc": None},
    }
    paths = write_report(report, tmp_path)
    assert paths["png"].stat().st_size > 10_000
    assert "16,156" in paths["html"].read_text()
