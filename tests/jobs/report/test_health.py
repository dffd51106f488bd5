"""A trade date's health (issue 16, item 5): the verdict, its reasons, the 30-day strip, the HTML.

Pure functions over the report dict and stage_runs rows; the strip read from a real Iceberg table
is in tests/jobs/lakehouse/test_facts.py, the tag on a real parent run in tests/e2e.
"""
from __future__ import annotations

import datetime as dt

import pytest

from jobs.contract import STAGES
from jobs.report import health
from jobs.report.html import render_html

THRESHOLD = 0.3


def report(**changes) -> dict:
    base = {"dag_run": {"dag_id": "ml_pipeline", "run_id": "r", "trade_date": "2026-11-25", "state": "success"},
            "stages": [{"stage": s, "status": "FINISHED", "tries": 1} for s in STAGES],
            "gates": {"bronze": "passed", "silver": "passed"}, "drift": {"drift_share": 0.0}}
    base.update(changes)
    return base


def test_a_clean_run_is_healthy():
    assert health.judge(report(), THRESHOLD) == {"verdict": "healthy", "reasons": []}


@pytest.mark.parametrize(("changes", "verdict", "reason"), [
    ({"drift": {"drift_share": 1 / 6}}, "warning", "drift share 17% (below 30%)"),
    ({"gates": {"silver": "warned"}}, "warning", "quality gate silver warned"),
    ({"stages": [{"stage": "raw_to_bronze", "status": "FINISHED", "tries": 2}]}, "warning",
     "raw_to_bronze needed 2 tries"),
    ({"drift": {"drift_share": 0.5}}, "degraded", "drift share 50% >= 30%: retraining"),
    ({"gates": {"gold": "failed"}}, "failed", "quality gate gold failed"),
    ({"anomalies": [{"stage": "raw_to_bronze", "figure": "volume", "level": "warn",
                     "explanation": "volume = 1,820 is 4.4 robust z below its baseline 1,995"}]}, "warning",
     "anomaly in raw_to_bronze: volume = 1,820 is 4.4 robust z below its baseline 1,995"),
    ({"anomalies": [{"stage": "bronze_to_silver", "figure": "null_share.mid", "level": "fail",
                     "explanation": "null_share.mid = 0.2 ..."}]}, "failed",
     "anomaly in bronze_to_silver: null_share.mid = 0.2 ..."),
    ({"stages": [{"stage": "raw_to_bronze", "status": "FINISHED"}, {"stage": "bronze_to_silver"}]}, "failed",
     "bronze_to_silver NOT RUN"),
])
def test_each_finding_sets_its_verdict_with_the_reason(changes, verdict, reason):
    assert health.judge(report(**changes), THRESHOLD) == {"verdict": verdict, "reasons": [reason]}


def test_the_worst_finding_wins_and_only_its_reasons_are_listed():
    got = health.judge(report(drift={"drift_share": 0.5}, gates={"silver": "warned"},
                              stages=[{"stage": "model_training", "status": "FAILED"}]), THRESHOLD)
    assert got == {"verdict": "failed", "reasons": ["model_training FAILED"]}


def row(day, stage, state="success", run="run-a", try_number=1, minute=0, gates=None, figures=None):
    return {"dag_id": "ml_pipeline", "trade_date": day, "run_id": run, "stage": stage, "state": state,
            "try_number": try_number, "ended_at": dt.datetime(2026, 11, 1, 3, minute),
            "gates": list((gates or {}).items()), "figures": list((figures or {}).items())}


def test_the_strip_judges_each_day_by_its_latest_run_and_each_stage_by_its_last_try():
    d = [dt.date(2026, 11, n) for n in range(16, 22)]
    rows = [
        row(d[0], "raw_to_bronze", gates={"bronze": "passed"}),
        row(d[1], "raw_to_bronze", state="failed", minute=1), row(d[1], "raw_to_bronze", try_number=2, minute=2),
        row(d[2], "raw_to_bronze", state="failed", minute=1),
        row(d[3], "raw_to_bronze", state="failed", run="run-a", minute=1),  # a later rerun that succeeded
        row(d[3], "raw_to_bronze", run="run-b", minute=9),
        row(d[4], "monitoring", figures={"drift_share": 0.5}),
        row(d[5], "raw_to_bronze", gates={"silver": "warned"}),
        {**row(d[5], "raw_to_bronze", state="failed"), "dag_id": "ml_retraining"},  # another DAG: not this strip
    ]
    strip = health.history(rows, until=d[5] + dt.timedelta(days=1), days=30, threshold=THRESHOLD)
    assert len(strip) == 30 and strip[-1] == {"trade_date": "2026-11-22", "verdict": None, "reasons": []}
    by_day = {s["trade_date"]: s["verdict"] for s in strip}
    assert [by_day[x.isoformat()] for x in d] == ["healthy", "warning", "failed", "healthy", "degraded", "warning"]
    assert sum(v is not None for v in by_day.values()) == 6


def test_the_html_opens_with_the_verdict_and_a_square_per_day():
    strip = [{"trade_date": f"2026-11-{n:02d}", "verdict": v, "reasons": []}
             for n, v in zip(range(1, 31), ["healthy", None, "warning", "degraded", "failed"] * 6, strict=True)]
    page = render_html(report(health={"verdict": "warning", "reasons": ["quality gate silver warned"],
                                      "history": strip, "history_error": None}))
    assert page.index('class="health"') < page.index("<h2>")
    assert 'class="badge h-warning">warning</span>' in page and "<li>quality gate silver warned</li>" in page
    assert page.count('<span class="h-') == 30 and page.count('class="h-none"') == 6
    assert 'title="2026-11-05: failed"' in page and "2026-11-01 to 2026-11-30" in page


def test_without_history_the_html_says_why():
    page = render_html(report(health={"verdict": "healthy", "reasons": [], "history": None,
                                      "history_error": "NoSuchTableError: stage_runs"}))
    assert "history unavailable: NoSuchTableError: stage_runs" in page and '<span class="h-' not in page


def test_anomalies_and_features_left_out_of_drift_are_explained_on_the_page():
    page = render_html(report(
        quality={"rejected_share": 0.01, "rejected_by_reason": {"crossed_quote": 3}},
        anomalies=[{"stage": "raw_to_bronze", "figure": "volume", "level": "warn",
                    "explanation": "volume = 1,820 is 4.4 robust z below its baseline 1,995"}],
        drift={"threshold": 0.25, "drift_share": 0.0, "features": [
            {"feature": "time_to_expiry", "psi": 6.8, "band": "major", "drifted": False,
             "excluded": "moves by construction"},
            {"feature": "spread_rel", "psi": 0.01, "band": "stable", "drifted": False, "excluded": None}]}))
    quality = page[page.index("<h2>Data quality</h2>"):page.index("<h2>Feature drift</h2>")]
    assert "Anomalies against history" in quality and "volume = 1,820 is 4.4 robust z below" in quality
    assert "Not in the drift share: <b>time_to_expiry</b> moves by construction" in page
    assert "spread_rel</b>" not in page


def test_the_strip_names_the_stage_of_an_anomaly():
    day = dt.date(2026, 11, 16)
    got = health.judge_facts([row(day, "bronze_to_silver", gates={"silver": "passed", "anomaly": "warned"}),
                              row(day, "raw_to_bronze", gates={"anomaly": "learning"})], THRESHOLD)
    assert got == {"verdict": "warning", "reasons": ["anomaly in bronze_to_silver warned"]}
