"""The embedded Trino: it reads hive_prod as pyiceberg does, listens on 127.0.0.1 only, keeps no secret.

A real stack of SeaweedFS, the Hive metastore and Trino on free ports (no Airflow, no MLflow). One
table is written through the same catalog with pyiceberg in two commits, another by Spark; Trino's
per-date counts and its current snapshot id must equal the writer's. Skips, with the reason, where Trino cannot run.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from scripts.devstack.env import LOOPBACK, catalog_services, resolve_env  # noqa: E402
from scripts.devstack.processes import listening_sockets, memory_mb, read_pid, session_members  # noqa: E402
from scripts.devstack.temporary import running_stack  # noqa: E402
from scripts.devstack.trino import TRINO_USER, demo_query, format_demo_query, trino_problem  # noqa: E402

TABLE = "trino_probe"
SERVICES = "seaweedfs,hive-metastore,trino"


def _unavailable() -> str | None:
    with tempfile.TemporaryDirectory(prefix="trino-env-") as d:
        return trino_problem(resolve_env({"LAKEHOUSE_ENV_FILE": f"{d}/.env", "LAKEHOUSE_CATALOG": "hive"}))


UNAVAILABLE = _unavailable()
pytestmark = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"Trino unavailable: {UNAVAILABLE}")


@pytest.fixture(scope="module")
def stack(request):
    root = Path(tempfile.mkdtemp(prefix="lakehouse-trino-"))
    with running_stack(root, {"LAKEHOUSE_SERVICES": SERVICES, "LAKEHOUSE_CATALOG": "hive", "TRINO": "on"},
                       keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        yield st


@pytest.fixture(scope="module")
def table(stack):
    """Two commits through pyiceberg: 3 rows on 11-24 and 2 on 11-25, then 4 more on 11-25."""
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import DateType, LongType, NestedField

    saved = dict(os.environ)
    os.environ.update(stack.env)
    try:
        from jobs.lakehouse.settings import Settings

        settings = Settings.from_env()
        catalog = settings.pyiceberg_catalog()
        catalog.create_namespace_if_not_exists(settings.namespace)
        schema = Schema(NestedField(1, "trade_date", DateType(), required=False),
                        NestedField(2, "tick", LongType(), required=False))
        t = catalog.create_table(f"{settings.namespace}.{TABLE}", schema=schema)
        arrow = t.schema().as_arrow()

        def rows(*dates):
            return pa.Table.from_pylist([{"trade_date": d, "tick": i} for i, d in enumerate(dates)], schema=arrow)

        d1, d2 = dt.date(2026, 11, 24), dt.date(2026, 11, 25)
        t.append(rows(d1, d1, d1, d2, d2))
        t.append(rows(d2, d2, d2, d2))
        yield catalog.load_table(f"{settings.namespace}.{TABLE}"), settings
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _trino(stack, settings):
    import trino

    return trino.dbapi.connect(host=LOOPBACK, port=stack.ports["TRINO_PORT"], user=TRINO_USER,
                               catalog=settings.catalog, schema=settings.namespace).cursor()


def test_trino_answers_per_date_counts_and_snapshot_like_pyiceberg(stack, table):
    t, settings = table
    counts = {}
    for row in t.scan().to_arrow().to_pylist():
        counts[row["trade_date"]] = counts.get(row["trade_date"], 0) + 1
    assert counts == {dt.date(2026, 11, 24): 3, dt.date(2026, 11, 25): 6}

    cur = _trino(stack, settings)
    cur.execute(f"SELECT trade_date, count(*) FROM {TABLE} GROUP BY trade_date ORDER BY trade_date")
    assert dict(cur.fetchall()) == counts
    cur.execute(f'SELECT snapshot_id FROM "{TABLE}$snapshots" ORDER BY committed_at DESC LIMIT 1')
    assert cur.fetchall() == [[t.current_snapshot().snapshot_id]]
    cur.execute(f'SELECT count(*) FROM "{TABLE}$snapshots"')
    assert cur.fetchall() == [[2]]


def test_trino_reads_a_table_spark_wrote_as_spark_sees_it(stack, table):
    """Spark's Iceberg runtime (S3FileIO, the same metastore) writes; Trino reads the same counts and snapshot."""
    from jobs.lakehouse.tables import current_snapshot, spark_session

    t, settings = table
    saved = dict(os.environ)
    os.environ.update(stack.env)
    spark = spark_session("trino-stack-test", settings, master="local[1]")
    try:
        name = settings.table("trino_spark_probe")
        spark.sql(f"CREATE TABLE {name} (trade_date DATE, tick BIGINT) USING iceberg PARTITIONED BY (trade_date)")
        spark.sql(f"INSERT INTO {name} SELECT DATE '2026-11-24' + CAST(id % 3 AS INT), id FROM range(30)")
        spark.sql(f"INSERT INTO {name} SELECT DATE '2026-11-26', id FROM range(5)")
        spark_counts = {r[0]: r[1] for r in spark.sql(f"SELECT trade_date, count(*) FROM {name} GROUP BY 1").collect()}
        spark_snapshot = current_snapshot(spark, name).snapshot_id
    finally:
        spark.stop()
        os.environ.clear()
        os.environ.update(saved)
    assert spark_counts == {dt.date(2026, 11, 24): 10, dt.date(2026, 11, 25): 10, dt.date(2026, 11, 26): 15}
    cur = _trino(stack, settings)
    cur.execute("SELECT trade_date, count(*) FROM trino_spark_probe GROUP BY trade_date")
    assert dict(cur.fetchall()) == spark_counts
    cur.execute('SELECT snapshot_id FROM "trino_spark_probe$snapshots" ORDER BY committed_at DESC LIMIT 1')
    assert cur.fetchall() == [[spark_snapshot]]


def test_demo_summary_query_is_answered_by_trino(stack, table):
    result = demo_query(stack.env, [TABLE])
    assert result["rows"] == [[TABLE, "2026-11-24", 3], [TABLE, "2026-11-25", 6]], result
    lines = format_demo_query(stack.env, result)
    assert lines[0].startswith(f"Answered by Trino (http://{LOOPBACK}:{stack.ports['TRINO_PORT']}, catalog hive_prod)")
    off = format_demo_query(stack.env, demo_query({**stack.env, "TRINO": "off"}, [TABLE]))
    assert off == ["Trino: off (TRINO=off); the rows-per-date query was not answered by Trino"]


def test_up_reports_trino_healthy_with_its_url(stack):
    match = re.search(r"^trino: started \(healthy, ([\d.]+)s\)$", stack.up_output, re.M)
    assert match, stack.up_output
    pid = read_pid(stack.env, "trino")
    rss, _ = memory_mb(pid)
    print(f"\nTrino healthy after {match.group(1)} s, RSS {rss:.0f} MB")
    assert f"Trino: http://{LOOPBACK}:{stack.ports['TRINO_PORT']}" in stack.up_output
    status = stack.cli("status")
    assert re.search(rf"^trino\s+{pid}\s+{stack.ports['TRINO_PORT']}\s.*healthy$", status.stdout, re.M), status.stdout


def test_trino_listens_on_loopback_only(stack):
    pid = read_pid(stack.env, "trino")
    sockets = listening_sockets(session_members(pid))
    assert (stack.ports["TRINO_PORT"]) in {port for _, _, port in sockets}
    assert {address for _, address, _ in sockets} == {LOOPBACK}, sockets


def test_no_s3_secret_in_trino_files_or_argv(stack):
    secret = stack.env["AWS_SECRET_ACCESS_KEY"]
    etc = Path(stack.env["LAKEHOUSE_HOME"]) / "trino" / "etc"
    catalog = (etc / "catalog" / "hive_prod.properties").read_text()
    assert "s3.aws-secret-key=${ENV:AWS_SECRET_ACCESS_KEY}" in catalog
    assert all(secret not in p.read_text() for p in etc.rglob("*.properties"))
    pid = read_pid(stack.env, "trino")
    assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_make_sql_opens_the_cli_on_hive_prod(stack, table):
    out = stack.cli("sql", "--execute", f"SELECT count(*) FROM {TABLE}", "--output-format", "TSV")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "9"


def test_trino_off_leaves_it_out(tmp_path):
    """TRINO=off: not started, not judged by status, and `up` says why."""
    env = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_CATALOG": "hive", "TRINO": "off"})
    assert "trino" not in catalog_services(env) and "hive-metastore" in catalog_services(env)
    old_java = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_CATALOG": "hive",
                            "TRINO_JAVA_HOME": env["JAVA_HOME"]})
    assert "Trino 476 needs 24+" in (trino_problem(old_java) or "")
    assert "trino" not in catalog_services(old_java)


def test_stack_without_a_java_24_runs_without_trino():
    """A real `up` with a Java 17 TRINO_JAVA_HOME: SeaweedFS starts, Trino is named unavailable."""
    root = Path(tempfile.mkdtemp(prefix="lakehouse-notrino-"))
    java17 = resolve_env({"LAKEHOUSE_ENV_FILE": str(root / "probe.env")})["JAVA_HOME"]
    with running_stack(root, {"LAKEHOUSE_SERVICES": "seaweedfs,trino", "TRINO_JAVA_HOME": java17}) as st:
        assert re.search(r"^trino: unavailable, TRINO_JAVA_HOME=.* is Java 17, Trino 476 needs 24\+",
                         st.up_output, re.M), st.up_output
        assert "seaweedfs: started" in st.up_output and "Trino:" not in st.up_output
        assert read_pid(st.env, "trino") is None
        sql = st.cli("sql")
        assert sql.returncode == 1 and "unavailable" in sql.stderr
