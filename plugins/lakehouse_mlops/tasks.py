"""The Python tasks that frame the Spark stages, shared by the pipeline and retraining DAGs."""
from __future__ import annotations

import datetime as dt
import shlex

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from jobs import contract
from jobs.trade_calendar import closed_reason, resolve_trade_date
from lakehouse_mlops import parent_run
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.notify import AlreadyAlerted, send_alert
from lakehouse_mlops.spark_stage import STARTED

# publish_report exits with this when nothing was tracked; Airflow marks the task skipped.
SKIP_EXIT_CODE = 99

# Emitted when a date's features drift past the configured share; schedules ml_retraining.
FEATURE_DRIFT_ALERT = Asset(name=contract.FEATURE_DRIFT_ASSET, uri=contract.FEATURE_DRIFT_ASSET_URI,
                            group="lakehouse-mlops")


def _requested_trade_date(context) -> str | None:
    """An explicit date: the trigger form's parameter, else the asset events that started the run.

    Several drift events can be queued behind a running retraining and start one run together:
    it retrains up to the latest of their dates (retraining on an older one would move backwards).
    A value that is not a date is returned as is (when no valid one is there) so it fails loudly.
    """
    requested = (context.get("params") or {}).get("trade_date")
    if requested:
        return requested
    dates = [event.extra["trade_date"] for events in (context.get("triggering_asset_events") or {}).values()
             for event in events if (event.extra or {}).get("trade_date")]
    valid = []
    for value in dates:
        try:
            valid.append(dt.date.fromisoformat(str(value)))
        except ValueError:
            pass
    if valid:
        return max(valid).isoformat()
    return dates[0] if dates else None


def start_tracking_task(cfg: PipelineConfig):
    @task(task_id=contract.START_TRACKING)
    def start_tracking(**context) -> dict:
        """Decide the trade date and open this DAG run's MLflow parent run.

        A bad trade date (form or asset event) fails at once, without retries; a KRX holiday or a
        weekend skips the run (green, nobody paged) with the closing's name as the reason.
        """
        dag_run = context["dag_run"]
        try:
            trade_date = resolve_trade_date(
                _requested_trade_date(context), dag_run.logical_date or dag_run.run_after, cfg.timezone)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        if reason := closed_reason(trade_date):
            raise AirflowSkipException(f"{trade_date} is not a KRX trading day ({reason}); nothing to process")
        parent = parent_run.open_parent_run(
            cfg, dag_run.dag_id, dag_run.run_id, trade_date,
            contract.dag_run_url(cfg.airflow_ui_url, dag_run.dag_id, dag_run.run_id))
        return {"trade_date": trade_date.isoformat(), "parent_run_id": parent}

    return start_tracking()


def finish_tracking_task(cfg: PipelineConfig, stages: list[str]):
    @task(task_id=contract.FINISH_TRACKING, trigger_rule="all_done")
    def finish_tracking(**context) -> dict:
        """Close the parent run with the outcome of every stage; fail the DAG run if any task failed.

        The only leaf of the DAG, so the run's state is this task's: it never skips when something
        upstream failed (Airflow counts a skipped leaf as success). It raises AlreadyAlerted for
        failures whose own task alerted, so nobody is paged twice; a failure of its own alerts.
        """
        ti, dag_run = context["ti"], context["dag_run"]
        others = [t for t in context["dag"].task_ids if t != contract.FINISH_TRACKING]
        states = parent_run.task_states(ti, dag_run.dag_id, dag_run.run_id, others)
        failed = [t for t in others if states.get(t) in ("failed", "upstream_failed")]
        started = ti.xcom_pull(task_ids=contract.START_TRACKING)
        if not started:
            if states.get(contract.START_TRACKING) == "skipped":
                raise AirflowSkipException("the run was skipped before tracking started")
            raise AlreadyAlerted(f"tracking never started ({contract.START_TRACKING}: "
                                 f"{states.get(contract.START_TRACKING)})")
        try:
            failed_stages = parent_run.close_parent_run(cfg, started["parent_run_id"], states, stages)
        except Exception as exc:
            if failed:  # most likely the same outage the failed task alerted about
                raise AlreadyAlerted(f"did not succeed: {', '.join(failed)}; the MLflow parent run "
                                     f"could not be closed either: {exc}") from exc
            raise
        failed += [s for s in failed_stages if s not in failed]
        if failed:
            raise AlreadyAlerted(f"did not succeed: {', '.join(failed)}")
        return {**started, "stages": states}

    return finish_tracking()


def drift_gate_task(cfg: PipelineConfig):
    @task(task_id=contract.DRIFT_GATE, outlets=[FEATURE_DRIFT_ALERT])
    def drift_gate(**context) -> dict:
        """Alert and emit the drift asset when the drifted feature share crosses the threshold."""
        started = context["ti"].xcom_pull(task_ids=contract.START_TRACKING)
        children = parent_run.child_runs(cfg, started["parent_run_id"])
        monitoring = children.get(contract.MONITORING)
        if monitoring is None:
            raise AirflowSkipException("no monitoring run to judge")
        share = monitoring.data.metrics.get(contract.METRIC_DRIFT_SHARE, 0.0)
        features = monitoring.data.tags.get(contract.TAG_DRIFT_FEATURES, "none")
        if share < cfg.drift_share_threshold:
            raise AirflowSkipException(f"drift share {share:.2f} below {cfg.drift_share_threshold:.2f}")
        dag_run = context["dag_run"]
        send_alert(f"Feature drift on {started['trade_date']}: retraining triggered", {
            "dag": dag_run.dag_id, "run": dag_run.run_id, "trade_date": started["trade_date"],
            "drift_share": f"{share:.2f} (threshold {cfg.drift_share_threshold:.2f})",
            "drifted_features": features,
            "mlflow_run": contract.mlflow_run_url(cfg.mlflow_ui_url, monitoring.info.experiment_id,
                                                  monitoring.info.run_id),
        })
        extra = {"trade_date": started["trade_date"], "drift_share": share, "features": features,
                 "source_run_id": dag_run.run_id}
        context["outlet_events"][FEATURE_DRIFT_ALERT].extra = extra
        return extra

    return drift_gate()


def publish_report_task(cfg: PipelineConfig) -> BashOperator:
    """The morning report on the parent run, rendered by the jobs environment (matplotlib).

    The parent run id comes from an XCom: it reaches bash only as an environment variable, quoted
    where it is used, so no value a task returned is ever parsed as shell.
    """
    return BashOperator(
        task_id=contract.PUBLISH_REPORT,
        doc_md="Row funnel, stage durations, quality, drift and model comparison as HTML + PNG on the "
               "MLflow parent run (artifacts `report/`). Runs for failed runs too.",
        trigger_rule="all_done",
        bash_command=(
            'if [ -n "$LAKEHOUSE_PARENT_RUN_ID" ]; then '
            f"exec {shlex.quote(cfg.pyspark_python)} -m jobs.report.publish "
            '--parent-run-id "$LAKEHOUSE_PARENT_RUN_ID"; '
            f"else echo 'nothing was tracked for this run'; exit {SKIP_EXIT_CODE}; fi"
        ),
        env={"PYTHONPATH": str(cfg.jobs_dir.parent),
             "LAKEHOUSE_PARENT_RUN_ID": "{{ (" + STARTED + " or {}).get('parent_run_id') or '' }}"},
        append_env=True,
        skip_on_exit_code=SKIP_EXIT_CODE,
    )
