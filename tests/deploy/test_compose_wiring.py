"""The cluster profile takes its wiring from docker-compose-mlops.yml (issue 15, item 2).

The expected values are worked out here from the compose file's text with the host and path
mapping written out below, not through scripts/devstack/compose.py, so a change to either side
(a variable added to or renamed in the compose, a retyped default in the stack) fails a test.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from scripts.devstack import compose
from scripts.devstack.env import COMPOSE_WIRED_KEYS, JOBS_VENV, REPO, StackError, resolve_env
from scripts.devstack.services import spark_services

COMPOSE = yaml.safe_load((REPO / "docker-compose-mlops.yml").read_text())
COMMON = COMPOSE["x-airflow-common"]["environment"]
# Variables of the compose's Airflow containers about Spark that the cluster profile does not take, and why.
NOT_WIRED = {
    "SPARK_HOME": "the image's pyspark folder; spark-submit finds its own home from the jobs environment",
    "SPARK_CONF_DIR": "the image's /opt/spark-conf (spark-defaults for the user's cluster); none here",
}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    for key in (*COMPOSE_WIRED_KEYS, "LAKEHOUSE_PROFILE", "LAKEHOUSE_HOME", "SPARK_MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    return resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_PROFILE": "cluster",
                        "SPARK_MASTER_PORT": "17077"})


def _by_hand(value: str, env: dict) -> str:
    """Compose's defaults for the unset MLOPS_* addresses, then the container names and paths mapped."""
    def default(m):
        name, fallback = m.group(1), m.group(2)
        return env[name] if env.get(name) else fallback
    text = re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", default, value)
    text = re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", lambda m: env[m.group(1)], text)
    for container, local in (("spark://spark-master:7077", env["SPARK_MASTER"]),
                             ("/opt/jobs-venv", str(JOBS_VENV)), ("/opt/spark-jars", str(REPO / "var" / "jars")),
                             ("/opt/airflow", str(REPO)), ("@postgres:5432/", f"@127.0.0.1:{env['POSTGRES_PORT']}/"),
                             ("@redis:6379/", f"@127.0.0.1:{env['REDIS_PORT']}/")):
        text = text.replace(container, local)
    return text


def test_every_engine_variable_of_the_compose_is_wired_or_says_why_not():
    """Spark's settings, the executor, the metadata database and Celery's broker and backend."""
    engine_keys = {k for k in COMMON if k.startswith(("SPARK_", "PYSPARK_", "AIRFLOW_CONN_SPARK", "LAKEHOUSE_JOBS",
                                                      "AIRFLOW__CELERY__", "AIRFLOW__DATABASE__",
                                                      "AIRFLOW__CORE__EXECUTOR"))}
    assert engine_keys - set(COMPOSE_WIRED_KEYS) == set(NOT_WIRED), engine_keys - set(COMPOSE_WIRED_KEYS)
    assert set(COMPOSE_WIRED_KEYS) <= set(COMMON)


def test_the_cluster_profile_gives_the_compose_values(cluster):
    assert cluster["SPARK_MASTER"] == "spark://127.0.0.1:17077"
    for key in COMPOSE_WIRED_KEYS:
        if key == "SPARK_MASTER":
            continue
        assert cluster[key] == _by_hand(str(COMMON[key]), cluster), key
    assert json.loads(cluster["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == "spark://127.0.0.1:17077"
    assert cluster["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert cluster["AIRFLOW__CELERY__BROKER_URL"].endswith(f"@127.0.0.1:{cluster['REDIS_PORT']}/0")
    jars = cluster["SPARK_JARS"].split(",")
    assert jars and all((REPO / "var" / "jars").as_posix() in j for j in jars)


def test_the_default_profile_keeps_its_local_master(tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_PROFILE", raising=False)
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    env = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env")})
    assert env["SPARK_MASTER"] == "local[*]"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == "local[*]"


def test_a_remote_master_is_kept_in_the_cluster_profile(tmp_path, monkeypatch):
    """A user rehearsing against their own Spark cluster names it; only loopback means the embedded one."""
    monkeypatch.setenv("SPARK_MASTER", "spark://spark.example.internal:7077")
    env = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_PROFILE": "cluster"})
    assert env["SPARK_MASTER"] == "spark://spark.example.internal:7077"


def test_the_workers_run_the_compose_worker_command(cluster):
    spec = COMPOSE["services"]["spark-worker"]
    master, *workers = spark_services(cluster)
    assert len(workers) == int(cluster["SPARK_WORKERS"]) == 2
    expected = [_by_hand(str(a), cluster) for a in [*spec["entrypoint"], *spec["command"]]]
    for worker in workers:
        argv = worker.argv
        assert argv[:len(expected) - 1] == expected[:-1]  # spark-class Worker --cores N --memory M
        assert argv[-1] == expected[-1] == cluster["SPARK_MASTER"]
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
        assert worker.extra_env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert master.argv[master.argv.index("--host") + 1] == "127.0.0.1"
    assert dict(master.ports) == {"SPARK_MASTER_PORT": 17077, "SPARK_MASTER_WEBUI_PORT": 8180}


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A-x}", {}, "x"), ("${A:-x}", {"A": "v"}, "v"),
    ("${A}", {"A": "v"}, "v"), ("${A}", {}, ""), ("$${A}", {"A": "v"}, "${A}"), ("a${A:?need A}b", {"A": "v"}, "avb"),
])
def test_interpolation_follows_compose(text, values, expected):
    assert compose.interpolate(text, values) == expected


def test_a_required_variable_that_is_missing_is_named():
    with pytest.raises(StackError, match="POSTGRES_PASSWORD is required .set it."):
        compose.interpolate("${POSTGRES_PASSWORD:?set it}", {"POSTGRES_PASSWORD": ""})
