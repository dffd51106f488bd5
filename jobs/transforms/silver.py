"""Bronze → Silver: typed, validated, de-duplicated ticks; everything else set aside with a reason."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

# Reason codes of rows set aside, in the order rules are checked (first match wins).
REASONS = (
    "null_key",
    "non_positive_price",
    "crossed_quote",
    "outside_trade_date",
    "duplicate",
)

SILVER_COLUMNS = (
    "trade_date", "exchange_ts", "seq_no", "contract_id", "underlying", "option_type", "strike",
    "expiry", "underlying_price", "bid", "ask", "last", "bid_size", "ask_size", "last_size",
    "mid", "spread", "_source_file", "_ingested_at",
)

_TYPES = {
    "exchange_ts": "timestamp", "seq_no": "bigint", "contract_id": "string", "underlying": "string",
    "option_type": "string", "strike": "double", "expiry": "date", "underlying_price": "double",
    "bid": "double", "ask": "double", "last": "double", "bid_size": "int", "ask_size": "int",
    "last_size": "int",
}


def standardize(bronze: DataFrame) -> DataFrame:
    """Cast to the Silver types and derive mid and spread."""
    typed = bronze.select(
        "trade_date", "_source_file", "_ingested_at",
        *[F.col(c).cast(t).alias(c) for c, t in _TYPES.items()],
    )
    return (typed.withColumn("mid", (F.col("bid") + F.col("ask")) / 2)
                 .withColumn("spread", F.col("ask") - F.col("bid")))


def with_reject_reason(ticks: DataFrame, trade_date: dt.date) -> DataFrame:
    """Add ``reject_reason`` (null for a good row). Session time zone decides the trade date."""
    key_null = (F.col("contract_id").isNull() | F.col("exchange_ts").isNull()
                | F.col("seq_no").isNull())
    price_bad = (F.coalesce(F.col("last"), F.lit(0.0)) <= 0) | (F.coalesce(F.col("bid"), F.lit(0.0)) <= 0) \
        | (F.coalesce(F.col("ask"), F.lit(0.0)) <= 0)
    crossed = F.col("bid") > F.col("ask")
    outside = F.to_date("exchange_ts") != F.lit(trade_date)
    # Exact re-deliveries of the same exchange message: keep the first copy.
    first_copy = Window.partitionBy("contract_id", "seq_no").orderBy("_source_file", "_ingested_at")
    dup = F.row_number().over(first_copy) > 1
    return ticks.withColumn(
        "reject_reason",
        F.when(key_null, "null_key")
        .when(price_bad, "non_positive_price")
        .when(crossed, "crossed_quote")
        .when(outside, "outside_trade_date")
        .when(dup, "duplicate"),
    )


def split_valid(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(silver rows, quarantined rows with reason and the raw row as JSON)."""
    good = checked.filter(F.col("reject_reason").isNull()).select(*SILVER_COLUMNS)
    bad_cols = [c for c in checked.columns if c not in ("reject_reason", "trade_date")]
    bad = checked.filter(F.col("reject_reason").isNotNull()).select(
        "trade_date",
        F.lit("bronze_to_silver").alias("stage"),
        "reject_reason",
        "_source_file",
        F.to_json(F.struct(*bad_cols)).alias("raw_content"),
        "_ingested_at",
    )
    return good, bad
