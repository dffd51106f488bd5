"""Silver → Gold: per-contract one-minute bars."""
from __future__ import annotations

import sys

from jobs.lakehouse import GOLD, SILVER, partition_rows, read_date, replace_date_partition, stage_cli
from jobs.transforms.gold import minute_bars


def run(spark, settings, ctx, tracker) -> None:
    silver_table = settings.table(SILVER)
    bars = minute_bars(read_date(spark, silver_table, ctx.trade_date))
    snap = replace_date_partition(bars, settings.table(GOLD), ctx.trade_date)
    tracker.published(snap, rows_in=partition_rows(spark, silver_table, ctx.trade_date))


if __name__ == "__main__":
    sys.exit(stage_cli("silver_to_gold", run))
