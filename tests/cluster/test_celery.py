"""Airflow's CeleryExecutor on Postgres and Redis in the cluster profile (issue 15, items 1 and 4).

What ran where is read from the components themselves: each Celery worker's own log of the
workloads it executed, the task instances in Airflow's API, the tables in Postgres.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cluster_support import CLUSTER_TICKS, HOLD_TASK, PROBE_DAG, PROBE_FANOUT, apps_of, celery_workloads
from faults.faults_support import wait_until

from jobs import contract
from scripts.devstack import processes
from scripts.devstack.env import celery_worker_names
from scripts.devstack.health import spark_master_status


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
    # Only the held task may die with the worker: a fan-out task running beside it there would fail
    # without retries and fail the run (seen in CI). The fan-out ends on its own; hold waits for release.
    wait_until(lambda: all(ti["state"] == "success" for ti in airflow.task_instances(run_id, PROBE_DAG)
                           if ti["task_id"] != HOLD_TASK), 180, "the fan-out tasks to succeed", poll=0.5)
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


def test_a_celery_worker_killed_inside_a_stage_leaves_one_mlflow_run_and_one_commit(stack, airflow, raw_date):
    """ml_pipeline's raw_to_bronze, its driver inside the Celery task as in production, loses its
    worker (worker, pool, task process and spark-submit) while its application runs on the master.
    The task is retried on the other worker; MLflow keeps one finished run of the stage (try 1's is
    ended KILLED, not left RUNNING beside it) and Bronze holds the date's ticks exactly once."""
    from mlflow import MlflowClient

    from jobs.lakehouse.settings import Settings

    dag, stage = contract.ML_PIPELINE, contract.RAW_TO_BRONZE
    airflow.wait_for_dag(dag)
    airflow.unpause(dag)
    run_id = airflow.trigger(raw_date, dag_id=dag, tag="celery-kill")

    def stage_try(number: int):
        ti = next((t for t in airflow.task_instances(run_id, dag) if t["task_id"] == stage), None)
        return ti if ti and ti["try_number"] == number else None

    def holder():
        if not apps_of(stack.env, stage, running=True):  # the driver has registered with the master
            return None
        return next((w for w in celery_worker_names(stack.env)
                     if (dag, run_id, stage, 1) in celery_workloads(stack.home, w)), None)

    victim = wait_until(holder, 600, f"{stage}'s application to run on the master", poll=0.5)
    pid = int((stack.home / "run" / f"{victim}.pid").read_text())
    members = processes.session_members(pid)
    commands = {m: (Path(f"/proc/{m}/cmdline").read_bytes() if Path(f"/proc/{m}").exists() else b"") for m in members}
    assert any(b"spark-submit" in c or b"SparkSubmit" in c for c in commands.values()), \
        "the stage's spark-submit was expected among the Celery worker's processes"
    for member in members:
        os.kill(member, signal.SIGKILL)
    try:
        wait_until(lambda: not apps_of(stack.env, stage, running=True), 120, "try 1's application to end")
        retried = wait_until(lambda: (ti := stage_try(2)) and ti["state"] in ("success", "failed") and ti, 600,
                             f"{stage} try 2 to end", poll=1)
        assert retried["state"] == "success", retried
        survivor = next(w for w in celery_worker_names(stack.env) if w != victim)
        assert (dag, run_id, stage, 2) in celery_workloads(stack.home, survivor)
    finally:
        # The rest of the run is not this drill's: failing the run stops its remaining tasks.
        airflow.call("PATCH", f"/api/v2/dags/{dag}/dagRuns/{run_id}", {"state": "failed"})
        started = stack.cli("start", "airflow")
        assert started.returncode == 0, started.stdout + started.stderr
    active = ("running", "queued", "scheduled")
    wait_until(lambda: all(s not in active for s in airflow.task_states(run_id, dag).values())
               and not spark_master_status(stack.env).get("activeapps"), 300, "the run's tasks to stop", poll=1)

    client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(stack.env["MLFLOW_EXPERIMENT_NAME"])
    parents = client.search_runs([experiment.experiment_id], contract.parent_run_filter(dag, run_id))
    assert len(parents) == 1, [p.info.run_id for p in parents]
    runs = client.search_runs([experiment.experiment_id], " and ".join(
        (contract.child_runs_filter(parents[0].info.run_id), contract.tag_equals(contract.TAG_STAGE, stage))))
    by_try = sorted((r.data.tags.get(contract.TAG_TRY_NUMBER), r.info.status) for r in runs)
    assert by_try == [("1", "KILLED"), ("2", "FINISHED")], by_try

    settings = Settings.from_env()
    bronze = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{contract.BRONZE}")
    from pyiceberg.expressions import EqualTo

    assert bronze.scan(row_filter=EqualTo("trade_date", raw_date.isoformat())).to_arrow().num_rows == CLUSTER_TICKS
