"""
### ml_pipeline: option ticks from RAW files to a monitored model

```
RAW ticks → Bronze → Silver → Gold (Iceberg) → features → model training → registry → deployment → monitoring
```

Runs daily at 02:00 Asia/Seoul for the previous trade date; trigger it from the UI with a
`trade_date` to (re)process one date: every stage replaces that date's partition, so reruns
are safe. Each stage is a Spark job (`jobs/stages/<stage>.py`) that logs rows, durations, data
quality and Iceberg snapshot ids to one MLflow child run under this DAG run's parent run.
Use the **MLflow run** link on any task to jump there. When too many features drift,
`drift_gate` alerts and emits the `feature_drift_alert` asset, which starts `ml_retraining`.
Before Bronze, `wait_for_raw` waits (on the triggerer, no worker slot) for the date's RAW
delivery to be complete (the `_SUCCESS` marker, `RAW_DELIVERY_MARKER`), up to
`RAW_DELIVERY_TIMEOUT` (default 07:00). KRX holidays and weekends skip green, naming the holiday.
Any failed task fails the run and alerts once through the configured webhook / e-mail (a quality
gate, a missing delivery or bad settings at once, without retries), and so does a run that has
not succeeded `PIPELINE_DEADLINE_MINUTES` after its scheduled time (a Deadline Alert; default 06:00).
Backfill a range of trade dates with `make backfill FROM=... TO=...` (see the README).
"""
from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, Param, chain, dag

from jobs import contract
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.deadline import deadline_alert
from lakehouse_mlops.raw_sensor import RawDeliverySensor
from lakehouse_mlops.spark_stage import spark_stage
from lakehouse_mlops.tasks import drift_gate_task, finish_tracking_task, publish_report_task, start_tracking_task

CFG = PipelineConfig.from_env()
# One task per stage, in contract.STAGES order (tests/dags checks the keys are exactly those).
STAGES = {
    contract.RAW_TO_BRONZE: "Land RAW tick files of the trade date in Bronze, as delivered.",
    contract.BRONZE_TO_SILVER: "Type, validate and de-duplicate; rejected rows go to quarantine with a reason.",
    contract.SILVER_TO_GOLD: "Per-contract one-minute bars.",
    contract.FEATURE_ENGINEERING: "Point-in-time features and the next-bar label.",
    contract.MODEL_TRAINING: "Train on features up to the date; register TickPricePredictor.",
    contract.MODEL_DEPLOYMENT: "Champion/challenger on one holdout; batch-score with the champion.",
    contract.MONITORING: "Feature drift (PSI) against the training data; realised performance.",
}


@dag(
    dag_id=CFG.dag_id,
    # run_immediately=timedelta(0): unpausing never starts a run for a tick already past. With
    # False, Airflow 3.3 still runs the latest tick if it lies within max(10 % of the interval,
    # 5 min) (timetables/trigger.py _calc_first_run), so a DAG unpaused at 03:20 Seoul would start
    # a 02:00 run for a date without RAW (tests/dags/test_timetable.py).
    schedule=CronTriggerTimetable(CFG.schedule, timezone=CFG.timezone, run_immediately=dt.timedelta(0)),
    start_date=None,
    catchup=False,
    max_active_runs=1,
    default_args=CFG.default_args(),
    deadline=deadline_alert(CFG),
    params={"trade_date": Param(None, type=["null", "string"], format="date",
                                description="Trade date to process (YYYY-MM-DD). Empty: the day before the run.")},
    tags=["lakehouse", "mlops", "iceberg", "spark", "mlflow"],
    doc_md=__doc__,
)
def ml_pipeline():
    chain(
        start_tracking_task(CFG),
        RawDeliverySensor(cfg=CFG, doc_md="Wait for the trade date's RAW delivery (marker or quiet period)."),
        # Every task alerts on failure through CFG.default_args() (FailureNotifier).
        *[spark_stage(stage, CFG, doc, pool=contract.STAGE_POOLS.get(stage)) for stage, doc in STAGES.items()],
        drift_gate_task(CFG),
        publish_report_task(CFG),
        finish_tracking_task(CFG, list(STAGES)),
    )


ml_pipeline()
