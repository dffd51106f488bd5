"""Registers the MLflow link on every task of the tracked DAGs, its redirect endpoint, and the
deadline reference of ml_pipeline's daily-run Deadline Alert (Airflow resolves custom references
through plugins only)."""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from lakehouse_mlops.deadline import DailyRunDeadline
from lakehouse_mlops.links import REDIRECT_PREFIX, MLflowRunLink, create_app


class LakehouseMLOpsPlugin(AirflowPlugin):
    name = "lakehouse_mlops"
    global_operator_extra_links = [MLflowRunLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": REDIRECT_PREFIX, "name": "MLflow run links"}]
    deadline_references = [DailyRunDeadline]
