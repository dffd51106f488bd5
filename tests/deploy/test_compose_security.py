"""The production compose file's security rules, checked statically (no Docker engine here).

The secrets check is run for real: the same scripts/secrets_check.py the `secrets-check` service
mounts, as a subprocess, with exactly the environment Compose would hand that container.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from test_compose import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO,
    SECRET_NAME,
    interpolate_tree,
    references,
    service_env,
    strings,
)

from scripts.devstack import dotenv

CHECK_SCRIPT = REPO / "scripts" / "secrets_check.py"
CHECK = "secrets-check"


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", str(CHECK_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)


def check_env(raw, env: dict[str, str]) -> dict[str, str]:
    """What the secrets-check container gets from a .env."""
    return service_env(interpolate_tree(raw, env), CHECK)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return dotenv.read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory) -> dict[str, str]:
    """The .env `make env` writes."""
    path = tmp_path_factory.mktemp("env") / ".env"
    dotenv.ensure_env(path, ENV_EXAMPLE, log=lambda msg: None)
    return dotenv.read_env_file(path)


def _required_secrets(raw) -> set[str]:
    return {name for s in strings(raw) for name, op in references(s) if op == ":?" and SECRET_NAME.search(name)}


# ---------------------------------------------------------------------------------- secrets check

def test_the_example_env_is_refused_naming_every_placeholder(raw, example_env):
    result = run_check(check_env(raw, example_env))
    assert result.returncode != 0
    placeholders = sorted(n for n in check_env(raw, example_env) if example_env.get(n, "").startswith("change-me"))
    assert len(placeholders) >= 11
    for name in placeholders:
        assert re.search(rf"^secrets-check: {name} is still the .env.example placeholder", result.stderr, re.M), \
            (name, result.stderr)
    assert "refusing to start" in result.stderr


def test_a_generated_env_passes(raw, generated_env):
    result = run_check(check_env(raw, generated_env))
    assert result.returncode == 0, result.stderr
    assert "secrets pass" in result.stdout


@pytest.mark.parametrize("name, value, reason", [
    ("AIRFLOW_ADMIN_PASSWORD", "Adm1nPassw0rd", "too short"),
    ("POSTGRES_PASSWORD", "abababababababababababab", "too weak"),
    ("AIRFLOW__API_AUTH__JWT_SECRET", "k3y" * 12, "too short"),
    ("AIRFLOW__CORE__FERNET_KEY", "not-a-fernet-key", "not a Fernet key"),
    ("MLOPS_MLFLOW_S3_SECRET_ACCESS_KEY", "Short1Secret2", "too short"),
    ("REDIS_PASSWORD", "CHANGE-ME-later-but-long-enough", "placeholder"),
])
def test_a_weak_secret_is_refused_by_name_without_printing_it(raw, generated_env, name, value, reason):
    result = run_check(check_env(raw, {**generated_env, name: value}))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"secrets-check: {name} ")]
    assert lines and reason in lines[0], result.stderr
    assert value not in result.stderr + result.stdout


def test_the_check_sees_every_secret_the_stack_requires(raw):
    """A secret added to the compose file without adding it to the check fails here."""
    handed = set(raw["services"][CHECK]["environment"])
    assert _required_secrets(raw) - handed == set()
    assert raw["services"][CHECK]["entrypoint"][-1] == "/opt/lakehouse-mlops/secrets_check.py"
    assert "./scripts/secrets_check.py:/opt/lakehouse-mlops/secrets_check.py:ro" in raw["services"][CHECK]["volumes"]
    assert raw["services"][CHECK]["network_mode"] == "none"


def test_every_service_waits_for_the_check(raw, example_env):
    for name, svc in interpolate_tree(raw, example_env)["services"].items():
        if name == CHECK:
            continue
        needs = svc.get("depends_on") or {}
        assert needs.get(CHECK, {}).get("condition") == "service_completed_successfully", name


# ------------------------------------------------------------------------------ no secret in argv

def _argv_fields(svc: dict) -> list[str]:
    fields = []
    for key in ("command", "entrypoint"):
        value = svc.get(key)
        fields += [value] if isinstance(value, str) else list(value or [])
    test = (svc.get("healthcheck") or {}).get("test") or []
    fields += [test] if isinstance(test, str) else list(test)
    return fields


def test_no_command_line_carries_a_secret(raw, generated_env):
    # No secret variable referenced in a command, entrypoint or healthcheck (Compose's ${X} or the
    # container shell's $$X) ...
    for name, svc in raw["services"].items():
        for field in _argv_fields(svc):
            for var in re.findall(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)", field) + [n for n, _ in references(field)]:
                assert not SECRET_NAME.search(var) and var != "REDISCLI_AUTH", f"{name}: {var} in {field!r}"
    # ... and, interpolated from a generated .env, no secret value appears in one.
    compose = interpolate_tree(raw, generated_env)
    secrets = {generated_env[n] for n in _required_secrets(raw)}
    for name, svc in compose["services"].items():
        for field in _argv_fields(svc):
            assert not any(secret in field for secret in secrets), f"{name}: a secret in {field!r}"


def test_redis_reads_its_password_from_its_config_file(raw, generated_env):
    compose = interpolate_tree(raw, generated_env)
    redis = compose["services"]["redis"]
    target = redis["configs"][0]["target"]
    assert redis["command"] == ["redis-server", target]
    conf = compose["configs"][redis["configs"][0]["source"]]["content"].splitlines()
    assert f"requirepass {generated_env['REDIS_PASSWORD']}" in conf
    assert "maxmemory-policy noeviction" in conf
    # The broker URL the Airflow containers use carries the same password.
    broker = service_env(compose, "airflow-worker")["AIRFLOW__CELERY__BROKER_URL"]
    assert broker == f"redis://:{generated_env['REDIS_PASSWORD']}@redis:6379/0"


# ------------------------------------------------------------------------------- S3 identities

def test_mlflow_and_the_lakehouse_have_separate_s3_identities(raw, generated_env):
    compose = interpolate_tree(raw, generated_env)
    lakehouse = {generated_env[f"MLOPS_LAKEHOUSE_S3_{k}"] for k in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
    mlflow = {generated_env[f"MLOPS_MLFLOW_S3_{k}"] for k in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
    assert not lakehouse & mlflow
    mlflow_env = service_env(compose, "mlflow")
    assert {mlflow_env["AWS_ACCESS_KEY_ID"], mlflow_env["AWS_SECRET_ACCESS_KEY"]} == mlflow
    assert not lakehouse & set(mlflow_env.values())
    for name, svc in compose["services"].items():
        if name in ("mlflow", CHECK):
            continue
        values = " ".join(strings(svc))
        assert not any(secret in values for secret in mlflow), f"{name} holds the MLflow identity"
    worker = service_env(compose, "airflow-worker")
    assert {worker["AWS_ACCESS_KEY_ID"], worker["AWS_SECRET_ACCESS_KEY"]} == lakehouse
    props = json.loads(worker["ICEBERG_CATALOG_PROPERTIES"])
    assert {props["s3.access-key-id"], props["s3.secret-access-key"]} == lakehouse
    # The embedded run's AWS_* keys never reach a production container.
    assert "AWS_ACCESS_KEY_ID" not in {n for s in strings(raw) for n, _ in references(s)}


# ----------------------------------------------------------------------------------- MLflow login

def _ini(text: str) -> dict[str, str]:
    """The [mlflow] section as MLflow reads it (configparser with its default interpolation)."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(text)
    return dict(parser["mlflow"])


def test_mlflow_runs_the_basic_auth_app_with_its_config_from_a_compose_config(raw, generated_env):
    from scripts import mlflow_auth

    compose = interpolate_tree(raw, generated_env)
    mlflow = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = service_env(compose, "mlflow")
    (config,) = mlflow["configs"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == config["target"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == generated_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    ini = _ini(compose["configs"][config["source"]]["content"])
    # The same file scripts/mlflow_auth.py renders (the embedded stack's), for the same values.
    auth_db = (f"postgresql+psycopg2://mlflow:{generated_env['MLFLOW_DB_PASSWORD']}@postgres:5432/"
               f"{generated_env['MLFLOW_AUTH_DB_NAME']}")
    assert ini == _ini(mlflow_auth.render_ini("admin", generated_env["MLFLOW_ADMIN_PASSWORD"], auth_db))
    assert ini["default_permission"] == "READ"
    assert ini["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    # Users live in their own database of the same Postgres, created by mlflow-db-init.
    assert ini["database_uri"] != env["MLFLOW_BACKEND_STORE_URI"]
    script = compose["services"]["mlflow-db-init"]["command"][0]
    assert "\\getenv auth_db_name MLFLOW_AUTH_DB_NAME" in script and ":'auth_db_name', :'db_user'" in script
    assert service_env(compose, "mlflow-db-init")["MLFLOW_AUTH_DB_NAME"] == "mlflow_auth"
    # The healthcheck still probes /health, which the auth app leaves open (tests/stack checks that live).
    assert "/health'" in " ".join(mlflow["healthcheck"]["test"])


def test_mlflow_auth_init_runs_once_mlflow_is_healthy_and_the_worker_waits_for_it(raw, generated_env):
    compose = interpolate_tree(raw, generated_env)
    init = compose["services"]["mlflow-auth-init"]
    assert init["entrypoint"] == ["python", "-I", "/opt/lakehouse-mlops/scripts/mlflow_auth.py", "init"]
    assert set(init["volumes"]) == {"./scripts/mlflow_auth.py:/opt/lakehouse-mlops/scripts/mlflow_auth.py:ro",
                                    "./jobs/contract.py:/opt/lakehouse-mlops/jobs/contract.py:ro"}
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert init["read_only"] is True and init["user"] == "65534:65534"
    env = service_env(compose, "mlflow-auth-init")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_ADMIN_PASSWORD"] == generated_env["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_PIPELINE_PASSWORD"] == generated_env["MLFLOW_PIPELINE_PASSWORD"]
    assert env["MLFLOW_EXPERIMENT_NAME"] == service_env(compose, "airflow-worker")["MLFLOW_EXPERIMENT_NAME"]
    assert env["MLFLOW_MODEL_NAME"] == service_env(compose, "airflow-worker")["MLFLOW_MODEL_NAME"]
    worker_needs = compose["services"]["airflow-worker"]["depends_on"]
    assert worker_needs["mlflow-auth-init"]["condition"] == "service_completed_successfully"


def test_the_auth_init_script_needs_only_the_standard_library_and_the_contract():
    """It runs with the MLflow image's bare `python -I`, with two files mounted."""
    import ast

    tree = ast.parse((REPO / "scripts" / "mlflow_auth.py").read_text(encoding="utf-8"))
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules - set(sys.stdlib_module_names) == {"jobs"}
    contract = ast.parse((REPO / "jobs" / "contract.py").read_text(encoding="utf-8"))
    used = {a.name.split(".")[0] for n in ast.walk(contract) if isinstance(n, ast.Import) for a in n.names}
    used |= {n.module.split(".")[0] for n in ast.walk(contract) if isinstance(n, ast.ImportFrom) and n.module}
    assert used <= set(sys.stdlib_module_names) | {"__future__"}


def test_every_airflow_container_logs_in_to_mlflow_as_the_pipeline_user_and_only_that(raw, generated_env):
    compose = interpolate_tree(raw, generated_env)
    airflow = [n for n, svc in raw["services"].items() if svc.get("image", "").startswith("${MLOPS_AIRFLOW_IMAGE")
               and n != "spark-worker"]
    assert len(airflow) == 6, airflow
    for name in airflow:
        env = service_env(compose, name)
        assert env["MLFLOW_TRACKING_USERNAME"] == "lakehouse-pipeline", name
        assert env["MLFLOW_TRACKING_PASSWORD"] == generated_env["MLFLOW_PIPELINE_PASSWORD"], name
    # The admin password and the UI's signing key never reach Airflow, Spark or the databases.
    admin_secrets = {generated_env["MLFLOW_ADMIN_PASSWORD"], generated_env["MLFLOW_FLASK_SERVER_SECRET_KEY"]}
    for name, svc in compose["services"].items():
        if name in ("mlflow", "mlflow-auth-init", CHECK):
            continue
        assert not any(s in " ".join(strings(svc)) for s in admin_secrets), f"{name} holds an MLflow admin secret"
    assert generated_env["MLFLOW_PIPELINE_PASSWORD"] not in " ".join(strings(compose["services"]["mlflow"]))


@pytest.mark.parametrize("name, value, reason", [
    ("MLFLOW_ADMIN_PASSWORD", "Short1Admin", "too short"),
    ("MLFLOW_ADMIN_PASSWORD", "Long%Enough%Password%123", "auth config"),
    ("MLFLOW_PIPELINE_PASSWORD", "with blanks inside 12345", "auth config"),
    ("MLFLOW_DB_PASSWORD", "Percent%InTheAuthDbUrl99", "auth config"),
    ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-key-1234567890", "too short"),
    ("MLFLOW_PIPELINE_PASSWORD", "change-me-mlflow-pipeline-password", "placeholder"),
])
def test_weak_mlflow_login_secrets_are_refused(raw, generated_env, name, value, reason):
    result = run_check(check_env(raw, {**generated_env, name: value}))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"secrets-check: {name} ")]
    assert lines and reason in lines[0], result.stderr
    assert value not in result.stderr + result.stdout
