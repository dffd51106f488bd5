"""DAG integrity, in the spirit of the Astronomer Airflow 3 template, plus pipeline-specific checks."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import CronTriggerTimetable

from jobs.contract import DRIFT_GATE, FINISH_TRACKING, PUBLISH_REPORT, STAGES, START_TRACKING, WAIT_FOR_RAW

REPO = Path(__file__).resolve().parents[2]
EXPECTED_ORDER = [START_TRACKING, WAIT_FOR_RAW, *STAGES, DRIFT_GATE, PUBLISH_REPORT, FINISH_TRACKING]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["ml_pipeline"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert "ml_pipeline" in dagbag.dags


def test_every_dag_has_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            if task.task_id == "wait_for_raw":  # waits up to RAW_DELIVERY_TIMEOUT itself; a retry would re-wait
                assert task.retries == 0
                continue
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"


def test_retries_back_off_exponentially(dag):
    for task in dag.tasks:
        assert task.retry_exponential_backoff and task.retry_exponential_backoff > 1
        assert task.max_retry_delay is not None


def test_chain_order(dag):
    order = [t.task_id for t in dag.topological_sort()]
    assert order == EXPECTED_ORDER
    for upstream, downstream in zip(EXPECTED_ORDER, EXPECTED_ORDER[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}


def test_schedule_is_02_00_seoul_without_catchup(dag):
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable.expression == "0 2 * * *"
    assert str(dag.timetable.timezone) in ("Asia/Seoul", "Timezone('Asia/Seoul')")
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.doc_md and "RAW" in dag.doc_md


# The stage scripts move to jobs/stages/ on the jobs branch; until both are merged they are not there.
# strict: once jobs/stages/ exists the condition is false and the test runs as always.
@pytest.mark.xfail(not (REPO / "jobs" / "stages").is_dir(), reason="jobs/stages/ not merged yet", strict=True)
def test_stages_are_spark_submit_tasks_running_their_job(dag):
    for stage in STAGES:
        task = dag.get_task(stage)
        assert isinstance(task, SparkSubmitOperator), type(task)
        assert task.application == str(REPO / "jobs" / "stages" / f"{stage}.py")
        assert Path(task.application).is_file()
        args = " ".join(task.application_args)
        for flag in ("--trade-date", "--parent-run-id", "--dag-id", "--run-id", "--task-id", "--try-number"):
            assert flag in args


def test_finish_tracking_runs_whatever_happened_upstream(dag):
    assert str(dag.get_task("finish_tracking").trigger_rule) in ("all_done", "TriggerRule.ALL_DONE")


def test_trade_date_param_is_offered_in_the_trigger_form(dag):
    assert "trade_date" in dag.params


def test_parsing_is_fast_and_needs_no_services():
    """Top-level DAG code must not call MLflow/Spark (MLFLOW_TRACKING_URI points at a dead port)."""
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    elapsed = time.perf_counter() - started
    assert bag.import_errors == {}
    # Airflow's default dagbag_import_timeout is 30 s; a thin DAG file parses in well under 10 s.
    assert elapsed < 10, f"parsing took {elapsed:.1f}s"


def test_every_task_alerts_on_failure(dagbag):
    """Python tasks too: a failed start_tracking, drift_gate or report must page someone."""
    from lakehouse_mlops.notify import FailureNotifier

    tasks = [(dag_id, t) for dag_id, dag in dagbag.dags.items() for t in dag.tasks]
    assert {t.task_id for _, t in tasks} >= {"start_tracking", "drift_gate", "publish_report", *STAGES}
    for dag_id, task in tasks:
        stage = f"{dag_id}.{task.task_id}"
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(isinstance(cb, FailureNotifier) for cb in callbacks), stage


def test_drift_gate_emits_the_asset_that_schedules_retraining(dagbag, dag):
    from lakehouse_mlops.tasks import FEATURE_DRIFT_ALERT

    gate = dag.get_task("drift_gate")
    assert FEATURE_DRIFT_ALERT in gate.outlets
    retraining = dagbag.dags["ml_retraining"]
    assert list(retraining.timetable.asset_condition.objects) == [FEATURE_DRIFT_ALERT]
    order = [t.task_id for t in retraining.topological_sort()]
    assert order == ["start_tracking", "model_training", "model_deployment", "publish_report", "finish_tracking"]
    training = retraining.get_task("model_training")
    assert training.env_vars["TRAINING_LOOKBACK_DAYS"] == "5"
    assert isinstance(training, SparkSubmitOperator)
