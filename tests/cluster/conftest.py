"""The cluster profile (issue 15) as `make up PROFILE=cluster` runs it, once per session.

SeaweedFS, Postgres (Airflow's metadata and Celery's results; MLflow's backend store and users),
Redis (the Celery broker), the Hive metastore (catalog hive_prod, tables on SeaweedFS S3), MLflow,
the Spark standalone master with two workers and Airflow with the CeleryExecutor and two Celery
workers, on free 127.0.0.1 ports through `stack.py up` with LAKEHOUSE_PROFILE=cluster; always taken
down. Airflow's DAG folder holds a probe DAG (cluster_support.PROBE_DAG_SOURCE); stages are
submitted to the master with the command the DAG's SparkSubmitOperator builds
(tests/faults/faults_support.py). The project's DAGs on this profile: tests/cluster_e2e.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from cluster_support import CLUSTER_DATE, CLUSTER_TICKS, PROBE_DAG, PROBE_DAG_SOURCE

from jobs import contract
from scripts.devstack.env import REPO
from scripts.devstack.services import unprivileged_refusal
from scripts.devstack.temporary import Stack, running_stack

# A task whose worker died is failed (and retried) after this many seconds without a heartbeat
# instead of Airflow's 300, so the worker drill takes a minute.
HEARTBEAT_TIMEOUT = "30"


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    if why := unprivileged_refusal():
        pytest.skip(f"Postgres refuses to run as root and cannot be given another user here: {why}")
    root = Path(tempfile.mkdtemp(prefix="lakehouse-cluster-"))
    (root / "dags").mkdir()
    (root / "dags" / f"{PROBE_DAG}.py").write_text(PROBE_DAG_SOURCE)
    # The project's own DAG beside the probe, for the drill that kills a Celery worker inside a stage.
    shutil.copy(REPO / "dags" / f"{contract.ML_PIPELINE}.py", root / "dags")
    settings = {"LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_CATALOG": "hive", "TRINO": "off",
                "LAKEHOUSE_DAGS_FOLDER": str(root / "dags"),
                "SPARK_DRIVER_MEMORY": "1g", "SPARK_EXECUTOR_MEMORY": "1g",
                "MLOPS_SPARK_WORKER_CORES": "1", "MLOPS_SPARK_WORKER_MEMORY": "1g",
                "MLOPS_CELERY_WORKER_CONCURRENCY": "2", "SPARK_SQL_SHUFFLE_PARTITIONS": "4",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "PIPELINE_RETRY_DELAY_SECONDS": "5"}
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)  # pyiceberg and the MLflow client in this process see the stack
        try:
            yield st
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def raw_date(stack):
    from jobs.synthetic.raw_ticks import main as generate

    generate(["--dates", CLUSTER_DATE.isoformat(), "--ticks", str(CLUSTER_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    return CLUSTER_DATE


@pytest.fixture(scope="session")
def airflow(stack):
    from scripts.devstack.airflow_api import Airflow

    api = Airflow(stack.env)
    api.wait_for_dag(PROBE_DAG)
    return api
