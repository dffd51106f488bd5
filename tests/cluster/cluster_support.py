"""Helpers of tests/cluster: the probe DAG and what the Spark master, its workers and Celery report."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from scripts.devstack.health import http_get, spark_master_status

CLUSTER_DATE = dt.date(2026, 11, 24)
# Enough ticks that bronze_to_silver still runs when both executors have started (the worker drill).
CLUSTER_TICKS = 200_000
PROBE_DAG = "cluster_probe"
PROBE_FANOUT = 8  # parallel tasks of one probe run: more than one worker's share of the queue
HOLD_TASK = "hold"  # waits for a release file, so a test can kill the worker that runs it
PROBE_DAG_SOURCE = f"""
import os, time
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     is_paused_upon_creation=False, tags=["cluster-test"])
def {PROBE_DAG}():
    @task
    def fan(i: int):
        return i

    @task(task_id="{HOLD_TASK}", retries=1, retry_delay=pendulum.duration(seconds=1))
    def hold(release: str = ""):
        deadline = time.monotonic() + 600
        while release and not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.5)
        return "released"

    fan.expand(i=list(range({PROBE_FANOUT})))
    hold(release="{{{{ dag_run.conf.get('release', '') }}}}")


{PROBE_DAG}()
"""
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
_WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)', dag_id='([^']+)', "
                       r"run_id='([^']+)', try_number=(\d+)")


def celery_workloads(home: Path, worker: str) -> set[tuple[str, str, str, int]]:
    """(dag_id, run_id, task_id, try) of every task the worker's own log says it executed."""
    log = home / "logs" / f"{worker}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return {(dag_id, run_id, task_id, int(attempt)) for task_id, dag_id, run_id, attempt in _WORKLOAD.findall(text)}


def _json(url: str) -> dict:
    status, body = http_get(f"{url}/json/")
    assert status == 200, f"{url}/json/ returned {status}"
    return json.loads(body)


def alive_workers(env) -> list[dict]:
    return [w for w in (spark_master_status(env) or {}).get("workers", []) if w["state"] == "ALIVE"]


def apps_of(env, stage: str, running: bool = False) -> list[dict]:
    """The master's applications of a stage (named lakehouse-<stage>-<date>), oldest first."""
    status = spark_master_status(env) or {}
    apps = status.get("activeapps" if running else "completedapps", [])
    return sorted((a for a in apps if a["name"].startswith(f"lakehouse-{stage}")), key=lambda a: a["starttime"])


def executors_by_worker(env, app_id: str, finished: bool = True) -> dict[str, list[dict]]:
    """worker id -> that worker's executors of the application (from each worker's own status).

    ``finished``: running or finished ones. The master removes an application about a second
    before its workers move the killed executors to their finished list (seen in CI), so an
    application that just ended may still show running executors. Else only running ones.
    """
    found = {}
    for worker in alive_workers(env):
        status = _json(worker["webuiaddress"])
        listed = [*status.get("executors", []), *(status.get("finishedexecutors", []) if finished else [])]
        found[worker["id"]] = [e for e in listed if e["appid"] == app_id]
    return found
