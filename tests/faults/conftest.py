"""Fault drills against real services: SeaweedFS and MLflow from scripts/stack.py, no Airflow.

One stack per session on free ports (faults_support: SERVICES, CATALOG). Stages run with
spark-submit the way the DAG's SparkSubmitOperator runs them (plugins/lakehouse_mlops/spark_stage.py),
in their own process group so a test can kill the whole job, JVM included. Services are stopped
and started with `stack.py stop|start`, and every wait is on observable state (ports, health,
files, run states), never on a fixed sleep. Helpers live in faults_support.py.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults_support import (
    CATALOG,
    DEPENDENCY_SETTINGS,
    MEASURED,
    MLFLOW_HTTP,
    SERVICES,
    SMALL_DATE,
    SMALL_TICKS,
    Finished,
    children_of,
    measured,
    new_parent_run,
    run_stage,
)

from scripts.devstack.env import REPO
from scripts.devstack.temporary import Stack, running_stack


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    root = Path(tempfile.mkdtemp(prefix="lakehouse-faults-"))
    settings = {"LAKEHOUSE_SERVICES": SERVICES, "LAKEHOUSE_CATALOG": CATALOG,
                "SPARK_DRIVER_MEMORY": "1g", "SPARK_SQL_SHUFFLE_PARTITIONS": "2",
                "SPARK_MASTER": "local[2]", **DEPENDENCY_SETTINGS}
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)  # MLflow client, pyiceberg and boto3 in this process see the stack
        try:
            yield st
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def client(stack):
    import mlflow

    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    return mlflow.MlflowClient(stack.env["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="session")
def experiment_id(client, stack) -> str:
    return client.get_experiment_by_name(stack.env["MLFLOW_EXPERIMENT_NAME"]).experiment_id


@pytest.fixture(scope="session")
def raw_small(stack) -> dt.date:
    from jobs.synthetic.raw_ticks import main as generate

    generate(["--dates", SMALL_DATE.isoformat(), "--ticks", str(SMALL_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    return SMALL_DATE


@pytest.fixture(scope="session")
def settings(stack):
    from jobs.lakehouse.settings import Settings

    return Settings.from_env()


# ------------------------------------------------------------------ the MLflow outage drill


@dataclass
class Outage:
    parent_run_id: str
    down: Finished                 # the stage while MLflow was stopped
    runs_after_outage: list        # children of the parent once MLflow was back, before the retry
    tracking_error: BaseException | None
    tracking_seconds: float
    up: Finished                   # the retry after MLflow came back


@pytest.fixture(scope="session")
def mlflow_outage(stack, client, experiment_id, raw_small) -> Outage:
    """Stop MLflow, run raw_to_bronze (try 1) and the DAG's start_tracking call, start MLflow, retry."""
    from scripts.devstack.health import port_open

    parent, airflow_run = new_parent_run(client, experiment_id, raw_small)
    stopped = stack.cli("stop", "mlflow")
    assert stopped.returncode == 0, stopped.stderr
    assert not port_open(int(stack.env["MLFLOW_PORT"])), "MLflow still listening after `stack.py stop mlflow`"
    try:
        down = run_stage(stack, "raw_to_bronze", raw_small, parent_run_id=parent, airflow_run_id=airflow_run,
                         try_number=1)
        error, seconds = _open_parent_run_without_client_settings(airflow_run, raw_small)
    finally:
        started = stack.cli("start", "mlflow")
        assert started.returncode == 0, started.stdout + started.stderr
    runs_after_outage = children_of(client, experiment_id, parent)
    up = run_stage(stack, "raw_to_bronze", raw_small, parent_run_id=parent, airflow_run_id=airflow_run,
                   try_number=2)
    measured("raw_to_bronze, MLflow stopped", down)
    MEASURED.append(f"start_tracking's MLflow call, MLflow stopped: {type(error).__name__} after {seconds:.1f} s")
    measured("raw_to_bronze retry, MLflow back", up)
    return Outage(parent, down, runs_after_outage, error, seconds, up)


def _open_parent_run_without_client_settings(airflow_run: str, trade_date):
    """start_tracking's MLflow call, in an environment that does not set MLflow's HTTP retries."""
    plugins = str(REPO / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    from lakehouse_mlops import parent_run
    from lakehouse_mlops.config import PipelineConfig

    saved = {k: os.environ.pop(k) for k in MLFLOW_HTTP if k in os.environ}
    t0 = time.monotonic()
    try:
        parent_run.open_parent_run(PipelineConfig.from_env(), "ml_pipeline", f"{airflow_run}-af", trade_date, "http://x")
        error = None
    except Exception as exc:  # noqa: BLE001 - what it raises is asserted by the test
        error = exc
    seconds = time.monotonic() - t0
    for k in MLFLOW_HTTP:
        os.environ.pop(k, None)
    os.environ.update(saved)
    return error, seconds


def pytest_terminal_summary(terminalreporter):
    from faults_support import MEASURED

    if MEASURED:
        terminalreporter.write_sep("-", "fault drills (measured)")
        for line in MEASURED:
            terminalreporter.write_line(line)
