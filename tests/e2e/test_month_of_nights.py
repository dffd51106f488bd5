"""The short soak of `make test`: what a month of nights must keep true, over this whole e2e session.

The session already ran good dates, a messy delivery, a drifted date and its retraining, a date
whose RAW never came, a deadline probe, a rerun and backfills (over a weekend and over processed
dates); tests/e2e/test_night_paths.py has the late delivery on the real triggerer. This module runs
last (conftest orders it) and adds the nights the session lacks, on the same stack: a KRX holiday,
MLflow stopped while a Spark stage runs (the night must end green after a retry, paging nobody) and
one iceberg_maintenance run. Then every DAG run the session made is judged by the soak's rules
(tests/nights_support.py): every failed run paged exactly once and nothing else paged, no green run
with a stage that did not succeed, one MLflow parent run per run, the champion never moved to older
data, the tables equal a clean reprocessing of the good dates, snapshots bounded after maintenance
(and the champion still refits from its logged snapshot), services' memory flat. `make soak` runs
the long calendar (tests/soak).
"""
from __future__ import annotations

import datetime as dt

import pytest
from e2e_support import RETAIN_LAST, TICKS_PER_DATE, assert_champion_retrains_to_its_metrics
from mlflow import MlflowClient
from nights_support import (
    Night,
    champion,
    clean_reprocessing,
    count_pages,
    fingerprint,
    green_violations,
    memory,
    memory_growth,
    outage_during_stage,
    paging_violations,
    parent_violations,
    print_table,
    read_back,
    snapshot_bound,
    snapshot_counts,
    tagged_snapshots,
)

from jobs import contract
from jobs.trade_calendar import closed_reason
from scripts.soak import plan_from_env

HOLIDAY = dt.date(2026, 10, 9)       # Hangul Day, a Friday: KRX closed
OUTAGE_DATE = dt.date(2026, 11, 27)  # a Friday after the session's dates
TERMINAL = ("success", "failed")


def run_date(airflow, run: dict) -> dt.date:
    """The trade date a run processed: its conf's, else the one its logical date (or run_after) stands for."""
    if (run.get("conf") or {}).get("trade_date"):
        return dt.date.fromisoformat(run["conf"]["trade_date"])
    return airflow.trade_date_of(run.get("logical_date") or run["run_after"])


def settle(airflow) -> None:
    """Wait for every run still going (a retraining a drift gate started, a run the scheduler made)."""
    for dag_id in (contract.ML_PIPELINE, contract.ML_RETRAINING):
        active = {r["dag_run_id"]: r["dag_run_id"] for r in airflow.runs_of(dag_id) if r["state"] not in TERMINAL}
        if active:
            airflow.wait(active, timeout=1800, dag_id=dag_id)


@pytest.fixture(scope="module")
def nights(pipeline):
    from scripts import demo

    st, airflow = pipeline.stack, pipeline.airflow
    settle(airflow)
    warm = memory()  # after every other e2e test: the services are as warm as a month makes them
    champions = [champion()]
    added = {}
    # A KRX holiday on the real pipeline: skipped with its name, nobody paged.
    assert closed_reason(HOLIDAY)
    added["holiday"] = airflow.trigger(HOLIDAY, tag="nights")
    airflow.wait({"holiday": added["holiday"]}, timeout=600)
    # MLflow stopped while a Spark stage runs: the try fails as a dependency outage, the retry succeeds.
    demo.generate_raw(st.env, [OUTAGE_DATE], TICKS_PER_DATE)
    added["outage"] = airflow.trigger(OUTAGE_DATE, tag="nights")
    outage_note = outage_during_stage(st, airflow, added["outage"])
    airflow.wait({"outage": added["outage"]}, timeout=1800)
    settle(airflow)
    champions.append(champion())
    # One maintenance run over every table the session wrote.
    before = snapshot_counts()
    airflow.unpause(contract.ICEBERG_MAINTENANCE)
    added["maintenance"] = airflow.trigger(OUTAGE_DATE, dag_id=contract.ICEBERG_MAINTENANCE, tag="nights")
    airflow.wait({"maintenance": added["maintenance"]}, timeout=1800, dag_id=contract.ICEBERG_MAINTENANCE)
    airflow.call("PATCH", f"/api/v2/dags/{contract.ICEBERG_MAINTENANCE}", {"is_paused": True})
    after, refs = snapshot_counts(), tagged_snapshots()
    champions.append(champion())
    # Every run the session made, judged alike.
    rows = []
    for dag_id in (contract.ML_PIPELINE, contract.ML_RETRAINING, contract.ICEBERG_MAINTENANCE):
        for run in airflow.runs_of(dag_id):
            event = next((k for k, v in added.items() if v == run["dag_run_id"]), run.get("run_type") or "?")
            rows.append(read_back(Night(date=run_date(airflow, run), event=event, run_id=run["dag_run_id"],
                                        dag_id=dag_id), airflow, timeline=False))
    rows.sort(key=lambda n: (n.date, n.dag_id))
    stray = count_pages(rows, pipeline.webhook.messages)
    outage = next(n for n in rows if n.run_id == added["outage"])
    outage.note = outage_note
    good = sorted({n.date for n in rows if n.dag_id == contract.ML_PIPELINE and n.state == "success"
                   and n.stages_ok == len(contract.STAGES)})
    tries = {ti["task_id"]: ti.get("try_number") for ti in airflow.task_instances(added["outage"])}
    table = print_table(rows)
    return {"rows": rows, "stray": stray, "table": table, "outage": outage, "champions": champions,
            "before": before, "after": after, "refs": refs, "good": good, "memory": memory(), "warm": warm,
            "holiday": next(n for n in rows if n.run_id == added["holiday"]),
            "maintenance": next(n for n in rows if n.run_id == added["maintenance"]),
            "outage_tries": tries.get(contract.BRONZE_TO_SILVER) or 0}


def test_every_failed_run_paged_once_and_nothing_else_paged(nights):
    assert paging_violations(nights["rows"]) == [], nights["table"]
    assert nights["stray"] == []
    assert any(n.state == "failed" for n in nights["rows"]), "the session's missing date should have failed"


def test_no_green_run_with_a_stage_that_did_not_succeed(nights):
    assert green_violations(nights["rows"]) == [], nights["table"]


def test_a_holiday_skips_every_stage_and_pages_nobody(nights):
    holiday = nights["holiday"]
    assert holiday.state == "success" and holiday.alerts == 0, nights["table"]
    assert {holiday.tasks.get(s) for s in (contract.START_TRACKING, *contract.STAGES)} == {"skipped"}


def test_mlflow_stopped_mid_stage_retries_to_green_and_pages_nobody(nights):
    outage = nights["outage"]
    assert outage.note.endswith(("up_for_retry", "scheduled", "queued")), outage.note  # the try failed
    assert nights["outage_tries"] >= 2, nights["outage_tries"]  # and the stage ran again
    assert outage.state == "success" and outage.stages_ok == len(contract.STAGES), nights["table"]
    assert outage.alerts == 0


def test_one_mlflow_parent_run_per_dag_run(nights):
    assert parent_violations(nights["rows"]) == [], nights["table"]


def test_the_champion_never_moved_to_older_data(nights):
    through = [d for _, d in nights["champions"]]
    assert None not in through, nights["champions"]
    assert through == sorted(through), nights["champions"]


def test_maintenance_bounds_snapshots_and_keeps_the_champions_lineage(nights):
    assert nights["maintenance"].state == "success", nights["table"]
    for name, n in nights["after"].items():
        assert n <= snapshot_bound(name, RETAIN_LAST, nights["refs"][name]), (name, nights["before"][name], n)
    assert sum(nights["after"].values()) < sum(nights["before"].values())
    assert_champion_retrains_to_its_metrics(MlflowClient())


def test_final_tables_equal_a_clean_reprocessing(nights):
    assert {dt.date(2026, 11, 24), OUTAGE_DATE} <= set(nights["good"])
    clean = clean_reprocessing(nights["good"], "nights_clean")
    soaked = fingerprint()
    assert {d for _, d in clean} == {str(d) for d in nights["good"]}
    assert soaked == clean, sorted(set(soaked.items()) ^ set(clean.items()))


def memory_grown(pipeline, nights) -> dict:
    ratio = plan_from_env().memory_ratio
    print(f"nights: anonymous PSS MB after the first nights {pipeline.memory}, before this module's nights "
          f"{nights['warm']}, at the end {nights['memory']}")
    return memory_growth(nights["warm"], nights["memory"], ratio)


def test_services_memory_is_flat(pipeline, nights):
    """SeaweedFS included: with its GOMEMLIMIT (SEAWEEDFS_GOMEMLIMIT, .env.example) Go reuses its heap
    instead of growing toward twice the live size (without it: 155 -> 214 MB over these nights)."""
    assert memory_grown(pipeline, nights) == {}
