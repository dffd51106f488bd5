"""The command line every stage shares: parse the Airflow context, open the run, start Spark, run the body.

Each ``jobs/stages/<stage>.py`` ends with ``sys.exit(stage_cli(<stage>, run))``; ``run`` has the
``StageBody`` signature, so a stage can also be called in-process (tests, ``make bench``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import traceback
from collections.abc import Callable

from pyspark.sql import SparkSession

from jobs.contract import EXIT_DETERMINISTIC, TAG_SPARK_APP_ID, TAG_SPARK_MASTER, bounded_mlflow_http
from jobs.lakehouse.dependencies import (
    DEPENDENCY_EXIT_CODE,
    DependencyUnavailable,
    preflight_enabled,
    stage_dependencies,
    wait_for_dependencies,
)
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import spark_session
from jobs.lakehouse.tracking import RunContext, StageTracker, stage_run
from jobs.quality.rules import QualityGateFailed

# Failures a retry cannot mend: the same data and settings fail the same way again. The stage exits
# with EXIT_DETERMINISTIC and Airflow fails the task at once (one alert, no backoff).
DETERMINISTIC_ERRORS = (QualityGateFailed, FileNotFoundError)

# What a stage does once its run is open: (Spark or None when the stage needs none, settings,
# who runs it, where it reports) -> None; a raised exception fails the run and the task.
StageBody = Callable[[SparkSession | None, Settings, RunContext, StageTracker], None]


def parse_date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (expected YYYY-MM-DD): {value!r}") from None


def stage_cli(stage: str, body: StageBody, argv: list[str] | None = None, needs_spark: bool = True) -> int:
    """Parse the Airflow context, open the stage run, start Spark, run ``body``."""
    parser = argparse.ArgumentParser(prog=stage, description=f"Pipeline stage {stage}")
    parser.add_argument("--trade-date", type=parse_date, required=True)
    parser.add_argument("--parent-run-id", default=None, help="MLflow run of the DAG run")
    parser.add_argument("--dag-id", default=None)
    parser.add_argument("--run-id", default=None, help="Airflow DAG run id")
    parser.add_argument("--task-id", default=None)
    parser.add_argument("--try-number", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"{stage} {args.trade_date}: FAILED, bad configuration: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_DETERMINISTIC
    ctx = RunContext(stage=stage, trade_date=args.trade_date, parent_run_id=args.parent_run_id,
                     dag_id=args.dag_id, run_id=args.run_id, task_id=args.task_id,
                     try_number=args.try_number)
    bounded_mlflow_http()
    before_run, during_run = stage_dependencies(stage, settings)
    try:
        if preflight_enabled():  # no run is opened and no Spark started while MLflow is down
            wait_for_dependencies(before_run)
        with stage_run(ctx, settings, during_run, check_first=preflight_enabled()) as tracker:
            spark = spark_session(f"lakehouse-{stage}-{ctx.trade_date}", settings) if needs_spark else None
            if spark is not None:
                tracker.tags({TAG_SPARK_APP_ID: spark.sparkContext.applicationId,
                              TAG_SPARK_MASTER: spark.sparkContext.master})
            body(spark, settings, ctx, tracker)
    except DependencyUnavailable as exc:
        print(f"{stage} {ctx.trade_date}: FAILED, dependency unavailable: {exc}", file=sys.stderr)
        return DEPENDENCY_EXIT_CODE
    except DETERMINISTIC_ERRORS as exc:
        traceback.print_exc()  # the alert's summary reads the last "...Error: ..." line of the output
        print(f"{stage} {ctx.trade_date}: FAILED, will not retry: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_DETERMINISTIC
    print(f"{stage} {ctx.trade_date}: done", file=sys.stderr)
    return 0

