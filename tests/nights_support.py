"""What a month of nights must keep true, read back from a running stack: shared by the soak
(`make soak`, tests/soak) and its short variant over the e2e session (tests/e2e/test_month_of_nights.py).

The readers (champion, parent runs, snapshots, memory, table fingerprints, a clean reprocessing)
talk to the stack the process environment points at; the checks take what was read and return
the violations, so each test asserts an empty list and prints what broke.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field

from jobs import contract
from jobs.trade_calendar import closed_reason

# What a clean reprocessing compares: the data tables (predictions and drift depend on which
# model was champion when, which a clean run of the same days legitimately decides differently).
DATA_TABLES = (contract.BRONZE, contract.SILVER, contract.QUARANTINE, contract.GOLD, contract.FEATURES)
DATA_STAGES = (contract.RAW_TO_BRONZE, contract.BRONZE_TO_SILVER, contract.SILVER_TO_GOLD,
               contract.FEATURE_ENGINEERING)
# The long-running services whose memory must stay flat (Trino's JVM grows to its -Xmx by design).
SERVICES = ("seaweedfs", "hive-metastore", "mlflow", "airflow-api-server", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer")


@dataclass
class Night:
    """One DAG run as the checks see it."""
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


def snapshot_bound(name: str, retain_last: int, refs: set[int]) -> int:
    """Snapshots a table may keep after one maintenance run: the retained ones, the models' tagged
    ones, and for stage_runs the maintenance try's own facts row, appended after it expired."""
    return retain_last + len(refs) + (1 if name == contract.STAGE_RUNS else 0)


def snapshot_counts() -> dict[str, int]:
    return {name: len(t.metadata.snapshots) for name, t in iceberg_tables().items()}


def tagged_snapshots() -> dict[str, set[int]]:
    """Per table, the snapshots a ref other than main keeps (the models' lineage tags)."""
    return {name: {ref.snapshot_id for key, ref in t.metadata.refs.items() if key != "main"}
            for name, t in iceberg_tables().items()}


def memory() -> dict[str, float]:
    """Anonymous PSS (the heap, shared pages of forked workers divided) in MiB per long-running
    service of the stack in os.environ: what a leak grows, unlike code pages read in on first use."""
    from scripts.devstack.processes import read_pid, smaps_mb

    env = {**os.environ}
    return {name: smaps_mb(pid, "Pss_Anon")[0] for name in SERVICES if (pid := read_pid(env, name))}


def _canonical(value):
    if isinstance(value, float):
        return float(f"{value:.9g}")  # sums of floats may add up in another order
    return value


def fingerprint(namespace: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """(table, trade date) -> (rows, order-independent checksum), processing-time columns left out
    (batch stamps ``*_at`` and the ingestion time a ``future_timestamp`` reject quotes, as the e2e
    rerun checks do)."""
    result = {}
    for name, table in iceberg_tables(namespace).items():
        if name not in DATA_TABLES:
            continue
        for row in table.scan().to_arrow().to_pylist():
            if row.get("reject_reason") == "future_timestamp":  # quotes its batch's ingestion time
                row["reject_detail"] = "<ingestion time>"
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
        spark = spark_session("clean-reprocessing", settings, master="local[2]")
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


def outage_during_stage(stack, airflow, run_id: str, stage: str = contract.BRONZE_TO_SILVER) -> str:
    """Stop MLflow while ``stage`` runs, start it again once that try has ended."""
    wait_until(lambda: airflow.task_states(run_id).get(stage) == "running", 900, f"{stage} running")
    stop = stack.cli("stop", "mlflow")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    t0 = time.monotonic()
    try:
        # The state the try ended in (up_for_retry, or success if it was past its MLflow calls);
        # with a short retry delay the next try may be running again by the time MLflow is back.
        ended = wait_until(lambda: (s := airflow.task_states(run_id).get(stage)) != "running" and s, 600,
                           f"{stage}'s try to end while MLflow is down")
    finally:
        start = stack.cli("start", "mlflow")
        assert start.returncode == 0, start.stdout + start.stderr
    return f"mlflow down {time.monotonic() - t0:.0f}s, {stage} -> {ended}"


def read_back(night: Night, airflow, timeline: bool = True) -> Night:
    """Fill in what the run left: task states and MLflow parent runs, and with ``timeline`` (read
    right after the run) the champion, snapshot count and services' memory at that moment."""
    night.state = airflow.run_state(night.run_id, night.dag_id)
    night.tasks = airflow.task_states(night.run_id, night.dag_id)
    night.parents = parent_runs(night.dag_id, night.run_id)
    if timeline:
        night.champion, night.champion_through = champion()
        night.snapshots = sum(snapshot_counts().values())
        night.memory = memory()
    return night


def print_table(rows: list[Night]) -> str:
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


# ------------------------------------------------------------------------------ the checks


def is_page(alert: dict) -> bool:
    """A page asks someone to act: a failed task or a missed deadline. A drift notice (the pipeline
    retrains by itself) is not one."""
    return isinstance(alert, dict) and ("task" in alert or str(alert.get("title", "")).startswith("Deadline missed"))


def count_pages(nights: list[Night], alerts: list[dict]) -> list[str]:
    """Sets each night's page count; returns the pages no run of ``nights`` explains."""
    pages = [a for a in alerts if is_page(a)]
    for n in nights:
        n.alerts = sum(a.get("run") == n.run_id for a in pages)
    known = {n.run_id for n in nights}
    return [f"{a.get('title')} (run {a.get('run')})" for a in pages if a.get("run") not in known]


def paging_violations(nights: list[Night]) -> list[str]:
    """Every failed run paged exactly once; every other run paged nobody."""
    return [f"{n.dag_id} {n.date} ({n.event}): {n.state} with {n.alerts} pages"
            for n in nights if n.alerts != (1 if n.state == "failed" else 0)]


def green_violations(nights: list[Night]) -> list[str]:
    """A successful ml_pipeline run ran every stage, or skipped every stage on a closed day."""
    broken = []
    for n in nights:
        if n.dag_id != contract.ML_PIPELINE or n.state != "success":
            continue
        states = {s: n.tasks.get(s) for s in contract.STAGES}
        expected = {"skipped"} if closed_reason(n.date) else {"success"}
        if set(states.values()) != expected:
            broken.append(f"{n.date} ({n.event}) green with {states}")
    return broken


def parent_violations(nights: list[Night]) -> list[str]:
    """One MLflow parent run per ml_pipeline run that opened tracking (none on a closed day, where
    start_tracking skips, nor for a run that never started), and never a second one on a rerun."""
    return [f"{n.date} ({n.event}): {n.parents} parent runs, start_tracking {n.tasks.get(contract.START_TRACKING)}"
            for n in nights if n.dag_id == contract.ML_PIPELINE
            and n.parents != (1 if n.tasks.get(contract.START_TRACKING) == "success" else 0)]


def memory_growth(first: dict[str, float], last: dict[str, float], ratio: float, slack_mb: float = 20
                  ) -> dict[str, tuple[int, int]]:
    """Services whose PSS grew by more than ``ratio`` (plus a little slack) from ``first`` to ``last``."""
    return {name: (round(first[name]), round(last[name])) for name in first
            if name in last and last[name] > ratio * first[name] + slack_mb}
