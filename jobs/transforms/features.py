"""Gold → features: point-in-time features per bar and a next-bar label.

Every feature uses the current bar and earlier bars of the same contract only (lag and trailing
windows); only the label looks one bar ahead. Windows stay inside one trade date, so a date's
features never change when a later date arrives.
"""
from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.schema import FEATURE_COLUMNS, LABEL

SECONDS_PER_YEAR = 365.0 * 24 * 3600


def build_features(bars: DataFrame) -> DataFrame:
    by_contract = Window.partitionBy("trade_date", "contract_id").orderBy("bar_ts")
    trailing_15 = by_contract.rowsBetween(-14, 0)
    mid = F.col("mid_close")
    expiry_close = F.to_timestamp(F.concat(F.col("expiry").cast("string"), F.lit(" 15:45:00")))
    tte = (expiry_close.cast("double") - F.col("bar_ts").cast("double")) / SECONDS_PER_YEAR
    flow_total = F.col("bid_size_sum") + F.col("ask_size_sum")
    out = (
        bars.withColumn("ret_1", F.log(mid / F.lag(mid, 1).over(by_contract)))
        .withColumn("ret_5", F.log(mid / F.lag(mid, 5).over(by_contract)))
        .withColumn("ret_15", F.log(mid / F.lag(mid, 15).over(by_contract)))
        .withColumn("realized_vol_15", F.stddev_samp("ret_1").over(trailing_15))
        .withColumn("spread_rel", F.col("spread_mean") / mid)
        .withColumn("order_flow_imbalance",
                    F.when(flow_total > 0, (F.col("bid_size_sum") - F.col("ask_size_sum")) / flow_total))
        .withColumn("moneyness", F.log(F.col("underlying_close") / F.col("strike")))
        .withColumn("time_to_expiry", tte)
        # Brenner–Subrahmanyam: sigma ≈ price / (0.4 · S · sqrt(T)), a cheap implied-vol proxy.
        .withColumn("iv_proxy", mid / (F.lit(1 / math.sqrt(2 * math.pi))
                                      * F.col("underlying_close") * F.sqrt(F.greatest(tte, F.lit(1e-6)))))
        .withColumn("log_volume", F.log1p("volume"))
        .withColumn("is_call", (F.col("option_type") == "C").cast("int"))
        .withColumn("next_mid", F.lead(mid, 1).over(by_contract))
        .withColumn(LABEL, F.when(F.col("next_mid").isNotNull(),
                                  (F.col("next_mid") > mid).cast("int")))
        .withColumn("label_ts", F.lead("bar_ts", 1).over(by_contract))
    )
    return out.select("trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL, "label_ts")


def training_window(features: DataFrame, trade_date: dt.date, lookback_days: int) -> DataFrame:
    """Labelled rows of the ``lookback_days`` calendar days up to and including ``trade_date``."""
    start = trade_date - dt.timedelta(days=lookback_days - 1)
    return features.where(
        (F.col("trade_date") >= F.lit(start)) & (F.col("trade_date") <= F.lit(trade_date))
        & F.col(LABEL).isNotNull()
    )
