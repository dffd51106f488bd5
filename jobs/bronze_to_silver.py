"""Bronze → Silver: typed and validated ticks; rejected rows go to quarantine with a reason."""
from __future__ import annotations

import sys

from jobs.lakehouse import BRONZE, QUARANTINE, SILVER, read_date, replace_date_partition, stage_cli
from jobs.transforms.silver import REASONS, split_valid, standardize, with_reject_reason


def run(spark, settings, ctx, tracker) -> None:
    bronze = read_date(spark, settings.table(BRONZE), ctx.trade_date)
    checked = with_reject_reason(standardize(bronze), ctx.trade_date).cache()
    try:
        rows_in = checked.count()
        good, bad = split_valid(checked)
        quarantine = replace_date_partition(bad, settings.table(QUARANTINE), ctx.trade_date)
        silver = replace_date_partition(good, settings.table(SILVER), ctx.trade_date)
        by_reason = {r["reject_reason"]: r["count"] for r in bad.groupBy("reject_reason").count().collect()}
    finally:
        checked.unpersist()
    tracker.published(silver, rows_in=rows_in)
    tracker.published(quarantine, prefix="rejected")
    tracker.metrics({f"rejected.{reason}": by_reason.get(reason, 0) for reason in REASONS})
    tracker.metrics({"rejected_share": quarantine.added_records / rows_in if rows_in else 0.0})
    if silver.added_records + quarantine.added_records != rows_in:
        raise RuntimeError(f"row accounting broken: {rows_in} in, {silver.added_records} out, "
                           f"{quarantine.added_records} rejected")


if __name__ == "__main__":
    sys.exit(stage_cli("bronze_to_silver", run))
