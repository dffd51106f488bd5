"""The project's own DAG on a real embedded stack: SeaweedFS, MLflow, Airflow 3, Spark, Iceberg.

One pipeline session per module: RAW for two trade dates plus a date with no RAW at all, run by the
real scheduler; the tests then read back what every component recorded.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_support import (
    DRIFT_DATE,
    GOOD_DATES,
    MESSY_DATE,
    MISSING_DATE,
    RAW_DELIVERY_BY,
    RETAIN_LAST,
    TICKS_PER_DATE,
    WebhookReceiver,
)
from nights_support import memory

from scripts.devstack.temporary import Stack, running_stack


@dataclass
class PipelineSession:
    stack: Stack
    airflow: object
    runs: dict[str, str] = field(default_factory=dict)     # label -> Airflow run id
    states: dict[str, str] = field(default_factory=dict)   # label -> final state
    webhook: WebhookReceiver | None = None
    retraining: dict[str, str] = field(default_factory=dict)  # run id -> final state
    messy: dict = field(default_factory=dict)  # what the messy delivery must produce
    memory: dict = field(default_factory=dict)  # services' PSS once the first nights ran (test_month_of_nights)


LAST_MODULE = "test_month_of_nights.py"  # judges every run the session made, so it runs after them all


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name == LAST_MODULE)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def pipeline(request) -> PipelineSession:
    from jobs.synthetic import messy_delivery as generate_messy_delivery
    from scripts import demo

    root = Path(tempfile.mkdtemp(prefix="lakehouse-e2e-"))
    webhook = WebhookReceiver()
    settings = {
        "ALERT_WEBHOOK_URL": webhook.url,
        "PIPELINE_RETRIES": "2",
        "PIPELINE_RETRY_DELAY_SECONDS": "1",  # keep the failing date's three tries quick
        "RAW_DELIVERY_TIMEOUT": RAW_DELIVERY_BY,
        "SPARK_DRIVER_MEMORY": "1g",
        "SPARK_SQL_SHUFFLE_PARTITIONS": "4",
        # The session's one iceberg_maintenance run (test_month_of_nights) expires all it may.
        "ICEBERG_SNAPSHOT_MAX_AGE_DAYS": "0", "ICEBERG_SNAPSHOT_RETAIN_LAST": str(RETAIN_LAST),
    }
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)  # MLflow client, pyiceberg and boto3 in this process see the stack
        try:
            session = PipelineSession(stack=st, airflow=None, webhook=webhook)
            demo.generate_raw(st.env, list(GOOD_DATES), TICKS_PER_DATE * len(GOOD_DATES))
            demo.generate_raw(st.env, [DRIFT_DATE], TICKS_PER_DATE, regime=3.0)
            session.messy = generate_messy_delivery.write(st.env["RAW_TICKS_PATH"], MESSY_DATE)
            airflow = demo.Airflow(st.env)
            session.airflow = airflow
            airflow.wait_for_dag()
            airflow.unpause()
            session.runs["missing"] = airflow.trigger(MISSING_DATE, tag="e2e")
            for d in (*GOOD_DATES, DRIFT_DATE):
                session.runs[d.isoformat()] = airflow.trigger(d, tag="e2e")
            session.states = airflow.wait(session.runs, timeout=3600)  # a bound for loaded machines, not a sleep
            # The drifted date's asset event schedules ml_retraining; wait for that run too.
            deadline = time.monotonic() + 120
            while not (retraining := airflow.runs_of("ml_retraining")) and time.monotonic() < deadline:
                time.sleep(2)
            if retraining:
                ids = {r["dag_run_id"]: r["dag_run_id"] for r in retraining}
                session.retraining = airflow.wait(ids, timeout=900, dag_id="ml_retraining")
            session.memory = memory()
            yield session
        finally:
            os.environ.clear()
            os.environ.update(saved)
            webhook.close()
