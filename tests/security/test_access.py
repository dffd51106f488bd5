"""MLflow's login, the plugin endpoint, compose's secrets check, `ps` and the stack's files (issue 14).

Against the session's stack (conftest.py: MLFLOW_AUTH=on). Every refused attempt has its control:
the same request by the pipeline's user succeeds, a well-formed link query passes the endpoint's
checks, the generated .env passes the secrets check.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from jobs import contract
from scripts import mlflow_auth
from scripts.devstack import dotenv, health, processes
from scripts.devstack.env import REPO

SECRET_WORDS = ("SECRET", "PASSWORD", "FERNET", "JWT", "_KEY")


@pytest.fixture(scope="module")
def mlflow(stack):
    """The pipeline's model with @champion on version 1, registered by the pipeline's user, and an analyst."""
    env, url = stack.env, stack.env["MLFLOW_TRACKING_URI"]
    pipeline = mlflow_auth.Api(url, env[contract.MLFLOW_CLIENT_USER_VAR], env[contract.MLFLOW_CLIENT_PASSWORD_VAR])
    admin = mlflow_auth.Api(url, env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"])
    status, body = pipeline.call("GET", "/api/2.0/mlflow/experiments/get-by-name",
                                 query={"experiment_name": env["MLFLOW_EXPERIMENT_NAME"]})
    assert status == 200, body
    experiment = body["experiment"]["experiment_id"]
    marker = f"probe-{uuid.uuid4().hex}"  # a tag value an injected filter would try to find
    status, body = pipeline.call("POST", "/api/2.0/mlflow/runs/create", {
        "experiment_id": experiment, "tags": [{"key": contract.TAG_STAGE, "value": contract.MODEL_TRAINING},
                                              {"key": "probe", "value": marker}]})
    assert status == 200, body
    run_id = body["run"]["info"]["run_id"]
    model = env["MLFLOW_MODEL_NAME"]
    assert pipeline.call("POST", "/api/2.0/mlflow/registered-models/create", {"name": model})[0] == 200
    source = f"mlflow-artifacts:/{experiment}/{run_id}/artifacts/model"
    for _ in range(2):
        status, body = pipeline.call("POST", "/api/2.0/mlflow/model-versions/create",
                                     {"name": model, "source": source, "run_id": run_id})
        assert status == 200, body
    assert pipeline.call("POST", "/api/2.0/mlflow/registered-models/alias",
                         {"name": model, "alias": contract.CHAMPION, "version": "1"})[0] == 200
    password = secrets.token_hex(16)
    assert admin.call("POST", "/api/2.0/mlflow/users/create", {"username": "analyst", "password": password})[0] == 200
    return {"url": url, "pipeline": pipeline, "admin": admin, "analyst": mlflow_auth.Api(url, "analyst", password),
            "anonymous": mlflow_auth.Api(url), "experiment": experiment, "run_id": run_id, "model": model,
            "source": source, "marker": marker}


def _champion(m) -> str:
    status, body = m["admin"].call("GET", "/api/2.0/mlflow/registered-models/alias",
                                   query={"name": m["model"], "alias": contract.CHAMPION})
    assert status == 200, body
    return body["model_version"]["version"]


def _attempts(m) -> dict[str, tuple[str, str, dict]]:
    return {"create a run": ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": m["experiment"]}),
            "register a model version": ("POST", "/api/2.0/mlflow/model-versions/create",
                                         {"name": m["model"], "source": m["source"], "run_id": m["run_id"]}),
            "move @champion": ("POST", "/api/2.0/mlflow/registered-models/alias",
                               {"name": m["model"], "alias": contract.CHAMPION, "version": "2"})}


@pytest.mark.parametrize("attempt", ["create a run", "register a model version", "move @champion"])
def test_anonymous_mlflow_writes_get_401(mlflow, attempt):
    method, path, body = _attempts(mlflow)[attempt]
    assert mlflow["anonymous"].call(method, path, body)[0] == 401
    wrong = mlflow_auth.Api(mlflow["url"], mlflow["pipeline"].user, "not-the-password")
    assert wrong.call(method, path, body)[0] == 401
    assert _champion(mlflow) == "1"


def test_an_ordinary_user_gets_403_moving_champion_and_the_pipeline_user_may(mlflow):
    method, path, body = _attempts(mlflow)["move @champion"]
    assert mlflow["analyst"].call(method, path, body)[0] == 403
    assert _champion(mlflow) == "1"
    # Control: the same request by the pipeline's user moves it (and back).
    assert mlflow["pipeline"].call(method, path, body)[0] == 200
    assert _champion(mlflow) == "2"
    assert mlflow["pipeline"].call(method, path, {**body, "version": "1"})[0] == 200


# ------------------------------------------------------------------------------ the plugin endpoint

LINK = "/lakehouse-mlops/mlflow-run"
VALID = {"dag_id": contract.ML_PIPELINE, "run_id": "manual__2026-11-24T00:00:00+00:00",
         "task_id": contract.RAW_TO_BRONZE, "try_number": "1"}


def _link(stack, query: dict, token: str | None) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(f"{stack.env['AIRFLOW_API_URL']}{LINK}?{urllib.parse.urlencode(query)}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _hs512(header: dict, claims: dict, key: bytes) -> str:
    """A well-formed JWT signed with a key the api-server does not hold (no PyJWT in this environment)."""
    import base64
    import hashlib
    import hmac
    import json

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    return f"{signing}.{part(hmac.new(key, signing.encode(), hashlib.sha512).digest())}"


@pytest.fixture(scope="module")
def token(stack) -> str:
    return health.airflow_token(stack.env)


def test_the_link_endpoint_wants_a_valid_token(stack, token):
    forged = _hs512({"alg": "HS512", "typ": "JWT"}, {"sub": "admin", "role": "admin", "aud": "apache-airflow",
                                                    "exp": int(time.time()) + 600}, b"x" * 64)
    status, text = _link(stack, VALID, None)
    assert status == 401 and "Not authenticated" in text, (status, text)
    for bad in ("not-a-jwt", forged):  # Airflow's token check answers these itself (403 "Invalid JWT token")
        status, text = _link(stack, VALID, bad)
        assert status in (401, 403) and "mlflow" not in text.lower(), (bad[:12], status, text)
    # Control: the real token gets past authentication and validation to the MLflow lookup.
    status, text = _link(stack, VALID, token)
    assert status not in (400, 401, 403), (status, text)


@pytest.mark.parametrize("field, value", [("run_id", "x' or tags.probe LIKE 'probe-%"),
                                          ("run_id", "manual__x\\' or 1=1"),
                                          ("task_id", "raw_to_bronze' or tags.probe != '")])
def test_filter_injection_in_the_link_gets_400_and_nothing_from_mlflow(stack, token, mlflow, field, value):
    status, text = _link(stack, {**VALID, field: value}, token)
    assert status == 400 and field in text, (status, text)
    for leaked in (mlflow["marker"], mlflow["run_id"], mlflow["experiment"] + "/runs", "mlflow-artifacts"):
        assert leaked not in text, leaked


# ------------------------------------------------------------------------- compose's secrets check

def _compose_secret_names() -> list[str]:
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose-mlops.yml").read_text())
    return sorted(compose["services"]["secrets-check"]["environment"])


def _secrets_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """As the one-shot runs it: `python -I secrets_check.py`, the secrets in its environment only."""
    return subprocess.run([sys.executable, "-I", str(REPO / "scripts" / "secrets_check.py")],
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60)


def test_the_compose_check_refuses_placeholders_and_short_keys_naming_them(stack):
    names = _compose_secret_names()
    example = dotenv.read_env_file(REPO / ".env.example")
    generated = dotenv.read_env_file(Path(stack.env["LAKEHOUSE_ENV_FILE"]))
    placeholders = {n: example[n] for n in names if example.get(n, "").startswith("change-me")}
    assert len(placeholders) >= 5, placeholders
    ok = _secrets_check({n: generated[n] for n in names})
    assert ok.returncode == 0, ok.stderr  # control: what `make env` generates passes
    copied = _secrets_check({n: example.get(n) or generated[n] for n in names})
    assert copied.returncode == 1
    for name, value in placeholders.items():
        assert re.search(rf"^secrets-check: {name} is still the \.env\.example placeholder", copied.stderr, re.M), name
        assert value not in copied.stderr
    short = {**{n: generated[n] for n in names}, "AIRFLOW__API_AUTH__JWT_SECRET": "abcdefgh12345678"}
    refused = _secrets_check(short)
    assert refused.returncode == 1 and "AIRFLOW__API_AUTH__JWT_SECRET is too short" in refused.stderr
    assert "abcdefgh12345678" not in refused.stderr


# ------------------------------------------------------------------------------ ps and the home folder

def test_no_secret_of_the_env_file_on_any_command_line(stack):
    """What `ps` shows every local user: the argv of every process of every service."""
    file_values = dotenv.read_env_file(Path(stack.env["LAKEHOUSE_ENV_FILE"]))
    found = {k: v for k, v in {**file_values, **stack.env}.items() if any(w in k for w in SECRET_WORDS) and len(v) >= 8}
    found["the generated Airflow password"] = health.airflow_password(stack.env) or ""
    assert {"AWS_SECRET_ACCESS_KEY", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
            contract.MLFLOW_CLIENT_PASSWORD_VAR} <= set(found) and found["the generated Airflow password"]
    scanned, leaks = 0, []
    for pid_file in (stack.home / "run").glob("*.pid"):
        for pid in processes.session_members(int(pid_file.read_text().split()[0])):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            scanned += 1
            leaks += [f"{pid_file.stem} (pid {pid}): {name}" for name, value in found.items() if value in argv]
    assert scanned >= 7 and leaks == [], (scanned, leaks)


def test_everything_under_the_stack_home_is_private(stack):
    """0700 folders, 0600 files, the TLS key and certificates included; SeaweedFS sets its *.vif files 0644 itself."""
    assert (stack.home / "seaweedfs" / "tls" / "node.key").exists()
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    exposed = []
    for path in [stack.home, *stack.home.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or stat.S_ISSOCK(mode) or path.suffix == ".vif":
            continue
        want = 0o700 if stat.S_ISDIR(mode) else 0o600
        if stat.S_IMODE(mode) & ~want & 0o777 or stat.S_IMODE(mode) & 0o077:
            exposed.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(stack.home)}")
    assert exposed == [], exposed[:20]
