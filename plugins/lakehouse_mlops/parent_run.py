"""The DAG run's MLflow parent run: opened before the first stage, closed after the last.

Stage jobs open their own child runs under it (jobs/lakehouse); this module only owns the
parent, so a DAG run maps to exactly one MLflow run however often tasks are retried. Tag keys,
metric keys and run filters are the ones in ``jobs.contract``, which the stages write and read.
"""
from __future__ import annotations

import datetime as dt
import logging

from jobs import contract
from lakehouse_mlops.config import PipelineConfig

log = logging.getLogger(__name__)


def _client(cfg: PipelineConfig):
    import mlflow

    contract.bounded_mlflow_http()
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    return mlflow.MlflowClient(cfg.mlflow_tracking_uri)


def _experiment_id(client, name: str) -> str:
    """The pipeline's experiment, created as (or made) a model-training one (contract.EXPERIMENT_TAGS)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags=dict(contract.EXPERIMENT_TAGS))
        except Exception:  # created concurrently by another run
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in contract.missing_experiment_tags(exp.tags).items():
        client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def find_parent_run(client, experiment_id: str, dag_id: str, run_id: str):
    runs = client.search_runs([experiment_id], filter_string=contract.parent_run_filter(dag_id, run_id),
                              max_results=1)
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
            contract.TAG_ROLE: contract.ROLE_DAG_RUN,
            contract.TAG_TRADE_DATE: trade_date.isoformat(),
            contract.TAG_DAG_ID: dag_id,
            contract.TAG_RUN_ID: run_id,
            contract.TAG_AIRFLOW_URL: airflow_url,
            contract.TAG_NOTE: run_note(run_id, trade_date, airflow_url, health="running"),
        },
    )
    client.log_param(run.info.run_id, "trade_date", trade_date.isoformat())
    return run.info.run_id


def failed_prerequisites(task_states: dict[str, str | None], stages: list[str]) -> list[str]:
    """Non-stage tasks that failed (``wait_for_raw``, ``drift_gate``...): often the reason stages did not run."""
    return [t for t, state in task_states.items() if t not in stages and state == "failed"]


def health_summary(task_states: dict[str, str | None], stages: list[str]) -> str:
    """One line a person reads first: "7/7 stages succeeded", or what failed first and what it took along."""
    ok = [s for s in stages if task_states.get(s) == "success"]
    line = f"{len(ok)}/{len(stages)} stages succeeded"
    bad = [f"{t} failed" for t in failed_prerequisites(task_states, stages)]
    bad += [f"{s} {task_states.get(s) or 'not run'}" for s in stages if s not in ok]
    return f"{line}; {', '.join(bad)}" if bad else line


def record_task_error(cfg: PipelineConfig, parent_run_id: str, task_id: str, message: str) -> None:
    """Leave a non-stage task's failure on the parent run, so its note says why (best effort)."""
    try:
        _client(cfg).set_tag(parent_run_id, f"{contract.TAG_ERROR}.{task_id}", message[:4900])
    except Exception as exc:  # MLflow down: the task's own alert still carries the message
        log.warning("could not record %s's error on parent run %s: %s", task_id, parent_run_id, exc)


def run_note(run_id: str, trade_date, airflow_url: str, health: str, report_url: str | None = None,
             error: str | None = None) -> str:
    """The parent run's description (``mlflow.note.content``, Markdown): health first, then links."""
    lines = [f"**{health}** — Airflow DAG run `{run_id}` for trade date {trade_date}.", "",
             f"- [Airflow run]({airflow_url})"]
    if report_url:
        lines.append(f"- [Morning report]({report_url}) (artifact `{contract.REPORT_HTML_ARTIFACT}`)")
    if error:
        lines += ["", f"Error: {error[:1000]}"]
    return "\n".join(lines)


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
        filter_string=contract.child_runs_filter(parent_run_id),
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    return contract.latest_per_stage(runs)


def _has_artifact(client, run_id: str, path: str) -> bool:
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    try:
        return any(f.path == path for f in client.list_artifacts(run_id, folder))
    except Exception:  # the artifact store is down: the note goes without the link, the run still closes
        return False


def close_parent_run(cfg: PipelineConfig, parent_run_id: str, task_states: dict[str, str | None],
                     stages: list[str]) -> list[str]:
    """Roll stage figures up to the parent, end it FINISHED or FAILED; return the failed stages."""
    client = _client(cfg)
    children = child_runs(cfg, parent_run_id)
    failed = [s for s in stages if task_states.get(s) != "success"]
    metrics: dict[str, float] = {}
    for stage, run in children.items():
        for key in contract.ROLLUP_METRICS:
            if key in run.data.metrics:
                metrics[f"{stage}.{key}"] = run.data.metrics[key]
    metrics[contract.METRIC_STAGES_FAILED] = len(failed)
    metrics[contract.METRIC_STAGES_TOTAL_SECONDS] = sum(
        v for k, v in metrics.items() if k.endswith(f".{contract.METRIC_DURATION}"))
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, value)
    tags = {contract.TAG_FAILED_STAGES: ",".join(failed) or "none"}
    parent = client.get_run(parent_run_id)
    ptags = parent.data.tags
    if failed:
        errors = [f"{t}: {ptags.get(f'{contract.TAG_ERROR}.{t}', 'failed')}"
                  for t in failed_prerequisites(task_states, stages)]
        errors += [f"{s}: {children[s].data.tags.get(contract.TAG_ERROR, task_states.get(s))}" if s in children
                   else f"{s}: {task_states.get(s) or 'not run'}" for s in failed]
        tags[contract.TAG_ERROR] = "; ".join(str(e) for e in errors)[:4900]
    report_url = None
    if _has_artifact(client, parent_run_id, contract.REPORT_HTML_ARTIFACT):  # publish_report ran before
        report_url = contract.mlflow_artifact_url(cfg.mlflow_ui_url, parent.info.experiment_id, parent_run_id,
                                                  contract.REPORT_HTML_ARTIFACT)
    tags[contract.TAG_NOTE] = run_note(ptags.get(contract.TAG_RUN_ID, "?"),
                                       ptags.get(contract.TAG_TRADE_DATE, "?"),
                                       ptags.get(contract.TAG_AIRFLOW_URL, cfg.airflow_ui_url),
                                       health_summary(task_states, stages), report_url, tags.get(contract.TAG_ERROR))
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    client.set_terminated(parent_run_id, status="FAILED" if failed else "FINISHED")
    return failed
