"""Monitoring facts in the lakehouse itself: one row per stage run and try in ``stage_runs``.

MLflow holds every figure a stage logs, but a data team asks its questions in SQL ("which stage got
slower this month", "reject share by reason per day"), next to the tables the figures describe.
So each stage, when its try ends (success or failure), appends one row to the Iceberg table
``stage_runs`` (partitioned by trade date) through its own Spark session: the same catalog as the
data, readable from Spark SQL and pyiceberg here and from Trino in production. The row is built
from what the stage logged to its MLflow run (``StageTracker.logged_*``), so both always agree.

A try that ends before its Spark session exists (a dependency down at the start) or whose process
is killed has no row; its MLflow run (ended FAILED, or KILLED by the next try) and the alert hold
it. Recording never fails a stage: a failed append prints one warning. ``LAKEHOUSE_FACTS=off``
switches it off.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping

from jobs import contract as c
from jobs.contract import env

# Spark SQL DDL of the table; one definition (jobs and tests read it from here).
STAGE_RUNS_COLUMNS = (
    ("trade_date", "DATE"),
    ("dag_id", "STRING"),
    ("run_id", "STRING"),
    ("task_id", "STRING"),
    ("try_number", "INT"),
    ("stage", "STRING"),
    ("state", "STRING"),
    ("started_at", "TIMESTAMP"),
    ("ended_at", "TIMESTAMP"),
    ("duration_seconds", "DOUBLE"),
    ("rows_in", "BIGINT"),
    ("rows_out", "BIGINT"),
    ("rows_rejected", "BIGINT"),
    ("rejected_by_reason", "MAP<STRING, BIGINT>"),
    ("snapshots_in", "MAP<STRING, BIGINT>"),
    ("snapshots_out", "MAP<STRING, BIGINT>"),
    ("gates", "MAP<STRING, STRING>"),
    ("figures", "MAP<STRING, DOUBLE>"),
    ("error", "STRING"),
    ("mlflow_run_id", "STRING"),
    ("airflow_url", "STRING"),
    ("spark_app_id", "STRING"),
)
# Further figures a stage logged that the health history and the README's questions read; the figures
# a stage watches for anomalies (logged as watch.<figure>) are kept too, as the next dates' history.
WATCH_PREFIX = "watch."
FIGURES = (c.METRIC_DRIFT_SHARE, "prediction_psi", "drifted_features", "rejected_share", "files_quarantined",
           "auc", "promoted", "champion_version")
SUCCESS = "success"
FAILED = "failed"


def facts_enabled() -> bool:
    return env("LAKEHOUSE_FACTS", "on").strip().lower() not in ("off", "0", "false", "no")


def _int(metrics: Mapping[str, float], key: str) -> int | None:
    value = metrics.get(key)
    return int(value) if value is not None else None


def stage_row(ctx, state: str, started_at: dt.datetime, ended_at: dt.datetime, duration_seconds: float,
              metrics: Mapping[str, float], tags: Mapping[str, str], run_id: str | None, error: str | None,
              snapshots_in: Mapping[str, int], airflow_url: str | None = None) -> dict:
    """The row of one stage try, from what it logged (metric and tag keys of jobs.contract)."""
    rejected = {k.removeprefix("rejected."): int(v) for k, v in metrics.items()
                if k.startswith("rejected.") and v is not None}
    out: dict[str, int] = {}
    for key, value in tags.items():  # iceberg.table + iceberg.snapshot_id, iceberg.<x>_table + ..._snapshot_id
        if key == c.TAG_SNAPSHOT_ID and tags.get(c.TAG_TABLE):
            out[tags[c.TAG_TABLE]] = int(value)
        elif key.startswith("iceberg.") and key.endswith("_snapshot_id") and key != c.TAG_SNAPSHOT_ID:
            table = tags.get(key.removesuffix("_snapshot_id") + "_table")
            if table:
                out[table] = int(value)
    gate_prefix = c.TAG_QUALITY_GATE + "."
    gates = {k.removeprefix(gate_prefix): str(v) for k, v in tags.items()
             if k.startswith(gate_prefix) and "." not in k.removeprefix(gate_prefix)}
    return {
        "trade_date": ctx.trade_date, "dag_id": ctx.dag_id, "run_id": ctx.run_id,
        "task_id": ctx.task_id or ctx.stage, "try_number": ctx.try_number, "stage": ctx.stage, "state": state,
        "started_at": started_at.replace(tzinfo=None), "ended_at": ended_at.replace(tzinfo=None),
        "duration_seconds": float(duration_seconds),
        "rows_in": _int(metrics, c.METRIC_ROWS_IN), "rows_out": _int(metrics, c.METRIC_ROWS_OUT),
        "rows_rejected": _int(metrics, c.METRIC_ROWS_REJECTED), "rejected_by_reason": rejected,
        "snapshots_in": dict(snapshots_in), "snapshots_out": out, "gates": gates,
        "figures": {**{k: float(metrics[k]) for k in FIGURES if metrics.get(k) is not None},
                    **{k.removeprefix(WATCH_PREFIX): float(v) for k, v in metrics.items()
                       if k.startswith(WATCH_PREFIX) and v is not None}},
        "error": error[:4000] if error else None, "mlflow_run_id": run_id or None,
        "airflow_url": airflow_url or tags.get(c.TAG_AIRFLOW_URL), "spark_app_id": tags.get(c.TAG_SPARK_APP_ID),
    }


def ensure_stage_runs(spark, table: str) -> None:
    columns = ", ".join(f"{name} {kind}" for name, kind in STAGE_RUNS_COLUMNS)
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING iceberg PARTITIONED BY (trade_date)")


def append_stage_row(spark, table: str, row: dict) -> None:
    """One append commit (no partition is replaced: every try keeps its row)."""
    ensure_stage_runs(spark, table)
    schema = ", ".join(f"{name} {kind}" for name, kind in STAGE_RUNS_COLUMNS)
    frame = spark.createDataFrame([tuple(row[name] for name, _ in STAGE_RUNS_COLUMNS)], schema=schema)
    frame.writeTo(table).append()


def record_stage_run(spark, settings, ctx, tracker) -> bool:
    """Append the try's row; a warning, never an exception, when it cannot be written."""
    if spark is None or not facts_enabled() or tracker.outcome is None:
        return False
    from jobs.lakehouse.tables import snapshots_read

    outcome = tracker.outcome
    try:
        url = (c.task_url(settings.airflow_ui_url, ctx.dag_id, ctx.run_id, ctx.task_id)
               if ctx.dag_id and ctx.run_id and ctx.task_id else None)
        row = stage_row(ctx, outcome.state, outcome.started_at, outcome.ended_at, outcome.duration_seconds,
                        tracker.logged_metrics, tracker.logged_tags, tracker.run_id, outcome.error,
                        snapshots_read(), url)
        append_stage_row(spark, settings.table(c.STAGE_RUNS), row)
        return True
    except Exception as exc:  # facts never fail a stage
        print(f"stage facts not recorded in {c.STAGE_RUNS}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
