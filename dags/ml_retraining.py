"""
### ml_retraining: retrain on the new regime when features drift

Started by the `feature_drift_alert` asset that `ml_pipeline`'s drift gate emits (or by hand
with a `trade_date`; several queued drift events: the latest of their dates). Trains on the most
recent days only (`RETRAINING_LOOKBACK_DAYS`), then runs the same champion/challenger
deployment: the alias moves only if the retrained model wins.
"""
from __future__ import annotations

from airflow.sdk import Param, chain, dag

from jobs import contract
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.spark_stage import spark_stage
from lakehouse_mlops.tasks import (
    FEATURE_DRIFT_ALERT,
    finish_tracking_task,
    publish_report_task,
    start_tracking_task,
)

CFG = PipelineConfig.from_env()
# One task per stage, in contract.RETRAINING_STAGES order (tests/dags checks the keys are exactly those).
STAGES = {
    contract.MODEL_TRAINING: "Retrain on the recent days only.",
    contract.MODEL_DEPLOYMENT: "Champion/challenger; score the date with the winner.",
}


@dag(
    dag_id=contract.ML_RETRAINING,
    schedule=[FEATURE_DRIFT_ALERT],
    start_date=None,
    catchup=False,
    is_paused_upon_creation=False,  # an automatic reaction to drift: active as soon as deployed
    max_active_runs=1,
    default_args=CFG.default_args(),
    params={"trade_date": Param(None, type=["null", "string"], format="date",
                                description="Retrain up to this trade date (YYYY-MM-DD). Empty: the drifted date.")},
    tags=["lakehouse", "mlops", "retraining", "mlflow"],
    doc_md=__doc__,
)
def ml_retraining():
    env = {contract.MODEL_TRAINING: {"TRAINING_LOOKBACK_DAYS": str(CFG.retraining_lookback_days)}}
    chain(
        start_tracking_task(CFG),
        # Every task alerts on failure through CFG.default_args() (FailureNotifier).
        *[spark_stage(stage, CFG, doc, env=env.get(stage), pool=contract.STAGE_POOLS.get(stage))
          for stage, doc in STAGES.items()],
        publish_report_task(CFG),
        finish_tracking_task(CFG, list(STAGES)),
    )


ml_retraining()
