#!/usr/bin/env python3
"""The embedded single-machine stack: SeaweedFS, MLflow and Airflow as plain local processes.

Used where there is no Docker engine (developer machines of this project's kind, CI). Every service
runs from the project's virtual environments, binds to 127.0.0.1 only and keeps its state under
$LAKEHOUSE_HOME, so `down` plus deleting that folder is a full reset.

    .venv-jobs/bin/python scripts/stack.py up | down | status | env | run -- CMD...
    .venv-jobs/bin/python scripts/stack.py stop SERVICE... | start SERVICE...   (seaweedfs, mlflow, airflow)

Configuration: <repo>/.env (created by make_env.py when missing), overridden by the process
environment. Knobs read from the environment only: LAKEHOUSE_ENV_FILE (another .env, e.g. for tests),
LAKEHOUSE_DAGS_FOLDER (default <repo>/dags), LAKEHOUSE_START_TIMEOUT (seconds per health wait),
LAKEHOUSE_SERVICES (comma list of the services `up` starts and `status` judges; default all).
`stop`/`start` take one service down and bring it back with its data (fault drills, tests).
Other scripts import `resolve_env` and `airflow_token` from here instead of re-deriving paths and ports.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
import make_env  # noqa: E402  (sibling script, stdlib only)

JOBS_VENV = REPO / ".venv-jobs"
AIRFLOW_VENV = REPO / ".venv-airflow"
LOOPBACK = "127.0.0.1"
STOP_GRACE_SECONDS = 20.0
POLL_SECONDS = 0.5
PASSWORD_FILE_NAME = "simple_auth_manager_passwords.json.generated"

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


def grpc_var(name: str) -> str:
    return SEAWEEDFS_PORTS[name][0].replace("_PORT", "_GRPC_PORT")
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The services `up`, `start` and `stop` know, in start order (storage first).
SERVICE_NAMES = ("seaweedfs", "mlflow", "airflow")
# Health keys of /api/v2/monitor/health for each long-running Airflow process.
AIRFLOW_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


class StackError(RuntimeError):
    """A service failed to start or is misconfigured; the message is meant for the user."""


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


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
    example_values = make_env.read_env_file(example)
    file_values = make_env.read_env_file(env_file)
    if not env_file.exists() or set(example_values) - set(file_values):
        make_env.ensure_env(env_file, example)  # creates it, or appends what a newer example added
        file_values = make_env.read_env_file(env_file)

    v: dict[str, str] = {**example_values, **file_values}
    for key in list(v):
        if key in os.environ:
            v[key] = os.environ[key]
    v.update(overrides)
    placeholders = [k for k, val in v.items() if val.startswith(make_env.PLACEHOLDER)]
    if placeholders:
        raise StackError(f"{env_file}: placeholder values left in {', '.join(placeholders)}; run `make env`")

    home = _repo_path(v.get("LAKEHOUSE_HOME") or "./var/stack")
    v["LAKEHOUSE_HOME"] = str(home)
    v["LAKEHOUSE_REPO"] = str(REPO)
    v["LAKEHOUSE_ENV_FILE"] = str(env_file)

    # Embedded defaults of the pipeline's storage locations.
    if not v.get("ICEBERG_CATALOG_URI"):
        v["ICEBERG_CATALOG_URI"] = f"jdbc:sqlite:{home}/iceberg/catalog.db"
    if not v.get("ICEBERG_WAREHOUSE"):
        v["ICEBERG_WAREHOUSE"] = f"file://{home}/iceberg/warehouse"
    if not v.get("RAW_TICKS_PATH"):
        v["RAW_TICKS_PATH"] = str(home / "raw" / "ticks")
    if not v.get("SPARK_JARS") and not v.get("SPARK_PACKAGES"):
        v["SPARK_JARS"] = ",".join(str(p) for p in sorted((REPO / "var" / "jars").glob("*.jar")))
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

    # Ports: local URLs follow the port variables, so overriding a port is enough.
    v.setdefault("MLFLOW_PORT", "5000")
    v.setdefault("AIRFLOW_API_PORT", "8080")
    for name, (var, default) in SEAWEEDFS_PORTS.items():
        if not v.get(var):
            v[var] = str(default)
        if name not in FIXED_GRPC and not v.get(grpc_var(name)):
            v[grpc_var(name)] = str(int(v[var]) + GRPC_OFFSET)
    v.setdefault("SEAWEEDFS_ICEBERG_PORT", "0")
    for key in [k for k in v if k.endswith("_PORT")]:
        if not v[key].isdigit() or int(v[key]) > 65535 or (int(v[key]) == 0 and key != "SEAWEEDFS_ICEBERG_PORT"):
            raise StackError(f"{key}={v[key]!r} is not a valid port")
    if int(v["SEAWEEDFS_ADMIN_PORT"]) + GRPC_OFFSET > 65535:
        raise StackError(f"SEAWEEDFS_ADMIN_PORT must be at most {65535 - GRPC_OFFSET} (its gRPC port is +{GRPC_OFFSET})")
    mlflow_url = f"http://{LOOPBACK}:{v['MLFLOW_PORT']}"
    s3_url = f"http://{LOOPBACK}:{v['SEAWEEDFS_S3_PORT']}"
    for key, url in (("MLFLOW_TRACKING_URI", mlflow_url), ("MLFLOW_UI_URL", mlflow_url),
                     ("MLFLOW_S3_ENDPOINT_URL", s3_url)):
        if not v.get(key) or _is_loopback_url(v[key]):
            v[key] = url

    # boto3 >= 1.36 checksum trailers get stored into SeaweedFS objects; path-style for a local endpoint.
    v["AWS_REQUEST_CHECKSUM_CALCULATION"] = v.get("AWS_REQUEST_CHECKSUM_CALCULATION") or "when_required"
    v["AWS_RESPONSE_CHECKSUM_VALIDATION"] = v.get("AWS_RESPONSE_CHECKSUM_VALIDATION") or "when_required"
    v["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = v.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE") or "path"
    v.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    # Airflow: structural settings are forced (they must match this stack), tunables only defaulted.
    af_home = home / "airflow"
    api_url = f"http://{LOOPBACK}:{v['AIRFLOW_API_PORT']}"
    if not v.get("AIRFLOW_UI_URL") or _is_loopback_url(v["AIRFLOW_UI_URL"]):
        v["AIRFLOW_UI_URL"] = api_url  # what MLflow runs link back to
    v.update({
        "AIRFLOW_HOME": str(af_home),
        "AIRFLOW_API_URL": api_url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(_repo_path(_knob("LAKEHOUSE_DAGS_FOLDER", overrides) or "dags")),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af_home}/airflow.db",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": v["AIRFLOW_API_PORT"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{v.get('AIRFLOW_ADMIN_USER') or 'admin'}:admin",
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
    return v


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The full environment of a child process: the caller's environment plus the project's."""
    return {**os.environ, **env}


# --------------------------------------------------------------------------------------------------
# Processes: pid files, liveness, start and stop
# --------------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    group: str
    argv: list[str]
    cwd: Path
    ports: list[tuple[str, int]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)


def _dirs(env: dict) -> dict[str, Path]:
    home = Path(env["LAKEHOUSE_HOME"])
    return {"home": home, "run": home / "run", "logs": home / "logs", "seaweedfs": home / "seaweedfs",
            "mlflow": home / "mlflow", "airflow": Path(env["AIRFLOW_HOME"]), "iceberg": home / "iceberg",
            "raw": home / "raw"}


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp [2], session [3])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


_BOOT_TIME: float | None = None


def _start_epoch(fields: list[str]) -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                _BOOT_TIME = float(line.split()[1])
    return (_BOOT_TIME or 0.0) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session: the service and everything it spawned."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and int(fields[3]) == sid:
                members.append(int(entry))
    return members


def _pid_file(env: dict, name: str) -> tuple[int | None, bool]:
    """(pid recorded for a service, whether that process is still ours and alive)."""
    path = _dirs(env)["run"] / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
        written = path.stat().st_mtime
    except (FileNotFoundError, ValueError, IndexError):
        return None, False
    fields = _stat(pid)
    # A pid reused by an unrelated process started after we wrote the file; ours started before.
    alive = fields is not None and fields[0] != "Z" and _start_epoch(fields) <= written + 2
    return pid, alive


def read_pid(env: dict, name: str) -> int | None:
    """The pid of a running service, or None (no side effects; see clear_stale)."""
    pid, alive = _pid_file(env, name)
    return pid if alive else None


def clear_stale(env: dict, name: str) -> None:
    """Remove a dead service's pid file and end what it left running (e.g. after `kill -9`).

    Linux never hands out a pid still used as a session id, so the members of a dead leader's
    session are leftovers of that service (LocalExecutor workers, task runners, JVMs).
    """
    pid, alive = _pid_file(env, name)
    if pid is None or alive:
        return
    if _stat(pid) is None or (_stat(pid) or ["Z"])[0] == "Z":
        orphans = _session_members(pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for member in orphans:
                with suppress(ProcessLookupError):
                    os.kill(member, sig)
            deadline = time.monotonic() + 5
            while (orphans := _session_members(pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not orphans:
                break
    (_dirs(env)["run"] / f"{name}.pid").unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(content[-lines:])


def _log_path(env: dict, name: str) -> Path:
    return _dirs(env)["logs"] / f"{name}.log"


def _failure(env: dict, names: list[str], message: str) -> StackError:
    parts = [message]
    for name in names:
        parts.append(f"--- last 30 lines of {_log_path(env, name)} ---\n{tail(_log_path(env, name))}")
    parts.append("Stop what was started with: scripts/stack.py down")
    return StackError("\n".join(parts))


def start_service(env: dict, svc: Service) -> int:
    for var, port in svc.ports:
        if port and not _port_free(port):
            raise StackError(f"{svc.name}: port {port} ({var}) is already in use on {LOOPBACK}; "
                             f"stop that process or set {var} in {env['LAKEHOUSE_ENV_FILE']}")
    d = _dirs(env)
    clear_stale(env, svc.name)
    log_path = _log_path(env, svc.name)
    svc.cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(svc.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(svc.argv, cwd=svc.cwd, env={**process_env(env), **svc.extra_env},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (d["run"] / f"{svc.name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def stop_services(env: dict, names: list[str], grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """SIGTERM each service's process group, wait for its whole session to exit, SIGKILL late ones."""
    run_dir = _dirs(env)["run"]
    pids = {}
    for name in names:
        pid = read_pid(env, name)
        if pid is None:
            clear_stale(env, name)
            continue
        pids[name] = pid
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    stopped = []
    deadline = time.monotonic() + grace
    killed = False
    while pids:
        for name, pid in list(pids.items()):
            if not _session_members(pid):
                (run_dir / f"{name}.pid").unlink(missing_ok=True)
                stopped.append(name)
                del pids[name]
        if not pids:
            break
        if time.monotonic() > deadline:
            if killed:
                raise StackError(f"could not stop {', '.join(pids)} (pids {list(pids.values())})")
            for name, pid in pids.items():
                print(f"{name}: no exit {grace:.0f}s after SIGTERM, sending SIGKILL", file=sys.stderr)
                for member in _session_members(pid):
                    try:
                        os.kill(member, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            killed = True
            deadline = time.monotonic() + 10
        time.sleep(0.2)
    return stopped


# --------------------------------------------------------------------------------------------------
# Health checks
# --------------------------------------------------------------------------------------------------


def _http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None,
               timeout: float = 10.0) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, {"error": str(e)}
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"raw": raw.decode(errors="replace")}


def s3_client(env: dict):
    """A boto3 S3 client for the embedded SeaweedFS (path-style, no checksum trailers)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], region_name=env.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=3,
                      read_timeout=10, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )


def _buckets(env: dict) -> list[str]:
    names = [env["S3_BUCKET"]]
    dest = urllib.parse.urlparse(env["MLFLOW_ARTIFACTS_DESTINATION"])
    if dest.scheme == "s3" and dest.netloc and dest.netloc not in names:
        names.append(dest.netloc)
    return names


def seaweedfs_health(env: dict) -> tuple[bool, str]:
    """Healthy means: anonymous access is refused AND the configured identity can use the bucket."""
    bucket = env["S3_BUCKET"]
    status, _ = _http_get(f"{env['MLFLOW_S3_ENDPOINT_URL']}/{bucket}")
    if status != 403:
        return False, f"anonymous GET /{bucket} returned {status or 'no answer'} (want 403)"
    try:
        s3_client(env).head_bucket(Bucket=bucket)
    except Exception as e:  # noqa: BLE001 - any failure means unhealthy
        return False, f"signed head_bucket({bucket}) failed: {e}"
    return True, "ok"


def ensure_buckets(env: dict) -> None:
    from botocore.exceptions import ClientError

    client = s3_client(env)
    for bucket in _buckets(env):
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise


def mlflow_health(env: dict) -> tuple[bool, str]:
    status, body = _http_get(f"http://{LOOPBACK}:{env['MLFLOW_PORT']}/health")
    ok = status == 200 and body.strip() == b"OK"
    return ok, "ok" if ok else f"GET /health returned {status or 'no answer'}"


def ensure_experiment(env: dict) -> str:
    """Create the pipeline's experiment once; its artifacts go through the server's S3 proxy."""
    base = f"http://{LOOPBACK}:{env['MLFLOW_PORT']}/api/2.0/mlflow/experiments"
    name = env["MLFLOW_EXPERIMENT_NAME"]
    status, body = _http_json("GET", f"{base}/get-by-name?{urllib.parse.urlencode({'experiment_name': name})}")
    if status == 200:
        return body["experiment"]["experiment_id"]
    status, body = _http_json("POST", f"{base}/create", {"name": name})
    if status == 200:
        return body["experiment_id"]
    if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        return ensure_experiment(env)
    raise StackError(f"could not create MLflow experiment {name!r}: HTTP {status} {body}")


def airflow_health(env: dict, since: dict[str, float] | None = None) -> tuple[dict[str, bool], str]:
    """Per-process health from the API server's monitor endpoint (heartbeats in the metadata DB).

    `since` maps components to the epoch they were (re)started: a heartbeat older than that belongs
    to a previous, killed process whose job row still looks alive for a while.
    """
    from datetime import datetime

    status, body = _http_json("GET", f"{env['AIRFLOW_API_URL']}/api/v2/monitor/health", timeout=5)
    result = {c: False for c in AIRFLOW_COMPONENTS}
    if status != 200:
        return result, f"GET /api/v2/monitor/health returned {status or 'no answer'}"
    db_ok = (body.get("metadatabase") or {}).get("status") == "healthy"
    result["api-server"] = db_ok
    for comp, key in AIRFLOW_HEALTH_KEYS.items():
        info = body.get(key) or {}
        ok = db_ok and info.get("status") == "healthy"
        if ok and since and comp in since:
            beat = info.get(f"latest_{key}_heartbeat")
            ok = bool(beat) and datetime.fromisoformat(beat).timestamp() >= since[comp] - 1
        result[comp] = ok
    return result, json.dumps(body)


def password_file(env: dict) -> Path:
    return Path(env["AIRFLOW_HOME"]) / PASSWORD_FILE_NAME


def airflow_password(env: dict) -> str | None:
    try:
        return json.loads(password_file(env).read_text()).get(env.get("AIRFLOW_ADMIN_USER") or "admin")
    except (FileNotFoundError, ValueError):
        return None


def airflow_token(env: dict, password: str | None = None) -> str:
    """A JWT for the Airflow REST API as the admin user (POST /auth/token)."""
    user = env.get("AIRFLOW_ADMIN_USER") or "admin"
    password = password if password is not None else airflow_password(env)
    if password is None:
        raise StackError(f"no generated Airflow password in {password_file(env)} (is the stack up?)")
    status, body = _http_json("POST", f"{env['AIRFLOW_API_URL']}/auth/token",
                              {"username": user, "password": password})
    if status not in (200, 201) or "access_token" not in body:
        raise StackError(f"Airflow /auth/token refused user {user!r}: HTTP {status} {body}")
    return body["access_token"]


# --------------------------------------------------------------------------------------------------
# The services
# --------------------------------------------------------------------------------------------------


def _socket_path(env: dict, name: str) -> str:
    path = _dirs(env)["run"] / f"{name}.sock"
    if len(str(path)) < 100:  # AF_UNIX path limit is 108 bytes
        return str(path)
    import hashlib

    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"/tmp/lakehouse-{digest}-{name}.sock"


def _remove_sockets(env: dict) -> None:
    """SeaweedFS leaves its unix sockets behind on exit."""
    for name in ("seaweedfs-filer", "seaweedfs-s3"):
        Path(_socket_path(env, name)).unlink(missing_ok=True)


def seaweedfs_service(env: dict) -> Service:
    d = _dirs(env)
    port = {name: int(env[var]) for name, (var, _) in SEAWEEDFS_PORTS.items()}
    grpc = {name: port[name] + GRPC_OFFSET if name in FIXED_GRPC else int(env[grpc_var(name)])
            for name in SEAWEEDFS_PORTS}
    iceberg = int(env.get("SEAWEEDFS_ICEBERG_PORT") or 0)
    argv = [
        str(JOBS_VENV / "bin" / "weed"), "mini",
        f"-dir={d['seaweedfs'] / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-s3.config={d['seaweedfs'] / 's3.json'}",
        f"-s3.port={port['s3']}", f"-s3.port.grpc={grpc['s3']}",
        f"-s3.port.iceberg={iceberg}", "-s3.port.lance=0",
        f"-master.port={port['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={port['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={port['filer']}", f"-filer.port.grpc={grpc['filer']}",
        f"-admin.port={port['admin']}", f"-admin.port.grpc={grpc['admin']}",
        "-admin.ui=false", f"-admin.dataDir={d['seaweedfs'] / 'admin'}",
        "-webdav=false", "-master.telemetry=false",
        f"-filer.localSocket={_socket_path(env, 'seaweedfs-filer')}",
        f"-s3.localSocket={_socket_path(env, 'seaweedfs-s3')}",
    ]
    ports = [(var, port[n]) for n, (var, _) in SEAWEEDFS_PORTS.items()]
    ports += [(f"SEAWEEDFS_ADMIN_PORT + {GRPC_OFFSET}" if n in FIXED_GRPC else grpc_var(n), grpc[n])
              for n in SEAWEEDFS_PORTS]
    if iceberg:
        ports.append(("SEAWEEDFS_ICEBERG_PORT", iceberg))
    for var, p in ports:
        if not 0 < p < 65536:
            raise StackError(f"{var}={p} is not a valid port")
    return Service("seaweedfs", "seaweedfs", argv, d["seaweedfs"], ports)


def write_s3_identities(env: dict) -> Path:
    """One identity with the .env keys: with any identity configured, SeaweedFS refuses anonymous calls."""
    path = _dirs(env)["seaweedfs"] / "s3.json"
    config = {"identities": [{
        "name": "lakehouse",
        "credentials": [{"accessKey": env["AWS_ACCESS_KEY_ID"], "secretKey": env["AWS_SECRET_ACCESS_KEY"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
    os.chmod(path, 0o600)
    return path


def mlflow_service(env: dict) -> Service:
    d = _dirs(env)
    port = env["MLFLOW_PORT"]
    argv = [
        str(JOBS_VENV / "bin" / "mlflow"), "server",
        "--host", LOOPBACK, "--port", port, "--workers", "1",
        "--backend-store-uri", f"sqlite:///{d['mlflow'] / 'mlflow.db'}",
        "--artifacts-destination", env["MLFLOW_ARTIFACTS_DESTINATION"],
        "--allowed-hosts", f"{LOOPBACK}:{port},localhost:{port},{LOOPBACK},localhost",
    ]
    # Job execution (GenAI scorers) spawns extra huey workers we do not use.
    extra = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return Service("mlflow", "mlflow", argv, d["mlflow"], [("MLFLOW_PORT", int(port))], extra)


def airflow_services(env: dict) -> list[Service]:
    d = _dirs(env)
    airflow = str(AIRFLOW_VENV / "bin" / "airflow")
    # Airflow's venv first; the jobs venv after it so a bare `spark-submit` resolves to full pyspark.
    path = os.pathsep.join([str(AIRFLOW_VENV / "bin"), str(JOBS_VENV / "bin"),
                            str(Path(env["JAVA_HOME"]) / "bin"), os.environ.get("PATH", "/usr/bin:/bin")])
    extra = {"PATH": path}
    port = int(env["AIRFLOW_API_PORT"])
    argvs = {
        "api-server": [airflow, "api-server", "--host", LOOPBACK, "--port", str(port),
                       "--workers", env.get("AIRFLOW__API__WORKERS") or "1"],
        # --skip-serve-logs: the log server binds every interface; logs are read from local files here.
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    return [Service(f"airflow-{c}", "airflow", argvs[c], d["airflow"],
                    [("AIRFLOW_API_PORT", port)] if c == "api-server" else [], extra)
            for c in AIRFLOW_COMPONENTS]


def all_services(env: dict) -> list[Service]:
    return [seaweedfs_service(env), mlflow_service(env), *airflow_services(env)]


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def _timeout(default: float) -> float:
    value = os.environ.get("LAKEHOUSE_START_TIMEOUT")
    return float(value) if value else default


def _wait(env: dict, names: list[str], check, label: str, timeout: float) -> None:
    """Poll `check` until it passes; fail fast if a watched process dies, else at the deadline."""
    deadline = time.monotonic() + timeout
    detail = ""
    while True:
        ok, detail = check()
        if ok:
            return
        dead = [n for n in names if read_pid(env, n) is None]
        if dead:
            raise _failure(env, dead, f"{', '.join(dead)} exited while waiting for {label} ({detail})")
        if time.monotonic() > deadline:
            raise _failure(env, names, f"{label} not healthy after {timeout:.0f}s: {detail}")
        time.sleep(POLL_SECONDS)


def _up_seaweedfs(env: dict) -> str:
    svc = seaweedfs_service(env)
    if read_pid(env, svc.name) is not None and seaweedfs_health(env)[0]:
        return "already running"
    if read_pid(env, svc.name) is None:
        _remove_sockets(env)
        write_s3_identities(env)
        start_service(env, svc)
        state = "started"
    else:
        state = "running, waiting for health"
    s3 = env["MLFLOW_S3_ENDPOINT_URL"]

    def s3_answers():
        status, _ = _http_get(f"{s3}/")
        return status == 403, f"anonymous GET / on {s3} returned {status or 'no answer'}"

    _wait(env, [svc.name], s3_answers, "SeaweedFS S3", _timeout(60))
    ensure_buckets(env)
    _wait(env, [svc.name], lambda: seaweedfs_health(env), "SeaweedFS", _timeout(30))
    return state


def _up_mlflow(env: dict) -> str:
    svc = mlflow_service(env)
    state = "already running"
    if read_pid(env, svc.name) is None:
        start_service(env, svc)
        state = "started"
    _wait(env, [svc.name], lambda: mlflow_health(env), "MLflow", _timeout(120))
    ensure_experiment(env)
    return state


def _up_airflow(env: dict) -> str:
    services = airflow_services(env)
    missing = [s for s in services if read_pid(env, s.name) is None]
    if missing:
        migrate_log = _log_path(env, "airflow-db-migrate")
        with open(migrate_log, "ab") as log:
            rc = subprocess.call([str(AIRFLOW_VENV / "bin" / "airflow"), "db", "migrate"],
                                 cwd=env["AIRFLOW_HOME"], env={**process_env(env), **services[0].extra_env},
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise _failure(env, ["airflow-db-migrate"], f"`airflow db migrate` failed with exit code {rc}")
        for svc in missing:
            start_service(env, svc)
    since = {s.name.removeprefix("airflow-"): time.time() for s in missing}

    def healthy():
        comps, detail = airflow_health(env, since)
        bad = [c for c, ok in comps.items() if not ok]
        return not bad, (f"not healthy: {', '.join(bad)}; {detail}" if bad else "ok")

    _wait(env, [s.name for s in services], healthy, "Airflow", _timeout(180))
    _wait(env, ["airflow-api-server"], lambda: (airflow_password(env) is not None, f"no {password_file(env)}"),
          "the generated Airflow password", _timeout(30))
    os.chmod(password_file(env), 0o600)
    return "started " + ", ".join(s.name for s in missing) if missing else "already running"


def _airflow_login_line(env: dict) -> str:
    """Show the generated password once; afterwards only where it is kept."""
    url = env["AIRFLOW_API_URL"]
    user = env.get("AIRFLOW_ADMIN_USER") or "admin"
    pw_file = password_file(env)
    marker = Path(env["AIRFLOW_HOME"]) / ".password_shown"
    password = airflow_password(env)
    if password and not marker.exists():
        marker.write_text(f"{pw_file}\n")
        return f"Airflow UI: {url}  user: {user}  password: {password} (generated; stored in {pw_file})"
    return f"Airflow UI: {url}  user: {user}  password: stored in {pw_file}"


def _urls(env: dict, services: list[str] | tuple[str, ...] = SERVICE_NAMES) -> list[str]:
    lines = []
    if "seaweedfs" in services:
        lines += [f"SeaweedFS S3: {env['MLFLOW_S3_ENDPOINT_URL']}  bucket: {env['S3_BUCKET']}  "
                  f"(keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in {env['LAKEHOUSE_ENV_FILE']})",
                  f"SeaweedFS filer UI: http://{LOOPBACK}:{env['SEAWEEDFS_FILER_PORT']}"]
    if "mlflow" in services:
        lines.append(f"MLflow UI: {env['MLFLOW_TRACKING_URI']}  experiment: {env['MLFLOW_EXPERIMENT_NAME']}")
    if "airflow" in services:
        lines.append(_airflow_login_line(env))
    return lines


def parse_services(names: list[str] | str | None) -> list[str]:
    """Validated service names in start order; empty or None means all of them."""
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip().lower() for n in (names or []) if n.strip()]
    unknown = sorted(set(wanted) - set(SERVICE_NAMES))
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
    return [n for n in SERVICE_NAMES if n in wanted] if wanted else list(SERVICE_NAMES)


def selected_services() -> list[str]:
    """What `up` starts and `status` judges: LAKEHOUSE_SERVICES, default all."""
    return parse_services(os.environ.get("LAKEHOUSE_SERVICES"))


def service_processes(env: dict, name: str) -> list[str]:
    """Process names (pid files) of one service of SERVICE_NAMES."""
    return [s.name for s in airflow_services(env)] if name == "airflow" else [name]


def cmd_up(env: dict, services: list[str] | None = None) -> int:
    started = time.monotonic()
    services = services or selected_services()
    for d in _dirs(env).values():
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(_dirs(env)["logs"], 0o700)  # the api-server log holds the generated password
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    for label, fn in (("seaweedfs", _up_seaweedfs), ("mlflow", _up_mlflow), ("airflow", _up_airflow)):
        if label not in services:
            continue
        t0 = time.monotonic()
        state = fn(env)
        print(f"{label}: {state} (healthy, {time.monotonic() - t0:.1f}s)", flush=True)
    print(f"stack up in {time.monotonic() - started:.1f}s (state in {env['LAKEHOUSE_HOME']})")
    for line in _urls(env, services):
        print(line)
    return 0


def cmd_start(env: dict, names: list[str]) -> int:
    """Start (or wait for) the named services only, e.g. after `stop seaweedfs`."""
    if not names:
        print(f"usage: stack.py start SERVICE... ({', '.join(SERVICE_NAMES)})", file=sys.stderr)
        return 2
    return cmd_up(env, parse_services(names))


def cmd_stop(env: dict, names: list[str]) -> int:
    """Stop the named services only; their data stays, `start` brings them back."""
    if not names:
        print(f"usage: stack.py stop SERVICE... ({', '.join(SERVICE_NAMES)})", file=sys.stderr)
        return 2
    services = parse_services(names)
    if not _dirs(env)["run"].exists():
        print("nothing to stop")
        return 0
    t0 = time.monotonic()
    stopped = []
    for name in reversed(services):  # dependants first, storage last, as `down` does
        stopped += stop_services(env, service_processes(env, name))
    if "seaweedfs" in services:
        _remove_sockets(env)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'} ({time.monotonic() - t0:.1f}s)")
    return 0


def cmd_down(env: dict) -> int:
    if not _dirs(env)["run"].exists():
        print("nothing to stop")
        return 0
    t0 = time.monotonic()
    stopped = []
    # Airflow first (its tasks may still write to MLflow/S3), then MLflow, storage last.
    for group in (["airflow-scheduler", "airflow-triggerer", "airflow-dag-processor"],
                  ["airflow-api-server"], ["mlflow"], ["seaweedfs"]):
        stopped += stop_services(env, group)
    _remove_sockets(env)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'} ({time.monotonic() - t0:.1f}s)")
    return 0


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB of a service's whole session; PSS does not double-count forked workers."""
    rss = pss = 0
    for member in _session_members(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return rss / 1024, pss / 1024


def cmd_status(env: dict) -> int:
    health: dict[str, bool] = {"seaweedfs": False, "mlflow": False}
    pids = {svc.name: read_pid(env, svc.name) for svc in all_services(env)}
    if pids["seaweedfs"]:
        health["seaweedfs"] = seaweedfs_health(env)[0]
    if pids["mlflow"]:
        health["mlflow"] = mlflow_health(env)[0]
    comps = airflow_health(env)[0] if pids["airflow-api-server"] else {}
    for c in AIRFLOW_COMPONENTS:
        health[f"airflow-{c}"] = bool(comps.get(c)) and pids[f"airflow-{c}"] is not None
    ports = {"seaweedfs": env["SEAWEEDFS_S3_PORT"], "mlflow": env["MLFLOW_PORT"],
             "airflow-api-server": env["AIRFLOW_API_PORT"]}
    print(f"{'SERVICE':<24}{'PID':>8}  {'PORT':>6}  {'RSS MB':>7}  {'PSS MB':>7}  HEALTH")
    for name, pid in pids.items():
        rss, pss = (f"{m:.0f}" for m in memory_mb(pid)) if pid else ("-", "-")
        state = "healthy" if health[name] else ("unhealthy" if pid else "stopped")
        print(f"{name:<24}{pid or '-':>8}  {ports.get(name, '-'):>6}  {rss:>7}  {pss:>7}  {state}")
    services = selected_services()
    judged = [p for s in services for p in service_processes(env, s)]
    ok = all(health[name] for name in judged)
    if ok:
        for line in _urls(env, services):
            print(line)
    return 0 if ok else 1


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def cmd_env(env: dict) -> int:
    for key, value in env.items():
        print(f"export {key}={_quote(value)}")
    return 0


def cmd_run(env: dict, argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: stack.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        return subprocess.call(argv, env=process_env(env))
    except FileNotFoundError:
        print(f"stack.py run: command not found: {argv[0]}", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


USAGE = "usage: stack.py {up|down|status|env|run -- CMD...|stop SERVICE...|start SERVICE...}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `stack.py status | head` should not traceback
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}
    with_names = {"start": cmd_start, "stop": cmd_stop}
    if command not in commands and command not in with_names and command != "run":
        print(USAGE, file=sys.stderr)
        return 2
    if command == "run" and not [a for a in rest if a != "--"][:1]:
        print("usage: stack.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        env = resolve_env()
        if command == "run":
            return cmd_run(env, rest)
        if command in with_names:
            return with_names[command](env, rest)
        return commands[command](env)
    except StackError as e:
        print(f"stack.py {command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
