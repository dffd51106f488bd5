"""The user-view figures of `make bench`: a stage's phase line parses, ratios and targets add up."""
from __future__ import annotations

import json

from bench.summary import add_user_view
from jobs.contract import PHASE_LINE_PREFIX, phase_metric, spark_stage_conf
from jobs.lakehouse.cli import PhaseClock


def test_phase_clock_reports_each_phase_as_metric_and_one_parsable_line():
    clock = PhaseClock()
    clock.mark("preflight")
    clock.mark("work")
    clock.mark("work")  # a phase marked twice adds up
    assert {phase_metric("preflight"), phase_metric("work"), phase_metric("python_imports")} <= set(clock.metrics())
    line = clock.line()
    assert line.startswith(PHASE_LINE_PREFIX)
    assert set(json.loads(line[len(PHASE_LINE_PREFIX):])) >= {"preflight", "work"}


def test_orchestration_ratio_is_airflow_span_over_in_session_pipeline():
    result = {"targets": {}, "details": {"definitions": {},
                                         "sizes": {"333333": {"on": {"pipeline": {"median": 50.0}}}}}}
    fixed = {"raw_to_bronze": {"median": 9.0, "phases": {}}, "silver_to_gold": {"median": 6.0, "phases": {}}}
    airflow = {"333333": {"ticks": 333_333, "airflow_date_seconds": 150.0, "bronze_to_training_seconds": 120.0}}
    add_user_view(result, fixed, airflow)
    assert result["orchestration_ratio"] == {"333333": 2.4}
    assert result["targets"]["orchestration_ratio_333333"]["met"] is False
    assert result["stage_fixed_seconds"] == {"raw_to_bronze": 9.0, "silver_to_gold": 6.0}
    assert result["targets"]["stage_fixed_seconds"]["value"] == 9.0


def test_loopback_driver_only_with_a_local_master():
    assert spark_stage_conf("local[*]")["spark.driver.host"] == "127.0.0.1"
    assert "spark.driver.host" not in spark_stage_conf("spark://spark-master:7077")
    assert spark_stage_conf(None)["spark.ui.enabled"] == "false"
