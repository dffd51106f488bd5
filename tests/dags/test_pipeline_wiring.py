"""Trade-date logic, the spark-submit command line and the MLflow link, without services."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

from jobs.trade_calendar import is_trading_day, resolve_trade_date
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.links import MLflowRunLink
from lakehouse_mlops.spark_stage import spark_stage

SEOUL = dt.timezone(dt.timedelta(hours=9))


def test_scheduled_run_processes_the_previous_seoul_day():
    # 02:00 KST on 25 Nov is 17:00 UTC on 24 Nov: the trade date is the 24th either way.
    run_time = dt.datetime(2026, 11, 24, 17, 0, tzinfo=dt.UTC)
    assert resolve_trade_date(None, run_time, "Asia/Seoul") == dt.date(2026, 11, 24)
    assert resolve_trade_date(None, dt.datetime(2026, 11, 25, 2, 0, tzinfo=SEOUL), "Asia/Seoul") \
        == dt.date(2026, 11, 24)


def test_requested_trade_date_wins_and_is_validated():
    run_time = dt.datetime(2026, 11, 25, 2, 0, tzinfo=SEOUL)
    assert resolve_trade_date("2026-11-20", run_time, "Asia/Seoul") == dt.date(2026, 11, 20)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        resolve_trade_date("20/11/2026", run_time, "Asia/Seoul")
    with pytest.raises(ValueError):
        resolve_trade_date(None, None, "Asia/Seoul")


def test_weekends_are_not_trading_days():
    assert is_trading_day(dt.date(2026, 11, 27))      # Friday
    assert not is_trading_day(dt.date(2026, 11, 28))  # Saturday
    assert not is_trading_day(dt.date(2026, 11, 29))  # Sunday


@pytest.mark.parametrize(("master", "driver_on_loopback"), [
    ("local[*]", True), ("spark://spark-master:7077", False),
    ("spark://127.0.0.1:7077", True),  # the cluster profile's master: its executors are on this machine
])
def test_stage_resolves_to_the_intended_spark_submit_command(monkeypatch, tmp_path, master, driver_on_loopback):
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", f'{{"conn_type": "spark", "host": "{master}"}}')
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    monkeypatch.setenv("SPARK_SUBMIT_BINARY", "/opt/jobs-venv/bin/spark-submit")
    monkeypatch.setenv("SPARK_JARS", "/jars/iceberg.jar,/jars/sqlite.jar")
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/jobs-venv/bin/python")
    cfg = PipelineConfig.from_env()
    op = spark_stage("silver_to_gold", cfg)
    op.application_args = ["--trade-date", "2026-11-24"]  # as rendered at run time
    hook = op._get_hook()  # the provider's own hook, as the operator builds it
    assert isinstance(hook, SparkSubmitHook)
    cmd = hook._build_spark_submit_command(op.application)
    assert cmd[0] == "/opt/jobs-venv/bin/spark-submit"
    assert cmd[cmd.index("--master") + 1] == master
    assert cmd[cmd.index("--jars") + 1] == "/jars/iceberg.jar,/jars/sqlite.jar"
    assert "spark.pyspark.python=/opt/jobs-venv/bin/python" in cmd
    assert "spark.ui.enabled=false" in cmd  # no UI port, no UI start-up cost
    # loopback only where the driver is alone: a cluster's executors must reach the driver's host
    assert ("spark.driver.bindAddress=127.0.0.1" in cmd) == driver_on_loopback
    assert cmd[-3:] == [str(Path(op.application)), "--trade-date", "2026-11-24"]
    assert op.application.endswith("jobs/stages/silver_to_gold.py")


def test_mlflow_link_points_at_the_redirect_for_this_task_instance():
    class Key:
        dag_id, run_id, task_id, try_number = "ml_pipeline", "manual__2026-11-25T02:00:00+09:00", "bronze_to_silver", 2

    url = MLflowRunLink().get_link(None, ti_key=Key())
    parsed = urlparse(url)
    assert parsed.path == "/lakehouse-mlops/mlflow-run"
    assert parse_qs(parsed.query) == {"dag_id": ["ml_pipeline"], "run_id": [Key.run_id],
                                      "task_id": ["bronze_to_silver"], "try_number": ["2"]}

    class Other(Key):
        dag_id = "someone_elses_dag"

    assert MLflowRunLink().get_link(None, ti_key=Other()) == ""
