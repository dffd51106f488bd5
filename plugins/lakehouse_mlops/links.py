"""From a task instance in the Airflow UI, one click to its MLflow run.

The extra link points at a small redirect endpoint served by the api-server (this plugin's
FastAPI app), which looks the run up by its Airflow tags at click time. The link therefore works
for every try and never goes stale, and the MLflow run's ``airflow.url`` tag leads back.

The endpoint sits inside the api-server, next to Airflow's own API, so it is held to the same rules:
Airflow's authentication and DAG permission check (``requires_access_dag``, JWT bearer or the UI's
``_token`` cookie), every query value checked against Airflow's id shapes before it reaches an MLflow
filter, and the MLflow lookup on a small pool of its own with a deadline, so a slow or dead MLflow
costs the api-server neither its event loop nor the thread pool its own routes run in.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from jobs import contract
from lakehouse_mlops.config import PipelineConfig

REDIRECT_PREFIX = "/lakehouse-mlops"
TRACKED_DAGS = {contract.ML_PIPELINE, contract.ML_RETRAINING}
# Tasks without a run of their own: their link opens the DAG run's parent run.
PARENT_RUN_TASKS = {contract.START_TRACKING, contract.FINISH_TRACKING, contract.DRIFT_GATE}
_TRY_NUMBER = re.compile(r"[1-9][0-9]{0,3}")


def link_timeout_seconds() -> float:
    """How long a click waits for MLflow before the endpoint answers 504."""
    return float(contract.env("MLFLOW_LINK_TIMEOUT_SECONDS", "10"))


def link_max_lookups() -> int:
    """MLflow lookups running at once in the api-server; more clicks queue until their deadline."""
    return max(1, int(contract.env("MLFLOW_LINK_MAX_LOOKUPS", "4")))


class BadLinkQuery(ValueError):
    """A query value that is not of the shape Airflow gives it."""


def checked_query(dag_id: str, run_id: str, task_id: str, try_number: str | None) -> tuple[str, str, str, int | None]:
    """The link's query values, each of its Airflow shape, or BadLinkQuery naming the first bad one.

    Values go into MLflow filter strings; anything else is refused here instead of escaped, since
    no real link carries it.
    """
    if dag_id not in TRACKED_DAGS:
        raise BadLinkQuery(f"dag_id must be one of {sorted(TRACKED_DAGS)}")
    if not contract.AIRFLOW_RUN_ID_PATTERN.fullmatch(run_id):
        raise BadLinkQuery("run_id is not an Airflow run id (1-250 of A-Z a-z 0-9 _ . ~ : + -)")
    if not contract.AIRFLOW_KEY_PATTERN.fullmatch(task_id):
        raise BadLinkQuery("task_id is not an Airflow task id (1-250 of A-Z a-z 0-9 _ . -)")
    if try_number is not None and try_number != "" and not _TRY_NUMBER.fullmatch(try_number):
        raise BadLinkQuery("try_number must be a whole number from 1 to 9999")
    return dag_id, run_id, task_id, int(try_number) if try_number else None


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

    # One retry at most, and no request longer than the endpoint waits: an abandoned lookup ends soon.
    contract.bounded_mlflow_http(max_retries=1, max_timeout=max(1, int(link_timeout_seconds())))
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


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _lookup_pool() -> ThreadPoolExecutor:
    """The lookups' own threads, created on the first click (the plugin is imported by every process)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=link_max_lookups(), thread_name_prefix="mlflow-link")
        return _pool


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


async def resolve_link(dag_id: str, run_id: str, task_id: str, try_number: int | None) -> str:
    """The MLflow URL, looked up off the event loop with a deadline; HTTPException 504/502 otherwise.

    The lookup runs on this module's pool of MLFLOW_LINK_MAX_LOOKUPS threads, not on the api-server's
    shared one: when MLflow hangs, at most that many threads wait (each for at most the capped MLflow
    request timeout), and a queued lookup that has not started by the deadline is cancelled.
    """
    import asyncio

    import anyio
    from fastapi import HTTPException

    cfg = PipelineConfig.from_env()
    timeout = link_timeout_seconds()
    future = _lookup_pool().submit(mlflow_run_url, cfg, dag_id, run_id, task_id, try_number)
    try:
        with anyio.fail_after(timeout):
            return await asyncio.wrap_future(future)
    except TimeoutError:
        future.cancel()
        raise HTTPException(504, f"MLflow at {cfg.mlflow_tracking_uri} did not answer within {timeout:g} s; "
                                 "try again later") from None
    except Exception as exc:  # MLflow down or failing: say so instead of a bare 500
        raise HTTPException(502, f"MLflow at {cfg.mlflow_tracking_uri} could not be asked for the run: "
                                 f"{_short(exc)}") from None


def create_app():
    """The api-server sub-app at REDIRECT_PREFIX; Airflow's own auth dependency guards every route."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import RedirectResponse

    app = FastAPI(title="lakehouse-mlops links")
    # Reading a task instance of the DAG named by the query's dag_id: the permission the UI needs to
    # show the task whose link this is. 401/403 come from Airflow before any of the code below runs.
    can_read_task = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))

    @app.get("/mlflow-run", dependencies=[can_read_task])
    async def mlflow_run(dag_id: str, run_id: str, task_id: str, try_number: str | None = None):
        try:
            query = checked_query(dag_id, run_id, task_id, try_number)
        except BadLinkQuery as exc:
            raise HTTPException(400, f"refused: {exc}") from None
        return RedirectResponse(await resolve_link(*query), status_code=302)

    return app
