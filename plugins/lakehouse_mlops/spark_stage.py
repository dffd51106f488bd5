"""One factory for every Spark stage task, so all stages are submitted the same way."""
from __future__ import annotations

import re

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowFailException

from jobs.contract import EXIT_DETERMINISTIC, START_TRACKING, spark_stage_conf
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


_ERROR_CODE = re.compile(r"Error code is: (\d+)\.")


def exit_code(hook, error: BaseException) -> int | None:
    """spark-submit's exit code: the hook's finished process, else the one its error message quotes."""
    code = getattr(getattr(hook, "_submit_sp", None), "returncode", None)
    if code is None and (m := _ERROR_CODE.search(str(error))):
        code = int(m.group(1))
    return code


class StageSubmitOperator(SparkSubmitOperator):
    """spark-submit that tells a deterministic failure (exit EXIT_DETERMINISTIC) from a transient one.

    A quality gate, a missing delivery or bad settings fail the same way on every try, so the task
    fails at once (AirflowFailException: no retry, one alert); any other exit code retries as usual.
    """

    def execute(self, context):
        try:
            return super().execute(context)
        except Exception as exc:  # the hook raises AirflowException (provider compat class)
            if exit_code(self._hook, exc) == EXIT_DETERMINISTIC:
                raise AirflowFailException(f"{exc}\n(exit {EXIT_DETERMINISTIC}: deterministic, not retried)") from exc
            raise


def spark_stage(stage: str, cfg: PipelineConfig, doc: str = "", env: dict[str, str] | None = None,
                application: str = "", application_args: list[str] | None = None,
                **kwargs) -> SparkSubmitOperator:
    """A StageSubmitOperator running ``jobs/stages/<stage>.py`` on the configured master.

    ``application`` (a path under jobs/, e.g. ``ops/iceberg_maintenance.py``) and
    ``application_args`` serve jobs that are not pipeline stages (no start_tracking upstream).
    """
    repo = str(cfg.jobs_dir.parent)
    return StageSubmitOperator(
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
            **spark_stage_conf(cfg.spark_master),
            **({"spark.driver.extraJavaOptions": cfg.driver_java_options} if cfg.driver_java_options else {}),
        },
        # The jobs package is imported from the repository root (py_files on a cluster).
        env_vars={"PYTHONPATH": repo, "PYSPARK_PYTHON": cfg.pyspark_python, **(env or {})},
        application_args=STAGE_ARGS if application_args is None else application_args,
        **kwargs,
    )
