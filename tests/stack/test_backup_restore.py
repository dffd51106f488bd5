"""Backups that restore (issue 17, item 4): `stack.py backup` / `restore`, as `make backup` / `make restore` run them.

The drill runs on the stack suite's real stack, last in the session (conftest orders it so): it
writes what a night leaves behind (an Iceberg table with two snapshots through hive_prod, an MLflow
run with a metric and an artifact in SeaweedFS, a registered model version under @champion, a
finished Airflow run), backs the running stack up, destroys LAKEHOUSE_HOME entirely (a lost disk;
`.env` survives, as it would in the team's password store), restores into the empty folder, starts
a fresh stack on it and finds everything again. The archive rules (manifest, checksums, retention,
secrets, a half-written archive) are checked on real files without services, in seconds.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest
from nights_support import wait_until

from scripts.devstack import backup
from scripts.devstack.airflow_api import Airflow
from scripts.devstack.env import StackError

DRILL_TABLE = "backup_drill"
MODEL = "backup_drill_model"


# ------------------------------------------------------------------------------ archive rules, no services


def fake_home(tmp_path: Path) -> dict:
    home = tmp_path / "home"
    env = {"LAKEHOUSE_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "LAKEHOUSE_ENV_FILE":
           str(tmp_path / ".env"), "BACKUP_DIR": str(tmp_path / "backups")}
    (home / "airflow" / "logs" / "dag_id=x").mkdir(parents=True)
    (home / "airflow" / "logs" / "dag_id=x" / "attempt=1.log").write_text("a task log\n")
    (home / "airflow" / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "s3cret"}')
    (home / "airflow" / "airflow.cfg").write_text("[core]\n")
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE dag_run (id INTEGER, state TEXT)")
    db.execute("INSERT INTO dag_run VALUES (1, 'success')")
    db.commit()  # left open: the row lives in the WAL, as in a running Airflow
    (home / "seaweedfs" / "data").mkdir(parents=True)
    (home / "seaweedfs" / "data" / "1.dat").write_bytes(os.urandom(4096))
    (home / "seaweedfs" / "s3.json").write_text('{"identities": "written from .env at every start"}')
    (home / "seaweedfs" / "data" / "mini.options").write_text("s3.port=1234\n")  # weed mini's last flags
    (home / "hive-metastore" / "metastore_db" / "seg0").mkdir(parents=True)
    (home / "hive-metastore" / "metastore_db" / "seg0" / "c10.dat").write_bytes(b"derby")
    (home / "hive-metastore" / "metastore_db" / "db.lck").write_bytes(b"lock")
    (home / "run").mkdir()
    (home / "run" / "mlflow.pid").write_text("999999999")  # a service that is not running
    (tmp_path / ".env").write_text("AIRFLOW_ADMIN_PASSWORD=not-in-the-archive\n")
    return {"env": env, "db": db, "home": home}


def members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def test_an_archive_holds_the_state_and_leaves_out_what_is_regenerated_and_the_secrets(tmp_path):
    f = fake_home(tmp_path)
    archive, _ = backup.write_archive(f["env"], Path(f["env"]["BACKUP_DIR"]))
    f["db"].close()
    names = members(archive)
    assert {"airflow/airflow.db", "airflow/logs/dag_id=x/attempt=1.log", "seaweedfs/data/1.dat",
            "hive-metastore/metastore_db/seg0/c10.dat", backup.MANIFEST} <= names
    for left_out in ("airflow/airflow.cfg", "seaweedfs/s3.json", "seaweedfs/data/mini.options",
                     "airflow/airflow.db-wal",
                     "hive-metastore/metastore_db/db.lck", "secrets/.env",
                     "airflow-secrets/simple_auth_manager_passwords.json.generated"):
        assert left_out not in names
    assert not any("run/" in n for n in names)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    manifest = backup.read_manifest(archive)
    assert manifest["includes_secrets"] is False and manifest["format"] == backup.FORMAT_VERSION
    # The online-backup copy carries the row that was only in the WAL.
    restored = tmp_path / "check.db"
    with tarfile.open(archive) as tar:
        restored.write_bytes(tar.extractfile("airflow/airflow.db").read())
    assert sqlite3.connect(restored).execute("SELECT state FROM dag_run").fetchall() == [("success",)]


def test_secrets_go_in_only_when_asked_for(tmp_path):
    f = fake_home(tmp_path)
    archive, _ = backup.write_archive(f["env"], Path(f["env"]["BACKUP_DIR"]), include_secrets=True)
    names = members(archive)
    assert {"airflow-secrets/simple_auth_manager_passwords.json.generated", "secrets/.env"} <= names
    assert backup.read_manifest(archive)["includes_secrets"] is True


def test_retention_keeps_the_newest_and_a_restore_moves_the_replaced_state_aside(tmp_path):
    f = fake_home(tmp_path)
    out = Path(f["env"]["BACKUP_DIR"])
    t0 = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    made = [backup.write_archive(f["env"], out, now=t0 + dt.timedelta(days=i))[0] for i in range(3)]
    assert backup.prune(out, keep=2) == made[:1] and backup.archives(out) == made[1:]
    assert backup.resolve_archive(f["env"], "latest") == made[-1]
    (f["home"] / "seaweedfs" / "data" / "1.dat").write_bytes(b"written after the backup")
    assert (f["home"] / "airflow" / "airflow.db-wal").exists()  # the connection is still open
    aside, _ = backup.restore(f["env"], made[-1], now=t0 + dt.timedelta(days=9))
    assert (f["home"] / "seaweedfs" / "data" / "1.dat").read_bytes() != b"written after the backup"
    assert (aside / "seaweedfs" / "data" / "1.dat").read_bytes() == b"written after the backup"
    assert (aside / "airflow" / "airflow.db-wal").exists()  # the old WAL never meets the restored database
    assert not (f["home"] / "airflow" / "airflow.db-wal").exists()
    assert (f["home"] / "seaweedfs" / "s3.json").exists()  # not the backup's business: regenerated at start
    f["db"].close()
    restored = sqlite3.connect(f["home"] / "airflow" / "airflow.db")
    assert restored.execute("SELECT state FROM dag_run").fetchall() == [("success",)]


def test_the_cluster_profile_is_refused_before_anything_stops_or_moves(tmp_path):
    """Its Airflow, MLflow and metastore state is in Postgres, which a file archive would not hold."""
    f = fake_home(tmp_path)
    archive, _ = backup.write_archive(f["env"], Path(f["env"]["BACKUP_DIR"]))
    f["db"].close()
    cluster = {**f["env"], "LAKEHOUSE_PROFILE": "cluster"}
    calls = []
    with pytest.raises(StackError, match="pg_dumpall"):
        backup.backup(cluster, stop=calls.append, start=lambda *a: calls.append(a))
    with pytest.raises(StackError, match="pg_dumpall"):
        backup.restore(cluster, archive)
    assert calls == [] and backup.archives(Path(f["env"]["BACKUP_DIR"])) == [archive]
    assert (f["home"] / "seaweedfs" / "data" / "1.dat").exists()


def test_a_damaged_or_foreign_archive_is_refused_before_anything_moves(tmp_path):
    f = fake_home(tmp_path)
    archive, _ = backup.write_archive(f["env"], Path(f["env"]["BACKUP_DIR"]))
    f["db"].close()
    manifest = backup.read_manifest(archive)
    manifest["components"]["seaweedfs"]["files"].append({"path": "data/9.dat", "bytes": 1, "sha256": "0"})
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for m in src.getmembers():
            if m.name != backup.MANIFEST:
                dst.addfile(m, src.extractfile(m))
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(backup.MANIFEST)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    before = (f["home"] / "seaweedfs" / "data" / "1.dat").read_bytes()
    with pytest.raises(StackError, match="9.dat missing or truncated"):
        backup.restore(f["env"], damaged)
    assert (f["home"] / "seaweedfs" / "data" / "1.dat").read_bytes() == before
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        tar.add(f["home"] / "airflow" / "airflow.cfg", arcname="airflow.cfg")
    with pytest.raises(StackError, match="not a lakehouse backup"):
        backup.restore(f["env"], foreign)


# ------------------------------------------------------------------------------ the drill, real stack


def _probe_run(airflow, dag_id: str) -> str:
    status, body = airflow.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
    assert status in (200, 201), body
    return body["dag_run_id"]


def _night(stack) -> dict:
    """What a night leaves behind, written through the stack's own catalog, MLflow and Airflow."""
    import mlflow
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import DateType, LongType, NestedField

    from jobs.lakehouse.settings import Settings

    settings = Settings.from_env()
    catalog = settings.pyiceberg_catalog()
    catalog.create_namespace_if_not_exists(settings.namespace)
    schema = Schema(NestedField(1, "trade_date", DateType(), required=False),
                    NestedField(2, "tick", LongType(), required=False))
    table = catalog.create_table(f"{settings.namespace}.{DRILL_TABLE}", schema=schema)
    arrow = table.schema().as_arrow()
    for day, n in ((dt.date(2026, 11, 26), 7), (dt.date(2026, 11, 27), 5)):
        table.append(pa.Table.from_pylist([{"trade_date": day, "tick": i} for i in range(n)], schema=arrow))
    table = catalog.load_table(f"{settings.namespace}.{DRILL_TABLE}")

    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(stack.env["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run(run_name="backup-drill") as run:
        mlflow.log_metric("holdout_auc", 0.8125)
        mlflow.log_text("the champion's report", "report/summary.txt")
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"{run.info.artifact_uri}/report", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)

    airflow = Airflow(stack.env)
    run_id = _probe_run(airflow, "stack_probe")
    wait_until(lambda: airflow.run_state(run_id, dag_id="stack_probe") in ("success", "failed"), 180, "the probe run")
    return {"snapshots": [s.snapshot_id for s in table.snapshots()], "rows": table.scan().to_arrow().num_rows,
            "mlflow_run": run.info.run_id, "version": version.version, "airflow_run": run_id,
            "airflow_state": airflow.run_state(run_id, dag_id="stack_probe")}


def _read_back(stack, night: dict) -> dict:
    import mlflow

    from jobs.lakehouse.settings import Settings

    settings = Settings.from_env()
    table = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{DRILL_TABLE}")
    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    run = client.get_run(night["mlflow_run"])
    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/report/summary.txt")
    return {"snapshots": [s.snapshot_id for s in table.snapshots()], "rows": table.scan().to_arrow().num_rows,
            "metric": run.data.metrics.get("holdout_auc"), "artifact": text,
            "champion": client.get_model_version_by_alias(MODEL, "champion").version,
            "airflow_state": Airflow(stack.env).run_state(night["airflow_run"], dag_id="stack_probe")}


@pytest.fixture
def stack_env(stack):
    saved = dict(os.environ)
    os.environ.update(stack.env)
    yield stack
    os.environ.clear()
    os.environ.update(saved)


def test_a_backup_waits_for_no_night_half_written(stack_env, tmp_path):
    """A run in flight: the backup refuses (and names it) instead of archiving half a night."""
    stack = stack_env
    airflow = Airflow(stack.env)
    run_id = _probe_run(airflow, "stack_probe_serial")
    wait_until(lambda: airflow.run_state(run_id, dag_id="stack_probe_serial") == "running", 120,
               "the serial run to start")
    try:
        refused = stack.cli("backup", env_overrides={"BACKUP_DIR": str(tmp_path)})
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "queued or running" in refused.stderr and run_id in refused.stderr
        assert backup.archives(tmp_path) == []
    finally:
        (Path(stack.env["LAKEHOUSE_HOME"]) / f"release-{run_id}").write_text("")
    wait_until(lambda: airflow.run_state(run_id, dag_id="stack_probe_serial") == "success", 180,
               "the serial run to end")


def test_restore_drill_a_lost_home_comes_back_with_runs_champion_snapshots_and_rows(stack_env):
    stack = stack_env
    night = _night(stack)
    assert night["airflow_state"] == "success" and len(night["snapshots"]) == 2 and night["rows"] == 12
    before = _read_back(stack, night)
    backups = stack.home.parent / "backups"
    made = stack.cli("backup", timeout=600, env_overrides={"BACKUP_DIR": str(backups)})
    assert made.returncode == 0, made.stdout + made.stderr
    [archive] = backup.archives(backups)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    manifest = backup.read_manifest(archive)
    for name in ("airflow", "mlflow", "seaweedfs"):
        assert manifest["components"][name]["files"], name
    assert "healthy" in made.stdout  # the stack came back up after the backup
    assert _read_back(stack, night) == before

    # A lost disk: the whole LAKEHOUSE_HOME gone.
    down = stack.cli("down", timeout=120)
    assert down.returncode == 0, down.stderr
    shutil.rmtree(stack.home)
    restored = stack.cli("restore", "latest", env_overrides={"BACKUP_DIR": str(backups)})
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert archive.name in restored.stdout and "nothing was replaced" in restored.stdout
    up = stack.cli("up", timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    assert _read_back(stack, night) == before
    # The restored stack keeps working: a new Airflow run, a new commit on the restored table.
    airflow = Airflow(stack.env)  # the restored stack generated new passwords: a new login
    run_id = _probe_run(airflow, "stack_probe")
    wait_until(lambda: airflow.run_state(run_id, dag_id="stack_probe") == "success", 180, "a run after the restore")
    import pyarrow as pa

    from jobs.lakehouse.settings import Settings

    settings = Settings.from_env()
    table = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{DRILL_TABLE}")
    table.append(pa.Table.from_pylist([{"trade_date": dt.date(2026, 11, 30), "tick": 0}],
                                      schema=table.schema().as_arrow()))
    table = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{DRILL_TABLE}")
    assert table.scan().to_arrow().num_rows == 13 and len(table.snapshots()) == 3


def test_restore_refuses_while_the_stack_runs(stack):
    refused = stack.cli("restore", "latest", env_overrides={"BACKUP_DIR": str(stack.home.parent / "backups")})
    assert refused.returncode == 1 and "make down" in refused.stderr, refused.stdout + refused.stderr
