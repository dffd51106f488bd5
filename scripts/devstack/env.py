"""The stack's configuration: one resolved dict of every setting, paths and ports filled in.

Configuration comes from <repo>/.env (created from .env.example when missing), overridden by the
process environment. Every other devstack module, the demo, the backfill and the tests take the
dict `resolve_env` returns instead of re-deriving paths and ports.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

from jobs import contract
from jobs.contract import default_jars
from scripts.devstack import dotenv

REPO = Path(__file__).resolve().parents[2]
JOBS_VENV = REPO / ".venv-jobs"
AIRFLOW_VENV = REPO / ".venv-airflow"
LOOPBACK = "127.0.0.1"

# (variable, default) of every port `weed mini` opens; gRPC ports default to HTTP + 10000 as in SeaweedFS.
SEAWEEDFS_PORTS = {
    "s3": ("SEAWEEDFS_S3_PORT", 8333),
    "master": ("SEAWEEDFS_MASTER_PORT", 9333),
    "volume": ("SEAWEEDFS_VOLUME_PORT", 9340),
    "filer": ("SEAWEEDFS_FILER_PORT", 8888),
    "admin": ("SEAWEEDFS_ADMIN_PORT", 23646),
}
# The mini's maintenance worker dials the admin server at its HTTP port + 10000, ignoring
# -admin.port.grpc, so that one is not configurable.
GRPC_OFFSET = 10000
FIXED_GRPC = ("admin",)

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The services `up`, `start` and `stop` know, in start order (storage first). The Hive metastore
# runs only with LAKEHOUSE_CATALOG=hive (see catalog_services).
HIVE_METASTORE = "hive-metastore"
# Trino (scripts/devstack/trino.py) reads hive_prod; it runs when TRINO is not off and it can (trino_on).
TRINO = "trino"
# The Pushgateway the stages push to and the Prometheus that scrapes it (Debian's binaries); they
# run when installed (metrics_services), before Airflow so the first task's push is kept.
PUSHGATEWAY = "pushgateway"
PROMETHEUS = "prometheus"
# statsd_exporter turns Airflow's own StatsD metrics into Prometheus series (built by make deps into
# var/bin from requirements/go/statsd_exporter.txt); it starts before Airflow so no early metric is lost.
STATSD_EXPORTER = "statsd-exporter"
# The cluster profile's Spark standalone cluster: pyspark's own Master and Worker classes (the
# production compose's spark-worker command), a master and SPARK_WORKERS workers, on 127.0.0.1.
SPARK_CLUSTER = "spark"
SPARK_MASTER_PROCESS = "spark-master"
# The cluster profile's metadata stores, as in the production compose: Postgres (Debian's server) for
# Airflow and MLflow, Redis (Debian's redis-server) as the Celery broker.
POSTGRES = "postgres"
REDIS = "redis"
SERVICE_NAMES = ("seaweedfs", POSTGRES, REDIS, HIVE_METASTORE, TRINO, "mlflow", SPARK_CLUSTER, PUSHGATEWAY,
                 PROMETHEUS, STATSD_EXPORTER, "airflow")
PUSHGATEWAY_DEFAULT_PORT = 9091
PROMETHEUS_DEFAULT_PORT = 9090
STATSD_EXPORTER_DEFAULT_PORT = 9102  # its /metrics (HTTP, TCP)
STATSD_DEFAULT_PORT = 9125  # where Airflow sends StatsD (UDP)
# Debian's package names the Pushgateway binary prometheus-pushgateway; upstream's is pushgateway.
METRICS_BINARIES = {PUSHGATEWAY: ("prometheus-pushgateway", "pushgateway"), PROMETHEUS: ("prometheus",),
                    STATSD_EXPORTER: (str(REPO / "var" / "bin" / "statsd_exporter"), "statsd_exporter")}
# LAKEHOUSE_PROFILE (make up PROFILE=...): default = the light stack (LocalExecutor and SQLite for
# Airflow, SQLite for MLflow, Spark local[*]); cluster = the production compose's shape on this machine
# (issue 15): Postgres, Redis, Airflow's CeleryExecutor with Celery workers, a Spark standalone master
# with workers. Each profile keeps its state in its own LAKEHOUSE_HOME default.
PROFILES = ("default", "cluster")
DEFAULT_PROFILE = "default"
PROFILE_HOMES = {"default": "./var/stack", "cluster": "./var/stack-cluster"}
# Services only the cluster profile runs.
CLUSTER_SERVICES: tuple[str, ...] = (POSTGRES, REDIS, SPARK_CLUSTER)
POSTGRES_DEFAULT_PORT = 5433  # not 5432: a Postgres of the machine's own may hold that
REDIS_DEFAULT_PORT = 6380
# What the cluster profile's Airflow processes and stages take from the production compose's
# x-airflow-common environment (scripts/devstack/compose.py) instead of this module's defaults.
COMPOSE_WIRED_KEYS = ("AIRFLOW_CONN_SPARK_DEFAULT", "SPARK_CONN_ID", "SPARK_MASTER", "SPARK_SUBMIT_BINARY",
                      "PYSPARK_PYTHON", "SPARK_JARS", "SPARK_PACKAGES", "SPARK_PY_FILES", "SPARK_DRIVER_MEMORY",
                      "SPARK_DRIVER_JAVA_OPTIONS", "SPARK_EXECUTOR_MEMORY", "SPARK_SQL_SHUFFLE_PARTITIONS",
                      "SPARK_LOG_LEVEL", "LAKEHOUSE_JOBS_DIR",
                      "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                      "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
                      "AIRFLOW__CELERY__WORKER_CONCURRENCY")
SPARK_MASTER_DEFAULT_PORT = 7077
SPARK_MASTER_WEBUI_DEFAULT_PORT = 8180  # Spark's 8080 is Airflow's here
# Workers and their executors take free ports on 127.0.0.1 (SPARK_LOCAL_IP), as executors always do;
# cores and memory per worker are the compose's (MLOPS_SPARK_WORKER_CORES, MLOPS_SPARK_WORKER_MEMORY).
SPARK_CLUSTER_DEFAULTS = {"SPARK_WORKERS": "2", "SPARK_DAEMON_MEMORY": "256m", "CELERY_WORKERS": "2"}
# LAKEHOUSE_CATALOG: hive = the user's lakehouse (catalog hive_prod in a Hive metastore, tables on
# SeaweedFS S3); jdbc = the lightest setup (SQLite catalog `local`, tables in a local folder).
CATALOG_CHOICES = ("hive", "jdbc")
DEFAULT_CATALOG = "hive"
HIVE_METASTORE_DEFAULT_PORT = 9083
TRINO_DEFAULT_PORT = 8095
S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"


# The local webhook receiver (scripts/devstack/alert_receiver.py) that stands in for Slack.
ALERT_RECEIVER = "alert-receiver"
ALERT_RECEIVER_DEFAULT_PORT = 8099
# Port variables where 0 means "do not open this one".
OPTIONAL_PORTS = ("SEAWEEDFS_ICEBERG_PORT", "ALERT_RECEIVER_PORT")


def seaweedfs_internal_auth_on(env: dict) -> bool:
    """SEAWEEDFS_INTERNAL_AUTH (default on): JWTs on the filer and volume ports, mTLS on gRPC and the master."""
    return contract.is_on(env.get("SEAWEEDFS_INTERNAL_AUTH"), default=True)


def mlflow_auth_on(env: dict) -> bool:
    """MLFLOW_AUTH=on: the embedded MLflow runs its basic-auth app (default off, README "Security model")."""
    return contract.is_on(env.get(contract.MLFLOW_AUTH_SWITCH), default=False)


def mlflow_auth_ini(env: dict) -> Path:
    """The auth app's config file (0600: it holds the admin password), beside MLflow's database."""
    return Path(env["LAKEHOUSE_HOME"]) / "mlflow" / contract.MLFLOW_AUTH_INI


def metrics_binary(name: str) -> str | None:
    """Path of the Pushgateway's, Prometheus's or statsd_exporter's binary (make deps), None when missing."""
    return next((found for b in METRICS_BINARIES[name] if (found := shutil.which(b))), None)


def profile(env: dict) -> str:
    return env.get("LAKEHOUSE_PROFILE") or DEFAULT_PROFILE


def cluster_profile(env: dict) -> bool:
    return profile(env) == "cluster"


def celery_worker_names(env: dict) -> list[str]:
    """The cluster profile's Celery workers (none in the default profile)."""
    count = int(env.get("CELERY_WORKERS") or 2) if cluster_profile(env) else 0
    return [f"airflow-celery-worker-{i}" for i in range(1, count + 1)]


def catalog_services(env: dict) -> tuple[str, ...]:
    """SERVICE_NAMES this configuration runs: the metastore only behind the hive catalog, Trino when on,
    the Pushgateway, Prometheus and statsd_exporter when their binaries are installed, the cluster
    profile's engines only in that profile."""
    from scripts.devstack.trino import trino_on

    hive = env.get("LAKEHOUSE_CATALOG") == "hive"
    return tuple(n for n in SERVICE_NAMES
                 if (n != HIVE_METASTORE or hive) and (n != TRINO or trino_on(env))
                 and (n not in METRICS_BINARIES or metrics_binary(n))
                 and (n not in CLUSTER_SERVICES or cluster_profile(env)))


def job_services(catalog: str) -> str:
    """LAKEHOUSE_SERVICES of a stack that only Spark stages use (bench, fault drills): what the stages
    reach (storage, the catalog's metastore if any, MLflow, the Pushgateway), without Airflow, Trino,
    Prometheus and Airflow's statsd_exporter. Derived from catalog_services so the metastore rule lives
    in one place."""
    return ",".join(n for n in catalog_services({"LAKEHOUSE_CATALOG": catalog, "TRINO": "off"})
                    if n not in ("airflow", PROMETHEUS, STATSD_EXPORTER))


def alert_receiver_url(env: dict) -> str:
    return f"http://{LOOPBACK}:{env['ALERT_RECEIVER_PORT']}/alerts"


def pushgateway_url(env: dict) -> str:
    return f"http://{LOOPBACK}:{env['PUSHGATEWAY_PORT']}"


def alert_receiver_used(env: dict) -> bool:
    """Whether alerts go to the local receiver (ALERT_WEBHOOK_URL was left unset), so the stack runs it."""
    return int(env.get("ALERT_RECEIVER_PORT") or 0) > 0 and env.get("ALERT_WEBHOOK_URL") == alert_receiver_url(env)


def alerts_file(env: dict) -> Path:
    return Path(env["LAKEHOUSE_HOME"]) / "alerts" / "alerts.jsonl"


def grpc_var(name: str) -> str:
    return SEAWEEDFS_PORTS[name][0].replace("_PORT", "_GRPC_PORT")


class StackError(RuntimeError):
    """A service failed to start or is misconfigured; the message is meant for the user."""


def _repo_path(value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (REPO / p).resolve()


def _is_loopback_url(url: str) -> bool:
    try:
        host = urllib.parse.urlparse(url).hostname
    except ValueError:
        return False
    return host in ("127.0.0.1", "localhost", "::1")


def _detect_java_home() -> str:
    java = shutil.which("java")
    if java:
        return str(Path(os.path.realpath(java)).parent.parent)
    fallback = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    return str(fallback) if fallback.exists() else ""


def _knob(name: str, overrides: dict | None) -> str | None:
    return (overrides or {}).get(name) or os.environ.get(name) or None


def env_file_path(overrides: dict | None = None) -> Path:
    value = _knob("LAKEHOUSE_ENV_FILE", overrides)
    return _repo_path(value) if value else REPO / ".env"


def resolve_env(overrides: dict | None = None) -> dict[str, str]:
    """Return the project's configuration with every embedded default filled in.

    Precedence: .env.example < .env < os.environ (for variables the files name, and JAVA_HOME)
    < `overrides`. Only project variables are returned; callers merge them over os.environ.
    """
    overrides = {k: str(v) for k, v in (overrides or {}).items()}
    example = REPO / ".env.example"
    env_file = env_file_path(overrides)
    example_values = dotenv.read_env_file(example)
    file_values = dotenv.read_env_file(env_file)
    if not env_file.exists() or set(example_values) - set(file_values):
        dotenv.ensure_env(env_file, example)  # creates it, or appends what a newer example added
        file_values = dotenv.read_env_file(env_file)

    v: dict[str, str] = {**example_values, **file_values}
    for key in list(v):
        if key in os.environ:
            v[key] = os.environ[key]
    v.update(overrides)
    placeholders = [k for k, val in v.items() if val.startswith(dotenv.PLACEHOLDER)]
    if placeholders:
        raise StackError(f"{env_file}: placeholder values left in {', '.join(placeholders)}; run `make env`")

    chosen = (v.get("LAKEHOUSE_PROFILE") or DEFAULT_PROFILE).strip().lower()
    if chosen not in PROFILES:
        raise StackError(f"LAKEHOUSE_PROFILE (make ... PROFILE=) must be one of {', '.join(PROFILES)}, got {chosen!r}")
    v["LAKEHOUSE_PROFILE"] = chosen
    # Empty, or the default an older .env spelt out, means the profile's own folder.
    given = (v.get("LAKEHOUSE_HOME") or "").strip()
    home = _repo_path(PROFILE_HOMES[chosen] if given in ("", PROFILE_HOMES[DEFAULT_PROFILE]) else given)
    v["LAKEHOUSE_HOME"] = str(home)
    v["LAKEHOUSE_REPO"] = str(REPO)
    v["LAKEHOUSE_ENV_FILE"] = str(env_file)
    _storage_defaults(v, home)
    _port_defaults(v)
    _mlflow_login(v)
    _cluster_settings(v)
    _airflow_settings(v, home, overrides)
    if cluster_profile(v):
        from scripts.devstack import compose

        v.update(compose.airflow_environment(v, COMPOSE_WIRED_KEYS))
    return v


def spark_master_url(env: dict) -> str:
    """The embedded standalone master's address (the cluster profile submits every stage to it)."""
    return f"spark://{LOOPBACK}:{env['SPARK_MASTER_PORT']}"


def spark_master_ui(env: dict) -> str:
    return f"http://{LOOPBACK}:{env['SPARK_MASTER_WEBUI_PORT']}"


def _cluster_settings(v: dict[str, str]) -> None:
    """The cluster profile submits to its own standalone master unless SPARK_MASTER names a remote one
    (a loopback spark:// URL is the embedded master: overriding SPARK_MASTER_PORT is enough)."""
    if not cluster_profile(v):
        return
    master = v.get("SPARK_MASTER", "").strip()
    if not master or master.startswith("local") or _is_loopback_spark(master):
        v["SPARK_MASTER"] = spark_master_url(v)
    for key, default in SPARK_CLUSTER_DEFAULTS.items():
        v[key] = v.get(key) or default
    for key in ("SPARK_WORKERS", "CELERY_WORKERS"):
        if not v[key].isdigit() or int(v[key]) < 1:
            raise StackError(f"{key}={v[key]!r}: the cluster profile needs at least one worker")
    missing = [k for k in ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD") if not v.get(k)]
    if missing:
        raise StackError(f"the cluster profile needs {', '.join(missing)} in {v['LAKEHOUSE_ENV_FILE']}; run `make env`")


def _is_loopback_spark(master: str) -> bool:
    return master.startswith("spark://") and _is_loopback_url("http://" + master.removeprefix("spark://"))


def _mlflow_login(v: dict[str, str]) -> None:
    """With MLFLOW_AUTH=on every stack process (Airflow, its tasks, the Spark stages, `stack.py run`)
    logs in to MLflow as the pipeline's user: the MLflow client reads these two variables itself.
    Off: nothing is added, the server and its clients run exactly as before."""
    if not mlflow_auth_on(v):
        return
    v["MLFLOW_ADMIN_USER"] = v.get("MLFLOW_ADMIN_USER") or contract.DEFAULT_MLFLOW_ADMIN_USER
    v["MLFLOW_PIPELINE_USER"] = v.get("MLFLOW_PIPELINE_USER") or contract.DEFAULT_MLFLOW_PIPELINE_USER
    missing = [k for k in ("MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
               if not v.get(k)]
    if missing:
        raise StackError(f"MLFLOW_AUTH=on needs {', '.join(missing)} in {v['LAKEHOUSE_ENV_FILE']}; run `make env`")
    v[contract.MLFLOW_CLIENT_USER_VAR] = v["MLFLOW_PIPELINE_USER"]
    v[contract.MLFLOW_CLIENT_PASSWORD_VAR] = v["MLFLOW_PIPELINE_PASSWORD"]


def _storage_defaults(v: dict[str, str], home: Path) -> None:
    """The pipeline's storage locations and the binaries Spark runs with."""
    kind = (v.get("LAKEHOUSE_CATALOG") or DEFAULT_CATALOG).strip().lower()
    if kind not in CATALOG_CHOICES:
        raise StackError(f"LAKEHOUSE_CATALOG must be one of {', '.join(CATALOG_CHOICES)}, got {kind!r}")
    v["LAKEHOUSE_CATALOG"] = kind
    v["HIVE_METASTORE_PORT"] = v.get("HIVE_METASTORE_PORT") or str(HIVE_METASTORE_DEFAULT_PORT)
    # An older .env spells out the jdbc defaults (local, jdbc, jdbc:sqlite:...): LAKEHOUSE_CATALOG decides.
    if kind == "hive":
        hive_defaults = {"ICEBERG_CATALOG": "hive_prod", "ICEBERG_CATALOG_TYPE": "hive",
                         "ICEBERG_CATALOG_URI": f"thrift://{LOOPBACK}:{v['HIVE_METASTORE_PORT']}",
                         "ICEBERG_WAREHOUSE": f"s3a://{v.get('S3_BUCKET') or 'lakehouse'}/warehouse"}
        other_kind = {"ICEBERG_CATALOG": ("local",), "ICEBERG_CATALOG_TYPE": ("jdbc",),
                      "ICEBERG_CATALOG_URI": ("jdbc:",), "ICEBERG_WAREHOUSE": ("file:",)}
    else:
        hive_defaults = {"ICEBERG_CATALOG": "local", "ICEBERG_CATALOG_TYPE": "jdbc",
                         "ICEBERG_CATALOG_URI": f"jdbc:sqlite:{home}/iceberg/catalog.db",
                         "ICEBERG_WAREHOUSE": f"file://{home}/iceberg/warehouse"}
        other_kind = {"ICEBERG_CATALOG": ("hive_prod",), "ICEBERG_CATALOG_TYPE": ("hive",),
                      "ICEBERG_CATALOG_URI": ("thrift:",), "ICEBERG_WAREHOUSE": ()}
    for key, default in hive_defaults.items():
        if not v.get(key) or v[key].startswith(other_kind[key]):
            v[key] = default
    if not v.get("RAW_TICKS_PATH"):
        v["RAW_TICKS_PATH"] = str(home / "raw" / "ticks")
    if not v.get("SPARK_JARS") and not v.get("SPARK_PACKAGES"):
        v["SPARK_JARS"] = default_jars(REPO)
    v.setdefault("S3_BUCKET", "lakehouse")
    if not v.get("MLFLOW_ARTIFACTS_DESTINATION"):
        v["MLFLOW_ARTIFACTS_DESTINATION"] = f"s3://{v['S3_BUCKET']}/mlflow"

    # Spark runs from the jobs environment even when Airflow (another venv) starts it.
    if not v.get("SPARK_SUBMIT_BINARY"):
        v["SPARK_SUBMIT_BINARY"] = str(JOBS_VENV / "bin" / "spark-submit")
    if not v.get("PYSPARK_PYTHON"):
        v["PYSPARK_PYTHON"] = str(JOBS_VENV / "bin" / "python")
    if not v.get("JAVA_HOME"):
        v["JAVA_HOME"] = os.environ.get("JAVA_HOME") or _detect_java_home()
    from scripts.devstack.trino import trino_java_home

    v["TRINO_JAVA_HOME"] = trino_java_home(v.get("TRINO_JAVA_HOME") or "")


def _port_defaults(v: dict[str, str]) -> None:
    """Ports (validated) and the local URLs built from them, so overriding a port is enough; S3 quirks."""
    v.setdefault("MLFLOW_PORT", "5000")
    v.setdefault("AIRFLOW_API_PORT", "8080")
    for name, (var, default) in SEAWEEDFS_PORTS.items():
        if not v.get(var):
            v[var] = str(default)
        if name not in FIXED_GRPC and not v.get(grpc_var(name)):
            v[grpc_var(name)] = str(int(v[var]) + GRPC_OFFSET)
    v.setdefault("SEAWEEDFS_ICEBERG_PORT", "0")
    v["TRINO_PORT"] = v.get("TRINO_PORT") or str(TRINO_DEFAULT_PORT)
    v["ALERT_RECEIVER_PORT"] = v.get("ALERT_RECEIVER_PORT") or str(ALERT_RECEIVER_DEFAULT_PORT)
    v["PUSHGATEWAY_PORT"] = v.get("PUSHGATEWAY_PORT") or str(PUSHGATEWAY_DEFAULT_PORT)
    v["PROMETHEUS_PORT"] = v.get("PROMETHEUS_PORT") or str(PROMETHEUS_DEFAULT_PORT)
    v["STATSD_EXPORTER_PORT"] = v.get("STATSD_EXPORTER_PORT") or str(STATSD_EXPORTER_DEFAULT_PORT)
    v["STATSD_PORT"] = v.get("STATSD_PORT") or str(STATSD_DEFAULT_PORT)
    v["SPARK_MASTER_PORT"] = v.get("SPARK_MASTER_PORT") or str(SPARK_MASTER_DEFAULT_PORT)
    v["POSTGRES_PORT"] = v.get("POSTGRES_PORT") or str(POSTGRES_DEFAULT_PORT)
    v["REDIS_PORT"] = v.get("REDIS_PORT") or str(REDIS_DEFAULT_PORT)
    v["SPARK_MASTER_WEBUI_PORT"] = v.get("SPARK_MASTER_WEBUI_PORT") or str(SPARK_MASTER_WEBUI_DEFAULT_PORT)
    for key in [k for k in v if k.endswith("_PORT")]:
        if not v[key].isdigit() or int(v[key]) > 65535 or (int(v[key]) == 0 and key not in OPTIONAL_PORTS):
            raise StackError(f"{key}={v[key]!r} is not a valid port")
    if int(v["SEAWEEDFS_ADMIN_PORT"]) + GRPC_OFFSET > 65535:
        raise StackError(f"SEAWEEDFS_ADMIN_PORT must be at most {65535 - GRPC_OFFSET} "
                         f"(its gRPC port is +{GRPC_OFFSET})")
    mlflow_url = f"http://{LOOPBACK}:{v['MLFLOW_PORT']}"
    s3_url = f"http://{LOOPBACK}:{v['SEAWEEDFS_S3_PORT']}"
    for key, url in (("MLFLOW_TRACKING_URI", mlflow_url), ("MLFLOW_UI_URL", mlflow_url),
                     ("MLFLOW_S3_ENDPOINT_URL", s3_url)):
        if not v.get(key) or _is_loopback_url(v[key]):
            v[key] = url

    # Every stage pushes its figures to the embedded Pushgateway unless the user named another one
    # (a loopback URL is the embedded one: as for MLflow, overriding the port is enough).
    pushgateway = v.get("PUSHGATEWAY_URL", "").strip()
    if (not pushgateway or _is_loopback_url(pushgateway)) and metrics_binary(PUSHGATEWAY):
        v["PUSHGATEWAY_URL"] = pushgateway_url(v)
    v["PROMETHEUS_URL"] = f"http://{LOOPBACK}:{v['PROMETHEUS_PORT']}"

    # Alerts go to the local receiver unless a real channel is configured (ALERT_RECEIVER_PORT=0: none).
    if not v.get("ALERT_WEBHOOK_URL", "").strip() and int(v["ALERT_RECEIVER_PORT"]):
        v["ALERT_WEBHOOK_URL"] = alert_receiver_url(v)

    # boto3 >= 1.36 checksum trailers get stored into SeaweedFS objects; path-style for a local endpoint.
    v["AWS_REQUEST_CHECKSUM_CALCULATION"] = v.get("AWS_REQUEST_CHECKSUM_CALCULATION") or "when_required"
    v["AWS_RESPONSE_CHECKSUM_VALIDATION"] = v.get("AWS_RESPONSE_CHECKSUM_VALIDATION") or "when_required"
    v["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = v.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE") or "path"
    # Offline embedded stack: MLflow 3.17's telemetry thread raised KeyError('_MLFLOW_TELEMETRY_SESSION_ID')
    # inside a stage's log-batch call under load (seen in make demo); nothing to report to anyway.
    v["MLFLOW_DISABLE_TELEMETRY"] = v.get("MLFLOW_DISABLE_TELEMETRY") or "true"
    v.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    _s3_file_io(v)


def _s3_file_io(v: dict[str, str]) -> None:
    """Tables under s3:// or s3a:// go through Iceberg's S3FileIO on the embedded SeaweedFS.

    The keys travel with the catalog's FileIO (as in docker-compose-mlops.yml); properties the
    user set in ICEBERG_CATALOG_PROPERTIES win.
    """
    if not v["ICEBERG_WAREHOUSE"].startswith(("s3://", "s3a://")):
        return
    props = {
        "io-impl": S3_FILE_IO,
        "s3.endpoint": v["MLFLOW_S3_ENDPOINT_URL"],
        "s3.path-style-access": "true",
        "s3.access-key-id": v.get("AWS_ACCESS_KEY_ID", ""),
        "s3.secret-access-key": v.get("AWS_SECRET_ACCESS_KEY", ""),
        "client.region": v["AWS_DEFAULT_REGION"],
    }
    props.update(json.loads(v.get("ICEBERG_CATALOG_PROPERTIES") or "{}"))
    v["ICEBERG_CATALOG_PROPERTIES"] = json.dumps(props)


# Simple auth manager role -> the variable naming its user and that user's default name.
AIRFLOW_ROLE_USERS = {"admin": ("AIRFLOW_ADMIN_USER", "admin"), "viewer": ("AIRFLOW_VIEWER_USER", "viewer"),
                      "op": ("AIRFLOW_OP_USER", "operator")}


def airflow_users(v: dict) -> dict[str, str]:
    """Role -> user of the embedded Airflow: the admin, a read-only viewer and an operator (issue 17)."""
    return {role: v.get(var) or default for role, (var, default) in AIRFLOW_ROLE_USERS.items()}


def _airflow_settings(v: dict[str, str], home: Path, overrides: dict[str, str]) -> None:
    """Structural settings are forced (they must match this stack), tunables only defaulted."""
    af_home = home / "airflow"
    api_url = f"http://{LOOPBACK}:{v['AIRFLOW_API_PORT']}"
    if not v.get("AIRFLOW_UI_URL") or _is_loopback_url(v["AIRFLOW_UI_URL"]):
        v["AIRFLOW_UI_URL"] = api_url  # what MLflow runs link back to
    v.update({
        "AIRFLOW_HOME": str(af_home),
        "AIRFLOW_API_URL": api_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(_repo_path(_knob("LAKEHOUSE_DAGS_FOLDER", overrides) or "dags")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        # The DAGs and the plugin import the shared names from jobs.contract (stdlib only).
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af_home}/airflow.db",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": v["AIRFLOW_API_PORT"],
        # Every user gets its password generated into the same file as the admin's (health.password_file).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}"
                                                             for role, user in airflow_users(v).items()),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": v.get("SPARK_MASTER") or "local[*]"}),
    })
    tunables = {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    }
    for key, default in tunables.items():
        v[key] = overrides.get(key) or v.get(key) or os.environ.get(key) or default
    if metrics_binary(STATSD_EXPORTER):
        v.update(airflow_statsd_settings(LOOPBACK, v["STATSD_PORT"]))


def airflow_statsd_settings(host: str, port: str) -> dict[str, str]:
    """Airflow's metrics over StatsD to statsd_exporter, as the production compose sets them.

    Current names with InfluxDB-style tags (dag_id, task_id, state) instead of the legacy names that
    put ids into the name, so every series has bounded labels; run_id and job_id are never sent.
    """
    return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": host,
            "AIRFLOW__METRICS__STATSD_PORT": str(port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True", "AIRFLOW__METRICS__LEGACY_NAMES_ON": "False",
            "AIRFLOW__METRICS__STATSD_DISABLED_TAGS": "job_id,run_id"}


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The full environment of a child process: the caller's environment plus the project's."""
    return {**os.environ, **env}
