"""Silver → Gold: per-contract one-minute bars, the unit the model and the business look at."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.schema import BAR_KEYS


def minute_bars(silver: DataFrame) -> DataFrame:
    ticks = silver.withColumn("bar_ts", F.date_trunc("minute", "exchange_ts"))
    ordered = F.struct("exchange_ts", "seq_no")
    return (
        ticks.groupBy(*BAR_KEYS)
        .agg(
            F.min_by("last", ordered).alias("open"),
            F.max("last").alias("high"),
            F.min("last").alias("low"),
            F.max_by("last", ordered).alias("close"),
            F.max_by("mid", ordered).alias("mid_close"),
            F.avg("spread").alias("spread_mean"),
            F.sum("last_size").cast("bigint").alias("volume"),
            (F.sum(F.col("last") * F.col("last_size")) / F.sum("last_size")).alias("vwap"),
            F.sum("bid_size").cast("bigint").alias("bid_size_sum"),
            F.sum("ask_size").cast("bigint").alias("ask_size_sum"),
            F.max_by("underlying_price", ordered).alias("underlying_close"),
            F.count(F.lit(1)).alias("tick_count"),
        )
    )
