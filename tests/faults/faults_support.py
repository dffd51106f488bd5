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
from scripts.devstack.env import DEFAULT_CATALOG, REPO, job_services
from scripts.devstack.temporary import Stack

# The drills' catalog: hive (hive_prod in the Hive metastore, tables on SeaweedFS S3), as the
# embedded stack and the user's lakehouse run; FAULTS_CATALOG=jdbc runs them on the lightest
# setup (SQLite catalog, tables in a local folder).
CATALOG = os.environ.get("FAULTS_CATALOG", DEFAULT_CATALOG)
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
                  conf: dict[str, str] | None = None, application: str | None = None) -> list[str]:
    """spark-submit of jobs/stages/<stage>.py with the arguments the DAG renders (STAGE_ARGS).

    ``conf`` overrides Spark settings (a test that removes a protection to see its check fail);
    ``application`` is a job outside jobs/stages (ops/iceberg_maintenance.py).
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
    argv += [str(REPO / "jobs" / (application or f"stages/{stage}.py")), "--trade-date", trade_date.isoformat()]
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
jvm, session = spark.sparkContext._jvm, spark._jsparkSession

def remove_orphans(table, older_than_ms):
    # Iceberg's action: the procedure refuses a cut-off younger than 24 hours. Listed through the
    # table's FileIO (S3FileIO on the warehouse), as the maintenance job's procedure call does.
    t = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(session, table)
    result = (jvm.org.apache.iceberg.spark.actions.SparkActions.get(session).deleteOrphanFiles(t)
              .olderThan(older_than_ms).usePrefixListing(True).execute())
    found, it = [], result.orphanFileLocations().iterator()
    while it.hasNext():
        found.append({"orphan_file_location": it.next()})
    return found

out = [remove_orphans(*q[1:]) if isinstance(q, list) else [r.asDict(recursive=True) for r in spark.sql(q).collect()]
       for q in json.loads(sys.argv[1])]
print("RESULT " + json.dumps(out, default=str), flush=True)
spark.stop()
"""


def remove_orphans(table: str, older_than_ms: int) -> list:
    """A step of spark_sql: Iceberg's delete-orphan-files action with any cut-off (rows: orphan_file_location)."""
    return ["remove_orphans", table, older_than_ms]


def spark_sql(stack: Stack, *statements: str | list) -> list[list[dict]]:
    """Rows of each statement (SQL, or a remove_orphans step), from a Spark session of its own.

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


def table_files(env: dict[str, str], location: str, folder: str, suffix: str) -> set[str]:
    """Files under a table's ``folder`` (data, metadata) as the storage lists them, committed or not:
    S3 objects (s3a://bucket/key) or local paths."""
    if location.startswith(("s3://", "s3a://")):
        from scripts.devstack.health import s3_client

        scheme, rest = location.split("://", 1)
        bucket, _, key = rest.partition("/")
        pages = s3_client(env).get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{key.rstrip('/')}/{folder}/")
        return {f"{scheme}://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])
                if o["Key"].endswith(suffix)}
    return {str(p) for p in (Path(plain_path(location)) / folder).rglob(f"*{suffix}")}


# A write of many small data files, one after another: on S3 a file is listed only once complete,
# and the first ones are there seconds before the commit (the window the write drills act in).
TARGET_FILE_BYTES = 1 << 20


def rolling_writes(stack: Stack, table: str) -> None:
    spark_sql(stack, f"ALTER TABLE {table} SET TBLPROPERTIES ('write.target-file-size-bytes' = '{TARGET_FILE_BYTES}')")


@dataclass
class Storage:
    """What the warehouse holds of a table before a write: its data files and metadata files."""

    env: dict[str, str]
    location: str
    data: set[str]
    metadata: set[str]

    @classmethod
    def of(cls, env: dict[str, str], location: str) -> Storage:
        return cls(env, location, table_files(env, location, "data", ".parquet"),
                   table_files(env, location, "metadata", ".metadata.json"))

    def new_data_files(self) -> set[str]:
        return table_files(self.env, self.location, "data", ".parquet") - self.data

    def wait_for_uncommitted_write(self, proc: subprocess.Popen, log: Path, what: str) -> None:
        """Until the running job's write has data files listed and no new metadata file (a commit's
        first step) is; fails when the job ends first."""
        def writing_uncommitted():
            if proc.poll() is not None:
                raise AssertionError(f"{what} ended (rc {proc.returncode}) before its write was caught:\n"
                                     + log.read_text(errors="replace")[-3000:])
            return self.new_data_files() and table_files(
                self.env, self.location, "metadata", ".metadata.json") == self.metadata

        wait_until(writing_uncommitted, timeout=300, what=f"data files of {what}'s uncommitted write")


def plain_path(location: str) -> str:
    """file:/x, file:///x -> /x; S3 locations unchanged (Spark, pyiceberg and listings spell them alike)."""
    return location.removeprefix("file:").replace("///", "/") if location.startswith("file:") else location


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
