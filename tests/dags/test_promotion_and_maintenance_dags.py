"""The champion alias moves in one pool slot; the maintenance DAG runs its job, not a pipeline stage."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronTriggerTimetable

from jobs import contract

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag


@pytest.mark.parametrize("dag_id", [contract.ML_PIPELINE, contract.ML_RETRAINING])
def test_promotion_runs_in_the_one_slot_pool(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.get_task(contract.MODEL_DEPLOYMENT).pool == contract.PROMOTION_POOL == "model_promotion"
    others = [t.task_id for t in dag.tasks if t.task_id != contract.MODEL_DEPLOYMENT]
    assert all(dag.get_task(t).pool == "default_pool" for t in others)


def test_the_pool_is_created_where_airflow_is_initialised():
    compose = (REPO / "docker-compose-mlops.yml").read_text()
    assert re.search(rf"airflow pools set {contract.PROMOTION_POOL} 1\b", compose)
    assert "PROMOTION_POOL" in (REPO / "scripts" / "devstack" / "cli.py").read_text()


def test_maintenance_dag_runs_the_maintenance_job_weekly(dagbag):
    dag = dagbag.dags[contract.ICEBERG_MAINTENANCE]
    assert isinstance(dag.timetable, CronTriggerTimetable) and not dag.catchup
    assert dag.timetable.expression == "0 4 * * 0"
    (task,) = dag.tasks
    assert task.application.endswith("jobs/ops/iceberg_maintenance.py")
    assert Path(task.application).is_file()
    # No start_tracking upstream: nothing of its XCom may be asked for.
    assert not any("xcom_pull" in arg for arg in task.application_args)
    assert "--trade-date" in task.application_args and task.on_failure_callback
