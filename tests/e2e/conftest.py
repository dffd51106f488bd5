"""The project's own DAG on a real embedded stack: SeaweedFS, MLflow, Airflow 3, Spark, Iceberg.

One pipeline session per module: RAW for two trade dates plus a date with no RAW at all, run by the
real scheduler; the tests then read back what every component recorded.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stack_support import Stack, running_stack

GOOD_DATES = (dt.date(2026, 11, 24), dt.date(2026, 11, 25))
MISSING_DATE = dt.date(2026, 11, 23)  # a Monday with no RAW delivered
TICKS_PER_DATE = 40_000


@dataclass
class PipelineSession:
    stack: Stack
    airflow: object
    runs: dict[str, str] = field(default_factory=dict)     # label -> Airflow run id
    states: dict[str, str] = field(default_factory=dict)   # label -> final state


@pytest.fixture(scope="session")
def pipeline(request) -> PipelineSession:
    import demo

    root = Path(tempfile.mkdtemp(prefix="lakehouse-e2e-"))
    settings = {
        "PIPELINE_RETRIES": "2",
        "PIPELINE_RETRY_DELAY_SECONDS": "1",  # keep the failing date's three tries quick
        "SPARK_DRIVER_MEMORY": "1g",
        "SPARK_SQL_SHUFFLE_PARTITIONS": "4",
    }
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)  # MLflow client, pyiceberg and boto3 in this process see the stack
        try:
            session = PipelineSession(stack=st, airflow=None)
            demo.generate_raw(st.env, list(GOOD_DATES), TICKS_PER_DATE * len(GOOD_DATES))
            airflow = demo.Airflow(st.env)
            session.airflow = airflow
            airflow.wait_for_dag()
            airflow.unpause()
            session.runs["missing"] = airflow.trigger(MISSING_DATE, tag="e2e")
            for d in GOOD_DATES:
                session.runs[d.isoformat()] = airflow.trigger(d, tag="e2e")
            session.states = airflow.wait(session.runs, timeout=1800)
            yield session
        finally:
            os.environ.clear()
            os.environ.update(saved)
