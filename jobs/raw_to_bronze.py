"""RAW → Bronze: land one trade date of vendor tick files in Iceberg, as delivered."""
from __future__ import annotations

import datetime as dt
import sys

from jobs.lakehouse import BRONZE, stage_cli
from jobs.transforms.bronze import to_bronze


def raw_date_path(raw_root: str, trade_date: dt.date) -> str:
    return f"{raw_root.rstrip('/')}/trade_date={trade_date.isoformat()}"


def run(spark, settings, ctx, tracker) -> None:
    from jobs.lakehouse import replace_date_partition

    source = raw_date_path(settings.raw_ticks_path, ctx.trade_date)
    try:
        raw = spark.read.parquet(source)
    except Exception as exc:  # AnalysisException: path does not exist
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
            raise FileNotFoundError(f"no RAW ticks for {ctx.trade_date} at {source}") from None
        raise
    ingested_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    tracker.params({"source": source, "raw_files": len(raw.inputFiles())})
    snap = replace_date_partition(to_bronze(raw, ctx.trade_date, ingested_at), settings.table(BRONZE),
                                  ctx.trade_date)
    # Bronze keeps every delivered row, so what came in is what was written.
    tracker.published(snap, rows_in=snap.added_records)
    tracker.metrics({"rows_rejected": 0})


if __name__ == "__main__":
    sys.exit(stage_cli("raw_to_bronze", run))
