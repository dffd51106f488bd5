"""Silver → Gold: per-contract one-minute bars."""
from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from jobs.contract import GOLD, SILVER, SILVER_TO_GOLD
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.facts import facts_enabled
from jobs.lakehouse.gates import gates_enabled, quality_gate
from jobs.lakehouse.profiles import watched_publish
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import partition_rows, read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.quality.rules import profile_columns
from jobs.transforms.gold import minute_bars


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    silver_table = settings.table(SILVER)
    bars = minute_bars(read_date(spark, silver_table, ctx.trade_date))
    if gates_enabled(settings) or facts_enabled():  # the gate, the profile and the write read it
        bars = bars.cache()
    if gates_enabled(settings):
        quality_gate("gold", settings, tracker, ctx.trade_date,
                     profile_columns(bars, settings.quality_rules("gold")))
    with watched_publish(spark, settings, tracker, ctx, bars, GOLD):  # profile, anomalies
        snap = replace_date_partition(bars, settings.table(GOLD), ctx.trade_date)
    bars.unpersist()
    tracker.published(snap, rows_in=partition_rows(spark, silver_table, ctx.trade_date))


if __name__ == "__main__":
    sys.exit(stage_cli(SILVER_TO_GOLD, run))
