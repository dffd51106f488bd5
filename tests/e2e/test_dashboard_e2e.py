"""After the pipeline's runs through the real scheduler, every Grafana panel has data in the stack's Prometheus.

The stages pushed to the embedded Pushgateway (PUSHGATEWAY_URL of the stack), Airflow sent StatsD to
statsd_exporter and MLflow counted its requests; Prometheus scrapes all three every 5 s. Issue 17's
"done when": every dashboard query returns data after a real run.
"""
from __future__ import annotations

import time

import pytest

from jobs import contract
from jobs.lakehouse.metrics import JOB
from scripts.devstack.dashboard import DASHBOARD, PLATFORM_DASHBOARD, instant_query, panels_without_data
from scripts.devstack.env import PROMETHEUS, STATSD_EXPORTER

SCRAPE_WAIT_SECONDS = 60  # a few scrape intervals: the last run's push may be seconds old


def test_every_dashboard_panel_has_data_after_the_pipeline(pipeline):
    env = pipeline.stack.env
    if PROMETHEUS not in pipeline.stack.started_services:
        pytest.skip("the stack runs no Prometheus (Debian's prometheus not installed: make system-deps)")
    url = env["PROMETHEUS_URL"]
    boards = [DASHBOARD] + ([PLATFORM_DASHBOARD] if STATSD_EXPORTER in pipeline.stack.started_services else [])
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    while (missing := [m for b in boards for m in panels_without_data(url, b)]) and time.monotonic() < deadline:
        time.sleep(1)  # poll interval; the condition is every panel's query
    assert missing == [], f"panels without data in {url}: {missing}"
    # Airflow's own view of the same runs: every stage's task finished successfully at least once.
    finished = instant_query(url, f'airflow_task_finished_total{{job="airflow", dag_id="{contract.ML_PIPELINE}", '
                                  'state="success"}')
    if STATSD_EXPORTER in pipeline.stack.started_services:
        assert set(contract.STAGES) <= {r["metric"]["task_id"] for r in finished}, finished
    # The figures came from the stages of this run (job and stage from the pushes' grouping key).
    pushed = instant_query(url, f'lakehouse_stage_last_run_success{{job="{JOB}"}}')
    assert set(contract.STAGES) <= {r["metric"]["stage"] for r in pushed}, pushed
