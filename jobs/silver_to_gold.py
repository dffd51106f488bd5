"""Silver → Gold: per-contract one-minute bars."""
from __future__ import annotations

import sys

from jobs.lakehouse import (
    GOLD, SILVER, gates_enabled, partition_rows, quality_gate, read_date, replace_date_partition, stage_cli,
)
from jobs.transforms.gold import minute_bars
from jobs.transforms.quality import profile_columns


def run(spark, settings, ctx, tracker) -> None:
    silver_table = settings.table(SILVER)
    bars = minute_bars(read_date(spark, silver_table, ctx.trade_date))
    if gates_enabled(settings):
        bars = bars.cache()
        quality_gate("gold", settings, tracker, ctx.trade_date,
                     profile_columns(bars, settings.quality_rules("gold")))
    snap = replace_date_partition(bars, settings.table(GOLD), ctx.trade_date)
    bars.unpersist()
    tracker.published(snap, rows_in=partition_rows(spark, silver_table, ctx.trade_date))


if __name__ == "__main__":
    sys.exit(stage_cli("silver_to_gold", run))
