"""The DAG run's MLflow parent run: opened before the first stage, closed after the last.

Stage jobs open their own child runs under it (jobs/lakehouse.py); this module only owns the
parent, so a DAG run maps to exactly one MLflow run however often tasks are retried.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from lakehouse_mlops.config import PipelineConfig, bounded_mlflow_http

KRX_CLOSED_WEEKDAYS = {5, 6}  # Saturday, Sunday


def resolve_trade_date(requested: str | None, run_time: dt.datetime | None, timezone: str) -> dt.date:
    """The trade date a run processes: the one asked for, else the day before the run (local time).

    The daily run fires at 02:00 Asia/Seoul and processes the session that closed the afternoon
    before. Cron-triggered runs in Airflow 3 have no data interval to speak of
    (start == end == run time), so the date is derived here, once, and handed to every stage.
    """
    if requested:
        try:
            return dt.date.fromisoformat(str(requested))
        except ValueError:
            raise ValueError(f"trade_date must be YYYY-MM-DD, got {requested!r}") from None
    if run_time is None:
        raise ValueError("run has neither a trade_date parameter nor a logical date / run_after")
    return run_time.astimezone(ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() not in KRX_CLOSED_WEEKDAYS


def _client(cfg: PipelineConfig):
    import mlflow

    bounded_mlflow_http()
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    return mlflow.MlflowClient(cfg.mlflow_tracking_uri)


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_parent_run(client, experiment_id: str, dag_id: str, run_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`airflow.dag_id` = '{dag_id}' and tags.`airflow.run_id` = '{run_id}' "
                       "and tags.`pipeline.role` = 'dag_run'"),
        max_results=1,
    )
    return runs[0] if runs else None


def open_parent_run(cfg: PipelineConfig, dag_id: str, run_id: str, trade_date: dt.date,
                    airflow_url: str) -> str:
    """Get or create the parent run of this DAG run (a cleared, rerun task reuses it)."""
    client = _client(cfg)
    experiment_id = _experiment_id(client, cfg.experiment)
    existing = find_parent_run(client, experiment_id, dag_id, run_id)
    if existing is not None:
        if existing.info.status != "RUNNING":
            client.update_run(existing.info.run_id, status="RUNNING")
        return existing.info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"{dag_id} {trade_date}",
        tags={
            "pipeline.role": "dag_run",
            "pipeline.trade_date": trade_date.isoformat(),
            "airflow.dag_id": dag_id,
            "airflow.run_id": run_id,
            "airflow.url": airflow_url,
            "mlflow.note.content": (f"Airflow DAG run `{run_id}` for trade date {trade_date}. "
                                    f"[Open it in Airflow]({airflow_url})"),
        },
    )
    client.log_param(run.info.run_id, "trade_date", trade_date.isoformat())
    return run.info.run_id


def task_states(ti, dag_id: str, run_id: str, task_ids: list[str]) -> dict[str, str | None]:
    """States of ``task_ids`` in this DAG run, asked of Airflow through the task SDK."""
    result = ti.get_task_states(dag_id=dag_id, task_ids=task_ids, run_ids=[run_id])
    states = result.get(run_id, result) if isinstance(result, dict) else {}
    return {t: (str(getattr(states.get(t), "value", states.get(t))) if states.get(t) else None)
            for t in task_ids}


def child_runs(cfg: PipelineConfig, parent_run_id: str) -> dict[str, object]:
    """The latest child run per stage (the last try wins)."""
    client = _client(cfg)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    latest: dict[str, object] = {}
    for run in runs:
        latest[run.data.tags.get("pipeline.stage", run.info.run_name)] = run
    return latest


def close_parent_run(cfg: PipelineConfig, parent_run_id: str, task_states: dict[str, str | None],
                     stages: list[str]) -> list[str]:
    """Roll stage figures up to the parent, end it FINISHED or FAILED; return the failed stages."""
    client = _client(cfg)
    children = child_runs(cfg, parent_run_id)
    failed = [s for s in stages if task_states.get(s) != "success"]
    metrics: dict[str, float] = {}
    for stage, run in children.items():
        for key in ("rows_in", "rows_out", "rows_rejected", "duration_seconds"):
            if key in run.data.metrics:
                metrics[f"{stage}.{key}"] = run.data.metrics[key]
    metrics["stages_failed"] = len(failed)
    metrics["stages_total_seconds"] = sum(v for k, v in metrics.items() if k.endswith(".duration_seconds"))
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, value)
    tags = {"pipeline.failed_stages": ",".join(failed) or "none"}
    if failed:
        errors = [f"{s}: {children[s].data.tags.get('error', task_states.get(s))}" if s in children
                  else f"{s}: {task_states.get(s) or 'not run'}" for s in failed]
        tags["error"] = "; ".join(str(e) for e in errors)[:4900]
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    client.set_terminated(parent_run_id, status="FAILED" if failed else "FINISHED")
    return failed
