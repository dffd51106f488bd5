"""The stack under test runs a probe DAG of its own, not the project's pipeline."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from scripts.devstack.temporary import Stack, running_stack

PROBE_DAG = """
import json, os, shutil

import pendulum
from airflow.sdk import dag, task

KEYS = json.loads(os.environ.get("STACK_PROBE_KEYS", "[]"))


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     is_paused_upon_creation=False, tags=["stack-test"])
def stack_probe():
    @task
    def dump_env():
        seen = {k: os.environ.get(k) for k in KEYS}
        seen["which spark-submit"] = shutil.which("spark-submit")
        with open(os.path.join(os.environ["LAKEHOUSE_HOME"], "probe-env.json"), "w") as fh:
            json.dump(seen, fh)

    dump_env()


stack_probe()
"""

# One run at a time, each holding its slot until a release file appears: lets a test put a run
# ahead of another (as the scheduler does on unpause) and release it when the watcher named it.
SERIAL_DAG = """
import os, time

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, max_active_runs=1,
     is_paused_upon_creation=False, tags=["stack-test"])
def stack_probe_serial():
    @task
    def hold(dag_run=None):
        release = os.path.join(os.environ["LAKEHOUSE_HOME"], "release-" + dag_run.run_id)
        deadline = time.monotonic() + 180
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert os.path.exists(release), "never released"

    @task
    def done():
        pass

    hold() >> done()


stack_probe_serial()
"""

PROBE_KEYS = ["ICEBERG_CATALOG_URI", "ICEBERG_WAREHOUSE", "RAW_TICKS_PATH", "SPARK_JARS", "SPARK_MASTER",
              "SPARK_SUBMIT_BINARY", "PYSPARK_PYTHON", "JAVA_HOME", "MLFLOW_TRACKING_URI",
              "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "LAKEHOUSE_HOME", "PIPELINE_SCHEDULE",
              "AIRFLOW_CONN_SPARK_DEFAULT", "ALERT_WEBHOOK_URL"]


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    # Not tmp_path_factory: concurrent pytest sessions prune each other's old basetemp folders.
    root = Path(tempfile.mkdtemp(prefix="lakehouse-stack-"))
    (root / "dags").mkdir()
    (root / "dags" / "stack_probe.py").write_text(PROBE_DAG)
    (root / "dags" / "stack_probe_serial.py").write_text(SERIAL_DAG)
    settings = {"LAKEHOUSE_DAGS_FOLDER": str(root / "dags"), "STACK_PROBE_KEYS": json.dumps(PROBE_KEYS)}
    # Tests here write into the stack's home in-process (report copies, locks) as the demo does, with
    # the demo's umask, so the check that every file there is private judges what the product writes.
    umask = os.umask(0o077)
    try:
        with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
            st.probe_keys = tuple(PROBE_KEYS)
            yield st
    finally:
        os.umask(umask)



# The restore drill destroys and restores the session stack's home; `down` ends the session stack.
LATE = {"test_backup_restore.py": 1, "test_down_stops_everything": 2}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LATE.get(item.path.name, LATE.get(item.name, 0)))  # stable otherwise
