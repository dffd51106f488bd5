"""The plugin's /lakehouse-mlops/mlflow-run endpoint inside Airflow's own api-server app.

What runs for real: Airflow 3.3's `create_app("core")` (the api-server's FastAPI app, with the plugin
mounted by Airflow's plugin manager, its middlewares and the SimpleAuthManager the embedded stack
uses), Airflow's token signing and validation, its `requires_access_dag` permission check against a
metadata database (SQLite, tables created from Airflow's models), and the MLflow client.
What cannot run here: uvicorn and a separate api-server process (FastAPI's TestClient drives the
same ASGI app in-process), the FAB auth manager of the production compose (not in this
environment; it plugs into the same `get_user`/`requires_access_dag` path), and a live MLflow
(MLFLOW_TRACKING_URI points at 127.0.0.1:9, where nothing listens; a socket that accepts and never
answers stands in for a hung one).
"""
from __future__ import annotations

import socket
import time

import pytest

from jobs import contract

PATH = "/lakehouse-mlops/mlflow-run"
VALID = {"dag_id": contract.ML_PIPELINE, "run_id": "manual__2026-11-24T00:00:00+00:00",
         "task_id": contract.RAW_TO_BRONZE, "try_number": "1"}


@pytest.fixture(scope="module")
def api():
    from airflow import settings
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from airflow.models import import_all_models
    from airflow.models.base import Base

    # Token checks ask the metadata DB (revoked tokens, the DAG's team): Airflow's own tables.
    import_all_models()
    Base.metadata.create_all(settings.engine)
    app = create_app("core")
    yield app
    purge_cached_app()


@pytest.fixture(scope="module")
def client(api):
    from fastapi.testclient import TestClient

    with TestClient(api, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def token(api):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return api.state.auth_manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))


def _get(client, params, token=None, cookie=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cookies = {"_token": cookie} if cookie else None
    client.cookies.clear()
    return client.get(PATH, params=params, headers=headers, cookies=cookies, follow_redirects=False)


def test_the_plugin_is_mounted_by_airflow_at_its_prefix(api):
    from starlette.routing import Mount

    mounts = [r for r in api.routes if isinstance(r, Mount) and r.path == "/lakehouse-mlops"]
    assert mounts, "Airflow's plugin manager did not mount the lakehouse_mlops FastAPI app"


def test_no_token_is_refused_before_mlflow_is_asked(client):
    r = _get(client, VALID)
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "Not authenticated"


@pytest.mark.parametrize("bad", ["not-a-jwt", "forged"])
def test_a_bad_token_is_refused(client, bad):
    if bad == "forged":  # well-formed, signed with a secret the api-server does not hold
        import jwt

        bad = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow", "exp": time.time() + 600},
                         "x" * 64, algorithm="HS512")
    for r in (_get(client, VALID, token=bad), _get(client, VALID, cookie=bad)):
        assert r.status_code in (401, 403), r.text
        assert "mlflow" not in r.text.lower()


@pytest.mark.parametrize("field, value", [
    ("run_id", "x' or tags.a != 'b"),
    ("run_id", "manual__x\\' or 1=1"),
    ("task_id", "raw_to_bronze` = 'x"),
    ("task_id", "a b"),
    ("dag_id", "ml_pipeline' or 'a'='a"),
    ("try_number", "1 or 1=1"),
])
def test_an_injection_attempt_is_refused_with_400(client, token, field, value):
    r = _get(client, {**VALID, field: value}, token=token)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]


def test_the_ui_cookie_authenticates_like_the_bearer_token(client, token):
    r = _get(client, {**VALID, "run_id": "x' or tags.a != 'b"}, cookie=token)
    assert r.status_code == 400  # past authentication, stopped by validation


def test_mlflow_unreachable_gives_a_clear_502_quickly(client, token, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.monotonic()
    r = _get(client, VALID, token=token)
    assert r.status_code == 502, r.text
    assert "127.0.0.1:9" in r.json()["detail"] and "could not be asked" in r.json()["detail"]
    assert time.monotonic() - started < 30


def test_a_hung_mlflow_gives_504_at_the_deadline_and_the_loop_keeps_serving(client, token, monkeypatch):
    # Accepts connections (kernel backlog) and never answers: what a stuck MLflow looks like.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{hung.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_LINK_TIMEOUT_SECONDS", "1")
        started = time.monotonic()
        r = _get(client, VALID, token=token)
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert "did not answer within 1 s" in r.json()["detail"]
        assert elapsed < 10, elapsed
        # The api-server still answers its own routes while that lookup's thread is stuck.
        assert client.get("/api/v2/monitor/health").status_code == 200
    finally:
        hung.close()


def test_checked_query_accepts_the_shapes_airflow_generates():
    from lakehouse_mlops.links import checked_query

    for run_id in ("scheduled__2026-11-24T17:00:00+00:00", "manual__2026-11-24T00:00:00.123456+00:00",
                   "backfill__2026-11-24T17:00:00+00:00", "asset_triggered__2026-11-24T01:02:03+00:00_AbC12"):
        assert checked_query(contract.ML_PIPELINE, run_id, "model_training", None)[1] == run_id
    assert checked_query(contract.ML_RETRAINING, "r", "group.task", "3")[3] == 3
