"""MLflow: one child run per stage under the DAG run's parent run.

``stage_run`` opens the run, ends earlier attempts that died RUNNING, checks the services the
body needs, always logs the duration and ends FAILED with the error when the body raises.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jobs import contract as c
from jobs.lakehouse.dependencies import (
    Dependency,
    DependencyUnavailable,
    first_unreachable,
    wait_for_dependencies,
)
from jobs.lakehouse.settings import Settings, tracking_enabled
from jobs.lakehouse.tables import Snapshot


@dataclass(frozen=True)
class StageOutcome:
    """How a stage try ended, set by ``stage_run`` for the facts row (jobs/lakehouse/facts.py)."""

    state: str
    started_at: dt.datetime
    ended_at: dt.datetime
    duration_seconds: float
    error: str | None = None


@dataclass(frozen=True)
class RunContext:
    """Who is running this stage: the Airflow task instance (or a person at a shell)."""

    stage: str
    trade_date: dt.date
    parent_run_id: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    def tags(self, settings: Settings) -> dict[str, str]:
        tags = {
            c.TAG_STAGE: self.task_id or self.stage,
            c.TAG_TRADE_DATE: self.trade_date.isoformat(),
        }
        if self.dag_id:
            tags[c.TAG_DAG_ID] = self.dag_id
        if self.run_id:
            tags[c.TAG_RUN_ID] = self.run_id
        if self.task_id:
            tags[c.TAG_TASK_ID] = self.task_id
        if self.try_number is not None:
            tags[c.TAG_TRY_NUMBER] = str(self.try_number)
        if self.dag_id and self.run_id and self.task_id:
            url = c.task_url(settings.airflow_ui_url, self.dag_id, self.run_id, self.task_id)
            tags[c.TAG_AIRFLOW_URL] = url
            tags[c.TAG_NOTE] = (
                f"Stage `{self.stage}` for trade date {self.trade_date}. "
                f"[Open this task instance in Airflow]({url})"
            )
        return tags


class StageTracker:
    """What a stage reports: thin wrapper so stage code never touches MLflow plumbing."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        # What was logged, kept for the Prometheus push at the end of the run (jobs/lakehouse/metrics.py).
        self.logged_metrics: dict[str, float] = {}
        self.logged_tags: dict[str, str] = {}
        self.outcome: StageOutcome | None = None

    def ended(self, state: str, started_at: dt.datetime, duration: float, error: str | None = None) -> None:
        self.outcome = StageOutcome(state, started_at, dt.datetime.now(dt.UTC), duration, error)

    def metrics(self, values: dict[str, float]) -> None:
        import mlflow

        clean = {k: float(v) for k, v in values.items() if v is not None}
        if clean:
            mlflow.log_metrics(clean)
            self.logged_metrics.update(clean)

    def params(self, values: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v) for k, v in values.items()})

    def tags(self, values: dict[str, Any]) -> None:
        import mlflow

        clean = {k: str(v) for k, v in values.items()}
        mlflow.set_tags(clean)
        self.logged_tags.update(clean)

    def published(self, snap: Snapshot, rows_in: int | None = None, prefix: str = "") -> None:
        """Record a table write: rows and the Iceberg snapshot that holds them."""
        if not prefix:
            self.tags({c.TAG_TABLE: snap.table, c.TAG_SNAPSHOT_ID: snap.snapshot_id})
            self.metrics({c.METRIC_ROWS_OUT: snap.added_records, c.METRIC_ROWS_IN: rows_in})
        else:
            self.tags({f"iceberg.{prefix}_table": snap.table,
                       f"iceberg.{prefix}_snapshot_id": snap.snapshot_id})
            self.metrics({f"rows_{prefix}": snap.added_records})


class NullTracker(StageTracker):
    """Tracking switched off (LAKEHOUSE_TRACKING=off, benchmarks): nothing reaches MLflow; the figures
    are still kept for the stage's facts row."""

    def __init__(self) -> None:
        super().__init__(run_id="")

    def metrics(self, values: dict[str, float]) -> None:
        self.logged_metrics.update({k: float(v) for k, v in values.items() if v is not None})

    def params(self, values: dict[str, Any]) -> None:
        pass

    def tags(self, values: dict[str, Any]) -> None:
        self.logged_tags.update({k: str(v) for k, v in values.items()})


def mlflow_experiment_id(settings: Settings) -> str:
    """The experiment's id, created as a model-training experiment if missing (a stage run by hand)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is None:
        try:
            return client.create_experiment(settings.experiment, tags=dict(c.EXPERIMENT_TAGS))
        except Exception:  # created concurrently by another stage
            exp = client.get_experiment_by_name(settings.experiment)
            if exp is None:
                raise
    for key, value in c.missing_experiment_tags(exp.tags).items():
        client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def supersede_ghost_runs(ctx: RunContext, settings: Settings, new_run_id: str, experiment_id: str) -> list[str]:
    """End earlier attempts of this stage that are still RUNNING (their process died) as KILLED.

    Same stage, trade date and DAG-run parent; without a parent, runs of the same stage and date
    started outside Airflow. Each gets ``superseded_by=<new run>``, and so do its RUNNING nested runs
    (training candidates), so a killed attempt never stays RUNNING next to its retry.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    query = " and ".join((c.stage_runs_filter(ctx.task_id or ctx.stage, status="RUNNING"),
                          c.tag_equals(c.TAG_TRADE_DATE, ctx.trade_date.isoformat())))
    if ctx.parent_run_id:
        query += " and " + c.child_runs_filter(ctx.parent_run_id)
    ghosts = [r for r in client.search_runs([experiment_id], query, max_results=100)
              if r.info.run_id != new_run_id
              and (ctx.parent_run_id or not ({c.TAG_RUN_ID, c.TAG_PARENT_RUN} & set(r.data.tags)))]
    ended = []
    for ghost in ghosts:
        nested = client.search_runs(
            [experiment_id], f"{c.child_runs_filter(ghost.info.run_id)} and attributes.status = 'RUNNING'",
            max_results=1000)
        for run in [*nested, ghost]:
            client.set_tag(run.info.run_id, c.TAG_SUPERSEDED_BY, new_run_id)
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
        print(f"run {ghost.info.run_id} of an earlier attempt was still RUNNING: ended KILLED, "
              f"superseded by {new_run_id}", file=sys.stderr)
    return ended


def push_stage_metrics(ctx: RunContext, tracker: StageTracker, state: str, duration_seconds: float) -> None:
    """The run's figures to the Pushgateway when PUSHGATEWAY_URL is set; never raises (a warning)."""
    try:
        from jobs.lakehouse import metrics

        if not metrics.pushgateway_url():
            return
        metrics.push_stage(metrics.figures_from_logged(
            ctx.stage, ctx.trade_date, state, duration_seconds, tracker.logged_metrics, tracker.logged_tags))
    except Exception as exc:  # metrics never fail a stage
        print(f"metrics not pushed: {type(exc).__name__}: {exc}", file=sys.stderr)


@contextlib.contextmanager
def stage_run(ctx: RunContext, settings: Settings, dependencies: list[Dependency] | None = None,
              check_first: bool = True) -> Iterator[StageTracker]:
    """Open the stage's MLflow child run; always log duration; end FAILED with the error on failure.

    ``dependencies`` (S3 for artifacts and data) are checked once the run exists (unless
    ``check_first`` is off), so an outage is recorded on the run; a failure while one of them is
    down is reported as that outage.
    """
    import mlflow

    began = dt.datetime.now(dt.UTC)
    if not tracking_enabled():
        if check_first:
            wait_for_dependencies(dependencies or [])
        started = time.monotonic()
        null = NullTracker()
        try:
            yield null
        except BaseException as exc:
            null.ended("failed", began, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
            raise
        null.ended("success", began, time.monotonic() - started)
        return
    experiment_id = mlflow_experiment_id(settings)
    started = time.monotonic()
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{ctx.stage} {ctx.trade_date}",
        parent_run_id=ctx.parent_run_id or None,
        tags=ctx.tags(settings),
    )
    tracker = StageTracker(run.info.run_id)
    try:
        tracker.params({"trade_date": ctx.trade_date.isoformat(), "stage": ctx.stage})
        supersede_ghost_runs(ctx, settings, run.info.run_id, experiment_id)
        if check_first:
            wait_for_dependencies(dependencies or [])
        try:
            yield tracker
        except Exception as exc:
            down = first_unreachable(dependencies or [])
            if down is None:
                raise
            raise DependencyUnavailable(down[0], 1, 0.0, down[1], during=f"{type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        mlflow.set_tags({c.TAG_ERROR: message[:4900], c.TAG_ERROR_TYPE: type(exc).__name__})
        duration = time.monotonic() - started
        mlflow.log_metric(c.METRIC_DURATION, duration)
        mlflow.end_run(status="FAILED")
        push_stage_metrics(ctx, tracker, "failed", duration)
        tracker.ended("failed", began, duration, message)
        raise
    else:
        duration = time.monotonic() - started
        mlflow.log_metric(c.METRIC_DURATION, duration)
        mlflow.end_run(status="FINISHED")
        push_stage_metrics(ctx, tracker, "success", duration)
        tracker.ended("success", began, duration)
