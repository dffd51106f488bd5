"""A failed night is red and pages once; a closed day is green and pages nobody; no retry storms.

No services: the task functions run with the context Airflow hands them (a stand-in task instance
answering task states and XCom), MLflow is a dead port, spark-submit is a real executable that exits
with the code a stage would, and the KRX calendar is the library's, on fixed 2026 dates.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from jobs import contract
from jobs.trade_calendar import closed_reason, is_trading_day
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.deadline import DailyRunDeadline, reference_time
from lakehouse_mlops.notify import AlreadyAlerted
from lakehouse_mlops.spark_stage import spark_stage
from lakehouse_mlops.tasks import _requested_trade_date

REPO = Path(__file__).resolve().parents[2]
KST = ZoneInfo("Asia/Seoul")


@pytest.fixture(scope="module")
def dags():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags


# ----------------------------------------------------------------------------- the KRX calendar

@pytest.mark.parametrize(("day", "reason"), [
    ("2026-06-03", "Local Election Day"),
    ("2026-07-17", "Constitution Day"),
    ("2026-09-24", "The day preceding Chuseok"),
    ("2026-09-25", "Chuseok"),
    ("2026-10-09", "Hangul Day"),
    ("2026-12-31", "End of Year Holiday"),
    ("2026-11-28", "Saturday"),
    ("2026-11-29", "Sunday"),
])
def test_krx_closed_days_of_2026_have_their_names(day, reason):
    assert closed_reason(dt.date.fromisoformat(day)) == reason
    assert not is_trading_day(dt.date.fromisoformat(day))


@pytest.mark.parametrize("day", ["2026-06-02", "2026-07-16", "2026-09-23", "2026-09-28", "2026-11-27"])
def test_the_days_around_them_are_trading_days(day):
    assert closed_reason(dt.date.fromisoformat(day)) is None


@pytest.mark.parametrize(("day", "due_next"), [
    ("2026-09-22", "2026-09-23"),  # Tuesday -> Wednesday
    ("2026-09-23", "2026-09-28"),  # Wednesday -> Monday, over Chuseok (24th, 25th) and the weekend
    ("2026-11-27", "2026-11-30"),  # Friday -> Monday
    ("2026-12-30", "2027-01-04"),  # over the end-of-year holiday and New Year into the next year
])
def test_the_next_trading_day_is_the_date_the_deadline_alert_waits_for(day, due_next):
    """Pushed as lakehouse_next_trade_date_timestamp_seconds; Prometheus's deadline rule compares it."""
    from jobs.trade_calendar import next_trading_day

    assert next_trading_day(dt.date.fromisoformat(day)) == dt.date.fromisoformat(due_next)


def context_for(dag, *, logical_date=None, params=None, events=None, ti=None):
    dag_run = SimpleNamespace(dag_id=dag.dag_id, run_id="scheduled__x", logical_date=logical_date,
                              run_after=logical_date)
    return {"dag_run": dag_run, "params": params or {}, "triggering_asset_events": events or {},
            "ti": ti, "dag": dag}


def test_a_holiday_run_skips_with_the_holidays_name(dags):
    """The 02:00 run on 26 Sep processes 25 Sep, Chuseok: skipped before MLflow is touched."""
    dag = dags[contract.ML_PIPELINE]
    start = dag.get_task(contract.START_TRACKING).python_callable
    with pytest.raises(AirflowSkipException, match=r"2026-09-25 .*\(Chuseok\)"):
        start(**context_for(dag, logical_date=dt.datetime(2026, 9, 26, 2, tzinfo=KST)))
    with pytest.raises(AirflowSkipException, match=r"Local Election Day"):
        start(**context_for(dag, params={"trade_date": "2026-06-03"}))


def test_the_deadline_ignores_closed_days_but_not_trading_days():
    logical = dt.datetime(2026, 9, 26, 2, tzinfo=KST)  # the run for Chuseok
    now = logical
    assert reference_time("scheduled", logical, 240, now, dt.date(2026, 9, 25)) is None
    assert reference_time("scheduled", logical, 240, now, dt.date(2026, 9, 23)) == logical
    # As the scheduler evaluates it, from the run it just created.
    for conf, expected in (({}, None), ({"trade_date": "2026-11-27"}, logical)):
        run = SimpleNamespace(run_type="scheduled", logical_date=logical.astimezone(dt.UTC), conf=conf)
        due = DailyRunDeadline(minutes=240)._evaluate_with(
            session=SimpleNamespace(scalar=lambda query, run=run: run), dag_id="ml_pipeline", run_id="r")
        assert due == expected


# ------------------------------------------------------------------- deterministic: fail at once

@pytest.mark.parametrize("events", [
    None, {"feature_drift_alert": [SimpleNamespace(extra={"trade_date": "27/11/2026"})]}])
def test_a_bad_trade_date_fails_at_once_from_the_form_or_an_asset_event(dags, events):
    dag = dags[contract.ML_RETRAINING]
    start = dag.get_task(contract.START_TRACKING).python_callable
    params = None if events else {"trade_date": "2026-13-01"}
    with pytest.raises(AirflowFailException, match="YYYY-MM-DD"):
        start(**context_for(dag, params=params, events=events))


def test_queued_drift_events_retrain_on_the_latest_date():
    def event(day):
        return SimpleNamespace(extra={"trade_date": day, "drift_share": 0.5})

    events = {"feature_drift_alert": [event("2026-11-25"), event("2026-11-27"), event("2026-11-26")]}
    assert _requested_trade_date({"triggering_asset_events": events}) == "2026-11-27"
    # A bad one among good ones does not hide the latest good date; alone, it fails the run.
    events["feature_drift_alert"].append(event("junk"))
    assert _requested_trade_date({"triggering_asset_events": events}) == "2026-11-27"
    assert _requested_trade_date({"triggering_asset_events": {"a": [event("junk")]}}) == "junk"
    # The trigger form's date still wins.
    assert _requested_trade_date({"params": {"trade_date": "2026-11-20"},
                                  "triggering_asset_events": events}) == "2026-11-20"


def fake_spark_submit(tmp_path: Path, code: int) -> str:
    exe = tmp_path / f"spark-submit-{code}"
    exe.write_text(f"#!/bin/sh\necho 'jobs.quality.rules.QualityGateFailed: bronze gate failed' >&2\nexit {code}\n")
    exe.chmod(0o755)
    return str(exe)


@pytest.mark.parametrize(("code", "retried"), [(contract.EXIT_DETERMINISTIC, False),
                                               (contract.EXIT_DEPENDENCY_UNAVAILABLE, True), (1, True)])
def test_a_stage_exit_code_decides_whether_airflow_retries(monkeypatch, tmp_path, code, retried):
    monkeypatch.setenv("SPARK_SUBMIT_BINARY", fake_spark_submit(tmp_path, code))
    op = spark_stage(contract.BRONZE_TO_SILVER, PipelineConfig.from_env())
    op.application_args = ["--trade-date", "2026-11-24"]
    with pytest.raises(AirflowException) as raised:
        op.execute({})
    assert isinstance(raised.value, AirflowFailException) is not retried
    assert f"Error code is: {code}" in str(raised.value)


# -------------------------------------------------------------- finish_tracking decides the run

class StandInTI:
    """What finish_tracking asks of its task instance: other tasks' states and start_tracking's XCom."""

    def __init__(self, states: dict[str, str], started: dict | None):
        self.states, self.started = states, started

    def get_task_states(self, dag_id, task_ids, run_ids):
        return {run_ids[0]: {t: self.states.get(t, "success") for t in task_ids}}

    def xcom_pull(self, task_ids):
        assert task_ids == contract.START_TRACKING
        return self.started


def finish(dags, states, started):
    dag = dags[contract.ML_PIPELINE]
    return dag.get_task(contract.FINISH_TRACKING).python_callable(
        **context_for(dag, ti=StandInTI(states, started)))


def test_a_closed_day_finishes_green(dags):
    with pytest.raises(AirflowSkipException):
        finish(dags, {contract.START_TRACKING: "skipped"}, None)


@pytest.mark.parametrize("state", ["failed", "upstream_failed"])
def test_a_run_whose_tracking_never_started_fails_without_a_second_alert(dags, state):
    """With MLflow down at 02:00: start_tracking failed (and alerted), everything after it with it."""
    with pytest.raises(AlreadyAlerted, match="tracking never started"):
        finish(dags, {contract.START_TRACKING: state, contract.WAIT_FOR_RAW: "upstream_failed"}, None)


def test_a_failed_task_fails_the_run_even_when_mlflow_cannot_record_it(dags, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(AlreadyAlerted, match="did not succeed: drift_gate"):
        finish(dags, {contract.DRIFT_GATE: "failed"}, {"trade_date": "2026-11-27", "parent_run_id": "abc"})


def test_finish_tracking_is_the_only_leaf(dags):
    """Airflow judges a run by its leaves (a skipped one counts as success): only this one is left.

    (iceberg_maintenance is one task, which is its own leaf and never skips.)"""
    for dag in (dags[contract.ML_PIPELINE], dags[contract.ML_RETRAINING]):
        leaves = [t.task_id for t in dag.tasks if not t.downstream_task_ids]
        assert leaves == [contract.FINISH_TRACKING], dag.dag_id


def test_the_parent_runs_headline_names_the_task_that_failed_first():
    from lakehouse_mlops.parent_run import health_summary

    stages = list(contract.STAGES)
    states = {contract.START_TRACKING: "success", contract.WAIT_FOR_RAW: "failed",
              **{s: "upstream_failed" for s in stages}, contract.DRIFT_GATE: "upstream_failed"}
    assert health_summary(states, stages).startswith(
        f"0/{len(stages)} stages succeeded; wait_for_raw failed, {stages[0]} upstream_failed, ")
    green = {**{s: "success" for s in stages}, contract.DRIFT_GATE: "failed"}
    assert health_summary(green, stages) == f"{len(stages)}/{len(stages)} stages succeeded; drift_gate failed"
    assert health_summary({s: "success" for s in stages}, stages) == f"{len(stages)}/{len(stages)} stages succeeded"
