"""Gold → features: point-in-time features and the next-bar label."""
from __future__ import annotations

import sys

from jobs.lakehouse import (
    FEATURES, GOLD, gates_enabled, partition_rows, quality_gate, read_date, replace_date_partition, stage_cli,
)
from jobs.transforms.quality import profile_columns
from jobs.transforms.features import FEATURE_COLUMNS, LABEL, build_features


def run(spark, settings, ctx, tracker) -> None:
    gold_table = settings.table(GOLD)
    features = build_features(read_date(spark, gold_table, ctx.trade_date))
    if gates_enabled(settings):
        features = features.cache()
        quality_gate("features", settings, tracker, ctx.trade_date,
                     profile_columns(features, settings.quality_rules("features")))
    snap = replace_date_partition(features, settings.table(FEATURES), ctx.trade_date)
    features.unpersist()
    tracker.published(snap, rows_in=partition_rows(spark, gold_table, ctx.trade_date))
    tracker.params({"features": ",".join(FEATURE_COLUMNS), "label": LABEL})


if __name__ == "__main__":
    sys.exit(stage_cli("feature_engineering", run))
