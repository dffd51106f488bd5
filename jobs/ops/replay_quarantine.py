"""Replay quarantine: after a rule change, publish the quarantined rows of a date range that now pass.

Bronze keeps every delivered row, so a replay re-checks each date from Bronze with the row rules
as they are now (``TRADING_SESSION``, ``KNOWN_UNDERLYINGS``, ...) and republishes its quarantine and
Silver the way ``bronze_to_silver`` does (quarantine first, then Silver, gates and anomaly checks
applied). So rows_in = rows_out + rows_rejected holds by construction, and a second replay with
the same rules finds nothing to publish and commits nothing.

A replay only adds rows. When the current rules would withdraw rows Silver has already published
(stricter rules), the date is refused unless ``--allow-withdraw``. Each date is one run of the stage
``quarantine_replay``: an MLflow run and a ``stage_runs`` row with ``replay.published`` and
``replay.withdrawn``. Gold, features and predictions of a replayed date were built from the old
Silver; the command ends by naming the rerun that refreshes them.

    python -m jobs.ops.replay_quarantine --from 2026-11-24 --to 2026-11-26 [--dry-run] [--allow-withdraw]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass

from jobs import contract as c
from jobs.lakehouse.cli import parse_date, stage_cli
from jobs.trade_calendar import is_trading_day

KEYS = ("contract_id", "seq_no")  # Silver holds one row per exchange message (duplicates are rejected)


class ReplayRefused(RuntimeError):
    """The current rules would take rows back out of Silver; nothing was written for the date."""


@dataclass(frozen=True)
class Plan:
    trade_date: dt.date
    bronze_rows: int
    silver_rows: int
    quarantined: int
    published: int   # quarantined rows that now pass
    withdrawn: int   # published rows the current rules would reject

    def line(self) -> str:
        return (f"{self.trade_date}: {self.quarantined} quarantined of {self.bronze_rows}; {self.published} now pass"
                + (f", {self.withdrawn} published rows would be withdrawn" if self.withdrawn else ""))


def plan(spark, settings, trade_date: dt.date) -> Plan:
    """What a replay of the date would move, with the current rules; reads only."""
    from pyspark.sql import functions as F

    from jobs.lakehouse.tables import partition_rows, read_date
    from jobs.transforms.silver import standardize, with_reject_reason

    bronze = read_date(spark, settings.table(c.BRONZE), trade_date)
    checked = with_reject_reason(standardize(bronze), trade_date, settings.row_rules()).cache()
    try:
        good = checked.where(F.col("reject_reason").isNull()).select(*KEYS)
        silver = read_date(spark, settings.table(c.SILVER), trade_date).select(*KEYS)
        counts = [partition_rows(spark, settings.table(t), trade_date) for t in (c.BRONZE, c.SILVER, c.QUARANTINE)]
        return Plan(trade_date, *counts,
                    published=good.join(silver, list(KEYS), "left_anti").count(),
                    withdrawn=silver.join(good, list(KEYS), "left_anti").count())
    finally:
        checked.unpersist()


def replay_body(allow_withdraw: bool, dry_run: bool, plans: dict):
    """The stage body of one date: plan, refuse or skip, else republish like bronze_to_silver."""
    from jobs.stages import bronze_to_silver

    def body(spark, settings, ctx, tracker) -> None:
        p = plan(spark, settings, ctx.trade_date)
        plans[ctx.trade_date] = p
        tracker.metrics({"replay.quarantined_before": p.quarantined, "replay.published": p.published,
                         "replay.withdrawn": p.withdrawn})
        print(p.line(), file=sys.stderr)
        if p.withdrawn and not allow_withdraw:
            raise ReplayRefused(f"replay of {ctx.trade_date} refused: the current rules would withdraw "
                                f"{p.withdrawn} published Silver rows (--allow-withdraw to accept)")
        if dry_run or (p.published == 0 and p.withdrawn == 0):
            tracker.metrics({c.METRIC_ROWS_IN: p.bronze_rows, c.METRIC_ROWS_OUT: p.silver_rows,
                             c.METRIC_ROWS_REJECTED: p.quarantined})
            return
        bronze_to_silver.run(spark, settings, ctx, tracker)

    return body


def trade_dates(start: dt.date, end: dt.date) -> list[dt.date]:
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    return [d for d in days if is_trading_day(d)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replay_quarantine", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", type=parse_date, required=True)
    parser.add_argument("--to", dest="end", type=parse_date, required=True)
    parser.add_argument("--dry-run", action="store_true", help="say what would move, write nothing")
    parser.add_argument("--allow-withdraw", action="store_true",
                        help="also take published rows the current rules reject back out of Silver")
    args = parser.parse_args(argv)
    if args.end < args.start:
        parser.error(f"--to {args.end} is before --from {args.start}")
    plans: dict[dt.date, Plan] = {}
    failed: list[str] = []
    body = replay_body(args.allow_withdraw, args.dry_run, plans)
    for day in trade_dates(args.start, args.end):
        try:
            code = stage_cli(c.QUARANTINE_REPLAY, body, argv=["--trade-date", day.isoformat()])
        except Exception as exc:  # the stage run and its stage_runs row already say failed
            print(f"{day}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
        if code != 0:
            failed.append(day.isoformat())
    moved = [p for p in plans.values() if p.published or p.withdrawn]
    total = sum(p.published for p in plans.values())
    verb = "would publish" if args.dry_run else "published"
    print(f"replay {args.start} .. {args.end}: {len(plans)} dates checked, {verb} {total} rows"
          + (f", failed: {', '.join(failed)}" if failed else ""))
    if moved and not args.dry_run:
        first, last = min(p.trade_date for p in moved), max(p.trade_date for p in moved)
        print(f"Gold, features and predictions of {first} .. {last} still hold the old Silver: rerun them from "
              f"silver_to_gold (Airflow: clear silver_to_gold and downstream for those dates, or "
              f"make backfill FROM={first} TO={last})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
