"""Stages as applications of the cluster profile's Spark standalone master (issue 15, items 1, 3, 4).

Every check reads what Spark itself reports: the master's and the workers' JSON status (which
application ran, which worker hosted its executors), the stage's exit code and the Iceberg table.
"""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
from cluster_support import CLUSTER_TICKS, LOOPBACK, alive_workers, apps_of, executors_by_worker
from faults.faults_support import Finished, run_stage, stage_command, stage_env, wait_until

from jobs import contract
from scripts.devstack import processes
from scripts.devstack.env import REPO, spark_master_ui
from scripts.devstack.health import http_get, spark_master_status
from scripts.devstack.services import spark_worker_names


def app_of(env, stage: str, running: bool = False) -> dict | None:
    apps = apps_of(env, stage, running)
    return apps[-1] if apps else None


def iceberg_rows(table: str, trade_date) -> int:
    from pyiceberg.expressions import EqualTo

    from jobs.lakehouse.settings import Settings

    settings = Settings.from_env()
    tbl = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{table}")
    return tbl.scan(row_filter=EqualTo("trade_date", trade_date.isoformat())).to_arrow().num_rows


def test_the_profile_runs_a_master_and_two_workers_on_loopback(stack):
    assert "spark" in stack.started_services, stack.up_output
    workers = alive_workers(stack.env)
    assert len(workers) == 2 == int(stack.env["SPARK_WORKERS"])
    assert {w["host"] for w in workers} == {"127.0.0.1"}
    # The workers run the production compose's worker command: its cores and memory variables.
    assert {w["cores"] for w in workers} == {int(stack.env["MLOPS_SPARK_WORKER_CORES"])}
    assert {w["memory"] for w in workers} == {1024}
    assert stack.env["SPARK_MASTER"] == f"spark://127.0.0.1:{stack.env['SPARK_MASTER_PORT']}"
    for name in ("spark-master", *spark_worker_names(stack.env)):
        pid = int((stack.home / "run" / f"{name}.pid").read_text())
        sockets = processes.listening_sockets(processes.session_members(pid))
        assert sockets and {address for _, address, _ in sockets} <= LOOPBACK, (name, sockets)


@pytest.fixture(scope="session")
def bronze_on_cluster(stack, raw_date) -> Finished:
    return run_stage(stack, "raw_to_bronze", raw_date)


def test_a_stage_is_an_application_of_the_master_with_executors_on_both_workers(stack, raw_date,
                                                                               bronze_on_cluster):
    assert bronze_on_cluster.returncode == 0, bronze_on_cluster.output[-3000:]
    app = app_of(stack.env, "raw_to_bronze")
    assert app is not None and app["state"] == "FINISHED", spark_master_status(stack.env)
    hosts = executors_by_worker(stack.env, app["id"])
    assert len(hosts) == 2 and all(hosts.values()), hosts
    assert iceberg_rows(contract.BRONZE, raw_date) == CLUSTER_TICKS


def test_a_worker_killed_mid_stage_leaves_the_stage_to_the_other_one(stack, raw_date, bronze_on_cluster, tmp_path):
    """SIGKILL one worker and its executor while bronze_to_silver runs: the stage still ends 0 and
    Silver holds exactly what a clean run on the whole cluster writes for that date."""
    assert bronze_on_cluster.returncode == 0
    log = tmp_path / "stage.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(stage_command(stack.env, "bronze_to_silver", raw_date), cwd=REPO,
                                env=stage_env(stack), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def both_executors_running():
            app = app_of(stack.env, "bronze_to_silver", running=True)
            assert proc.poll() is None, "the stage ended before both executors ran:\n" + log.read_text()[-3000:]
            if app is None:
                return None
            running = executors_by_worker(stack.env, app["id"], finished=False)
            return (app, running) if len(running) == 2 and all(running.values()) else None

        _app, running = wait_until(both_executors_running, 240, "bronze_to_silver's executors on both workers", 0.2)
        victim = spark_worker_names(stack.env)[-1]
        pid = int((stack.home / "run" / f"{victim}.pid").read_text())
        members = processes.session_members(pid)
        assert len(members) >= 2, "the worker's executor is not in its session"  # worker JVM + executor JVM
        os.killpg(pid, signal.SIGKILL)
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert rc == 0, output[-3000:]
    killed_rows = iceberg_rows(contract.SILVER, raw_date)
    # The worker's loss was seen by the driver (Spark logs the lost executor), not avoided by luck.
    assert "Executor" in output and ("lost" in output.lower() or "removed" in output.lower()), output[-3000:]

    started = stack.cli("start", "spark")
    assert started.returncode == 0, started.stdout + started.stderr
    assert len(alive_workers(stack.env)) == 2
    clean = run_stage(stack, "bronze_to_silver", raw_date)
    assert clean.returncode == 0, clean.output[-3000:]
    assert killed_rows == iceberg_rows(contract.SILVER, raw_date) > 0


def test_the_master_ui_is_where_up_says(stack):
    status, _ = http_get(spark_master_ui(stack.env))
    assert status == 200
    assert f"Spark master: {stack.env['SPARK_MASTER']}" in stack.up_output


def test_a_metastore_restarted_between_two_stages_is_transparent(stack, raw_date, bronze_on_cluster):
    """The catalog goes away after Bronze and comes back with its data: the next stage on the master
    reads Bronze through it and commits Silver as if nothing happened."""
    from scripts.devstack.health import hive_metastore_health

    assert bronze_on_cluster.returncode == 0
    stopped = stack.cli("stop", "hive-metastore")
    assert stopped.returncode == 0 and "hive-metastore" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not hive_metastore_health(stack.env)[0]
    started = stack.cli("start", "hive-metastore")
    assert started.returncode == 0, started.stdout + started.stderr
    log = (stack.home / "logs" / "hive-metastore.log").read_text()
    assert "metastore transaction tables present" in log, "a restart must find its lock tables in Postgres"
    silver = run_stage(stack, "bronze_to_silver", raw_date)
    assert silver.returncode == 0, silver.output[-3000:]
    app = app_of(stack.env, "bronze_to_silver")
    assert app is not None and app["state"] == "FINISHED"
    assert iceberg_rows(contract.SILVER, raw_date) > 0


def metastore_sql(env: dict, query: str) -> list[str]:
    """One query in the metastore's own Postgres database, as its role (psql, secrets via the environment)."""
    out = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-tA", "-c", query], capture_output=True, text=True,
                         env={**os.environ, "PGHOST": "127.0.0.1", "PGPORT": env["POSTGRES_PORT"],
                              "PGUSER": env["HIVE_METASTORE_DB_USER"], "PGDATABASE": env["HIVE_METASTORE_DB_NAME"],
                              "PGPASSWORD": env["HIVE_METASTORE_DB_PASSWORD"]}, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_catalog_and_its_commit_locks_live_in_postgres(stack, bronze_on_cluster):
    """The profile's metastore keeps hive_prod in Postgres: the Bronze commit's table is a row of
    TBLS there and its commit lock went through Hive's lock tables there; no Derby database exists."""
    assert bronze_on_cluster.returncode == 0
    assert contract.BRONZE in metastore_sql(stack.env, 'SELECT "TBL_NAME" FROM "TBLS"')
    assert int(metastore_sql(stack.env, "SELECT nl_next FROM next_lock_id")[0]) > 1, "no commit took a lock"
    assert metastore_sql(stack.env, "SELECT count(*) FROM hive_locks") == ["0"], "a lock was left behind"
    assert not (stack.home / "hive-metastore" / "metastore_db").exists()
    site = (stack.home / "hive-metastore" / "conf" / "hive-site.xml").read_text()
    assert "jdbc:postgresql://" in site and "jdbc:derby" not in site
