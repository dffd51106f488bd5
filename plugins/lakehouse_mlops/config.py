"""Settings the DAGs read, from environment variables documented in .env.example."""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from jobs import contract
from jobs.contract import env
from jobs.trade_calendar import pipeline_schedule, pipeline_timezone

# The repository root seen from here (in the image: /opt/airflow, where jobs/ is mounted).
_REPO = Path(__file__).resolve().parents[2]


def _lakehouse_home() -> Path:
    """LAKEHOUSE_HOME as the jobs read it (jobs/lakehouse/settings.py): relative to the repository."""
    home = Path(env("LAKEHOUSE_HOME", str(_REPO / "var" / "stack")))
    return home if home.is_absolute() else (_REPO / home).resolve()


def _minutes(value: str) -> int:
    """Whole minutes; ``off``/``none``/``0`` disable."""
    return 0 if value.strip().lower() in ("off", "none", "false", "disabled") else int(value)


def _spark_master(conn_id: str) -> str:
    """SPARK_MASTER, else the host of an AIRFLOW_CONN_<ID> JSON connection; empty when unknown."""
    master = env("SPARK_MASTER", "")
    if master:
        return master
    try:
        return str(json.loads(os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "") or "{}").get("host") or "")
    except (ValueError, AttributeError):
        return ""


@dataclass(frozen=True)
class PipelineConfig:
    dag_id: str
    schedule: str
    timezone: str
    spark_conn_id: str
    spark_binary: str
    jobs_dir: Path
    jars: str
    packages: str
    py_files: str
    driver_memory: str
    executor_memory: str
    shuffle_partitions: str
    pyspark_python: str
    mlflow_tracking_uri: str
    mlflow_ui_url: str
    experiment: str
    retries: int
    retry_delay_seconds: int
    airflow_ui_url: str
    drift_share_threshold: float
    retraining_lookback_days: int
    deadline_minutes: int = 240  # after the scheduled time; 0 disables (lakehouse_mlops/deadline.py)
    # The RAW delivery wait (lakehouse_mlops/delivery.py, raw_sensor.py)
    raw_ticks_path: str = ""
    raw_delivery_marker: str | None = contract.RAW_DELIVERY_MARKER_DEFAULT
    raw_delivery_quiet_seconds: float = 300.0
    raw_delivery_timeout: str = "07:00"
    raw_delivery_poll_seconds: float = 60.0
    # JVM flags of each stage's driver (spark.driver.extraJavaOptions); empty: Spark's defaults
    driver_java_options: str = ""
    # The master spark-submit uses (SPARK_MASTER, else the host of the env-defined connection)
    spark_master: str = ""

    def default_args(self) -> dict:
        """Task defaults of every pipeline DAG: retries with exponential backoff, a time limit, and
        the failure alert on every task (Python tasks too: a failure never goes unnoticed)."""
        from lakehouse_mlops.notify import FailureNotifier

        return {
            "on_failure_callback": [FailureNotifier()],
            "owner": "data-team",
            "retries": self.retries,
            "retry_delay": dt.timedelta(seconds=self.retry_delay_seconds),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": dt.timedelta(minutes=30),
            "execution_timeout": dt.timedelta(hours=2),
        }

    @classmethod
    def from_env(cls) -> PipelineConfig:
        jobs_dir = Path(env("LAKEHOUSE_JOBS_DIR", str(_REPO / "jobs")))
        return cls(
            dag_id=contract.ML_PIPELINE,
            schedule=pipeline_schedule(),
            timezone=pipeline_timezone(),
            spark_conn_id=env("SPARK_CONN_ID", "spark_default"),
            spark_binary=env("SPARK_SUBMIT_BINARY", "spark-submit"),
            jobs_dir=jobs_dir,
            jars=env("SPARK_JARS") or contract.default_jars(_REPO),
            packages=env("SPARK_PACKAGES"),
            py_files=env("SPARK_PY_FILES"),
            driver_memory=env("SPARK_DRIVER_MEMORY", "2g"),
            executor_memory=env("SPARK_EXECUTOR_MEMORY", "2g"),
            shuffle_partitions=env("SPARK_SQL_SHUFFLE_PARTITIONS", contract.DEFAULT_SHUFFLE_PARTITIONS),
            pyspark_python=env("PYSPARK_PYTHON", "python3"),
            mlflow_tracking_uri=env("MLFLOW_TRACKING_URI", contract.DEFAULT_MLFLOW_URL),
            mlflow_ui_url=env("MLFLOW_UI_URL", env("MLFLOW_TRACKING_URI", contract.DEFAULT_MLFLOW_URL)).rstrip("/"),
            experiment=env("MLFLOW_EXPERIMENT_NAME", contract.DEFAULT_EXPERIMENT),
            retries=int(env("PIPELINE_RETRIES", "2")),
            retry_delay_seconds=int(env("PIPELINE_RETRY_DELAY_SECONDS", "120")),
            airflow_ui_url=env("AIRFLOW_UI_URL", contract.DEFAULT_AIRFLOW_UI_URL).rstrip("/"),
            drift_share_threshold=float(env("DRIFT_SHARE_THRESHOLD", contract.DEFAULT_DRIFT_SHARE_THRESHOLD)),
            retraining_lookback_days=int(env("RETRAINING_LOOKBACK_DAYS", "5")),
            deadline_minutes=_minutes(env("PIPELINE_DEADLINE_MINUTES", "240")),
            driver_java_options=env("SPARK_DRIVER_JAVA_OPTIONS", ""),
            spark_master=_spark_master(env("SPARK_CONN_ID", "spark_default")),
            raw_ticks_path=env("RAW_TICKS_PATH") or str(_lakehouse_home() / "raw" / "ticks"),
            raw_delivery_marker=contract.raw_delivery_marker(),
            raw_delivery_quiet_seconds=float(env("RAW_DELIVERY_QUIET_SECONDS", "300")),
            raw_delivery_timeout=env("RAW_DELIVERY_TIMEOUT", "07:00"),
            raw_delivery_poll_seconds=float(env("RAW_DELIVERY_POLL_SECONDS", "60")),
        )
