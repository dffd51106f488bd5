"""Bronze → Silver: typed and validated ticks; rejected rows go to quarantine with a reason.

The quarantine is written first and whatever the quality gate says: it explains the batch.
Silver is written only when the gate passes.
"""
from __future__ import annotations

import sys

from pyspark.sql import DataFrame, SparkSession

from jobs.contract import BRONZE, BRONZE_TO_SILVER, QUARANTINE, SILVER
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.gates import gates_enabled, quality_gate
from jobs.lakehouse.profiles import watched_publish
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.quality.rules import columns_to_profile, shares
from jobs.schema import REASONS
from jobs.transforms.silver import split_valid, standardize, with_reject_reason


def batch_counts(checked: DataFrame, layer_rules: dict | None) -> tuple[dict[str, int], dict[str, float]]:
    """Rows, rejects per reason and (when gated) the null/range counts of good rows: one pass."""
    from pyspark.sql import functions as F

    good = F.col("reject_reason").isNull()
    aggs = [F.count(F.lit(1)).alias("rows_in")]
    aggs += [F.sum((F.col("reject_reason") == r).cast("long")).alias(f"rejected.{r}") for r in REASONS]
    nulls, ranges = columns_to_profile(layer_rules or {})
    if layer_rules is not None:
        aggs.append(F.sum(good.cast("long")).alias("rows"))
        aggs += [F.sum((good & F.col(c).isNull()).cast("long")).alias(f"null.{c}") for c in nulls]
        aggs += [F.sum((good & ((F.col(c) < lo) | (F.col(c) > hi))).cast("long")).alias(f"range.{c}")
                 for c, (lo, hi) in ranges.items()]
    row = {k: int(v or 0) for k, v in checked.agg(*aggs).first().asDict().items()}
    figures = shares(row, nulls, ranges) if layer_rules is not None else {}
    return row, figures


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    bronze = read_date(spark, settings.table(BRONZE), ctx.trade_date)
    checked = with_reject_reason(standardize(bronze), ctx.trade_date, settings.row_rules()).cache()
    try:
        rules = settings.quality_rules("silver") if gates_enabled(settings) else None
        counts, figures = batch_counts(checked, rules)
        rows_in = counts["rows_in"]
        rejected = sum(counts[f"rejected.{r}"] for r in REASONS)
        tracker.metrics({f"rejected.{r}": counts[f"rejected.{r}"] for r in REASONS})
        rejected_share = rejected / rows_in if rows_in else 0.0
        tracker.metrics({"rejected_share": rejected_share})
        good, bad = split_valid(checked)
        quarantine = replace_date_partition(bad, settings.table(QUARANTINE), ctx.trade_date)
        tracker.published(quarantine, prefix="rejected")
        if rules is not None:
            quality_gate("silver", settings, tracker, ctx.trade_date,
                         {**figures, "rejected_share": rejected_share})
        reject_shares = {f"reject_share.{r}": counts[f"rejected.{r}"] / rows_in if rows_in else 0.0
                         for r in REASONS}
        with watched_publish(spark, settings, tracker, ctx, good, SILVER, reject_shares):  # profile, anomalies
            silver = replace_date_partition(good, settings.table(SILVER), ctx.trade_date)
    finally:
        checked.unpersist()
    tracker.published(silver, rows_in=rows_in)
    if silver.added_records + quarantine.added_records != rows_in:
        raise RuntimeError(f"row accounting broken: {rows_in} in, {silver.added_records} out, "
                           f"{quarantine.added_records} rejected")


if __name__ == "__main__":
    sys.exit(stage_cli(BRONZE_TO_SILVER, run))
