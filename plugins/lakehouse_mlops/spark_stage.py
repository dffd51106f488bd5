"""One factory for every Spark stage task, so all stages are submitted the same way."""
from __future__ import annotations

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from jobs.contract import START_TRACKING
from lakehouse_mlops.config import PipelineConfig

# What start_tracking returned (trade date, parent run id), as a Jinja expression.
STARTED = f"ti.xcom_pull(task_ids='{START_TRACKING}')"
# Everything a stage needs to know about its Airflow task instance, rendered at run time.
STAGE_ARGS = [
    "--trade-date", "{{ " + STARTED + "['trade_date'] }}",
    "--parent-run-id", "{{ " + STARTED + "['parent_run_id'] }}",
    "--dag-id", "{{ dag.dag_id }}",
    "--run-id", "{{ run_id }}",
    "--task-id", "{{ ti.task_id }}",
    "--try-number", "{{ ti.try_number }}",
]


def spark_stage(stage: str, cfg: PipelineConfig, doc: str = "", env: dict[str, str] | None = None,
                application: str = "", application_args: list[str] | None = None,
                **kwargs) -> SparkSubmitOperator:
    """A SparkSubmitOperator running ``jobs/stages/<stage>.py`` on the configured master.

    ``application`` (a path under jobs/, e.g. ``ops/iceberg_maintenance.py``) and
    ``application_args`` serve jobs that are not pipeline stages (no start_tracking upstream).
    """
    repo = str(cfg.jobs_dir.parent)
    return SparkSubmitOperator(
        task_id=stage,
        doc_md=doc or None,
        application=str(cfg.jobs_dir / (application or f"stages/{stage}.py")),
        name=f"lakehouse-{stage}",
        conn_id=cfg.spark_conn_id,
        spark_binary=cfg.spark_binary,
        jars=cfg.jars or None,
        packages=cfg.packages or None,
        py_files=cfg.py_files or None,
        driver_memory=cfg.driver_memory,
        executor_memory=cfg.executor_memory,
        conf={
            "spark.sql.shuffle.partitions": cfg.shuffle_partitions,
            "spark.pyspark.python": cfg.pyspark_python,
            "spark.pyspark.driver.python": cfg.pyspark_python,
            "spark.ui.showConsoleProgress": "false",
        },
        # The jobs package is imported from the repository root (py_files on a cluster).
        env_vars={"PYTHONPATH": repo, "PYSPARK_PYTHON": cfg.pyspark_python, **(env or {})},
        application_args=STAGE_ARGS if application_args is None else application_args,
        **kwargs,
    )
