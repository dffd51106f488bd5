#!/usr/bin/env python3
"""`make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD`: (re)process a range of trade dates as an Airflow backfill.

FROM and TO are trade dates, both included. Each becomes the logical date of the run the daily
schedule would start for it (the PIPELINE_SCHEDULE tick, in PIPELINE_TIMEZONE, of the next day),
so Airflow's backfill (POST /api/v2/backfills) creates exactly one ml_pipeline run per trade date;
weekend and KRX holiday dates get a run that skips (the plan names the holiday). Dates that
already have a run are rerun in place by default (`--reprocess completed`); every stage replaces
its date's partition, so the tables end up the same.
Run inside the stack environment: `scripts/stack.py run -- python scripts/backfill.py ...`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

if not __package__:  # run as a file, not as `python -m scripts.backfill`: make `scripts.` and `jobs.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.contract import ML_PIPELINE, START_TRACKING  # noqa: E402
from jobs.trade_calendar import closed_reason  # noqa: E402
from scripts.devstack.airflow_api import Airflow  # noqa: E402
from scripts.devstack.env import resolve_env  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="first", required=True, type=dt.date.fromisoformat,
                        help="first trade date (YYYY-MM-DD), included")
    parser.add_argument("--to", dest="last", required=True, type=dt.date.fromisoformat,
                        help="last trade date (YYYY-MM-DD), included")
    parser.add_argument("--reprocess", choices=("completed", "failed", "none"), default="completed",
                        help="dates that already have a run: rerun all (default), only failed ones, or none")
    parser.add_argument("--max-active-runs", type=int, default=1,
                        help="runs of this backfill at a time (default 1: the stages share the machine)")
    parser.add_argument("--dry-run", action="store_true", help="only list the runs it would create")
    parser.add_argument("--no-wait", action="store_true", help="create the backfill and return")
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    args = parser.parse_args(argv)
    if args.first > args.last:
        parser.error(f"--from {args.first} is after --to {args.last}")
    return args


def print_plan(airflow: Airflow, plan: dict, args: argparse.Namespace) -> None:
    print(f"Backfill of {ML_PIPELINE} for trade dates {args.first} .. {args.last} "
          f"(reprocess {args.reprocess}, {args.max_active_runs} run(s) at a time):")
    for entry in plan.get("backfills", []):
        trade_date = airflow.trade_date_of(entry["logical_date"])
        reason = closed_reason(trade_date)
        note = f"  (KRX closed, {reason}: the run skips)" if reason else ""
        print(f"  trade date {trade_date}  <- run at logical date {entry['logical_date']}{note}")
    if not plan.get("backfills"):
        print("  nothing to run (every date already has a run; use --reprocess completed to rerun them)")


def print_results(airflow: Airflow, backfill_id: int, runs: dict[str, str], states: dict[str, str],
                  seconds: float) -> None:
    print(f"Backfill {backfill_id} finished in {seconds:.0f}s:")
    for trade_date, run_id in runs.items():
        skipped = airflow.task_states(run_id).get(START_TRACKING) == "skipped"
        print(f"  {trade_date}  {states[trade_date]:<8} {'(not a trading day: skipped)' if skipped else ''}  {run_id}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    airflow = Airflow(resolve_env())
    airflow.wait_for_dag()
    plan = airflow.backfill(args.first, args.last, args.reprocess, args.max_active_runs, dry_run=True)
    print_plan(airflow, plan, args)
    if not plan.get("backfills") or args.dry_run:
        return 0
    created = airflow.backfill(args.first, args.last, args.reprocess, args.max_active_runs)
    runs = airflow.backfill_runs(created)
    print(f"Backfill {created['id']} created: {len(runs)} run(s). "
          f"Airflow UI: {airflow.env.get('AIRFLOW_UI_URL', airflow.base)}/dags/{ML_PIPELINE}")
    if args.no_wait:
        return 0
    started = time.monotonic()
    states = airflow.wait(runs, timeout=args.timeout)
    airflow.wait_backfill(created["id"])
    print_results(airflow, created["id"], runs, states, time.monotonic() - started)
    return 0 if all(s == "success" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
