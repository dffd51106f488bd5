"""Airflow's CeleryExecutor on Postgres and Redis in the cluster profile (issue 15, items 1 and 4).

What ran where is read from the components themselves: each Celery worker's own log of the
workloads it executed, the task instances in Airflow's API, the tables in Postgres.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from cluster_support import HOLD_TASK, PROBE_DAG, PROBE_FANOUT, celery_workloads
from faults.faults_support import wait_until

from scripts.devstack import processes
from scripts.devstack.env import celery_worker_names


def psql(stack, sql: str, database: str, user: str = "", password: str = "") -> list[str]:
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": stack.env["POSTGRES_PORT"],
           "PGUSER": user or stack.env["POSTGRES_USER"], "PGPASSWORD": password or stack.env["POSTGRES_PASSWORD"],
           "PGDATABASE": database}
    proc = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-Atc", sql], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def trigger(airflow, conf: dict | None = None) -> str:
    run_id = f"probe__{time.time_ns()}"
    status, body = airflow.call("POST", f"/api/v2/dags/{PROBE_DAG}/dagRuns",
                                {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
    assert status in (200, 201), body
    return run_id


def finished(airflow, run_id: str, timeout: float = 300) -> str:
    return wait_until(lambda: (s := airflow.run_state(run_id, PROBE_DAG)) in ("success", "failed") and s,
                      timeout, f"{PROBE_DAG} run {run_id} to finish", poll=1)


def test_airflow_and_mlflow_keep_their_metadata_in_postgres(stack, airflow):
    assert {stack.env["POSTGRES_DB"], "mlflow", "mlflow_auth"} <= set(psql(stack, "SELECT datname FROM pg_database",
                                                                           "postgres"))
    assert PROBE_DAG in psql(stack, "SELECT dag_id FROM dag", stack.env["POSTGRES_DB"])
    # MLflow's own role owns its databases (the compose's mlflow-db-init): the pipeline's experiment is there.
    experiments = psql(stack, "SELECT name FROM experiments", "mlflow", stack.env["MLFLOW_DB_USER"],
                       stack.env["MLFLOW_DB_PASSWORD"])
    assert stack.env["MLFLOW_EXPERIMENT_NAME"] in experiments
    assert not (stack.home / "airflow" / "airflow.db").exists()
    assert not (stack.home / "mlflow" / "mlflow.db").exists()
    assert stack.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_the_tasks_of_one_run_spread_over_both_celery_workers(stack, airflow):
    run_id = trigger(airflow)
    assert finished(airflow, run_id) == "success", airflow.task_states(run_id, PROBE_DAG)
    ran = {w: {t for d, r, t, _ in celery_workloads(stack.home, w) if (d, r) == (PROBE_DAG, run_id)}
           for w in celery_worker_names(stack.env)}
    assert len(ran) == 2 and all(ran.values()), ran
    assert sum(len(tasks) for tasks in ran.values()) >= 2  # the mapped fan-out counts once per task id
    assert len(airflow.task_instances(run_id, PROBE_DAG)) == PROBE_FANOUT + 1


def test_a_celery_worker_killed_while_its_task_runs_is_retried_on_the_other(stack, airflow, tmp_path):
    release = tmp_path / "release"
    run_id = trigger(airflow, {"release": str(release)})

    def holder():
        return next((w for w in celery_worker_names(stack.env)
                     if (PROBE_DAG, run_id, HOLD_TASK, 1) in celery_workloads(stack.home, w)), None)

    victim = wait_until(holder, 180, f"a Celery worker to start {HOLD_TASK}", poll=0.5)
    pid = int((stack.home / "run" / f"{victim}.pid").read_text())
    members = processes.session_members(pid)
    assert len(members) >= 3, "the worker, its pool and the task process were expected"
    for member in members:
        os.kill(member, signal.SIGKILL)
    release.touch()  # try 1 is dead: only a retry can see it
    try:
        assert finished(airflow, run_id, timeout=300) == "success", airflow.task_states(run_id, PROBE_DAG)
        hold = next(ti for ti in airflow.task_instances(run_id, PROBE_DAG) if ti["task_id"] == HOLD_TASK)
        assert hold["try_number"] == 2 and hold["state"] == "success", hold
        survivor = next(w for w in celery_worker_names(stack.env) if w != victim)
        assert (PROBE_DAG, run_id, HOLD_TASK, 2) in celery_workloads(stack.home, survivor)
        assert (PROBE_DAG, run_id, HOLD_TASK, 2) not in celery_workloads(stack.home, victim)
    finally:
        started = stack.cli("start", "airflow")
        assert started.returncode == 0, started.stdout + started.stderr


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_the_metadata_stores_listen_on_loopback_only(stack, name):
    pid = int((stack.home / "run" / f"{name}.pid").read_text())
    sockets = processes.listening_sockets(processes.session_members(pid))
    assert {port for _, _, port in sockets} == {int(stack.env[f"{name.upper()}_PORT"])}
    assert {address for _, address, _ in sockets} <= {"127.0.0.1"}
