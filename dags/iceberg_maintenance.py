"""
### iceberg_maintenance: bounded tables that keep every model's lineage

Weekly by default (`ICEBERG_MAINTENANCE_SCHEDULE`, Sundays 04:00 in `PIPELINE_TIMEZONE`), one Spark
job (`jobs/ops/iceberg_maintenance.py`) over every pipeline table. It first re-ensures the Iceberg tag
`model_v<version>` on the features snapshot of every registered model version (deployment,
monitoring and retraining read their training data through it), then per table: rewrites small data
files and manifests, expires snapshots older than `ICEBERG_SNAPSHOT_MAX_AGE_DAYS` (keeping the last
`ICEBERG_SNAPSHOT_RETAIN_LAST`), removes orphan files older than `ICEBERG_ORPHAN_MIN_AGE_HOURS` and
keeps only `ICEBERG_METADATA_VERSIONS_MAX` old metadata files. Snapshots, files and bytes before and
after are logged to one MLflow run per DAG run (artifact `maintenance.json`). Paused when first
deployed, like `ml_pipeline`: unpause it where the pipeline runs every night.
"""
from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, dag

from jobs import contract
from jobs.contract import env
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.spark_stage import spark_stage

CFG = PipelineConfig.from_env()


@dag(
    dag_id=contract.ICEBERG_MAINTENANCE,
    # run_immediately=0: unpausing never starts a run for a past tick (see ml_pipeline).
    schedule=CronTriggerTimetable(env("ICEBERG_MAINTENANCE_SCHEDULE", "0 4 * * 0"), timezone=CFG.timezone,
                                  run_immediately=dt.timedelta(0)),
    start_date=None,
    catchup=False,
    max_active_runs=1,
    default_args=CFG.default_args(),
    tags=["lakehouse", "iceberg", "maintenance"],
    doc_md=__doc__,
)
def iceberg_maintenance():
    spark_stage(
        contract.ICEBERG_MAINTENANCE, CFG,
        "Tag every model's training snapshot; compact, expire snapshots, remove orphans on every table.",
        application="ops/iceberg_maintenance.py",
        # Not a pipeline stage: no trade date and no parent run; the run's date labels the MLflow run.
        application_args=["--trade-date", "{{ dag_run.run_after | ds }}", "--dag-id", "{{ dag.dag_id }}",
                          "--run-id", "{{ run_id }}", "--task-id", "{{ ti.task_id }}",
                          "--try-number", "{{ ti.try_number }}"],
    )


iceberg_maintenance()
