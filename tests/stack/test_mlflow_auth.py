"""MLflow's login, against real `mlflow server --app-name basic-auth` processes (jobs environment).

The module starts two servers of its own on free 127.0.0.1 ports: one with the basic-auth app and
the config file scripts/mlflow_auth.py renders, and a control without it. Every refused attempt is
also made against the control, where it must succeed: the refusal comes from the login, not from a
wrong URL or payload. Then one embedded-stack check: `MLFLOW_AUTH=on` makes `stack.py up` start an
authenticating MLflow that the stack's own client environment logs in to.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs import contract
from scripts import mlflow_auth
from scripts.devstack.env import JOBS_VENV, LOOPBACK, REPO
from scripts.devstack.temporary import _hermetic_env, free_ports, parse_exports

EXPERIMENT = "auth-test-pipeline"
MODEL = "AuthTestPredictor"
SCRIPT = REPO / "scripts" / "mlflow_auth.py"


def _password() -> str:
    return secrets.token_hex(16)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    root: Path
    auth: bool
    env: dict[str, str]  # what scripts/mlflow_auth.py reads (admin, pipeline user, names)


def _wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(auth: bool):
    root = Path(tempfile.mkdtemp(prefix="mlflow-auth-test-"))
    (port,) = free_ports(1)
    url = f"http://{LOOPBACK}:{port}"
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_ADMIN_USER": "admin", "MLFLOW_ADMIN_PASSWORD": _password(),
           "MLFLOW_PIPELINE_USER": "pipeline-test", "MLFLOW_PIPELINE_PASSWORD": _password(),
           "MLFLOW_EXPERIMENT_NAME": EXPERIMENT, "MLFLOW_MODEL_NAME": MODEL,
           "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'basic_auth.db'}"}
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    server_env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"})
    argv = [str(JOBS_VENV / "bin" / "mlflow"), "server", "--host", LOOPBACK, "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", (root / "artifacts").as_uri()]
    if auth:
        ini = root / "basic_auth.ini"
        # The CLI, as an operator or the stack runs it: 0600 from creation.
        rendered = subprocess.run([sys.executable, "-I", str(SCRIPT), "ini", "--output", str(ini)],
                                  env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        argv += ["--app-name", contract.MLFLOW_AUTH_APP]
        server_env.update({"MLFLOW_AUTH_CONFIG_PATH": str(ini),
                           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=server_env, cwd=root, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_health(url, proc, log)
        yield Server(url, proc, root, auth, env)
    finally:
        _stop(proc)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def logged_in(server: Server, user: str | None, password: str | None = None):
    """The MLflow client as ``user`` (None: anonymous), through the variables it reads itself."""
    names = ("MLFLOW_TRACKING_URI", contract.MLFLOW_CLIENT_USER_VAR, contract.MLFLOW_CLIENT_PASSWORD_VAR,
             "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({"MLFLOW_TRACKING_URI": server.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    for name, value in ((contract.MLFLOW_CLIENT_USER_VAR, user), (contract.MLFLOW_CLIENT_PASSWORD_VAR, password)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        from mlflow import MlflowClient

        yield MlflowClient(server.url)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pipeline_registers(client, experiment_id: str) -> tuple[str, str]:
    """What model_training and model_deployment do: a run with an artifact, a version, @champion."""
    run = client.create_run(experiment_id, tags={contract.TAG_STAGE: contract.MODEL_TRAINING})
    run_id = run.info.run_id
    client.log_metric(run_id, "auc", 0.71)
    client.log_text(run_id, "flavors: {}\n", "model/MLmodel")  # proxied artifact upload
    client.set_terminated(run_id)
    try:
        client.get_registered_model(MODEL)
    except Exception:  # noqa: BLE001 - not there yet: the first registration creates it
        client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(MODEL, contract.CHAMPION, version.version)
    return run_id, version.version


def run_init(server: Server, **overrides: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], **server.env, **overrides}
    env.pop("MLFLOW_AUTH_DATABASE_URI")
    return subprocess.run([sys.executable, "-I", str(SCRIPT), "init", "--wait", "10"], env=env,
                          capture_output=True, text=True, timeout=120)


@dataclass
class World:
    server: Server
    experiment_id: str
    run_id: str
    versions: list[str]
    first_init: subprocess.CompletedProcess | None = None


def _build(server: Server) -> World:
    """init (auth only), then two registrations by the pipeline; the second one is @champion."""
    first = None
    if server.auth:
        first = run_init(server)
        assert first.returncode == 0, first.stderr
        creds = (server.env["MLFLOW_PIPELINE_USER"], server.env["MLFLOW_PIPELINE_PASSWORD"])
    else:
        with logged_in(server, None) as client:
            client.create_experiment(EXPERIMENT, tags=contract.EXPERIMENT_TAGS)
        creds = (None, None)
    with logged_in(server, *creds) as client:
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        _, v1 = pipeline_registers(client, experiment_id)
        run_id, v2 = pipeline_registers(client, experiment_id)
    return World(server, experiment_id, run_id, [v1, v2], first)


@pytest.fixture(scope="module")
def protected():
    with mlflow_server(auth=True) as server:
        yield _build(server)


@pytest.fixture(scope="module")
def control():
    with mlflow_server(auth=False) as server:
        yield _build(server)


def _api(world: World, user: str | None = None, password: str | None = None) -> mlflow_auth.Api:
    return mlflow_auth.Api(world.server.url, user, password)


def _admin(world: World) -> mlflow_auth.Api:
    return _api(world, world.server.env["MLFLOW_ADMIN_USER"], world.server.env["MLFLOW_ADMIN_PASSWORD"])


def _attempts(world: World) -> dict[str, tuple[str, str, dict | None]]:
    """The writes (and the first read) an intruder would try, as raw REST calls."""
    source = f"mlflow-artifacts:/{world.experiment_id}/{world.run_id}/artifacts/model"
    return {
        "search experiments": ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 5}),
        "create a run": ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": world.experiment_id}),
        "register a model version": ("POST", "/api/2.0/mlflow/model-versions/create",
                                     {"name": MODEL, "source": source, "run_id": world.run_id}),
        "move @champion": ("POST", "/api/2.0/mlflow/registered-models/alias",
                           {"name": MODEL, "alias": contract.CHAMPION, "version": world.versions[0]}),
        "open the UI": ("GET", "/", None),
    }


def _call(api: mlflow_auth.Api, method: str, path: str, body: dict | None) -> int:
    if method == "GET":
        url = api.base_url + path
        req = urllib.request.Request(url, headers={"Authorization": api._auth} if api._auth else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
    return api.call(method, path, body)[0]


def _champion(world: World, api: mlflow_auth.Api) -> str:
    status, body = api.call("GET", "/api/2.0/mlflow/registered-models/alias",
                            query={"name": MODEL, "alias": contract.CHAMPION})
    assert status == 200, body
    return body["model_version"]["version"]


def _versions(world: World, api: mlflow_auth.Api) -> int:
    status, body = api.call("GET", "/api/2.0/mlflow/model-versions/search",
                            query={"filter": f"name='{MODEL}'"})
    assert status == 200, body
    return len(body.get("model_versions", []))


# ------------------------------------------------------------------------------------- the tests

def test_the_rendered_config_is_private(protected):
    ini = protected.server.root / "basic_auth.ini"
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    text = ini.read_text()
    assert "default_permission = READ" in text and protected.server.env["MLFLOW_ADMIN_PASSWORD"] in text


def test_health_answers_without_login_and_nothing_else_does(protected, control):
    # The compose healthcheck and the stack's health wait probe /health anonymously.
    for world in (protected, control):
        with urllib.request.urlopen(f"{world.server.url}/health", timeout=5) as resp:
            assert (resp.status, resp.read().strip()) == (200, b"OK")
    assert _call(_api(protected), "GET", "/version", None) == 401
    assert _call(_api(control), "GET", "/version", None) == 200


@pytest.mark.parametrize("attempt", ["search experiments", "create a run", "register a model version",
                                     "move @champion", "open the UI"])
def test_anonymous_requests_get_401(protected, control, attempt):
    method, path, body = _attempts(protected)[attempt]
    assert _call(_api(protected), method, path, body) == 401
    # A wrong password is no better than none.
    wrong = _api(protected, protected.server.env["MLFLOW_PIPELINE_USER"], "not-the-password")
    assert _call(wrong, method, path, body) == 401
    method, path, body = _attempts(control)[attempt]
    assert _call(_api(control), method, path, body) == 200


def test_the_pipeline_user_logged_registered_and_moved_champion(protected):
    admin = _admin(protected)
    pipeline = protected.server.env["MLFLOW_PIPELINE_USER"]
    assert _champion(protected, admin) == protected.versions[1] == "2"
    status, run = admin.call("GET", "/api/2.0/mlflow/runs/get", query={"run_id": protected.run_id})
    assert status == 200 and run["run"]["info"]["experiment_id"] == protected.experiment_id
    # The experiment came from init, with the contract's tags.
    status, exp = admin.call("GET", "/api/2.0/mlflow/experiments/get", query={"experiment_id": protected.experiment_id})
    assert {t["key"]: t["value"] for t in exp["experiment"]["tags"]}.items() >= contract.EXPERIMENT_TAGS.items()
    # The model did not exist at the first init; the pipeline user created it and owns it.
    assert "does not exist yet" in protected.first_init.stdout
    assert mlflow_auth.permission(admin, pipeline, "registered_model", MODEL) == "MANAGE"
    assert mlflow_auth.permission(admin, pipeline, "experiment", protected.experiment_id) == "MANAGE"
    # And it is no admin: it cannot make users (nor grant itself more).
    as_pipeline = _api(protected, pipeline, protected.server.env["MLFLOW_PIPELINE_PASSWORD"])
    new_user = {"username": "x", "password": _password()}
    assert as_pipeline.call("POST", "/api/2.0/mlflow/users/create", new_user)[0] == 403


@pytest.fixture(scope="module")
def analysts(protected, control):
    """An ordinary logged-in user on each server, created by the admin (the control ignores logins)."""
    password = _password()
    status, body = _admin(protected).call("POST", "/api/2.0/mlflow/users/create",
                                          {"username": "analyst", "password": password})
    assert status == 200, body
    return {"protected": _api(protected, "analyst", password), "control": _api(control, "analyst", password)}


def test_an_ordinary_user_reads_everything(protected, analysts):
    api = analysts["protected"]
    assert _champion(protected, api) == "2"
    assert api.call("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": [protected.experiment_id]})[0] == 200
    assert _call(api, "GET", "/", None) == 200


@pytest.mark.parametrize("attempt", ["move @champion", "register a model version", "create a run"])
def test_an_ordinary_user_gets_403_on_the_pipelines_model_and_experiment(protected, control, analysts, attempt):
    admin = _admin(protected)
    before = (_champion(protected, admin), _versions(protected, admin))
    method, path, body = _attempts(protected)[attempt]
    assert _call(analysts["protected"], method, path, body) == 403
    assert (_champion(protected, admin), _versions(protected, admin)) == before == ("2", 2)
    method, path, body = _attempts(control)[attempt]
    assert _call(analysts["control"], method, path, body) == 200


def test_init_twice_changes_nothing(protected):
    again = run_init(protected.server)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout and "granted" not in again.stdout, again.stdout


def test_init_restores_a_weakened_grant(protected):
    admin = _admin(protected)
    pipeline, password = protected.server.env["MLFLOW_PIPELINE_USER"], protected.server.env["MLFLOW_PIPELINE_PASSWORD"]
    target = {"username": pipeline, "resource_type": "experiment", "resource_id": protected.experiment_id}
    assert admin.call("POST", "/api/3.0/mlflow/users/permissions/revoke", target)[0] == 200
    assert admin.call("POST", "/api/3.0/mlflow/users/permissions/grant", {**target, "permission": "READ"})[0] == 200
    runs = ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": protected.experiment_id})
    assert _call(_api(protected, pipeline, password), *runs) == 403
    fixed = run_init(protected.server)
    assert fixed.returncode == 0 and f"granted MANAGE on experiment {protected.experiment_id}" in fixed.stdout
    assert _call(_api(protected, pipeline, password), *runs) == 200


def test_init_rotates_the_pipeline_password(protected):
    pipeline, old = protected.server.env["MLFLOW_PIPELINE_USER"], protected.server.env["MLFLOW_PIPELINE_PASSWORD"]
    new = _password()
    rotated = run_init(protected.server, MLFLOW_PIPELINE_PASSWORD=new)
    assert rotated.returncode == 0, rotated.stderr
    assert f"updated the password of {pipeline}" in rotated.stdout
    assert old not in rotated.stdout + rotated.stderr and new not in rotated.stdout + rotated.stderr
    assert _call(_api(protected, pipeline, old), "GET", "/api/2.0/mlflow/users/current", None) == 401
    with logged_in(protected.server, pipeline, new) as client:
        client.set_registered_model_alias(MODEL, contract.CHAMPION, "1")
        client.set_registered_model_alias(MODEL, contract.CHAMPION, "2")
    again = run_init(protected.server, MLFLOW_PIPELINE_PASSWORD=new)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout
    protected.server.env["MLFLOW_PIPELINE_PASSWORD"] = new


def test_init_with_a_wrong_admin_password_stops_naming_the_cause(protected):
    wrong = _password()
    result = run_init(protected.server, MLFLOW_ADMIN_PASSWORD=wrong)
    assert result.returncode == 1
    assert "refused the admin login 'admin'" in result.stderr
    assert wrong not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- the embedded stack

def test_mlflow_auth_off_leaves_the_embedded_mlflow_as_it_was(tmp_path, monkeypatch):
    from scripts.devstack.env import resolve_env
    from scripts.devstack.services import mlflow_service

    for name in (contract.MLFLOW_AUTH_SWITCH, contract.MLFLOW_CLIENT_USER_VAR, contract.MLFLOW_CLIENT_PASSWORD_VAR):
        monkeypatch.delenv(name, raising=False)
    env = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": str(tmp_path / "home")})
    assert env[contract.MLFLOW_AUTH_SWITCH] == "off"
    assert contract.MLFLOW_CLIENT_USER_VAR not in env and contract.MLFLOW_CLIENT_PASSWORD_VAR not in env
    svc = mlflow_service(env)
    assert "--app-name" not in svc.argv and "MLFLOW_AUTH_CONFIG_PATH" not in svc.extra_env
    on = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": str(tmp_path / "home"),
                      contract.MLFLOW_AUTH_SWITCH: "on"})
    assert mlflow_service(on).argv[-2:] == ["--app-name", "basic-auth"]
    assert on[contract.MLFLOW_CLIENT_USER_VAR] == contract.DEFAULT_MLFLOW_PIPELINE_USER
    assert on[contract.MLFLOW_CLIENT_PASSWORD_VAR] == on["MLFLOW_PIPELINE_PASSWORD"]


def test_embedded_up_with_mlflow_auth_on_starts_an_authenticating_mlflow_its_clients_use():
    root = Path(tempfile.mkdtemp(prefix="lakehouse-mlflow-auth-"))
    (port,) = free_ports(1)
    proc_env = _hermetic_env({"LAKEHOUSE_HOME": str(root / "home"), "LAKEHOUSE_ENV_FILE": str(root / ".env"),
                              "LAKEHOUSE_SERVICES": "mlflow", "LAKEHOUSE_START_TIMEOUT": "150",
                              contract.MLFLOW_AUTH_SWITCH: "on", "MLFLOW_PORT": str(port)})

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(JOBS_VENV / "bin" / "python"), str(REPO / "scripts" / "stack.py"), *args],
                              env=proc_env, capture_output=True, text=True, timeout=300, cwd=REPO)

    ok = False
    try:
        up = cli("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "login: user admin, password MLFLOW_ADMIN_PASSWORD in" in up.stdout
        assert "created user lakehouse-pipeline" in up.stderr and "granted MANAGE on experiment" in up.stderr
        env = parse_exports(cli("env").stdout)
        ini = Path(env["LAKEHOUSE_HOME"]) / "mlflow" / contract.MLFLOW_AUTH_INI
        assert stat.S_IMODE(ini.stat().st_mode) == 0o600
        url = env["MLFLOW_TRACKING_URI"]
        assert mlflow_auth.Api(url).call("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1})[0] == 401
        assert env[contract.MLFLOW_CLIENT_USER_VAR] == "lakehouse-pipeline"
        # A process of the stack (as Airflow's tasks and the stages are) logs a run with nothing but its env.
        code = ("import mlflow, os; c = mlflow.MlflowClient(); "
                "e = c.get_experiment_by_name(os.environ['MLFLOW_EXPERIMENT_NAME']); "
                "r = c.create_run(e.experiment_id); c.log_metric(r.info.run_id, 'x', 1.0); "
                "c.set_terminated(r.info.run_id); print('RUN', r.info.run_id)")
        run = cli("run", "--", str(JOBS_VENV / "bin" / "python"), "-c", code)
        assert run.returncode == 0 and "RUN " in run.stdout, run.stdout + run.stderr
        ok = True
    finally:
        down = cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
        if ok:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stack state kept in {root}", file=sys.stderr)
