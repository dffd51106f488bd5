"""RAW → Bronze: keep ticks exactly as delivered, add where and when they came from."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def to_bronze(raw: DataFrame, trade_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Bronze = RAW columns untouched + ingestion metadata + the partition column.

    ``ingested_at`` is passed in (not ``current_timestamp()``) so a rerun is reproducible and one
    batch shares one ingestion time.
    """
    return (
        raw.withColumn("_source_file", F.input_file_name())
        .withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
        .withColumn("trade_date", F.lit(trade_date).cast("date"))
    )
