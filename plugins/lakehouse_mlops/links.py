"""From a task instance in the Airflow UI, one click to its MLflow run.

The extra link points at a small redirect endpoint served by the api-server (this plugin's
FastAPI app), which looks the run up by its Airflow tags at click time. The link therefore works
for every try and never goes stale, and the MLflow run's ``airflow.url`` tag leads back.
"""
from __future__ import annotations

from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from lakehouse_mlops.config import PipelineConfig, bounded_mlflow_http

REDIRECT_PREFIX = "/lakehouse-mlops"
TRACKED_DAGS = {"ml_pipeline", "ml_retraining"}


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

    bounded_mlflow_http()
    client = mlflow.MlflowClient(cfg.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is None:
        return cfg.mlflow_ui_url
    base = f"tags.`airflow.dag_id` = '{dag_id}' and tags.`airflow.run_id` = '{run_id}'"
    if task_id in ("start_tracking", "finish_tracking", "drift_gate"):
        filters = [base + " and tags.`pipeline.role` = 'dag_run'"]
    else:
        filters = [base + f" and tags.`airflow.task_id` = '{task_id}'"]
        if try_number:
            filters.insert(0, filters[0] + f" and tags.`airflow.try_number` = '{try_number}'")
    for flt in filters:
        runs = client.search_runs([exp.experiment_id], filter_string=flt,
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return f"{cfg.mlflow_ui_url}/#/experiments/{exp.experiment_id}/runs/{runs[0].info.run_id}"
    search = quote(filters[-1])
    return f"{cfg.mlflow_ui_url}/#/experiments/{exp.experiment_id}?searchFilter={search}"


def create_app():
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI(title="lakehouse-mlops links")

    @app.get("/mlflow-run")
    def mlflow_run(dag_id: str, run_id: str, task_id: str, try_number: int | None = None):
        url = mlflow_run_url(PipelineConfig.from_env(), dag_id, run_id, task_id, try_number)
        return RedirectResponse(url, status_code=302)

    return app
