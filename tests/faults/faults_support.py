"""Helpers of the fault drills (tests/faults): stage processes, MLflow runs, waiting on state."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jobs import contract
from scripts.devstack.env import REPO, job_services
from scripts.devstack.temporary import Stack

# The drills' catalog. jdbc (SQLite, tables in a local folder) until the atomic-write drill can read
# its half-written files and age them for remove_orphan_files on S3 too; FAULTS_CATALOG=hive runs
# the drills on hive_prod and SeaweedFS S3 (make test-faults FAULTS_CATALOG=hive).
CATALOG = os.environ.get("FAULTS_CATALOG", "jdbc")
SERVICES = job_services(CATALOG)
# Short waits between dependency probes keep the drills quick; the bound is still exercised.
DEPENDENCY_SETTINGS = {"DEPENDENCY_RETRIES": "3", "DEPENDENCY_BACKOFF_SECONDS": "0.5"}
SMALL_DATE = dt.date(2026, 11, 24)   # a few thousand ticks: the baseline every drill starts from
SMALL_TICKS = 5_000
BOUND_SECONDS = 30  # DEPENDENCY_RETRIES=3 at 0.5 s: ~4 s of waiting plus spark-submit's JVM start
MLFLOW_HTTP = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")


# What the drills measured, printed at the end of the run (conftest.pytest_terminal_summary).
MEASURED: list[str] = []


def measured(label: str, result: Finished) -> None:
    MEASURED.append(f"{label}: exit {result.returncode} after {result.seconds:.1f} s")


@dataclass
class Finished:
    returncode: int
    seconds: float
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Everything the job printed: under spark-submit, Python's stderr reaches the JVM's stdout."""
        return self.stdout + self.stderr


# ------------------------------------------------------------------------------------------ stages


def stage_command(env: dict[str, str], stage: str, trade_date: dt.date, parent_run_id: str | None = None,
                  airflow_run_id: str | None = None, try_number: int | None = None,
                  conf: dict[str, str] | None = None) -> list[str]:
    """spark-submit of jobs/stages/<stage>.py with the arguments the DAG renders (STAGE_ARGS).

    ``conf`` overrides Spark settings (a test that removes a protection to see its check fail).
    """
    python, master = env["PYSPARK_PYTHON"], env.get("SPARK_MASTER") or "local[2]"
    argv = [env["SPARK_SUBMIT_BINARY"], "--master", master,
            "--name", f"lakehouse-{stage}", "--driver-memory", env.get("SPARK_DRIVER_MEMORY") or "1g",
            "--conf", f"spark.sql.shuffle.partitions={env.get('SPARK_SQL_SHUFFLE_PARTITIONS') or '2'}",
            "--conf", f"spark.pyspark.python={python}", "--conf", f"spark.pyspark.driver.python={python}"]
    for key, value in {**contract.spark_stage_conf(master), **(conf or {})}.items():  # as StageSubmitOperator
        argv += ["--conf", f"{key}={value}"]
    if env.get("SPARK_JARS"):
        argv += ["--jars", env["SPARK_JARS"]]
    argv += [str(REPO / "jobs" / "stages" / f"{stage}.py"), "--trade-date", trade_date.isoformat()]
    if parent_run_id:
        argv += ["--parent-run-id", parent_run_id, "--dag-id", "ml_pipeline", "--run-id", airflow_run_id or "",
                 "--task-id", stage, "--try-number", str(try_number or 1)]
    return argv


def stage_env(stack: Stack, **overrides: str) -> dict[str, str]:
    return {**stack.proc_env, **stack.env, "PYTHONPATH": str(REPO), **overrides}


def start_stage(stack: Stack, stage: str, trade_date: dt.date, log: Path, env: dict | None = None,
                **kwargs) -> subprocess.Popen:
    """The stage in a session (and process group) of its own: killpg reaches Python and the JVM."""
    fh = open(log, "wb")
    try:
        return subprocess.Popen(stage_command(stack.env, stage, trade_date, **kwargs), cwd=REPO,
                                env=env or stage_env(stack), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


def run_stage(stack: Stack, stage: str, trade_date: dt.date, env: dict | None = None, timeout: float = 600,
              **kwargs) -> Finished:
    t0 = time.monotonic()
    proc = subprocess.run(stage_command(stack.env, stage, trade_date, **kwargs), cwd=REPO,
                          env=env or stage_env(stack), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)
    return Finished(proc.returncode, time.monotonic() - t0, proc.stdout, proc.stderr)


SPARK_SQL = """
import json, sys
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import spark_session
spark = spark_session("faults-check", Settings.from_env(), master="local[1]")
out = [[r.asDict(recursive=True) for r in spark.sql(q).collect()] for q in json.loads(sys.argv[1])]
print("RESULT " + json.dumps(out, default=str), flush=True)
spark.stop()
"""


def spark_sql(stack: Stack, *statements: str) -> list[list[dict]]:
    """Rows of each statement, from a Spark session of its own that ends with the call.

    Not a session kept open in the test process: on the embedded SQLite catalog an open Spark
    session keeps a read lock that makes every other process's commit fail (SQLITE_BUSY).
    """
    import json

    env = stage_env(stack)
    proc = subprocess.run([env["PYSPARK_PYTHON"], "-c", SPARK_SQL, json.dumps(list(statements))], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"Spark check failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("RESULT "))


# ------------------------------------------------------------------------------------------ MLflow


def new_parent_run(client, experiment_id: str, trade_date: dt.date) -> tuple[str, str]:
    """A DAG-run parent run as start_tracking opens it: (MLflow run id, Airflow run id)."""
    airflow_run_id = f"manual__faults-{uuid.uuid4().hex[:8]}"
    run = client.create_run(experiment_id, run_name=f"ml_pipeline {trade_date}", tags={
        "pipeline.role": "dag_run", "pipeline.trade_date": trade_date.isoformat(),
        "airflow.dag_id": "ml_pipeline", "airflow.run_id": airflow_run_id})
    return run.info.run_id, airflow_run_id


def children_of(client, experiment_id: str, parent_run_id: str) -> list:
    return client.search_runs([experiment_id], filter_string=contract.child_runs_filter(parent_run_id),
                              order_by=["attributes.start_time ASC"])


def wait_until(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll an observable condition; the value it returns when it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
