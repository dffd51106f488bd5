"""Gold → features: point-in-time features and the next-bar label."""
from __future__ import annotations

import sys

from jobs.lakehouse import FEATURES, GOLD, partition_rows, read_date, replace_date_partition, stage_cli
from jobs.transforms.features import FEATURE_COLUMNS, LABEL, build_features


def run(spark, settings, ctx, tracker) -> None:
    gold_table = settings.table(GOLD)
    features = build_features(read_date(spark, gold_table, ctx.trade_date))
    snap = replace_date_partition(features, settings.table(FEATURES), ctx.trade_date)
    tracker.published(snap, rows_in=partition_rows(spark, gold_table, ctx.trade_date))
    tracker.params({"features": ",".join(FEATURE_COLUMNS), "label": LABEL})


if __name__ == "__main__":
    sys.exit(stage_cli("feature_engineering", run))
