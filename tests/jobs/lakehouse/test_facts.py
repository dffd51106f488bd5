"""Monitoring facts (issue 16, item 1): every stage try leaves one row in the Iceberg table stage_runs.

Real local Spark and Iceberg (the unit catalog), the real stage_cli; MLflow is off here
(LAKEHOUSE_TRACKING=off), so the row is built from what the stage reported to its tracker, as it is
from the MLflow figures on the stack.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from jobs import contract
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.facts import STAGE_RUNS_COLUMNS
from jobs.lakehouse.tables import current_snapshot, read_date, replace_date_partition
from jobs.quality.rules import QualityGateFailed

DAY = dt.date(2026, 10, 14)


@pytest.fixture(autouse=True)
def no_services(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_TRACKING", "off")
    monkeypatch.setenv("DEPENDENCY_PREFLIGHT", "off")


def argv(run_id: str, try_number: int = 1, day: dt.date = DAY) -> list[str]:
    return ["--trade-date", day.isoformat(), "--dag-id", contract.ML_PIPELINE, "--run-id", run_id,
            "--task-id", contract.SILVER_TO_GOLD, "--try-number", str(try_number)]


def rows_of(spark, settings, run_id: str) -> list[dict]:
    table = settings.table(contract.STAGE_RUNS)
    return [r.asDict(recursive=True) for r in
            spark.sql(f"SELECT * FROM {table} WHERE run_id = '{run_id}' ORDER BY try_number").collect()]


@pytest.fixture
def source(spark, settings):
    """An input table with one date, read by the stage body below."""
    table = settings.table("facts_source")
    frame = spark.createDataFrame([(DAY, 1.0), (DAY, 2.0), (DAY, 3.0)], "trade_date DATE, x DOUBLE")
    replace_date_partition(frame, table, DAY)
    return table


def copying_body(source: str, fail_gate: bool = False):
    """A stage that reads one date, passes or fails its gate, and publishes 2 of 3 rows (1 rejected)."""
    def body(spark, settings, ctx, tracker):
        frame = read_date(spark, source, ctx.trade_date)
        tracker.metrics({"rejected.negative_price": 1, contract.METRIC_ROWS_REJECTED: 1})
        if fail_gate:
            tracker.tags({f"{contract.TAG_QUALITY_GATE}.gold": "failed"})
            raise QualityGateFailed(f"quality gate 'gold' failed for {ctx.trade_date}: null_share 0.4 > 0.01")
        tracker.tags({f"{contract.TAG_QUALITY_GATE}.gold": "passed",
                      f"{contract.TAG_QUALITY_GATE}.gold.failures": "not a gate of its own"})
        snap = replace_date_partition(frame.where("x > 1"), settings.table("facts_target"), ctx.trade_date)
        tracker.published(snap, rows_in=3)
    return body


def test_a_successful_try_records_its_figures_snapshots_and_gates(spark, settings, source):
    read_snapshot = current_snapshot(spark, source).snapshot_id
    assert stage_cli(contract.SILVER_TO_GOLD, copying_body(source), argv=argv("manual__ok")) == 0
    [row] = rows_of(spark, settings, "manual__ok")
    written = current_snapshot(spark, settings.table("facts_target"))
    assert row["state"] == "success" and row["stage"] == contract.SILVER_TO_GOLD
    assert row["trade_date"] == DAY and row["dag_id"] == contract.ML_PIPELINE and row["try_number"] == 1
    assert (row["rows_in"], row["rows_out"], row["rows_rejected"]) == (3, 2, 1)
    assert row["rejected_by_reason"] == {"negative_price": 1}
    assert row["snapshots_in"] == {source: read_snapshot}
    assert row["snapshots_out"] == {settings.table("facts_target"): written.snapshot_id}
    assert row["gates"] == {"gold": "passed"}
    assert row["error"] is None and row["duration_seconds"] > 0 and row["ended_at"] >= row["started_at"]
    assert row["airflow_url"].endswith(f"/dags/{contract.ML_PIPELINE}/runs/manual__ok/tasks/{contract.SILVER_TO_GOLD}")
    assert row["spark_app_id"] == spark.sparkContext.applicationId


def test_a_failed_try_and_its_retry_are_two_rows(spark, settings, source):
    code = stage_cli(contract.SILVER_TO_GOLD, copying_body(source, fail_gate=True), argv=argv("manual__retry", 1))
    assert code == contract.EXIT_DETERMINISTIC
    assert stage_cli(contract.SILVER_TO_GOLD, copying_body(source), argv=argv("manual__retry", 2)) == 0
    failed, passed = rows_of(spark, settings, "manual__retry")
    assert (failed["try_number"], failed["state"], failed["gates"]) == (1, "failed", {"gold": "failed"})
    assert failed["error"].startswith("QualityGateFailed: quality gate 'gold' failed for 2026-10-14")
    assert failed["rows_out"] is None and failed["snapshots_out"] == {}
    assert (passed["try_number"], passed["state"], passed["rows_out"]) == (2, "success", 2)


def test_the_readme_question_reject_share_by_reason_per_day_is_one_query(spark, settings, source):
    assert stage_cli(contract.SILVER_TO_GOLD, copying_body(source), argv=argv("manual__q")) == 0
    table = settings.table(contract.STAGE_RUNS)
    got = spark.sql(f"""
        SELECT trade_date, reason, sum(n) / sum(rows_in) AS share
        FROM {table} LATERAL VIEW explode(rejected_by_reason) r AS reason, n
        WHERE state = 'success' AND run_id = 'manual__q'
        GROUP BY trade_date, reason""").collect()
    assert [(r["trade_date"], r["reason"], round(r["share"], 3)) for r in got] == [(DAY, "negative_price", 0.333)]


def test_a_facts_table_that_cannot_take_the_row_never_fails_the_stage(spark, settings, source, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("ICEBERG_NAMESPACE", "facts_broken")
    from jobs.lakehouse.settings import Settings

    broken = Settings.from_env()
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {broken.catalog}.{broken.namespace}")
    spark.sql(f"CREATE TABLE IF NOT EXISTS {broken.table(contract.STAGE_RUNS)} (trade_date DATE, x INT) USING iceberg")
    assert stage_cli(contract.SILVER_TO_GOLD, lambda *a: None, argv=argv("manual__broken")) == 0
    assert f"stage facts not recorded in {contract.STAGE_RUNS}" in capsys.readouterr().err
    assert spark.table(broken.table(contract.STAGE_RUNS)).count() == 0


def test_the_table_is_partitioned_by_trade_date_and_has_the_documented_columns(spark, settings, source):
    assert stage_cli(contract.SILVER_TO_GOLD, lambda *a: None, argv=argv("manual__schema")) == 0
    table = settings.table(contract.STAGE_RUNS)
    assert [f.name for f in spark.table(table).schema.fields] == [name for name, _ in STAGE_RUNS_COLUMNS]
    partitions = spark.sql(f"SELECT partition FROM {table}.partitions").schema["partition"].dataType
    assert [f.name for f in partitions.fields] == ["trade_date"]


def test_the_readme_queries_run_and_the_failed_tries_query_finds_the_failure(spark, settings, source):
    today = dt.date.today()  # the README's queries look at the last 30 days
    replace_date_partition(spark.createDataFrame([(today, 2.0)], "trade_date DATE, x DOUBLE"), source, today)
    assert stage_cli(contract.SILVER_TO_GOLD, copying_body(source), argv=argv("manual__recent", day=today)) == 0
    code = stage_cli(contract.SILVER_TO_GOLD, copying_body(source, fail_gate=True),
                     argv=argv("manual__readme", day=dt.date.today()))
    assert code == contract.EXIT_DETERMINISTIC
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Monitoring facts in the lakehouse", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    queries = [q for q in (re.sub(r"--[^\n]*", "", part).strip() for part in block.split(";")) if q]
    assert len(queries) == 3
    results = [spark.sql(q.replace("hive_prod.option_ticks_db.stage_runs", settings.table(contract.STAGE_RUNS)))
               .collect() for q in queries]
    assert any(r["stage"] == contract.SILVER_TO_GOLD for r in results[0])
    failed = [r for r in results[2] if r["airflow_url"] and "manual__readme" in r["airflow_url"]]
    assert failed and failed[0]["error"].startswith("QualityGateFailed")


def test_the_health_strip_reads_the_facts_table_and_a_failed_rerun_turns_the_day_red(spark, settings, source):
    from jobs.report.health import read_history

    day = dt.date(2026, 10, 21)
    replace_date_partition(spark.createDataFrame([(day, 2.0)], "trade_date DATE, x DOUBLE"), source, day)
    assert stage_cli(contract.SILVER_TO_GOLD, copying_body(source), argv=argv("manual__h1", day=day)) == 0
    strip, error = read_history(day)
    assert error is None and len(strip) == 30 and strip[-1]["trade_date"] == day.isoformat()
    assert strip[-1]["verdict"] == "healthy" and strip[-2]["verdict"] is None
    code = stage_cli(contract.SILVER_TO_GOLD, copying_body(source, fail_gate=True), argv=argv("manual__h2", day=day))
    assert code == contract.EXIT_DETERMINISTIC
    strip, _ = read_history(day)
    assert strip[-1]["verdict"] == "failed" and "quality gate gold failed" in strip[-1]["reasons"]
