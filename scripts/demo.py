#!/usr/bin/env python3
"""`make demo`: generate RAW ticks, run ml_pipeline through Airflow for each demo date, summarise.

Drives Airflow the way a user would, through its REST API (scripts/devstack/airflow_api.py): the
real scheduler runs the tasks. While it waits it shows task k/N, elapsed time and an estimate for
each run, and names any run ahead of its own (scripts/devstack/progress.py). The summary lists
every run of ml_pipeline and ml_retraining since the demo began, with links to Airflow and MLflow,
a local copy of each morning report (var/stack/reports/<date>.html, .png) and the alerts sent.
Run inside the resolved stack environment
(`scripts/stack.py run -- python scripts/demo.py`). The end-to-end test generates its RAW ticks with
`generate_raw` from here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

if not __package__:  # run as a file, not as `python -m scripts.demo`: make `scripts.` and `jobs.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.contract import (  # noqa: E402
    DRIFT_GATE,
    ML_PIPELINE,
    ML_RETRAINING,
)
from scripts.devstack.airflow_api import Airflow  # noqa: E402
from scripts.devstack.env import resolve_env  # noqa: E402
from scripts.devstack.run_summary import collect_summary, format_summary, touched_runs  # noqa: E402

# --------------------------------------------------------------------------------------------------
# RAW ticks
# --------------------------------------------------------------------------------------------------

def _dates(value: str) -> list[dt.date]:
    return [dt.date.fromisoformat(d.strip()) for d in value.split(",") if d.strip()]


def generate_raw(env: dict, dates: list[dt.date], ticks: int, regime: float = 1.0) -> None:
    from jobs.synthetic.raw_ticks import main as generate

    generate(["--dates", ",".join(d.isoformat() for d in dates), "--ticks", str(ticks),
              "--out", env["RAW_TICKS_PATH"], "--regime", str(regime)])


def generate_demo_raw(env: dict, dates: list[dt.date], ticks: int) -> None:
    """Calm dates, stressed dates (DEMO_STRESSED_DATES) and a messy second delivery (DEMO_MESSY_DATES)."""
    stressed = set(_dates(env.get("DEMO_STRESSED_DATES") or ""))
    print(f"1/4 Generating {ticks:,} RAW ticks for {', '.join(map(str, dates))} into {env['RAW_TICKS_PATH']}"
          + (f" ({', '.join(map(str, sorted(stressed)))} as a stressed market)" if stressed else ""))
    per_date = ticks // len(dates)
    calm = [d for d in dates if d not in stressed]
    if calm:
        generate_raw(env, calm, per_date * len(calm))
    for d in sorted(stressed & set(dates)):
        generate_raw(env, [d], per_date, regime=3.0)
    messy = set(_dates(env.get("DEMO_MESSY_DATES") or dates[min(1, len(dates) - 1)].isoformat()))
    for d in sorted(messy & set(dates)):
        from jobs.synthetic import messy_delivery

        messy_delivery.write(env["RAW_TICKS_PATH"], d)
        print(f"    {d}: plus a messy second vendor delivery (CSV, JSON lines, a truncated Parquet file, "
              "a spreadsheet) to show the quarantine")


# --------------------------------------------------------------------------------------------------
# Runs through Airflow
# --------------------------------------------------------------------------------------------------

def run_retraining(airflow: Airflow, alerted: list[str], known: set[str], timeout: float
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Wait for the ml_retraining runs the drift alerts started, then for them to finish.

    Returns (label -> run id, label -> final state).
    """
    if not alerted:
        return {}, {}
    print(f"  drift alert on {', '.join(alerted)}: waiting for {ML_RETRAINING}")
    try:
        new = airflow.wait_for_new_runs(ML_RETRAINING, known, timeout=300)
    except TimeoutError:
        raise TimeoutError(f"the drift alert did not start {ML_RETRAINING} within 5 minutes") from None
    runs = {f"retraining {i + 1}": r for i, r in enumerate(new)}
    return runs, airflow.wait(runs, timeout=timeout, dag_id=ML_RETRAINING)


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # RAW, reports and the summary under the stack's home stay private, like the stack's own files
    env = resolve_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", default=env.get("DEMO_TRADE_DATES") or "2026-11-24,2026-11-25,2026-11-26")
    parser.add_argument("--ticks", type=int, default=int(env.get("DEMO_TICKS") or 1_000_000))
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    os.environ.update(env)
    dates = _dates(args.dates)

    generate_demo_raw(env, dates, args.ticks)
    print(f"2/4 Waiting for Airflow to parse {ML_PIPELINE}, then unpausing it")
    airflow = Airflow(env)
    airflow.wait_for_dag()
    began = dt.datetime.now(dt.UTC)
    airflow.unpause()
    print("3/4 Triggering one run per trade date, or rerunning it if it exists (one at a time: max_active_runs=1)")
    runs = {d.isoformat(): airflow.run_date(d) for d in dates}
    for label, run_id in runs.items():
        print(f"  {label}: {run_id}")
    started = time.monotonic()
    before = {r["dag_run_id"] for r in airflow.runs_of(ML_RETRAINING)}
    states = airflow.wait(runs, timeout=args.timeout)
    alerted = [label for label, run_id in runs.items() if airflow.task_states(run_id).get(DRIFT_GATE) == "success"]
    retraining_runs, retraining = run_retraining(airflow, alerted, before, args.timeout)
    print(f"4/4 All runs finished in {time.monotonic() - started:.0f}s; reading results back")
    touched = touched_runs(airflow, began, {ML_PIPELINE: runs.values(), ML_RETRAINING: retraining_runs.values()})
    summary = collect_summary(env, runs, touched, began)
    print(format_summary(env, summary, states))
    if alerted:
        print(f"Drift alerts: {', '.join(alerted)} -> {ML_RETRAINING} "
              + ", ".join(f"{label} {state.upper()}" for label, state in retraining.items()))
    ok = all(s == "success" for s in [*states.values(), *retraining.values()]) and summary.get("champion")
    if not ok:
        print("\nSome runs failed: open the Airflow UI above, or see var/stack/logs/.", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
