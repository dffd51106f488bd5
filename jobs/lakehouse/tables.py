"""Spark with Iceberg: the session, table snapshots, and the one way a layer is written.

Every write replaces one ``trade_date`` partition in one Iceberg commit, so a rerun of a date
yields the same table; row counts come from snapshot summaries and partition metadata, not scans.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from jobs import contract
from jobs.contract import default_jars, env
from jobs.lakehouse.settings import Settings


def spark_session(app_name: str, settings: Settings, master: str | None = None, clock=None):
    """Build (or reuse) the SparkSession with Iceberg wired in.

    Under spark-submit the master and jars come from the command line; ``master`` is for tests
    and notebooks, which also get the offline jars here. ``clock`` (stage_cli's PhaseClock) splits
    the SparkContext start from the first Iceberg catalog call.
    """
    from pyspark.sql import SparkSession

    settings.ensure_local_dirs()
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
        jars = env("SPARK_JARS", default_jars())
        if jars:
            builder = builder.config("spark.jars", jars)
        for key, value in contract.spark_stage_conf(master).items():  # the UI off, a local driver on loopback
            builder = builder.config(key, value)
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
    if clock is not None:
        clock.mark("spark_context")
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.{settings.namespace}")
    if clock is not None:
        clock.mark("iceberg_catalog")
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


# The snapshot of every table this process read through read_date: the facts row's snapshots_in.
_SNAPSHOTS_READ: dict[str, int] = {}


def snapshots_read() -> dict[str, int]:
    return dict(_SNAPSHOTS_READ)


def forget_snapshots_read() -> None:
    """A new stage try starts: what an earlier one in this process read is not its input."""
    _SNAPSHOTS_READ.clear()


def read_date(spark, table: str, trade_date: dt.date):
    """One date of a table, read as of its current snapshot, which is pinned (a commit landing while
    the stage runs is not half-seen) and remembered for the stage's facts row."""
    from pyspark.sql import functions as F

    if not spark.catalog.tableExists(table):
        raise RuntimeError(f"{table} does not exist yet: run the upstream stage first")
    snap = current_snapshot(spark, table)
    if snap is None:
        frame = spark.table(table)
    else:
        frame = read_snapshot(spark, table, snap.snapshot_id)
        _SNAPSHOTS_READ[table] = snap.snapshot_id
    return frame.where(F.col("trade_date") == F.lit(trade_date))


def read_snapshot(spark, table: str, snapshot_id: int | str):
    """Read a table as of one snapshot id or tag (Iceberg time travel): what a model was trained on.

    A tag (``model_v3``) names a snapshot that expiry keeps while the tag lives; a bare snapshot id
    is readable only until ``expire_snapshots`` removes it.
    """
    option = ("tag", snapshot_id) if isinstance(snapshot_id, str) else ("snapshot-id", str(snapshot_id))
    return spark.read.format("iceberg").option(*option).load(table)


# --------------------------------------------------------------------------------------------------
# Snapshot tags: the snapshots a registered model was trained on survive snapshot expiry
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    name: str
    type: str  # TAG | BRANCH
    snapshot_id: int
    max_age_ms: int | None  # None: kept until dropped (tags) / the table default (branches)


_TAG_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def snapshot_refs(spark, table: str) -> dict[str, Ref]:
    """The table's branches and tags by name (``main`` included)."""
    rows = spark.sql(f"SELECT name, type, snapshot_id, max_reference_age_in_ms FROM {table}.refs").collect()
    return {r["name"]: Ref(r["name"], r["type"], int(r["snapshot_id"]),
                           int(r["max_reference_age_in_ms"]) if r["max_reference_age_in_ms"] is not None else None)
            for r in rows}


def snapshot_exists(spark, table: str, snapshot_id: int) -> bool:
    return bool(spark.sql(f"SELECT 1 FROM {table}.snapshots WHERE snapshot_id = {int(snapshot_id)}").take(1))


def ensure_snapshot_tag(spark, table: str, tag: str, snapshot_id: int, retain_days: int | None,
                        refs: dict[str, Ref] | None = None) -> str:
    """Tag ``snapshot_id`` as ``tag`` (kept ``retain_days`` after the snapshot, or while tagged if None).

    Idempotent; commits only when the tag is missing or differs. Returns what happened:
    ``created``, ``updated``, ``kept``, or ``snapshot_expired`` when the snapshot is already gone.
    """
    if not _TAG_NAME.match(tag):
        raise ValueError(f"unexpected Iceberg tag name {tag!r}")
    refs = snapshot_refs(spark, table) if refs is None else refs
    max_age = None if retain_days is None else int(retain_days) * 86_400_000
    current = refs.get(tag)
    if current is not None and current.snapshot_id == int(snapshot_id) and current.max_age_ms == max_age:
        return "kept"
    if not snapshot_exists(spark, table, snapshot_id):
        return "snapshot_expired"
    retain = f" RETAIN {int(retain_days)} DAYS" if retain_days is not None else ""
    spark.sql(f"ALTER TABLE {table} CREATE OR REPLACE TAG `{tag}` AS OF VERSION {int(snapshot_id)}{retain}")
    return "created" if current is None else "updated"


@dataclass(frozen=True)
class Footprint:
    """What a table holds in storage, from its metadata tables (works on any FileIO)."""

    snapshots: int
    data_files: int  # referenced by any live snapshot
    data_bytes: int
    current_data_files: int
    manifests: int
    metadata_files: int  # metadata.json files still listed in the metadata log

    def as_metrics(self, prefix: str) -> dict[str, int]:
        return {f"{prefix}.{k}": v for k, v in self.__dict__.items()}


def table_footprint(spark, table: str) -> Footprint:
    one = lambda sql: spark.sql(sql).collect()[0]  # noqa: E731
    files = one(f"SELECT count(*) AS n, coalesce(sum(size), 0) AS b FROM (SELECT DISTINCT file_path, "
                f"file_size_in_bytes AS size FROM {table}.all_data_files)")
    return Footprint(
        snapshots=int(one(f"SELECT count(*) AS n FROM {table}.snapshots")["n"]),
        data_files=int(files["n"]), data_bytes=int(files["b"]),
        current_data_files=int(one(f"SELECT count(*) AS n FROM {table}.files")["n"]),
        manifests=int(one(f"SELECT count(DISTINCT path) AS n FROM {table}.all_manifests")["n"]),
        metadata_files=int(one(f"SELECT count(*) AS n FROM {table}.metadata_log_entries")["n"]),
    )


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
