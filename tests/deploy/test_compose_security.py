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
