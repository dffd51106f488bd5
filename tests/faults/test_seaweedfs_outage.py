"""SeaweedFS (MLflow's artifact store, and the warehouse on the hive catalog) unreachable.

model_training fails in bounded time with a clear error, its run ends FAILED, no model version is
registered; once SeaweedFS is back the retry registers exactly one version. Two ways to meet the
outage: the stage's own check when it starts (try 1), and the work failing mid-run (try 2, checks
switched off with DEPENDENCY_PREFLIGHT=off and MLflow's HTTP retry settings left to the code's
defaults): an artifact upload through MLflow's proxy, or on S3 tables the features read.

On the S3 warehouse SeaweedFS also goes away in the middle of a table write: raw_to_bronze fails
cleanly, Bronze keeps its previous snapshot, and the retry writes the date.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass

import numpy as np
import pytest
from faults_support import (
    BOUND_SECONDS,
    CATALOG,
    MEASURED,
    MLFLOW_HTTP,
    Finished,
    Storage,
    children_of,
    measured,
    new_parent_run,
    rolling_writes,
    run_stage,
    stage_env,
    start_stage,
)

TRAIN_DATE = dt.date(2026, 11, 20)
STAGE = "model_training"


@dataclass
class Outage:
    parent_run_id: str
    at_start: Finished            # SeaweedFS down when the stage starts (try 1)
    mid_run: Finished             # SeaweedFS down when the stage uploads its figures (try 2)
    versions_during: list
    retry: Finished               # SeaweedFS back (try 3)


def write_features(settings) -> int:
    """A small features table (three trade dates) written with pyiceberg: what training reads."""
    import pyarrow as pa

    from jobs.contract import FEATURES
    from jobs.schema import FEATURE_COLUMNS, LABEL

    rng = np.random.default_rng(7)
    days = [TRAIN_DATE - dt.timedelta(days=d) for d in (2, 1, 0)]
    bars, contracts = 60, 12
    n = len(days) * bars * contracts
    trade_date = np.repeat(days, bars * contracts)
    minute = np.tile(np.repeat(np.arange(bars), contracts), len(days))
    bar_ts = [dt.datetime.combine(d, dt.time(0, 0), dt.UTC) + dt.timedelta(minutes=int(m))
              for d, m in zip(trade_date, minute, strict=False)]
    features = {c: rng.normal(size=n) for c in FEATURE_COLUMNS}
    label = (features["order_flow_imbalance"] + 0.5 * rng.normal(size=n) > 0).astype("int32")
    table = pa.table({
        "trade_date": pa.array(trade_date, pa.date32()),
        "contract_id": pa.array([f"C{i % contracts:02d}" for i in range(n)]),
        "bar_ts": pa.array(bar_ts, pa.timestamp("us", tz="UTC")),
        **{c: pa.array(v) for c, v in features.items()},
        LABEL: pa.array(label),
    })
    catalog = settings.pyiceberg_catalog()
    catalog.create_namespace_if_not_exists(settings.namespace)
    catalog.create_table(f"{settings.namespace}.{FEATURES}", schema=table.schema).append(table)
    return n


def without_mlflow_http_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in MLFLOW_HTTP}


@pytest.fixture(scope="session")
def seaweedfs_outage(stack, settings, client, experiment_id) -> Outage:
    from scripts.devstack.health import port_open

    write_features(settings)
    parent, airflow_run = new_parent_run(client, experiment_id, TRAIN_DATE)
    run = dict(parent_run_id=parent, airflow_run_id=airflow_run)
    stopped = stack.cli("stop", "seaweedfs")
    assert stopped.returncode == 0, stopped.stderr
    assert not port_open(int(stack.env["SEAWEEDFS_S3_PORT"])), "S3 still listening after `stack.py stop seaweedfs`"
    try:
        at_start = run_stage(stack, STAGE, TRAIN_DATE, try_number=1, **run)
        mid_env = without_mlflow_http_settings(stage_env(stack, DEPENDENCY_PREFLIGHT="off"))
        mid_run = run_stage(stack, STAGE, TRAIN_DATE, env=mid_env, try_number=2, **run)
        versions_during = client.search_model_versions(f"name = '{settings.model_name}'")
    finally:
        started = stack.cli("start", "seaweedfs")
        assert started.returncode == 0, started.stdout + started.stderr
    retry = run_stage(stack, STAGE, TRAIN_DATE, try_number=3, **run)
    measured("model_training, SeaweedFS stopped (checked at start)", at_start)
    measured("model_training, SeaweedFS stopped (upload fails mid-run)", mid_run)
    measured("model_training retry, SeaweedFS back", retry)
    return Outage(parent, at_start, mid_run, versions_during, retry)


def _tries(client, experiment_id, parent_run_id) -> dict[str, object]:
    return {r.data.tags["airflow.try_number"]: r for r in children_of(client, experiment_id, parent_run_id)}


def test_seaweedfs_down_at_start_fails_fast_and_the_run_says_why(seaweedfs_outage, stack, client, experiment_id):
    result = seaweedfs_outage.at_start
    assert result.returncode == 75, result.output[-3000:]
    assert result.seconds < BOUND_SECONDS, f"took {result.seconds:.1f} s"
    expected = f"S3 endpoint {stack.env['MLFLOW_S3_ENDPOINT_URL']} unreachable after 4 attempts over"
    assert expected in result.output, result.output[-3000:]
    assert "Running Spark version" not in result.output, "Spark was started although S3 was down"
    run = _tries(client, experiment_id, seaweedfs_outage.parent_run_id)["1"]
    assert run.info.status == "FAILED"
    assert run.data.tags["error.type"] == "DependencyUnavailable"
    assert expected in run.data.tags["error"] and "ConnectionRefusedError" in run.data.tags["error"]


def test_seaweedfs_down_during_artifact_upload_fails_in_bounded_time(seaweedfs_outage, stack, client, experiment_id):
    result = seaweedfs_outage.mid_run
    assert result.returncode == 75, result.output[-3000:]
    assert "Running Spark version" in result.output  # it got past the checks: the outage hit the work
    run = _tries(client, experiment_id, seaweedfs_outage.parent_run_id)["2"]
    assert run.info.status == "FAILED"
    error = run.data.tags["error"]
    unreachable = f"DependencyUnavailable: S3 endpoint {stack.env['MLFLOW_S3_ENDPOINT_URL']} unreachable"
    if CATALOG == "hive":  # the tables live on SeaweedFS too: reading the features is what fails
        assert error.startswith(f"{unreachable} (ConnectionRefusedError); the stage failed with Py4JJavaError"), error
        assert "SdkClientException" in error
        assert "auc" not in client.get_run(run.info.run_id).data.metrics  # it never trained
        return
    assert error.startswith(f"{unreachable} (ConnectionRefusedError); the stage failed with MlflowException"), error
    assert "mlflow-artifacts" in error
    # From the last metric logged before the first upload to the run's end: the bounded retries.
    logged = max(m.timestamp for m in client.get_metric_history(run.info.run_id, "auc"))
    upload_seconds = (run.info.end_time - logged) / 1000
    MEASURED.append(f"model_training mid-run: failing artifact upload to the end of the run: {upload_seconds:.1f} s")
    assert upload_seconds < BOUND_SECONDS, f"the failing upload took {upload_seconds:.1f} s"


def test_no_model_version_is_registered_while_seaweedfs_is_down(seaweedfs_outage):
    assert seaweedfs_outage.versions_during == []


def test_after_seaweedfs_is_back_the_retry_registers_exactly_one_version(seaweedfs_outage, settings, client,
                                                                         experiment_id):
    assert seaweedfs_outage.retry.returncode == 0, seaweedfs_outage.retry.output[-3000:]
    tries = _tries(client, experiment_id, seaweedfs_outage.parent_run_id)
    assert {k: r.info.status for k, r in tries.items()} == {"1": "FAILED", "2": "FAILED", "3": "FINISHED"}
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert [(v.status, v.run_id) for v in versions] == [("READY", tries["3"].info.run_id)]
    assert tries["3"].data.tags["model.version"] == versions[0].version


# ------------------------------------------------------------------ SeaweedFS gone during a table write

STAGE_WRITE = "raw_to_bronze"
WRITE_DATE = dt.date(2026, 11, 26)
WRITE_TICKS = 500_000
hive_only = pytest.mark.skipif(CATALOG != "hive", reason="on the jdbc catalog the tables live in a local folder")


@dataclass
class WriteOutage:
    parent_run_id: str
    snapshot_before: int
    rows_before: dict[str, int]
    stop_seconds: float           # `stack.py stop seaweedfs`, from the caught write
    exit_seconds: float           # from SeaweedFS gone to the stage's exit
    returncode: int
    output: str
    snapshot_after: int           # SeaweedFS back: what a reader sees
    rows_after: dict[str, int]
    retry: Finished


def _rows_by_date(iceberg) -> dict[str, int]:
    counts = iceberg.scan(selected_fields=("trade_date",)).to_arrow()["trade_date"].value_counts()
    return {str(c["values"]): c["counts"] for c in counts.to_pylist()}


@pytest.fixture(scope="session")
def write_outage(stack, settings, client, experiment_id, raw_small) -> WriteOutage:
    """Stop SeaweedFS once raw_to_bronze's Bronze write has data files but no commit; start it; retry."""
    from jobs.contract import BRONZE
    from jobs.synthetic.raw_ticks import main as generate

    bronze = f"{settings.namespace}.{BRONZE}"
    if not settings.pyiceberg_catalog().table_exists(bronze):  # a committed snapshot to keep
        assert run_stage(stack, STAGE_WRITE, raw_small).returncode == 0
    generate(["--dates", WRITE_DATE.isoformat(), "--ticks", str(WRITE_TICKS), "--out", stack.env["RAW_TICKS_PATH"]])
    rolling_writes(stack, settings.table(BRONZE))
    iceberg = settings.pyiceberg_catalog().load_table(bronze)
    snapshot_before, rows_before = iceberg.current_snapshot().snapshot_id, _rows_by_date(iceberg)
    storage = Storage.of(stack.env, iceberg.location())

    parent, airflow_run = new_parent_run(client, experiment_id, WRITE_DATE)
    run = dict(parent_run_id=parent, airflow_run_id=airflow_run)
    log = stack.home.parent / f"{STAGE_WRITE}-s3-outage.log"
    proc = start_stage(stack, STAGE_WRITE, WRITE_DATE, log, try_number=1, **run)
    try:
        storage.wait_for_uncommitted_write(proc, log, STAGE_WRITE)
        t0 = time.monotonic()
        stopped = stack.cli("stop", "seaweedfs")
        assert stopped.returncode == 0, stopped.stderr
        stop_seconds = time.monotonic() - t0
        try:
            proc.wait(timeout=600)
        finally:
            exit_seconds = time.monotonic() - t0 - stop_seconds
            started = stack.cli("start", "seaweedfs")
            assert started.returncode == 0, started.stdout + started.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    after = settings.pyiceberg_catalog().load_table(bronze)
    snapshot_after, rows_after = after.current_snapshot().snapshot_id, _rows_by_date(after)
    retry = run_stage(stack, STAGE_WRITE, WRITE_DATE, try_number=2, **run)
    MEASURED.append(f"raw_to_bronze {WRITE_TICKS:,} ticks, SeaweedFS stopped mid-write: stop {stop_seconds:.1f} s, "
                    f"exit {proc.returncode} {exit_seconds:.1f} s later")
    measured("raw_to_bronze retry, SeaweedFS back", retry)
    return WriteOutage(parent, snapshot_before, rows_before, stop_seconds, exit_seconds, proc.returncode,
                       log.read_text(errors="replace"), snapshot_after, rows_after, retry)


@hive_only
def test_a_write_that_loses_seaweedfs_fails_cleanly_in_bounded_time(write_outage, stack, client, experiment_id):
    assert write_outage.returncode == 75, write_outage.output[-4000:]
    assert write_outage.exit_seconds < 180, f"took {write_outage.exit_seconds:.0f} s after SeaweedFS went"
    run = _tries(client, experiment_id, write_outage.parent_run_id)["1"]
    assert run.info.status == "FAILED"
    error = run.data.tags["error"]
    assert error.startswith(f"DependencyUnavailable: S3 endpoint {stack.env['MLFLOW_S3_ENDPOINT_URL']} unreachable "
                            "(ConnectionRefusedError); the stage failed with Py4JJavaError"), error[:600]


@hive_only
def test_the_previous_bronze_snapshot_stays_current_and_readable(write_outage):
    assert write_outage.snapshot_after == write_outage.snapshot_before
    assert write_outage.rows_after == write_outage.rows_before
    assert WRITE_DATE.isoformat() not in write_outage.rows_after


@hive_only
def test_the_retry_after_seaweedfs_is_back_writes_the_date(write_outage, settings, client, experiment_id):
    from jobs.contract import BRONZE

    assert write_outage.retry.returncode == 0, write_outage.retry.output[-3000:]
    iceberg = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{BRONZE}")
    assert iceberg.current_snapshot().parent_snapshot_id == write_outage.snapshot_before
    assert _rows_by_date(iceberg) == {**write_outage.rows_before, WRITE_DATE.isoformat(): WRITE_TICKS}
    tries = _tries(client, experiment_id, write_outage.parent_run_id)
    assert {k: r.info.status for k, r in tries.items()} == {"1": "FAILED", "2": "FINISHED"}
