"""Gold → features: point-in-time features and the next-bar label."""
from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from jobs.contract import FEATURE_ENGINEERING, FEATURES, GOLD
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.facts import facts_enabled
from jobs.lakehouse.gates import gates_enabled, quality_gate
from jobs.lakehouse.profiles import watched_publish
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import partition_rows, read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.quality.rules import profile_columns
from jobs.schema import FEATURE_COLUMNS, LABEL
from jobs.transforms.features import build_features


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    gold_table = settings.table(GOLD)
    features = build_features(read_date(spark, gold_table, ctx.trade_date))
    if gates_enabled(settings) or facts_enabled():  # the gate, the profile and the write read it
        features = features.cache()
    if gates_enabled(settings):
        quality_gate("features", settings, tracker, ctx.trade_date,
                     profile_columns(features, settings.quality_rules("features")))
    with watched_publish(spark, settings, tracker, ctx, features, FEATURES):  # profile, anomalies
        snap = replace_date_partition(features, settings.table(FEATURES), ctx.trade_date)
    features.unpersist()
    tracker.published(snap, rows_in=partition_rows(spark, gold_table, ctx.trade_date))
    tracker.params({"features": ",".join(FEATURE_COLUMNS), "label": LABEL})


if __name__ == "__main__":
    sys.exit(stage_cli(FEATURE_ENGINEERING, run))
