"""The cluster profile's Spark standalone cluster (issue 15), as `make up PROFILE=cluster` runs it.

One stack per session on free ports: SeaweedFS, the Hive metastore (catalog hive_prod, tables on
SeaweedFS S3), MLflow and the profile's Spark master with two workers, all started through
`stack.py up` with LAKEHOUSE_PROFILE=cluster and always taken down. Stages are submitted to the
master with the command the DAG's SparkSubmitOperator builds (tests/faults/faults_support.py).
Airflow's CeleryExecutor, Postgres and Redis are not part of the profile yet.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest

from scripts.devstack.env import job_services
from scripts.devstack.temporary import Stack, running_stack

CLUSTER_DATE = dt.date(2026, 11, 24)
# Enough ticks that bronze_to_silver still runs when both executors have started (the worker drill).
CLUSTER_TICKS = 200_000


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    root = Path(tempfile.mkdtemp(prefix="lakehouse-cluster-"))
    settings = {"LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_SERVICES": job_services("hive") + ",spark",
                "LAKEHOUSE_CATALOG": "hive", "SPARK_DRIVER_MEMORY": "1g", "SPARK_EXECUTOR_MEMORY": "1g",
                "MLOPS_SPARK_WORKER_CORES": "1", "MLOPS_SPARK_WORKER_MEMORY": "1g",
                "SPARK_SQL_SHUFFLE_PARTITIONS": "4"}
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)  # pyiceberg and the MLflow client in this process see the stack
        try:
            yield st
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def raw_date(stack) -> dt.date:
    from jobs.synthetic.raw_ticks import main as generate

    generate(["--dates", CLUSTER_DATE.isoformat(), "--ticks", str(CLUSTER_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    return CLUSTER_DATE
