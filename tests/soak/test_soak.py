"""The soak: ml_pipeline night after night through the real scheduler of a temporary stack.

Consecutive calendar days around Chuseok 2026 (KRX closed 09-24 and 09-25, a weekend after), with
a late delivery (RAW written by a thread once the run is seen waiting in wait_for_raw), a delivery
that never comes (RAW_DELIVERY_TIMEOUT=90s), MLflow stopped while a Spark stage runs and started
again, a rerun of a date (clear via REST), a backfill of an older date (REST backfill) and one
iceberg_maintenance run. Alerts go to the stack's own receiver (alerts.jsonl). At the end it
prints the day-by-day table and asserts what a month of nights must keep true (see the asserts).

`make test` runs the short variant (SOAK_VARIANT=short: 2026-09-22..09-28, the same kinds of
events); `make soak` the long one (SOAK_VARIANT=long, SOAK_DAYS calendar days from 2026-09-18).
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs import contract
from jobs.trade_calendar import closed_reason
from scripts.devstack.temporary import Stack, running_stack
from scripts.soak import plan_from_env

PLAN = plan_from_env()
VARIANT, TICKS, MEMORY_RATIO = PLAN.variant, PLAN.ticks_per_date, PLAN.memory_ratio
RETAIN_LAST = 2
SERVICES = ("seaweedfs", "hive-metastore", "mlflow", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer")
# What the clean reprocessing compares: the data tables (predictions and drift depend on which
# model was champion when, which a clean run of the same days legitimately decides differently).
DATA_TABLES = (contract.BRONZE, contract.SILVER, contract.QUARANTINE, contract.GOLD, contract.FEATURES)
DATA_STAGES = (contract.RAW_TO_BRONZE, contract.BRONZE_TO_SILVER, contract.SILVER_TO_GOLD,
               contract.FEATURE_ENGINEERING)
OUTAGE_STAGE = contract.BRONZE_TO_SILVER


@dataclass
class Row:
    date: dt.date
    event: str
    run_id: str
    dag_id: str = contract.ML_PIPELINE
    state: str = "?"
    tasks: dict = field(default_factory=dict)
    alerts: int = 0
    champion: str = "-"
    champion_through: dt.date | None = None
    snapshots: int = 0
    parents: int = 0
    memory: dict = field(default_factory=dict)
    note: str = ""

    @property
    def stages_ok(self) -> int:
        return sum(self.tasks.get(s) == "success" for s in contract.STAGES)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        time.sleep(1)
    return value


# ------------------------------------------------------------------------------ what the stack holds


def champion():
    """(version, data date) of the champion alias, or ("-", None) before the first promotion."""
    from mlflow.tracking import MlflowClient

    from jobs.lakehouse.registry import data_through
    from jobs.lakehouse.settings import Settings

    try:
        version = MlflowClient().get_model_version_by_alias(Settings.from_env().model_name, contract.CHAMPION)
    except Exception:  # noqa: BLE001 - no registered model or no alias yet
        return "-", None
    return version.version, data_through(version)


def parent_runs(dag_id: str, run_id: str) -> int:
    import mlflow
    from mlflow.tracking import MlflowClient

    experiment = mlflow.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME") or
                                               contract.DEFAULT_EXPERIMENT)
    if experiment is None:
        return 0
    return len(MlflowClient().search_runs([experiment.experiment_id],
                                          filter_string=contract.parent_run_filter(dag_id, run_id)))


def iceberg_tables(namespace: str | None = None) -> dict:
    from jobs.lakehouse.settings import Settings

    settings = Settings.from_env()
    catalog = settings.pyiceberg_catalog()
    ns = namespace or settings.namespace
    tables = {}
    for name in contract.ALL_TABLES:
        try:
            tables[name] = catalog.load_table(f"{ns}.{name}")
        except Exception:  # noqa: BLE001 - not created yet (before the first trading night)
            continue
    return tables


def snapshot_counts() -> dict[str, int]:
    return {name: len(t.metadata.snapshots) for name, t in iceberg_tables().items()}


def memory() -> dict[str, float]:
    from scripts.devstack.processes import memory_mb, read_pid

    env = {**os.environ}
    return {name: memory_mb(pid)[1] for name in SERVICES if (pid := read_pid(env, name))}


def _canonical(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")  # sums of floats may add up in another order
    return value


def fingerprint(namespace: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """(table, trade date) -> (rows, order-independent checksum), processing-time columns left out."""
    import hashlib

    result = {}
    for name, table in iceberg_tables(namespace).items():
        if name not in DATA_TABLES:
            continue
        rows = table.scan().to_arrow().to_pylist()
        for row in rows:
            key = (name, str(row.get("trade_date")))
            digest = hashlib.blake2b(repr(sorted(
                (k, _canonical(v)) for k, v in row.items() if not k.endswith("_at"))).encode(), digest_size=8)
            n, total = result.get(key, (0, 0))
            result[key] = (n + 1, (total + int.from_bytes(digest.digest(), "big")) % (1 << 64))
    return result


def clean_reprocessing(dates: list[dt.date], namespace: str) -> dict:
    """The data stages of every good date once, in date order, in-process into a fresh namespace."""
    from jobs.lakehouse.settings import Settings
    from jobs.lakehouse.tables import spark_session
    from jobs.lakehouse.tracking import NullTracker, RunContext
    from jobs.stages import bronze_to_silver, feature_engineering, raw_to_bronze, silver_to_gold

    saved = os.environ.get("ICEBERG_NAMESPACE")
    os.environ["ICEBERG_NAMESPACE"] = namespace
    try:
        settings = Settings.from_env()
        spark = spark_session("soak-clean-reprocessing", settings, master="local[2]")
        try:
            for day in sorted(dates):
                for stage, module in zip(DATA_STAGES, (raw_to_bronze, bronze_to_silver, silver_to_gold,
                                                      feature_engineering), strict=True):
                    module.run(spark, settings, RunContext(stage=stage, trade_date=day), NullTracker())
        finally:
            spark.stop()
        return fingerprint(namespace)
    finally:
        if saved is None:
            os.environ.pop("ICEBERG_NAMESPACE", None)
        else:
            os.environ["ICEBERG_NAMESPACE"] = saved


# ------------------------------------------------------------------------------ the nights


def write_raw(env: dict, day: dt.date) -> None:
    from scripts.demo import generate_raw

    generate_raw(env, [day], TICKS)


def outage_during_stage(st: Stack, airflow, run_id: str) -> str:
    """Stop MLflow while OUTAGE_STAGE runs, start it again once that try has ended."""
    wait_until(lambda: airflow.task_states(run_id).get(OUTAGE_STAGE) == "running", 900, f"{OUTAGE_STAGE} running")
    stop = st.cli("stop", "mlflow")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    t0 = time.monotonic()
    try:
        wait_until(lambda: airflow.task_states(run_id).get(OUTAGE_STAGE) != "running", 600,
                   f"{OUTAGE_STAGE}'s try to end while MLflow is down")
    finally:
        start = st.cli("start", "mlflow")
        assert start.returncode == 0, start.stdout + start.stderr
    after = airflow.task_states(run_id).get(OUTAGE_STAGE)
    return f"mlflow down {time.monotonic() - t0:.0f}s, {OUTAGE_STAGE} -> {after}"


def night(st: Stack, airflow, day: dt.date, event: str) -> Row:
    reason = closed_reason(day)
    if reason:
        event = reason
    elif "late" not in event and event != "never":
        write_raw(st.env, day)
    row = Row(date=day, event=event or "normal", run_id=airflow.trigger(day, tag="soak"))
    notes = []
    if "late" in event:
        wait_until(lambda: airflow.task_states(row.run_id).get(contract.WAIT_FOR_RAW)
                   in ("deferred", "up_for_reschedule"), 600, f"wait_for_raw waiting for {day}")
        writer = threading.Thread(target=write_raw, args=(st.env, day))
        writer.start()
        notes.append("RAW written after wait_for_raw deferred")
    if "outage" in event:
        notes.append(outage_during_stage(st, airflow, row.run_id))
    if "late" in event:
        writer.join()
    airflow.wait({str(day): row.run_id}, timeout=3600)
    row.note = "; ".join(notes)
    return row


def finish(row: Row, airflow) -> Row:
    """Read back what the run left: task states, MLflow parent runs, champion, snapshots, memory."""
    row.state = airflow.run_state(row.run_id, row.dag_id)
    row.tasks = airflow.task_states(row.run_id, row.dag_id)
    row.parents = parent_runs(row.dag_id, row.run_id)
    row.champion, row.champion_through = champion()
    row.snapshots = sum(snapshot_counts().values())
    row.memory = memory()
    return row


def print_table(rows: list[Row]) -> str:
    head = (f"{'date':<11}{'day':<4}{'event':<34}{'dag':<20}{'state':<9}{'stages':<7}{'alerts':<7}"
            f"{'champion':<20}{'snaps':<6}note")
    lines = [head, "-" * len(head)]
    for r in rows:
        champ = f"v{r.champion} ({r.champion_through})" if r.champion != "-" else "-"
        lines.append(f"{r.date!s:<11}{r.date:%a} {r.event[:33]:<34}{r.dag_id:<20}{r.state:<9}"
                     f"{r.stages_ok}/{len(contract.STAGES):<5}{r.alerts:<7}{champ:<20}{r.snapshots:<6}{r.note}")
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    return table


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
            rows: list[Row] = []
            for day in nights:
                rows.append(finish(night(st, airflow, day, events.get(day, "")), airflow))
                print(f"soak: {day} {rows[-1].event}: {rows[-1].state}, stages {rows[-1].stages_ok}/"
                      f"{len(contract.STAGES)}, champion v{rows[-1].champion} ({rows[-1].champion_through}), "
                      f"{rows[-1].snapshots} snapshots, {time.monotonic() - started:.0f}s in", flush=True)
            # A rerun of a date that already succeeded: the same DAG run, cleared.
            original = next(r for r in rows if r.date == rerun_date)
            airflow.clear(original.run_id)
            wait_until(lambda: airflow.run_state(original.run_id) not in ("success",), 120, "the clear to start")
            airflow.wait({f"rerun {rerun_date}": original.run_id}, timeout=3600)
            rows.append(finish(Row(date=rerun_date, event="rerun (clear via REST)", run_id=original.run_id),
                               airflow))
            # A backfill of an old date, after newer dates trained the champion.
            write_raw(st.env, backfill_date)
            backfill = airflow.backfill(backfill_date, backfill_date, reprocess="none")
            airflow.wait_backfill(backfill["id"], timeout=3600)
            run_id = airflow.backfill_runs(backfill)[backfill_date.isoformat()]
            rows.append(finish(Row(date=backfill_date, event="backfill of an old date", run_id=run_id), airflow))
            # Runs the scheduler started by itself (seen: a backfill makes Airflow 3.3.2 create the
            # latest tick's scheduled run, for today's date with no RAW) are judged by the same rules.
            ours = {r.run_id for r in rows}
            for run in airflow.runs_of(contract.ML_PIPELINE):
                if run["dag_run_id"] not in ours and run.get("run_type") == "scheduled":
                    airflow.wait({"scheduled": run["dag_run_id"]}, timeout=1800)
                    rows.append(finish(Row(date=airflow.trade_date_of(run["logical_date"]),
                                           event="started by the scheduler itself", run_id=run["dag_run_id"]),
                                       airflow))
            # Any retraining a drift alert started belongs to the table too.
            for run in airflow.runs_of(contract.ML_RETRAINING):
                airflow.wait({"retraining": run["dag_run_id"]}, timeout=1800, dag_id=contract.ML_RETRAINING)
                rows.append(finish(Row(date=airflow.trade_date_of(run["logical_date"]), event="drift retraining",
                                       run_id=run["dag_run_id"], dag_id=contract.ML_RETRAINING), airflow))
            # One maintenance run.
            before = snapshot_counts()
            airflow.unpause(contract.ICEBERG_MAINTENANCE)
            maint = airflow.trigger(nights[-1], dag_id=contract.ICEBERG_MAINTENANCE, tag="soak")
            airflow.wait({"maintenance": maint}, timeout=1800, dag_id=contract.ICEBERG_MAINTENANCE)
            rows.append(finish(Row(date=nights[-1], event="iceberg_maintenance", run_id=maint,
                                   dag_id=contract.ICEBERG_MAINTENANCE), airflow))
            after = snapshot_counts()
            refs = {name: {ref.snapshot_id for key, ref in t.metadata.refs.items() if key != "main"}
                    for name, t in iceberg_tables().items()}
            alerts = [a.get("payload") for a in read_alerts(alerts_file(st.env))]
            for r in rows:
                r.alerts = sum(isinstance(a, dict) and a.get("run") == r.run_id for a in alerts)
            good = sorted({r.date for r in rows if r.dag_id == contract.ML_PIPELINE and r.state == "success"
                           and r.stages_ok == len(contract.STAGES)})
            soaked = fingerprint()
            clean = clean_reprocessing(good, "soak_clean")
            table = print_table(rows)
            yield {"rows": rows, "alerts": alerts, "before": before, "after": after, "refs": refs,
                   "soaked": soaked, "clean": clean, "good": good, "table": table, "events": events,
                   "seconds": time.monotonic() - started}
        finally:
            os.environ.clear()
            os.environ.update(saved)


def test_every_failure_paged_once_and_nothing_else_paged(soak):
    rows = soak["rows"]
    for r in rows:
        expected = 1 if r.state == "failed" else 0
        assert r.alerts == expected, (r.date, r.event, r.state, r.alerts)
    failed = [r for r in rows if r.state == "failed" and r.event != "started by the scheduler itself"]
    assert [r.date for r in failed] == [d for d, e in soak["events"].items() if e == "never"], soak["table"]
    attributed = {r.run_id for r in rows}
    stray = [a for a in soak["alerts"] if not (isinstance(a, dict) and a.get("run") in attributed)]
    assert stray == [], stray


def test_no_green_run_with_a_stage_that_did_not_succeed(soak):
    for r in soak["rows"]:
        if r.dag_id != contract.ML_PIPELINE or r.state != "success":
            continue
        stage_states = {s: r.tasks.get(s) for s in contract.STAGES}
        if closed_reason(r.date):
            assert set(stage_states.values()) == {"skipped"}, (r.date, stage_states)
        else:
            assert set(stage_states.values()) == {"success"}, (r.date, stage_states)


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
    for r in soak["rows"]:
        if r.dag_id != contract.ML_PIPELINE:
            continue
        expected = 0 if closed_reason(r.date) else 1
        assert r.parents == expected, (r.date, r.event, r.parents)


def test_final_tables_equal_a_clean_reprocessing(soak):
    soaked, clean = soak["soaked"], soak["clean"]
    assert {d for _, d in clean} == {str(d) for d in soak["good"]}
    assert soaked == clean, sorted(set(soaked.items()) ^ set(clean.items()))


def test_snapshot_counts_are_bounded_after_maintenance(soak):
    for name, n in soak["after"].items():
        assert n <= RETAIN_LAST + len(soak["refs"][name]), (name, soak["before"][name], n)
    assert sum(soak["after"].values()) < sum(soak["before"].values())


def test_services_memory_is_flat(soak):
    trading = [r for r in soak["rows"] if r.memory and r.stages_ok == len(contract.STAGES)]
    first, last = trading[min(1, len(trading) - 1)].memory, soak["rows"][-1].memory  # after one warm-up night
    grown = {name: (round(first[name]), round(last[name])) for name in first
             if name in last and last[name] > MEMORY_RATIO * first[name] + 20}
    print(f"soak: {VARIANT} variant took {soak['seconds']:.0f}s; PSS MB first {first} last {last}")
    assert grown == {}, grown
