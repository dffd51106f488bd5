"""Spark with Iceberg: the session, table snapshots, and the one way a layer is written.

Every write replaces one ``trade_date`` partition in one Iceberg commit, so a rerun of a date
yields the same table; row counts come from snapshot summaries and partition metadata, not scans.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from jobs.contract import default_jars, env
from jobs.lakehouse.settings import Settings


def spark_session(app_name: str, settings: Settings, master: str | None = None):
    """Build (or reuse) the SparkSession with Iceberg wired in.

    Under spark-submit the master and jars come from the command line; ``master`` is for tests
    and notebooks, which also get the offline jars here.
    """
    from pyspark.sql import SparkSession

    settings.ensure_local_dirs()
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
        jars = env("SPARK_JARS", default_jars())
        if jars:
            builder = builder.config("spark.jars", jars)
        builder = builder.config("spark.ui.enabled", "false")
    conf = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.session.timeZone": settings.timezone,
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        # Every write replaces one trade_date partition: Iceberg's default hash distribution by
        # partition would shuffle all rows into one writer task (make bench, Spark event logs).
        "spark.sql.iceberg.distribution-mode": "none",
        **settings.spark_catalog_conf(),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(env("SPARK_LOG_LEVEL", "WARN"))
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.{settings.namespace}")
    return spark


@dataclass(frozen=True)
class Snapshot:
    table: str
    snapshot_id: int
    added_records: int
    deleted_records: int
    total_records: int


def current_snapshot(spark, table: str) -> Snapshot | None:
    rows = spark.sql(
        f"SELECT snapshot_id, summary FROM {table}.snapshots ORDER BY committed_at DESC LIMIT 1"
    ).collect()
    if not rows:
        return None
    summary = rows[0]["summary"] or {}
    return Snapshot(
        table=table,
        snapshot_id=int(rows[0]["snapshot_id"]),
        added_records=int(summary.get("added-records", 0)),
        deleted_records=int(summary.get("deleted-records", 0)),
        total_records=int(summary.get("total-records", 0)),
    )


def partition_rows(spark, table: str, trade_date: dt.date) -> int:
    """Rows of one trade date from Iceberg metadata: no data scan (tables are copy-on-write)."""
    rows = spark.sql(
        f"SELECT sum(record_count) AS n FROM {table}.partitions "
        f"WHERE partition.trade_date = DATE '{trade_date.isoformat()}'"
    ).collect()
    return int(rows[0]["n"] or 0)


def recent_partition_rows(spark, table: str, before: dt.date, limit: int) -> list[int]:
    """Row counts of the latest ``limit`` dates before ``before``, from metadata (no data scan)."""
    if not spark.catalog.tableExists(table):
        return []
    rows = spark.sql(
        f"SELECT partition.trade_date AS d, sum(record_count) AS n FROM {table}.partitions "
        f"WHERE partition.trade_date < DATE '{before.isoformat()}' GROUP BY 1 ORDER BY 1 DESC LIMIT {int(limit)}"
    ).collect()
    return [int(r["n"]) for r in rows if r["n"]]


def read_date(spark, table: str, trade_date: dt.date):
    from pyspark.sql import functions as F

    if not spark.catalog.tableExists(table):
        raise RuntimeError(f"{table} does not exist yet: run the upstream stage first")
    return spark.table(table).where(F.col("trade_date") == F.lit(trade_date))


def read_snapshot(spark, table: str, snapshot_id: int):
    """Read a table as of one snapshot (Iceberg time travel): what a model was trained on."""
    return spark.read.format("iceberg").option("snapshot-id", str(snapshot_id)).load(table)


def add_new_columns(spark, table: str, df) -> list[str]:
    """Additive schema evolution: columns a newer job version writes are added to the table."""
    existing = set(spark.table(table).columns)
    missing = [f for f in df.schema.fields if f.name not in existing]
    if missing:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {table} ADD COLUMNS ({cols})")
    return [f.name for f in missing]


def replace_date_partition(df, table: str, trade_date: dt.date, partition_col: str = "trade_date") -> Snapshot:
    """Atomically replace one trade date of ``table`` with ``df`` (creating the table if needed).

    One Iceberg commit: a rerun of the same date yields the same table, never duplicates, and
    readers see either the old or the new snapshot. Row counts come from the snapshot summary,
    so publishing costs no extra Spark action.
    """
    from pyspark.sql import functions as F

    spark = df.sparkSession
    if not spark.catalog.tableExists(table):
        (df.limit(0).writeTo(table).partitionedBy(partition_col)
           .tableProperty("format-version", "2")
           .tableProperty("write.parquet.compression-codec", "zstd")
           .create())
    else:
        add_new_columns(spark, table, df)
    df.writeTo(table).overwrite(F.col(partition_col) == F.lit(trade_date))
    snap = current_snapshot(spark, table)
    if snap is None:
        raise RuntimeError(f"no snapshot after writing {table}")
    return snap
