"""After the pipeline's runs through the real scheduler, every Grafana panel has data in the stack's Prometheus.

The stages pushed to the embedded Pushgateway (PUSHGATEWAY_URL of the stack); its Prometheus scrapes it
every 5 s. Issue 17's "done when": every dashboard query returns data after a real run.
"""
from __future__ import annotations

import time

import pytest

from jobs import contract
from jobs.lakehouse.metrics import JOB
from scripts.devstack.dashboard import instant_query, panels_without_data
from scripts.devstack.env import PROMETHEUS

SCRAPE_WAIT_SECONDS = 60  # a few scrape intervals: the last run's push may be seconds old


def test_every_dashboard_panel_has_data_after_the_pipeline(pipeline):
    env = pipeline.stack.env
    if PROMETHEUS not in pipeline.stack.started_services:
        pytest.skip("the stack runs no Prometheus (Debian's prometheus not installed: make system-deps)")
    url = env["PROMETHEUS_URL"]
    deadline = time.monotonic() + SCRAPE_WAIT_SECONDS
    while (missing := panels_without_data(url)) and time.monotonic() < deadline:
        time.sleep(1)  # poll interval; the condition is every panel's query
    assert missing == [], f"panels without data in {url}: {missing}"
    # The figures came from the stages of this run (job and stage from the pushes' grouping key).
    pushed = instant_query(url, f'lakehouse_stage_last_run_success{{job="{JOB}"}}')
    assert set(contract.STAGES) <= {r["metric"]["stage"] for r in pushed}, pushed
