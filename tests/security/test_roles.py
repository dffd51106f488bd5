"""Who may do what in Airflow and MLflow (issue 17, item 5), against the session's real stack.

The embedded Airflow's Simple auth manager has an admin, a viewer and an operator (op), each with
a password generated into the same file. A viewer reads runs and task logs but every change it
tries is refused with 403, and the run or DAG is unchanged afterwards; the operator's trigger and
clear are the control that the refusals are about the role, not the request. MLflow's basic-auth
app runs with default_permission READ: a user without grants is its viewer.
"""
from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from security_support import ROLES_DAG, ROLES_LOG_LINE

from jobs import contract
from scripts import mlflow_auth
from scripts.devstack import health
from scripts.devstack.airflow_api import Airflow, _quoted
from scripts.devstack.env import airflow_users


def _until(condition, timeout: float, what: str):
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(1)  # the poll interval, not a synchronisation
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def roles(stack):
    """The three users' clients and one finished run of the probe DAG, triggered by the admin."""
    users = airflow_users(stack.env)
    admin = Airflow(stack.env)
    admin.wait_for_dag(ROLES_DAG)
    status, body = admin.call("PATCH", f"/api/v2/dags/{ROLES_DAG}", {"is_paused": False})
    assert status == 200, body
    status, body = admin.call("POST", f"/api/v2/dags/{ROLES_DAG}/dagRuns", {"logical_date": None})
    assert status == 200, body
    run_id = body["dag_run_id"]
    _until(lambda: admin.run_state(run_id, ROLES_DAG) == "success" or None, 180, f"run {run_id} to succeed")
    return {"users": users, "admin": admin, "viewer": Airflow(stack.env, user=users["viewer"]),
            "op": Airflow(stack.env, user=users["op"]), "run_id": run_id}


def test_every_role_has_its_own_generated_password(stack, roles):
    passwords = {role: health.airflow_password(stack.env, user) for role, user in roles["users"].items()}
    assert all(passwords.values()) and len(set(passwords.values())) == 3, sorted(passwords)
    with pytest.raises(health.StackError):
        health.airflow_token(stack.env, password=passwords["admin"], user=roles["users"]["viewer"])


def _log(client: Airflow, run_id: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{client.base}/api/v2/dags/{ROLES_DAG}/dagRuns/{_quoted(run_id)}/taskInstances/say/logs/1",
        headers={**client.auth_header, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def test_a_viewer_reads_runs_and_task_logs(roles):
    viewer, run_id = roles["viewer"], roles["run_id"]
    status, body = viewer.call("GET", f"/api/v2/dags/{ROLES_DAG}/dagRuns")
    assert status == 200 and run_id in {r["dag_run_id"] for r in body["dag_runs"]}, (status, body)
    status, text = _log(viewer, run_id)
    assert status == 200 and ROLES_LOG_LINE in json.dumps(json.loads(text)), (status, text[:500])


def _changes(run_id: str) -> dict[str, tuple[str, str, dict]]:
    run = f"/api/v2/dags/{ROLES_DAG}/dagRuns/{_quoted(run_id)}"
    return {"trigger a run": ("POST", f"/api/v2/dags/{ROLES_DAG}/dagRuns", {"logical_date": None}),
            "clear a run": ("POST", f"{run}/clear", {"dry_run": False}),
            "mark a run failed": ("PATCH", run, {"state": "failed"}),
            "pause the DAG": ("PATCH", f"/api/v2/dags/{ROLES_DAG}", {"is_paused": True}),
            "unpause the DAG": ("PATCH", f"/api/v2/dags/{ROLES_DAG}", {"is_paused": False})}


@pytest.mark.parametrize("change", ["trigger a run", "clear a run", "mark a run failed", "pause the DAG",
                                    "unpause the DAG"])
def test_a_viewer_gets_403_for_every_change_and_nothing_changes(roles, change):
    admin, run_id = roles["admin"], roles["run_id"]
    runs_before = {r["dag_run_id"] for r in admin.runs_of(ROLES_DAG)}
    method, path, body = _changes(run_id)[change]
    status, answer = roles["viewer"].call(method, path, body)
    assert status == 403, (status, answer)
    assert admin.run_state(run_id, ROLES_DAG) == "success"
    assert {r["dag_run_id"] for r in admin.runs_of(ROLES_DAG)} == runs_before
    status, dag = admin.call("GET", f"/api/v2/dags/{ROLES_DAG}")
    assert status == 200 and dag["is_paused"] is False, dag


def test_the_operator_triggers_and_clears(roles):
    op, admin = roles["op"], roles["admin"]
    status, body = op.call("POST", f"/api/v2/dags/{ROLES_DAG}/dagRuns", {"logical_date": None})
    assert status == 200, body
    triggered = body["dag_run_id"]
    _until(lambda: admin.run_state(triggered, ROLES_DAG) == "success" or None, 180, f"run {triggered}")
    status, body = op.call("POST", f"/api/v2/dags/{ROLES_DAG}/dagRuns/{_quoted(triggered)}/clear",
                           {"dry_run": False})
    assert status == 200, body
    # Cleared, the run is scheduled again and runs its task a second time.
    _until(lambda: admin.run_state(triggered, ROLES_DAG) == "success"
           and any(t.get("try_number") == 2 for t in admin.task_instances(triggered, ROLES_DAG)) or None,
           180, f"cleared run {triggered} to run again")


# ------------------------------------------------------------------------------------------ MLflow

def test_an_mlflow_user_without_grants_reads_runs_and_cannot_create_one(stack):
    """default_permission READ (scripts/mlflow_auth.py): a plain user is MLflow's viewer."""
    env, url = stack.env, stack.env["MLFLOW_TRACKING_URI"]
    admin = mlflow_auth.Api(url, env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"])
    password = secrets.token_hex(16)
    status, body = admin.call("POST", "/api/2.0/mlflow/users/create", {"username": "mlflow-viewer",
                                                                       "password": password})
    assert status == 200, body
    viewer = mlflow_auth.Api(url, "mlflow-viewer", password)
    status, body = viewer.call("GET", "/api/2.0/mlflow/experiments/get-by-name",
                               query={"experiment_name": env["MLFLOW_EXPERIMENT_NAME"]})
    assert status == 200, body
    experiment = body["experiment"]["experiment_id"]
    status, body = viewer.call("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment]})
    assert status == 200, body
    status, body = viewer.call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment})
    assert status == 403, (status, body)
    # Control: the pipeline's user (MANAGE on the experiment) creates one.
    pipeline = mlflow_auth.Api(url, env[contract.MLFLOW_CLIENT_USER_VAR], env[contract.MLFLOW_CLIENT_PASSWORD_VAR])
    assert pipeline.call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment})[0] == 200
