"""The first screens a newcomer opens after the demo, in a real headless Chromium (issue 18, item 6).

Runs on the e2e session's pipeline (tests/e2e/conftest.py: one stack, the dates already run). The
Airflow grid of ml_pipeline logged in as the generated admin, the MLflow experiment page in its
training view and one parent run: each kept as a screenshot in tests/artifacts/, and each fails when
the page shows an error or the runs are missing. Also what makes MLflow open on the pipeline: the
experiment's kind tag and the parent runs' description (health and links).
"""
from __future__ import annotations

import pytest
from browser import Browser, airflow_login, shoot
from e2e_support import DRIFT_DATE, GOOD_DATES, MISSING_DATE
from mlflow import MlflowClient

from jobs import contract
from scripts.devstack.health import airflow_token

OK_DATES = (*GOOD_DATES, DRIFT_DATE)


@pytest.fixture(scope="module")
def mlflow_client(pipeline):
    return MlflowClient(pipeline.stack.env["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="module")
def experiment(pipeline, mlflow_client):
    exp = mlflow_client.get_experiment_by_name(pipeline.stack.env["MLFLOW_EXPERIMENT_NAME"])
    assert exp is not None
    return exp


def parent(mlflow_client, experiment, run_id):
    runs = mlflow_client.search_runs([experiment.experiment_id],
                                     filter_string=contract.parent_run_filter(contract.ML_PIPELINE, run_id))
    assert len(runs) == 1, run_id
    return runs[0]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("browser")) as b:
        yield b


def test_the_experiment_is_a_model_training_experiment(experiment):
    assert experiment.tags.get(contract.TAG_EXPERIMENT_KIND) == contract.EXPERIMENT_KIND_TRAINING


def test_parent_runs_describe_their_health_and_link_airflow_and_the_report(pipeline, mlflow_client, experiment):
    for day in OK_DATES:
        run = parent(mlflow_client, experiment, pipeline.runs[day.isoformat()])
        note = run.data.tags[contract.TAG_NOTE]
        assert run.info.run_name == f"ml_pipeline {day}"
        assert note.startswith(f"**{len(contract.STAGES)}/{len(contract.STAGES)} stages succeeded**"), note
        assert contract.dag_run_url(pipeline.stack.env["AIRFLOW_UI_URL"], contract.ML_PIPELINE,
                                    pipeline.runs[day.isoformat()]) in note
        assert contract.mlflow_artifact_url(pipeline.stack.env["MLFLOW_UI_URL"], experiment.experiment_id,
                                            run.info.run_id, contract.REPORT_HTML_ARTIFACT) in note


def test_the_missing_date_says_what_failed_first(pipeline, mlflow_client, experiment):
    note = parent(mlflow_client, experiment, pipeline.runs["missing"]).data.tags[contract.TAG_NOTE]
    assert note.startswith(f"**0/{len(contract.STAGES)} stages succeeded; {contract.WAIT_FOR_RAW} failed, "
                           f"raw_to_bronze upstream_failed"), note
    assert f"Error: {contract.WAIT_FOR_RAW}: RAW for {MISSING_DATE} not delivered by" in note, note
    assert MISSING_DATE.isoformat() in note


def test_the_airflow_grid_of_ml_pipeline_logged_in_as_the_admin(pipeline, browser):
    env = pipeline.stack.env
    airflow_login(browser, env["AIRFLOW_UI_URL"], airflow_token(env))
    shoot(browser, f"{env['AIRFLOW_UI_URL']}/dags/{contract.ML_PIPELINE}",
          [contract.ML_PIPELINE, "Latest Run", *contract.STAGES, contract.FINISH_TRACKING], "airflow_ml_pipeline_grid")
    # Every run of the session is listed (the grid draws them as bars without their ids).
    runs = shoot(browser, f"{env['AIRFLOW_UI_URL']}/dags/{contract.ML_PIPELINE}/runs",
                 [contract.ML_PIPELINE, *pipeline.runs.values()], "airflow_ml_pipeline_runs")
    assert "failed" in runs.lower() and "success" in runs.lower()


def test_the_mlflow_experiment_page_opens_on_the_training_runs(pipeline, browser, experiment):
    url = contract.mlflow_experiment_url(pipeline.stack.env["MLFLOW_UI_URL"], experiment.experiment_id)
    text = shoot(browser, url, [experiment.name, "Model registry", *(f"ml_pipeline {d}" for d in OK_DATES)],
                 "mlflow_experiment")
    assert "Evaluation runs" not in text, "the experiment page opened on the GenAI view"


def test_one_mlflow_parent_run_shows_its_health_and_stage_runs(pipeline, browser, mlflow_client, experiment):
    day = GOOD_DATES[0]
    run = parent(mlflow_client, experiment, pipeline.runs[day.isoformat()])
    url = contract.mlflow_run_url(pipeline.stack.env["MLFLOW_UI_URL"], experiment.experiment_id, run.info.run_id)
    shoot(browser, url, [f"ml_pipeline {day}", "stages succeeded", "Airflow run", "Morning report", "Child runs",
                         *(f"{stage} {day}" for stage in contract.STAGES)], "mlflow_parent_run")
