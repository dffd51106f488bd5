"""Publishing to real Iceberg tables: idempotent date replacement, snapshots, pyiceberg agreement."""
from __future__ import annotations

import datetime as dt

from jobs.lakehouse.tables import current_snapshot, partition_rows, read_snapshot, replace_date_partition

D1, D2 = dt.date(2026, 11, 24), dt.date(2026, 11, 25)


def frame(spark, date, n):
    return spark.range(n).selectExpr("id", f"DATE '{date}' AS trade_date")


def test_rerunning_a_date_replaces_it_and_leaves_other_dates(spark, settings):
    table = settings.table("io_test")
    replace_date_partition(frame(spark, D1, 10), table, D1)
    replace_date_partition(frame(spark, D2, 7), table, D2)
    for _ in range(3):
        snap = replace_date_partition(frame(spark, D1, 10), table, D1)
    assert spark.table(table).count() == 17
    assert partition_rows(spark, table, D1) == 10 and partition_rows(spark, table, D2) == 7
    assert snap.added_records == 10 and snap.deleted_records == 10 and snap.total_records == 17
    assert current_snapshot(spark, table).snapshot_id == snap.snapshot_id


def test_an_empty_rerun_clears_the_date(spark, settings):
    table = settings.table("io_empty")
    replace_date_partition(frame(spark, D1, 5), table, D1)
    snap = replace_date_partition(frame(spark, D1, 0), table, D1)
    assert snap.added_records == 0 and partition_rows(spark, table, D1) == 0


def test_time_travel_reads_the_old_snapshot(spark, settings):
    table = settings.table("io_travel")
    old = replace_date_partition(frame(spark, D1, 3), table, D1)
    replace_date_partition(frame(spark, D1, 8), table, D1)
    assert read_snapshot(spark, table, old.snapshot_id).count() == 3
    assert spark.table(table).count() == 8


def test_pyiceberg_sees_the_same_table_and_snapshot(spark, settings):
    table = settings.table("io_pyiceberg")
    snap = replace_date_partition(frame(spark, D1, 4), table, D1)
    ice = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.io_pyiceberg")
    assert ice.current_snapshot().snapshot_id == snap.snapshot_id
    assert ice.scan().to_arrow().num_rows == 4
    assert [f.name for f in ice.spec().fields] == ["trade_date"]
