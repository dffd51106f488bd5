"""The command line every stage shares: parse the Airflow context, open the run, start Spark, run the body.

Each ``jobs/stages/<stage>.py`` ends with ``sys.exit(stage_cli(<stage>, run))``; ``run`` has the
``StageBody`` signature, so a stage can also be called in-process (tests, ``make bench``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

from pyspark.sql import SparkSession

from jobs.contract import (
    EXIT_DETERMINISTIC,
    PHASE_LINE_PREFIX,
    TAG_SPARK_APP_ID,
    TAG_SPARK_MASTER,
    bounded_mlflow_http,
    phase_metric,
)
from jobs.lakehouse.dependencies import (
    DEPENDENCY_EXIT_CODE,
    DependencyUnavailable,
    preflight_enabled,
    stage_dependencies,
    wait_for_dependencies,
)
from jobs.lakehouse.facts import record_stage_run
from jobs.lakehouse.model_trust import UntrustedModel
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import forget_snapshots_read, spark_session
from jobs.lakehouse.tracking import RunContext, StageTracker, stage_run
from jobs.quality.rules import QualityGateFailed

# Failures a retry cannot mend: the same data and settings fail the same way again. The stage exits
# with EXIT_DETERMINISTIC and Airflow fails the task at once (one alert, no backoff).
DETERMINISTIC_ERRORS = (QualityGateFailed, FileNotFoundError, UntrustedModel)

# What a stage does once its run is open: (Spark or None when the stage needs none, settings,
# who runs it, where it reports) -> None; a raised exception fails the run and the task.
StageBody = Callable[[SparkSession | None, Settings, RunContext, StageTracker], None]


def _started_at(pid: int | str) -> float | None:
    """Wall-clock start of a process from /proc (10 ms resolution), None where /proc is not Linux's."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
        ticks = int(stat[stat.rfind(")") + 2:].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class PhaseClock:
    """Wall seconds per phase of a stage process, so `make bench` can say where fixed cost goes.

    ``jvm_start`` is spark-submit's JVM (this process's parent) up to this Python process;
    ``python_imports`` is this process's start up to stage_cli (interpreter, pyspark, the stage's
    modules); every ``mark`` adds the time since the previous one to its phase.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.time()
        mine, parent = _started_at("self"), _started_at(os.getppid())
        if mine is not None:
            if parent is not None and _is_spark_submit(os.getppid()):
                self.seconds["jvm_start"] = max(mine - parent, 0.0)
            self.seconds["python_imports"] = max(self.last - mine, 0.0)

    def mark(self, phase: str) -> None:
        now = time.time()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (now - self.last)
        self.last = now

    def metrics(self) -> dict[str, float]:
        return {phase_metric(k): round(v, 3) for k, v in self.seconds.items()}

    def line(self) -> str:
        return PHASE_LINE_PREFIX + json.dumps({k: round(v, 3) for k, v in self.seconds.items()})


def _is_spark_submit(pid: int) -> bool:
    try:
        return b"SparkSubmit" in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


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
    clock = PhaseClock()
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
    forget_snapshots_read()  # stages called in one process (tests, make bench) each record their own inputs
    before_run, during_run = stage_dependencies(stage, settings)
    spark = tracker = None
    try:
        if preflight_enabled():  # no run is opened and no Spark started while MLflow is down
            wait_for_dependencies(before_run)
        clock.mark("preflight")
        try:
            with stage_run(ctx, settings, during_run, check_first=preflight_enabled()) as tracker:
                clock.mark("mlflow_open")
                app = f"lakehouse-{stage}-{ctx.trade_date}"
                spark = spark_session(app, settings, clock=clock) if needs_spark else None
                if spark is not None:
                    tracker.tags({TAG_SPARK_APP_ID: spark.sparkContext.applicationId,
                                  TAG_SPARK_MASTER: spark.sparkContext.master})
                clock.mark("mlflow_open")
                body(spark, settings, ctx, tracker)
                clock.mark("work")
                tracker.metrics(clock.metrics())
            clock.mark("mlflow_close")
        finally:  # success or failure: the try's row in the stage_runs facts table
            if tracker is not None:
                record_stage_run(spark, settings, ctx, tracker)
                clock.mark("facts")
        print(clock.line(), file=sys.stderr)
    except DependencyUnavailable as exc:
        print(f"{stage} {ctx.trade_date}: FAILED, dependency unavailable: {exc}", file=sys.stderr)
        return DEPENDENCY_EXIT_CODE
    except DETERMINISTIC_ERRORS as exc:
        traceback.print_exc()  # the alert's summary reads the last "...Error: ..." line of the output
        print(f"{stage} {ctx.trade_date}: FAILED, will not retry: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_DETERMINISTIC
    print(f"{stage} {ctx.trade_date}: done", file=sys.stderr)
    return 0

