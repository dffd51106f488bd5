"""The production compose file as the cluster profile's wiring (issue 15, item 2).

`make up PROFILE=cluster` runs the production shape on this machine. So that running it exercises
docker-compose-mlops.yml rather than a retyped copy, its processes take their variables and commands
from that file: Compose's own interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``) over the stack's resolved settings, where the ``MLOPS_*`` addresses of the user's
lakehouse become this machine's services, then container paths and host names mapped onto the
embedded ones. tests/deploy/test_compose_wiring.py fails when the two diverge.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from scripts.devstack.env import JOBS_VENV, LOOPBACK, REPO, StackError

COMPOSE_FILE = REPO / "docker-compose-mlops.yml"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?|\?)([^}]*))?\}|\$\$")


@functools.cache
def _load(path: Path = COMPOSE_FILE) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's interpolation of one value (a missing required variable is an error naming it)."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = values.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise StackError(f"{COMPOSE_FILE.name}: {name} is required ({arg.strip() or 'no message'})")
        return value or ""

    return _VARIABLE.sub(one, text)


def embedded_values(env: dict[str, str]) -> dict[str, str]:
    """The stack's settings with the lakehouse addresses the compose reads pointed at this machine."""
    return {**env,
            "MLOPS_SPARK_MASTER": env["SPARK_MASTER"],
            "MLOPS_S3_ENDPOINT_URL": env["MLFLOW_S3_ENDPOINT_URL"],
            "MLOPS_MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"],
            "MLOPS_ICEBERG_CATALOG_URI": env["ICEBERG_CATALOG_URI"]}


def container_paths(env: dict[str, str]) -> dict[str, str]:
    """Where the image's paths are on this machine (docker/airflow/Dockerfile installs them)."""
    return {"/opt/jobs-venv": str(JOBS_VENV), "/opt/airflow": str(REPO), "/opt/spark-jars": str(REPO / "var" / "jars"),
            "/usr/lib/jvm/java-17": env["JAVA_HOME"]}


def container_hosts(env: dict[str, str]) -> dict[str, str]:
    """The compose's own services (on its private network) as this machine's ports."""
    return {"@postgres:5432/": f"@{LOOPBACK}:{env['POSTGRES_PORT']}/",
            "@redis:6379/": f"@{LOOPBACK}:{env['REDIS_PORT']}/"}


def _localise(value: str, env: dict[str, str]) -> str:
    for container, local in container_paths(env).items():
        value = re.sub(rf"{re.escape(container)}(?=/|$|,)", local, value)
    for container, local in container_hosts(env).items():
        value = value.replace(container, local)
    return value


def as_local(value: object, env: dict[str, str]) -> str:
    """One compose value as this machine runs it: interpolated over the embedded values, then mapped."""
    return _localise(interpolate(str(value), embedded_values(env)), env)


def config_content(name: str, env: dict[str, str]) -> str:
    """A `configs:` entry's inline content, interpolated (the Redis config, MLflow's login ini)."""
    return as_local(_load()["configs"][name]["content"], env)


def service(name: str) -> dict:
    services = _load()["services"]
    if name not in services:
        raise StackError(f"{COMPOSE_FILE.name} has no service {name!r}")
    return services[name]


def service_command(name: str, env: dict[str, str]) -> list[str]:
    """A service's entrypoint and command, interpolated and with container paths mapped."""
    spec = service(name)
    return [as_local(a, env) for a in [*(spec.get("entrypoint") or []), *(spec.get("command") or [])]]


def service_environment(name: str, env: dict[str, str]) -> dict[str, str]:
    """A service's environment (a mapping in this compose file), interpolated and mapped."""
    return {k: as_local(v, env) for k, v in (service(name).get("environment") or {}).items()}


def service_variable(name: str, key: str, env: dict[str, str]) -> str:
    """One variable of a service's environment (only that one is interpolated)."""
    value = (service(name).get("environment") or {}).get(key)
    if value is None:
        raise StackError(f"{COMPOSE_FILE.name}: service {name} sets no {key}")
    return as_local(value, env)


def airflow_environment(env: dict[str, str], keys: tuple[str, ...]) -> dict[str, str]:
    """The listed variables of every Airflow container (x-airflow-common), as this machine runs them."""
    common = _load()["x-airflow-common"]["environment"]
    missing = [k for k in keys if k not in common]
    if missing:
        raise StackError(f"{COMPOSE_FILE.name}: x-airflow-common sets no {', '.join(missing)}")
    return {k: as_local(common[k], env) for k in keys}
