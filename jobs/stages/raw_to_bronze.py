"""RAW → Bronze: land one trade date of vendor tick files in Iceberg, as delivered.

Every file of the date folder is read on its own (Parquet, CSV, JSON lines). A file that cannot
be loaded is recorded in ``quarantine_raw_files`` with its reason and the rest still loads;
Bronze keeps every row of every loaded file, malformed lines included (Silver sets them aside).
"""
from __future__ import annotations

import datetime as dt
import sys
from functools import reduce

from pyspark.sql import DataFrame, SparkSession

from jobs.contract import BRONZE, METRIC_ROWS_REJECTED, QUARANTINE_FILES, RAW_TO_BRONZE, raw_date_folder
from jobs.lakehouse.anomalies import check_anomalies
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.gates import gates_enabled, quality_gate
from jobs.lakehouse.raw_files import FileRejection, LoadedFile, list_raw_files, read_raw_file
from jobs.lakehouse.schema_changes import accept as accept_schema
from jobs.lakehouse.schema_changes import delivered_schema
from jobs.lakehouse.schema_changes import judge as judge_schema
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import recent_partition_rows, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.quality.anomalies import FRESHNESS, VOLUME
from jobs.quality.figures import bronze_figures
from jobs.schema import FILE_REASONS, RAW_COLUMNS
from jobs.transforms.bronze import CORRUPT, to_bronze


def raw_date_path(raw_root: str, trade_date: dt.date) -> str:
    return raw_date_folder(raw_root, trade_date)


def file_quarantine_frame(spark: SparkSession, rejections: list[FileRejection], trade_date: dt.date,
                          ingested_at: dt.datetime) -> DataFrame:
    schema = ("trade_date date, source_file string, source_format string, reason string, detail string, "
              "size_bytes bigint, _ingested_at timestamp")
    rows = [(trade_date, r.path, r.format, r.reason, r.detail, r.size, ingested_at) for r in rejections]
    return spark.createDataFrame(rows, schema)


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    source = raw_date_path(settings.raw_ticks_path, ctx.trade_date)
    files = list_raw_files(spark, source)
    if not files:
        raise FileNotFoundError(f"no RAW ticks for {ctx.trade_date} at {source}")
    ingested_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    outcomes = [read_raw_file(spark, f, settings.raw_column_aliases) for f in files]
    loaded = [o for o in outcomes if isinstance(o, LoadedFile)]
    rejected = [o for o in outcomes if isinstance(o, FileRejection)]
    for r in rejected:
        print(f"RAW file set aside ({r.reason}): {r.path}: {r.detail}", file=sys.stderr)
    tracker.params({"source": source, "raw_files": len(files),
                    "raw_formats": ",".join(sorted({o.format for o in loaded}))})
    renamed = {k: v for o in loaded for k, v in o.mapping.renames.items()}
    extra = sorted({c for o in loaded for c in o.mapping.extra})
    if renamed or extra:
        tracker.tags({"schema.renamed": ", ".join(f"{k}->{v}" for k, v in sorted(renamed.items())) or "-",
                      "schema.extra_columns": ", ".join(extra) or "-"})
    tracker.metrics({"files_in": len(files), "files_loaded": len(loaded), "files_quarantined": len(rejected),
                     **{f"files_quarantined.{reason}": sum(r.reason == reason for r in rejected)
                        for reason in FILE_REASONS}})

    schema = delivered_schema(loaded)
    if loaded:  # columns added, removed, renamed or retyped since the last accepted date
        judge_schema(spark, settings, tracker, ctx.trade_date, schema)
    if loaded:
        raw = reduce(lambda a, b: a.unionByName(b), (o.frame for o in loaded))
    else:  # every file set aside: Bronze for the date becomes empty (and the gate decides)
        raw = _empty_canonical(spark)
    bronze = to_bronze(raw, ctx.trade_date, ingested_at)

    # The file quarantine is a record of what RAW held: written whether or not Bronze is published.
    files_snap = replace_date_partition(file_quarantine_frame(spark, rejected, ctx.trade_date, ingested_at),
                                        settings.table(QUARANTINE_FILES), ctx.trade_date)
    tracker.tags({"iceberg.files_quarantine_snapshot_id": files_snap.snapshot_id})
    if gates_enabled(settings):
        rules = settings.quality_rules("bronze")
        history = recent_partition_rows(spark, settings.table(BRONZE), ctx.trade_date,
                                        int(rules.get("volume_lookback_dates", 5)))
        # Two columns only, no cache: Parquet prunes the rest, and caching every column as text
        # spilled to disk at 10M rows (make bench).
        figures_of = bronze.select("exchange_ts", CORRUPT)
        figures = bronze_figures(figures_of, ctx.trade_date, settings.row_rules().session_close, len(files),
                                 len(rejected), history, int(rules.get("volume_min_history", 3)))
        quality_gate("bronze", settings, tracker, ctx.trade_date, figures)
        check_anomalies(spark, settings, tracker, ctx,
                        {VOLUME: figures["rows"], FRESHNESS: figures["last_tick_gap_minutes"]})
    snap = replace_date_partition(bronze, settings.table(BRONZE), ctx.trade_date)
    if loaded:
        accept_schema(spark, settings, ctx.trade_date, schema)
    # Bronze keeps every row of the loaded files, so what came in is what was written.
    tracker.published(snap, rows_in=snap.added_records)
    tracker.metrics({METRIC_ROWS_REJECTED: 0})
    spark.catalog.clearCache()  # the text files read for validation


def _empty_canonical(spark: SparkSession) -> DataFrame:
    cols = [*RAW_COLUMNS, "_extra", CORRUPT, "_source_file", "_source_format"]
    return spark.createDataFrame([], ", ".join(f"`{c}` string" for c in cols))


if __name__ == "__main__":
    sys.exit(stage_cli(RAW_TO_BRONZE, run))
