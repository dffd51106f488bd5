"""A stage killed in the middle of its Iceberg write: the previous snapshot stays intact and readable,
the half-written files are orphans no snapshot references, and the retry succeeds.

raw_to_bronze runs under spark-submit in its own process group on 500k ticks, writing many small
files (faults_support.rolling_writes). The test waits until data files of the write are listed in
the warehouse while no new metadata file (the first step of a commit) is, then SIGKILLs the whole
group (Python driver and JVM).
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults_support import (
    CATALOG,
    MEASURED,
    SMALL_DATE,
    SMALL_TICKS,
    Finished,
    Storage,
    children_of,
    measured,
    new_parent_run,
    plain_path,
    remove_orphans,
    rolling_writes,
    run_stage,
    spark_sql,
    start_stage,
    table_files,
    wait_until,
)

BIG_DATE = dt.date(2026, 11, 25)
BIG_TICKS = 500_000
STAGE = "raw_to_bronze"


@dataclass
class Killed:
    parent_run_id: str
    airflow_run_id: str
    table: str                       # catalog.namespace.table
    location: str                    # the table's folder: s3a://... or file:...
    snapshot_before: int
    rows_before: int
    files_before: set[str]
    orphans: set[str]                # data files of the killed write, in the warehouse
    exit_signal: int
    killed_commands: list[str]       # what the process group held when it was killed


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _table_state(stack, table: str, *then) -> dict:
    """What a new Spark reader sees: the current snapshot, rows per trade date, every referenced file
    (and the rows of the steps in ``then``, run in the same Spark session afterwards)."""
    current, counts, files, *more = spark_sql(
        stack,
        f"SELECT snapshot_id FROM {table}.refs WHERE name = 'main'",
        f"SELECT CAST(trade_date AS STRING) AS d, count(*) AS n FROM {table} GROUP BY trade_date",
        f"SELECT file_path FROM {table}.all_data_files",  # files of every snapshot, not only the current
        *then,
    )
    return {"snapshot_id": current[0]["snapshot_id"], "rows": {r["d"]: r["n"] for r in counts},
            "referenced": {plain_path(r["file_path"]) for r in files}, "then": more}


@pytest.fixture(scope="session")
def killed_write(stack, settings, mlflow_outage, client, experiment_id) -> Killed:
    """Kill raw_to_bronze for BIG_DATE during its Bronze write (mlflow_outage left a committed SMALL_DATE)."""
    from jobs.contract import BRONZE
    from jobs.synthetic.raw_ticks import main as generate

    assert mlflow_outage.up.returncode == 0, "needs the committed Bronze snapshot of the MLflow drill"
    generate(["--dates", BIG_DATE.isoformat(), "--ticks", str(BIG_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    table = settings.table(BRONZE)
    rolling_writes(stack, table)
    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    snapshot_before = iceberg.current_snapshot().snapshot_id
    rows_before = iceberg.scan().to_arrow().num_rows
    storage = Storage.of(stack.env, iceberg.location())

    parent, airflow_run = new_parent_run(client, experiment_id, BIG_DATE)
    log = stack.home.parent / f"{STAGE}-killed.log"  # kept with the stack state when a test fails
    proc = start_stage(stack, STAGE, BIG_DATE, log, parent_run_id=parent, airflow_run_id=airflow_run, try_number=1)
    try:
        t0 = time.monotonic()
        storage.wait_for_uncommitted_write(proc, log, STAGE)
        group = {pid: _command(pid) for pid in _group_members(proc.pid)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    wait_until(lambda: not _group_members(proc.pid), timeout=30, what="every process of the killed job to exit")
    orphans = storage.new_data_files()
    MEASURED.append(f"raw_to_bronze {BIG_TICKS:,} ticks ({CATALOG} catalog): SIGKILL of {len(group)} processes "
                    f"({', '.join(sorted(set(group.values())))}) {time.monotonic() - t0:.1f} s after start, "
                    f"{len(orphans)} uncommitted data file(s) left")
    return Killed(parent, airflow_run, table, storage.location, snapshot_before, rows_before, storage.data,
                  orphans, -proc.returncode, sorted(set(group.values())))


@pytest.fixture(scope="session")
def retried_write(stack, killed_write) -> Finished:
    result = run_stage(stack, STAGE, BIG_DATE, parent_run_id=killed_write.parent_run_id,
                       airflow_run_id=killed_write.airflow_run_id, try_number=2)
    measured(f"raw_to_bronze retry after the kill, {BIG_TICKS:,} ticks", result)
    return result


@pytest.fixture(scope="session")
def after_kill(stack, killed_write) -> dict:
    return _table_state(stack, killed_write.table)


@pytest.fixture(scope="session")
def after_retry(stack, killed_write, retried_write) -> dict:
    """The table after the retry, then the orphan clean-up, with a cut-off after the retry.

    The maintenance job removes orphans older than ICEBERG_ORPHAN_MIN_AGE_HOURS (the procedure
    refuses less than 24 hours: a younger file may belong to a write in progress). Nothing else
    writes here, so Iceberg's action removes them now, through the same prefix listing.
    """
    orphans_present = killed_write.orphans & table_files(stack.env, killed_write.location, "data", ".parquet")
    state = _table_state(stack, killed_write.table, remove_orphans(killed_write.table, int(time.time() * 1000)),
                         f"SELECT count(*) AS n FROM {killed_write.table}")
    state["orphans_present_before_cleanup"] = orphans_present
    state["data_files_after_cleanup"] = table_files(stack.env, killed_write.location, "data", ".parquet")
    return state


def test_the_job_was_killed_mid_write(killed_write):
    assert killed_write.exit_signal == signal.SIGKILL
    assert {"java", "python"} <= set(killed_write.killed_commands), killed_write.killed_commands  # JVM included
    assert killed_write.orphans, "the killed write left no data files: it was not caught mid-write"


def test_the_previous_snapshot_is_intact_and_readable(killed_write, after_kill, settings):
    from jobs.contract import BRONZE

    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    assert iceberg.current_snapshot().snapshot_id == killed_write.snapshot_before
    assert iceberg.scan().to_arrow().num_rows == killed_write.rows_before == SMALL_TICKS
    assert after_kill["snapshot_id"] == killed_write.snapshot_before
    assert after_kill["rows"] == {SMALL_DATE.isoformat(): SMALL_TICKS}


def test_the_killed_write_left_only_orphans(killed_write, after_kill):
    assert after_kill["referenced"], "no referenced files read back"
    assert not killed_write.orphans & after_kill["referenced"]


def test_the_killed_attempt_run_is_a_running_ghost_until_the_retry(killed_write, client, experiment_id):
    runs = children_of(client, experiment_id, killed_write.parent_run_id)
    assert [(r.data.tags["airflow.try_number"], r.info.status) for r in runs] == [("1", "RUNNING")]


def test_the_retry_succeeds_with_the_expected_rows(retried_write, killed_write, after_retry, settings):
    from jobs.contract import BRONZE

    assert retried_write.returncode == 0, retried_write.output[-3000:]
    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    assert iceberg.current_snapshot().snapshot_id == after_retry["snapshot_id"] != killed_write.snapshot_before
    assert after_retry["rows"] == {SMALL_DATE.isoformat(): SMALL_TICKS, BIG_DATE.isoformat(): BIG_TICKS}
    # The retry wrote files of its own; the killed attempt's stay unreferenced.
    assert not killed_write.orphans & after_retry["referenced"]


def test_the_retry_supersedes_the_ghost_run(retried_write, killed_write, client, experiment_id):
    assert retried_write.returncode == 0
    ghost, retry = children_of(client, experiment_id, killed_write.parent_run_id)
    assert (ghost.data.tags["airflow.try_number"], ghost.info.status) == ("1", "KILLED")
    assert (retry.data.tags["airflow.try_number"], retry.info.status) == ("2", "FINISHED")
    assert ghost.data.tags["superseded_by"] == retry.info.run_id
    assert retry.data.metrics["rows_out"] == BIG_TICKS


def test_remove_orphan_files_cleans_up_after_the_kill(after_retry, killed_write):
    """The maintenance the README documents: the orphans go, the table keeps every row."""
    assert after_retry["orphans_present_before_cleanup"] == killed_write.orphans
    removed, total = after_retry["then"]
    assert {plain_path(r["orphan_file_location"]) for r in removed} >= killed_write.orphans
    assert not killed_write.orphans & after_retry["data_files_after_cleanup"]
    assert after_retry["referenced"] <= after_retry["data_files_after_cleanup"]  # no committed file went
    assert total == [{"n": SMALL_TICKS + BIG_TICKS}]


@pytest.fixture(scope="session")
def maintenance(stack, after_retry) -> Finished:
    """The weekly iceberg_maintenance job on the drill's warehouse, after the clean-up."""
    from jobs.contract import ICEBERG_MAINTENANCE

    result = run_stage(stack, ICEBERG_MAINTENANCE, BIG_DATE, application="ops/iceberg_maintenance.py")
    measured(f"iceberg_maintenance ({CATALOG} catalog)", result)
    return result


def test_the_maintenance_job_runs_on_this_warehouse_and_keeps_every_row(maintenance, killed_write, settings):
    """Compaction, expiry and its own orphan listing (72 h cut-off) work on the drill's storage."""
    from jobs.contract import BRONZE

    assert maintenance.returncode == 0, maintenance.output[-4000:]
    assert f"{BRONZE}: snapshots " in maintenance.output, maintenance.output[-4000:]
    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    assert iceberg.scan().to_arrow().num_rows == SMALL_TICKS + BIG_TICKS
