"""A stage killed in the middle of its Iceberg write: the previous snapshot stays intact and readable,
the half-written files are orphans no snapshot references, and the retry succeeds.

raw_to_bronze runs under spark-submit in its own process group on 500k ticks, so its final write
takes about half a second or more. The test waits until that write's data files appear in the
warehouse while the table's metadata pointer is unchanged, then SIGKILLs the whole group (Python
driver and JVM).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from faults_support import (
    MEASURED,
    SMALL_DATE,
    SMALL_TICKS,
    Finished,
    children_of,
    measured,
    new_parent_run,
    run_stage,
    spark_sql,
    start_stage,
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
    snapshot_before: int
    rows_before: int
    files_before: set[str]
    orphans: set[str]                # data files of the killed write, on disk
    exit_signal: int
    killed_commands: list[str]       # what the process group held when it was killed


def _data_files(table_dir: Path) -> set[str]:
    return {str(p) for p in (table_dir / "data").rglob("*.parquet")}


def _metadata_pointer(catalog_db: Path, namespace: str, table: str) -> str:
    """The table's current metadata file, straight from the SQLite catalog (a commit moves it)."""
    with contextlib.closing(sqlite3.connect(f"file:{catalog_db}?mode=ro", uri=True, timeout=30)) as con:
        row = con.execute("SELECT metadata_location FROM iceberg_tables WHERE table_namespace = ? AND table_name = ?",
                          (namespace, table)).fetchone()
    return row[0]


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


def _local(path: str) -> str:
    return path.removeprefix("file:").replace("///", "/")


def _table_state(stack, table: str, *then: str) -> dict:
    """What a new Spark reader sees: the current snapshot, rows per trade date, every referenced file
    (and the rows of the statements in ``then``, run in the same Spark session afterwards)."""
    current, counts, files, *more = spark_sql(
        stack,
        f"SELECT snapshot_id FROM {table}.refs WHERE name = 'main'",
        f"SELECT CAST(trade_date AS STRING) AS d, count(*) AS n FROM {table} GROUP BY trade_date",
        f"SELECT file_path FROM {table}.all_data_files",  # files of every snapshot, not only the current
        *then,
    )
    return {"snapshot_id": current[0]["snapshot_id"], "rows": {r["d"]: r["n"] for r in counts},
            "referenced": {_local(r["file_path"]) for r in files}, "then": more}


@pytest.fixture(scope="session")
def killed_write(stack, settings, mlflow_outage, client, experiment_id) -> Killed:
    """Kill raw_to_bronze for BIG_DATE during its Bronze write (mlflow_outage left a committed SMALL_DATE)."""
    from jobs.contract import BRONZE
    from jobs.synthetic.raw_ticks import main as generate

    assert mlflow_outage.up.returncode == 0, "needs the committed Bronze snapshot of the MLflow drill"
    generate(["--dates", BIG_DATE.isoformat(), "--ticks", str(BIG_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    table_dir = Path(iceberg.location().removeprefix("file://").removeprefix("file:"))
    catalog_db = Path(settings.catalog_uri.removeprefix("jdbc:sqlite:"))
    snapshot_before = iceberg.current_snapshot().snapshot_id
    rows_before = iceberg.scan().to_arrow().num_rows
    files_before = _data_files(table_dir)
    pointer_before = _metadata_pointer(catalog_db, settings.namespace, BRONZE)

    parent, airflow_run = new_parent_run(client, experiment_id, BIG_DATE)
    log = stack.home.parent / f"{STAGE}-killed.log"  # kept with the stack state when a test fails
    proc = start_stage(stack, STAGE, BIG_DATE, log, parent_run_id=parent, airflow_run_id=airflow_run, try_number=1)
    try:
        def writing_uncommitted():
            if proc.poll() is not None:
                raise AssertionError(f"{STAGE} ended (rc {proc.returncode}) before its write was caught:\n"
                                     + log.read_text(errors="replace")[-3000:])
            new = _data_files(table_dir) - files_before
            return new and _metadata_pointer(catalog_db, settings.namespace, BRONZE) == pointer_before

        t0 = time.monotonic()
        wait_until(writing_uncommitted, timeout=300, what="Bronze data files of the uncommitted write")
        group = {pid: _command(pid) for pid in _group_members(proc.pid)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    wait_until(lambda: not _group_members(proc.pid), timeout=30, what="every process of the killed job to exit")
    orphans = _data_files(table_dir) - files_before
    MEASURED.append(f"raw_to_bronze {BIG_TICKS:,} ticks: SIGKILL of {len(group)} processes "
                    f"({', '.join(sorted(set(group.values())))}) {time.monotonic() - t0:.1f} s after start, "
                    f"{len(orphans)} uncommitted data file(s) left")
    return Killed(parent, airflow_run, settings.table(BRONZE), snapshot_before, rows_before, files_before,
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
    """The table after the retry, then the orphan clean-up the README documents, run days later.

    remove_orphan_files only removes files older than `older_than` (default: 3 days ago; the
    procedure refuses less than 24 hours), so the killed write's files are dated back 4 days: the
    same state as a weekly maintenance job finds them in.
    """
    aged = time.time() - 4 * 86400
    orphans_present = {p for p in killed_write.orphans if Path(p).exists()}
    for p in killed_write.orphans:
        for f in (Path(p), Path(p).with_name(f".{Path(p).name}.crc")):
            if f.exists():
                os.utime(f, (aged, aged))
    catalog, namespace, name = killed_write.table.split(".")
    state = _table_state(stack, killed_write.table,
                         f"CALL {catalog}.system.remove_orphan_files(table => '{namespace}.{name}')",
                         f"SELECT count(*) AS n FROM {killed_write.table}")
    state["orphans_present_before_cleanup"] = orphans_present
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
    assert {_local(r["orphan_file_location"]) for r in removed} >= killed_write.orphans
    assert not any(Path(p).exists() for p in killed_write.orphans)
    assert total == [{"n": SMALL_TICKS + BIG_TICKS}]
