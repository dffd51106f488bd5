"""Production Airflow roles (issue 17): airflow-init creates Viewer and Op users from .env, statically checked.

No Docker engine and no FAB here, so the script is checked for what it is handed and how it hands
the password on: from the environment Compose builds out of a generated .env, to stdin, never argv.
"""
from __future__ import annotations

import re

import pytest
import yaml
from test_compose import COMPOSE_FILE, ENV_EXAMPLE, REPO, interpolate_tree, service_env

from scripts.devstack import dotenv

SCRIPT = REPO / "docker" / "airflow" / "create-role-users.sh"
MOUNTED = "/opt/lakehouse-mlops/create-role-users.sh"
ROLES = {"Viewer": ("AIRFLOW_VIEWER_USER", "AIRFLOW_VIEWER_PASSWORD"),
         "Op": ("AIRFLOW_OP_USER", "AIRFLOW_OP_PASSWORD")}


@pytest.fixture(scope="module")
def init(tmp_path_factory) -> tuple[dict, dict[str, str], dict[str, str]]:
    """airflow-init as Compose would run it from a `make env` .env, its environment and that .env."""
    path = tmp_path_factory.mktemp("env") / ".env"
    dotenv.ensure_env(path, ENV_EXAMPLE, log=lambda msg: None)
    env = dotenv.read_env_file(path)
    compose = interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)
    return compose["services"]["airflow-init"], service_env(compose, "airflow-init"), env


def test_airflow_init_runs_the_role_script_mounted_read_only(init):
    svc, _, _ = init
    assert f"./docker/airflow/create-role-users.sh:{MOUNTED}:ro" in svc["volumes"]
    script = svc["command"][-1]
    assert script.index("/entrypoint airflow version") < script.index(MOUNTED), "users before the migration"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_user_comes_from_env_variables(init, role):
    _, environment, env = init
    user_var, password_var = ROLES[role]
    assert environment[user_var] == env[user_var] and environment[password_var] == env[password_var]
    assert not env[password_var].startswith(dotenv.PLACEHOLDER) and len(env[password_var]) >= 32
    assert dotenv.read_env_file(ENV_EXAMPLE)[password_var].startswith(dotenv.PLACEHOLDER)
    text = SCRIPT.read_text()
    assert re.search(rf'^create_user {role} "\$\{{{user_var}:-\}}" {password_var}$', text, re.M), role


def test_the_script_hard_codes_no_password_and_passes_none_as_an_argument():
    text = SCRIPT.read_text()
    create = re.search(r"\| airflow users create (.*?)>/dev/null", text, re.S)
    assert create, "airflow users create reads the password from a pipe"
    assert "--password" not in text and "--use-random-password" not in text
    assert "$password" not in create.group(1)
    # The only password values are taken indirectly from the variable named by the caller.
    assert re.findall(r"password=(\S+)", text) == ["${!password_var:-}"]
    assert not re.search(r"PASSWORD=", text)


def test_the_secrets_check_sees_the_role_passwords(init):
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    handed = compose["services"]["secrets-check"]["environment"]
    assert {"AIRFLOW_VIEWER_PASSWORD", "AIRFLOW_OP_PASSWORD"} <= set(handed)
