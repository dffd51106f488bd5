"""The soak: ml_pipeline night after night through the real scheduler of a temporary stack.

Consecutive calendar days around Chuseok 2026 (KRX closed 09-24 and 09-25, a weekend after), with
a late delivery (RAW written by a thread once the run is seen waiting in wait_for_raw), a delivery
that never comes (RAW_DELIVERY_TIMEOUT=90s), MLflow stopped while a Spark stage runs and started
again, a rerun of a date (clear via REST), a backfill of an older date (REST backfill) and one
iceberg_maintenance run. Alerts go to the stack's own receiver (alerts.jsonl). At the end it
prints the day-by-day table and asserts what a month of nights must keep true (see the asserts).

`make test-soak` runs the short variant (SOAK_VARIANT=short: 2026-09-22..09-28, the same kinds of
events); `make soak` the long one (SOAK_VARIANT=long, SOAK_DAYS calendar days from 2026-09-18).
`make test` judges its e2e session by the same rules (tests/nights_support.py,
tests/e2e/test_month_of_nights.py).
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from nights_support import (
    Night,
    clean_reprocessing,
    count_pages,
    fingerprint,
    green_violations,
    memory_growth,
    outage_during_stage,
    paging_violations,
    parent_violations,
    print_table,
    read_back,
    snapshot_bound,
    snapshot_counts,
    tagged_snapshots,
    wait_until,
)

from jobs import contract
from jobs.trade_calendar import closed_reason
from scripts.devstack.temporary import Stack, running_stack
from scripts.soak import plan_from_env

PLAN = plan_from_env()
VARIANT, TICKS, MEMORY_RATIO = PLAN.variant, PLAN.ticks_per_date, PLAN.memory_ratio
RETAIN_LAST = 2
OUTAGE_STAGE = contract.BRONZE_TO_SILVER


# ------------------------------------------------------------------------------ the nights


def write_raw(env: dict, day: dt.date) -> None:
    from scripts.demo import generate_raw

    generate_raw(env, [day], TICKS)


def night(st: Stack, airflow, day: dt.date, event: str) -> Night:
    reason = closed_reason(day)
    if reason:
        event = reason
    elif "late" not in event and event != "never":
        write_raw(st.env, day)
    row = Night(date=day, event=event or "normal", run_id=airflow.trigger(day, tag="soak"))
    notes = []
    if "late" in event:
        wait_until(lambda: airflow.task_states(row.run_id).get(contract.WAIT_FOR_RAW)
                   in ("deferred", "up_for_reschedule"), 600, f"wait_for_raw waiting for {day}")
        writer = threading.Thread(target=write_raw, args=(st.env, day))
        writer.start()
        notes.append("RAW written after wait_for_raw deferred")
    if "outage" in event:
        notes.append(outage_during_stage(st, airflow, row.run_id, OUTAGE_STAGE))
    if "late" in event:
        writer.join()
    airflow.wait({str(day): row.run_id}, timeout=3600)
    row.note = "; ".join(notes)
    return row


# ------------------------------------------------------------------------------ the soak


@pytest.fixture(scope="module")
def soak(request):
    root = Path(tempfile.mkdtemp(prefix=f"lakehouse-soak-{VARIANT}-"))
    settings = {
        "RAW_DELIVERY_TIMEOUT": "90s", "RAW_DELIVERY_POLL_SECONDS": "2",
        "PIPELINE_RETRIES": "3", "PIPELINE_RETRY_DELAY_SECONDS": "15",
        "PIPELINE_DEADLINE_MINUTES": "0",  # the soak's dates are months old: a deadline would fire at once
        "DEPENDENCY_RETRIES": "3", "DEPENDENCY_BACKOFF_SECONDS": "2",
        "ICEBERG_SNAPSHOT_MAX_AGE_DAYS": "0", "ICEBERG_SNAPSHOT_RETAIN_LAST": str(RETAIN_LAST),
        "ICEBERG_ORPHAN_MIN_AGE_HOURS": "24",
        "SPARK_DRIVER_MEMORY": "1g", "SPARK_SQL_SHUFFLE_PARTITIONS": "2",
    }
    started = time.monotonic()
    with running_stack(root, settings, keep_on_failure=lambda: request.session.testsfailed > 0) as st:
        saved = dict(os.environ)
        os.environ.update(st.env)
        try:
            from scripts.devstack.airflow_api import Airflow
            from scripts.devstack.alert_receiver import read_alerts
            from scripts.devstack.env import alerts_file

            airflow = Airflow(st.env)
            airflow.wait_for_dag()
            airflow.wait_for_dag(contract.ICEBERG_MAINTENANCE)
            airflow.unpause()
            nights, events, rerun_date, backfill_date = list(PLAN.nights), PLAN.events, PLAN.rerun, PLAN.backfill
            rows: list[Night] = []
            for day in nights:
                rows.append(read_back(night(st, airflow, day, events.get(day, "")), airflow))
                print(f"soak: {day} {rows[-1].event}: {rows[-1].state}, stages {rows[-1].stages_ok}/"
                      f"{len(contract.STAGES)}, champion v{rows[-1].champion} ({rows[-1].champion_through}), "
                      f"{rows[-1].snapshots} snapshots, {time.monotonic() - started:.0f}s in", flush=True)
            # A rerun of a date that already succeeded: the same DAG run, cleared.
            original = next(r for r in rows if r.date == rerun_date)
            airflow.clear(original.run_id)
            wait_until(lambda: airflow.run_state(original.run_id) not in ("success",), 120, "the clear to start")
            airflow.wait({f"rerun {rerun_date}": original.run_id}, timeout=3600)
            rows.append(read_back(Night(date=rerun_date, event="rerun (clear via REST)", run_id=original.run_id),
                               airflow))
            # A backfill of an old date, after newer dates trained the champion.
            write_raw(st.env, backfill_date)
            backfill = airflow.backfill(backfill_date, backfill_date, reprocess="none")
            airflow.wait_backfill(backfill["id"], timeout=3600)
            run_id = airflow.backfill_runs(backfill)[backfill_date.isoformat()]
            rows.append(read_back(Night(date=backfill_date, event="backfill of an old date", run_id=run_id), airflow))
            # Runs the scheduler started by itself (seen: a backfill makes Airflow 3.3.2 create the
            # latest tick's scheduled run, for today's date with no RAW) are judged by the same rules.
            ours = {r.run_id for r in rows}
            for run in airflow.runs_of(contract.ML_PIPELINE):
                if run["dag_run_id"] not in ours and run.get("run_type") == "scheduled":
                    airflow.wait({"scheduled": run["dag_run_id"]}, timeout=1800)
                    rows.append(read_back(Night(date=airflow.trade_date_of(run["logical_date"]),
                                           event="started by the scheduler itself", run_id=run["dag_run_id"]),
                                       airflow))
            # Any retraining a drift alert started belongs to the table too.
            for run in airflow.runs_of(contract.ML_RETRAINING):
                airflow.wait({"retraining": run["dag_run_id"]}, timeout=1800, dag_id=contract.ML_RETRAINING)
                rows.append(read_back(Night(date=airflow.trade_date_of(run["logical_date"]), event="drift retraining",
                                       run_id=run["dag_run_id"], dag_id=contract.ML_RETRAINING), airflow))
            # One maintenance run.
            before = snapshot_counts()
            airflow.unpause(contract.ICEBERG_MAINTENANCE)
            maint = airflow.trigger(nights[-1], dag_id=contract.ICEBERG_MAINTENANCE, tag="soak")
            airflow.wait({"maintenance": maint}, timeout=1800, dag_id=contract.ICEBERG_MAINTENANCE)
            rows.append(read_back(Night(date=nights[-1], event="iceberg_maintenance", run_id=maint,
                                   dag_id=contract.ICEBERG_MAINTENANCE), airflow))
            after = snapshot_counts()
            refs = tagged_snapshots()
            alerts = [a.get("payload") for a in read_alerts(alerts_file(st.env))]
            stray = count_pages(rows, alerts)
            good = sorted({r.date for r in rows if r.dag_id == contract.ML_PIPELINE and r.state == "success"
                           and r.stages_ok == len(contract.STAGES)})
            soaked = fingerprint()
            clean = clean_reprocessing(good, "soak_clean")
            table = print_table(rows)
            yield {"rows": rows, "alerts": alerts, "stray": stray, "before": before, "after": after, "refs": refs,
                   "soaked": soaked, "clean": clean, "good": good, "table": table, "events": events,
                   "seconds": time.monotonic() - started}
        finally:
            os.environ.clear()
            os.environ.update(saved)


def test_every_failure_paged_once_and_nothing_else_paged(soak):
    rows = soak["rows"]
    assert paging_violations(rows) == [], soak["table"]
    failed = [r for r in rows if r.state == "failed" and r.event != "started by the scheduler itself"]
    assert [r.date for r in failed] == [d for d, e in soak["events"].items() if e == "never"], soak["table"]
    assert soak["stray"] == []


def test_no_green_run_with_a_stage_that_did_not_succeed(soak):
    assert green_violations(soak["rows"]) == []


def test_the_mlflow_outage_ended_green_after_retries(soak):
    outage = next(r for r in soak["rows"] if "outage" in r.event)
    assert outage.state == "success" and outage.stages_ok == len(contract.STAGES), outage
    assert outage.alerts == 0


def test_the_champion_never_moved_to_older_data(soak):
    through = [r.champion_through for r in soak["rows"] if r.champion_through is not None]
    assert through, "no champion was ever promoted"
    assert through == sorted(through), soak["table"]
    backfill = next(r for r in soak["rows"] if r.event.startswith("backfill"))
    assert backfill.state == "success" and backfill.champion_through > backfill.date


def test_one_mlflow_parent_run_per_dag_run(soak):
    assert parent_violations(soak["rows"]) == []


def test_final_tables_equal_a_clean_reprocessing(soak):
    soaked, clean = soak["soaked"], soak["clean"]
    assert {d for _, d in clean} == {str(d) for d in soak["good"]}
    assert soaked == clean, sorted(set(soaked.items()) ^ set(clean.items()))


def test_snapshot_counts_are_bounded_after_maintenance(soak):
    for name, n in soak["after"].items():
        assert n <= snapshot_bound(name, RETAIN_LAST, soak["refs"][name]), (name, soak["before"][name], n)
    assert sum(soak["after"].values()) < sum(soak["before"].values())


def test_services_memory_is_flat(soak):
    trading = [r for r in soak["rows"] if r.memory and r.stages_ok == len(contract.STAGES)]
    first, last = trading[min(1, len(trading) - 1)].memory, soak["rows"][-1].memory  # after one warm-up night
    print(f"soak: {VARIANT} variant took {soak['seconds']:.0f}s; PSS MB first {first} last {last}")
    assert memory_growth(first, last, MEMORY_RATIO) == {}
