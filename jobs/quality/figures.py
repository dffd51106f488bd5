"""Batch figures a gate judges that are not plain column profiles (see ``rules.profile_columns``).

Spark aggregations only: the history the volume figure compares with is looked up by the stage.
"""
from __future__ import annotations

import datetime as dt
import statistics

from jobs.transforms.bronze import CORRUPT


def bronze_figures(bronze, trade_date: dt.date, session_close: dt.time, files_in: int, files_rejected: int,
                   history: list[int], volume_min_history: int) -> dict[str, float | None]:
    """Volume, malformed lines, last tick and rejected files of one Bronze batch.

    ``bronze`` needs ``exchange_ts`` and the corrupt-record column only; ``history`` holds the
    row counts of recent dates (the volume ratio is left unknown with fewer than
    ``volume_min_history`` of them).
    """
    from pyspark.sql import functions as F

    ts = F.col("exchange_ts").cast("timestamp")
    # Session close in the session time zone (Python datetimes would be in the machine's zone).
    close = F.to_timestamp(F.lit(f"{trade_date.isoformat()} {session_close.isoformat()}"))
    row = bronze.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col(CORRUPT).isNotNull().cast("long")).alias("malformed"),
        F.max(F.when(F.to_date(ts) == F.lit(trade_date), ts)).alias("last_tick"),
    ).select("*", ((close.cast("long") - F.col("last_tick").cast("long")) / 60.0).alias("gap")).first()
    rows = int(row["rows"])
    figures: dict[str, float | None] = {
        "rows": rows,
        "malformed_share": (row["malformed"] or 0) / rows if rows else 0.0,
        "quarantined_file_share": files_rejected / files_in if files_in else 0.0,
        "volume_ratio": None,
        "last_tick_gap_minutes": None,
    }
    if len(history) >= volume_min_history:
        figures["volume_ratio"] = rows / statistics.median(history)
    if row["gap"] is not None:
        figures["last_tick_gap_minutes"] = max(0.0, float(row["gap"]))
    return figures
