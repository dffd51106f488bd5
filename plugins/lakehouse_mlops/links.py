"""From a task instance in the Airflow UI, one click to its MLflow run.

The extra link points at a small redirect endpoint served by the api-server (this plugin's
FastAPI app), which looks the run up by its Airflow tags at click time. The link therefore works
for every try and never goes stale, and the MLflow run's ``airflow.url`` tag leads back.
"""
from __future__ import annotations

from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from jobs import contract
from lakehouse_mlops.config import PipelineConfig

REDIRECT_PREFIX = "/lakehouse-mlops"
TRACKED_DAGS = {contract.ML_PIPELINE, contract.ML_RETRAINING}
# Tasks without a run of their own: their link opens the DAG run's parent run.
PARENT_RUN_TASKS = {contract.START_TRACKING, contract.FINISH_TRACKING, contract.DRIFT_GATE}


class MLflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id not in TRACKED_DAGS:
            return ""
        query = urlencode({"dag_id": ti_key.dag_id, "run_id": ti_key.run_id, "task_id": ti_key.task_id,
                           "try_number": ti_key.try_number})
        return f"{REDIRECT_PREFIX}/mlflow-run?{query}"


def mlflow_run_url(cfg: PipelineConfig, dag_id: str, run_id: str, task_id: str,
                   try_number: int | None = None) -> str:
    """URL of the MLflow run for a task instance; the experiment search if it is not there yet."""
    import mlflow

    contract.bounded_mlflow_http()
    client = mlflow.MlflowClient(cfg.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        return cfg.mlflow_ui_url
    if task_id in PARENT_RUN_TASKS:
        filters = [contract.parent_run_filter(dag_id, run_id)]
    else:
        task_runs = " and ".join((contract.tag_equals(contract.TAG_DAG_ID, dag_id),
                                  contract.tag_equals(contract.TAG_RUN_ID, run_id),
                                  contract.tag_equals(contract.TAG_TASK_ID, task_id)))
        filters = [task_runs]
        if try_number:
            filters.insert(0, f"{task_runs} and {contract.tag_equals(contract.TAG_TRY_NUMBER, try_number)}")
    for flt in filters:
        runs = client.search_runs([exp.experiment_id], filter_string=flt,
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return contract.mlflow_run_url(cfg.mlflow_ui_url, exp.experiment_id, runs[0].info.run_id)
    search = quote(filters[-1])
    return f"{cfg.mlflow_ui_url}/#/experiments/{exp.experiment_id}?searchFilter={search}&{contract.MLFLOW_UI_QUERY}"


def create_app():
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI(title="lakehouse-mlops links")

    @app.get("/mlflow-run")
    def mlflow_run(dag_id: str, run_id: str, task_id: str, try_number: int | None = None):
        url = mlflow_run_url(PipelineConfig.from_env(), dag_id, run_id, task_id, try_number)
        return RedirectResponse(url, status_code=302)

    return app
