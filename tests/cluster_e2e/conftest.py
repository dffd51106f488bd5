"""The project's DAGs on the cluster profile (issue 15, item 3): `make test-cluster` (~20-30 min here).

One stack (tests/cluster/conftest.py's shape, with the project's own DAG folder) and one demo run
through it, as `make demo PROFILE=cluster` does: two trade dates, the second a stressed market, so
its drift alert starts ml_retraining once.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.devstack.env import JOBS_VENV, REPO
from scripts.devstack.services import unprivileged_refusal
from scripts.devstack.temporary import Stack, running_stack

DATES = (dt.date(2026, 11, 24), dt.date(2026, 11, 25))
TICKS = 60_000  # both dates together


@dataclass
class Demo:
    stack: Stack
    returncode: int
    output: str


@pytest.fixture(scope="session")
def demo(request) -> Demo:
    if why := unprivileged_refusal():
        pytest.skip(f"Postgres refuses to run as root and cannot be given another user here: {why}")
    root = Path(tempfile.mkdtemp(prefix="lakehouse-cluster-e2e-"))
    settings = {"LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_CATALOG": "hive", "TRINO": "off",
                "SPARK_DRIVER_MEMORY": "1g", "SPARK_EXECUTOR_MEMORY": "1g",
                "MLOPS_SPARK_WORKER_CORES": "1", "MLOPS_SPARK_WORKER_MEMORY": "1g",
                "MLOPS_CELERY_WORKER_CONCURRENCY": "2", "SPARK_SQL_SHUFFLE_PARTITIONS": "4",
                "DEMO_STRESSED_DATES": DATES[1].isoformat()}
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        proc = st.cli("run", "--", str(JOBS_VENV / "bin" / "python"), str(REPO / "scripts" / "demo.py"),
                      "--dates", ",".join(d.isoformat() for d in DATES), "--ticks", str(TICKS), timeout=3600)
        saved = dict(os.environ)
        os.environ.update(st.env)
        try:
            yield Demo(st, proc.returncode, proc.stdout + proc.stderr)
        finally:
            os.environ.clear()
            os.environ.update(saved)

