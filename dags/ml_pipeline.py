"""
### ml_pipeline: option ticks from RAW files to a monitored model

```
RAW ticks → Bronze → Silver → Gold (Iceberg) → features → model training → registry → deployment → monitoring
```

Runs daily at 02:00 Asia/Seoul for the previous trade date; trigger it from the UI with a
`trade_date` to (re)process one date: every stage replaces that date's partition, so reruns
are safe. Each stage is a Spark job (`jobs/<stage>.py`) that logs rows, durations, data
quality and Iceberg snapshot ids to one MLflow child run under this DAG run's parent run.
Use the **MLflow run** link on any task to jump there.
"""
from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, chain, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from lakehouse_mlops import tracking
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.spark import START_TASK, spark_stage

CFG = PipelineConfig.from_env()
STAGES = {
    "raw_to_bronze": "Land RAW tick files of the trade date in Bronze, as delivered.",
    "bronze_to_silver": "Type, validate and de-duplicate; rejected rows go to quarantine with a reason.",
    "silver_to_gold": "Per-contract one-minute bars.",
    "feature_engineering": "Point-in-time features and the next-bar label.",
    "model_training": "Train on features up to the date; register TickPricePredictor.",
    "model_deployment": "Champion/challenger on one holdout; batch-score with the champion.",
    "monitoring": "Feature drift (PSI) against the training data; realised performance.",
}


@dag(
    dag_id=CFG.dag_id,
    schedule=CronTriggerTimetable(CFG.schedule, timezone=CFG.timezone),
    start_date=None,
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-team",
        "retries": CFG.retries,
        "retry_delay": dt.timedelta(seconds=CFG.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
    },
    params={"trade_date": Param(None, type=["null", "string"], format="date",
                                description="Trade date to process (YYYY-MM-DD). Empty: the day before the run.")},
    tags=["lakehouse", "mlops", "iceberg", "spark", "mlflow"],
    doc_md=__doc__,
)
def ml_pipeline():
    @task(task_id=START_TASK)
    def start_tracking(**context) -> dict:
        """Decide the trade date and open this DAG run's MLflow parent run."""
        dag_run = context["dag_run"]
        trade_date = tracking.resolve_trade_date(
            context["params"].get("trade_date"), dag_run.logical_date or dag_run.run_after, CFG.timezone)
        if not tracking.is_trading_day(trade_date):
            raise AirflowSkipException(f"{trade_date} is not a KRX trading day; nothing to process")
        parent = tracking.open_parent_run(CFG, dag_run.dag_id, dag_run.run_id, trade_date,
                                          CFG.dag_run_url(dag_run.dag_id, dag_run.run_id))
        return {"trade_date": trade_date.isoformat(), "parent_run_id": parent}

    @task(trigger_rule="all_done")
    def finish_tracking(**context) -> dict:
        """Close the parent run with the outcome of every stage; fail the DAG run if one failed."""
        started = context["ti"].xcom_pull(task_ids=START_TASK)
        if not started:
            raise AirflowSkipException("the run was skipped before tracking started")
        dag_run = context["dag_run"]
        states = tracking.task_states(context["ti"], dag_run.dag_id, dag_run.run_id, list(STAGES))
        failed = tracking.close_parent_run(CFG, started["parent_run_id"], states, list(STAGES))
        if failed:
            raise AirflowFailException(f"stages did not succeed: {', '.join(failed)}")
        return {**started, "stages": states}

    chain(
        start_tracking(),
        *[spark_stage(stage, CFG, doc) for stage, doc in STAGES.items()],
        finish_tracking(),
    )


ml_pipeline()
