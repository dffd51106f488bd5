"""Is each service up and usable: HTTP probes, the S3 client and buckets, MLflow, Airflow and its token.

Health means usable as configured, not merely listening: SeaweedFS must refuse anonymous calls
and accept the .env keys, Airflow's components must heartbeat after their latest (re)start.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

from jobs import contract
from scripts.devstack.env import AIRFLOW_COMPONENTS, LOOPBACK, StackError, pushgateway_url, spark_master_ui

PASSWORD_FILE_NAME = "simple_auth_manager_passwords.json.generated"
# Health keys of /api/v2/monitor/health for each long-running Airflow process.
AIRFLOW_HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None,
              timeout: float = 30.0) -> tuple[int, dict]:
    """(status, decoded JSON body) of one call; status 0 when nothing answered."""
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


# --------------------------------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------------------------------

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
    status, _ = http_get(f"{env['MLFLOW_S3_ENDPOINT_URL']}/{bucket}")
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


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------

def hive_metastore_health(env: dict) -> tuple[bool, str]:
    """The metastore answers a Thrift call (an open port alone is ready long before the schema is)."""
    port = int(env["HIVE_METASTORE_PORT"])
    if not port_open(port):
        return False, f"nothing listens on {LOOPBACK}:{port}"
    from hive_metastore.ThriftHiveMetastore import Client
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport

    sock = TSocket.TSocket(LOOPBACK, port)
    sock.setTimeout(10_000)
    transport = TTransport.TBufferedTransport(sock)
    try:
        transport.open()
        databases = Client(TBinaryProtocol.TBinaryProtocol(transport)).get_all_databases()
        return True, f"{len(databases)} database(s)"
    except Exception as exc:  # noqa: BLE001 - any Thrift or socket failure means "not yet"
        return False, f"get_all_databases on {LOOPBACK}:{port} failed: {exc}"
    finally:
        transport.close()


def mlflow_health(env: dict) -> tuple[bool, str]:
    status, body = http_get(f"http://{LOOPBACK}:{env['MLFLOW_PORT']}/health")
    ok = status == 200 and body.strip() == b"OK"
    return ok, "ok" if ok else f"GET /health returned {status or 'no answer'}"


def ensure_experiment(env: dict) -> str:
    """Create the pipeline's experiment once, as a model-training one (contract.EXPERIMENT_TAGS).

    Its artifacts go through the server's S3 proxy. An existing experiment that lacks the tags
    (created by an older version) gets them, so the UI opens on its training runs.
    """
    base = f"http://{LOOPBACK}:{env['MLFLOW_PORT']}/api/2.0/mlflow/experiments"
    name = env["MLFLOW_EXPERIMENT_NAME"]
    status, body = http_json("GET", f"{base}/get-by-name?{urllib.parse.urlencode({'experiment_name': name})}")
    if status == 200:
        exp = body["experiment"]
        tags = {t["key"]: t["value"] for t in exp.get("tags") or []}
        for key, value in contract.missing_experiment_tags(tags).items():
            status, answer = http_json("POST", f"{base}/set-experiment-tag",
                                       {"experiment_id": exp["experiment_id"], "key": key, "value": value})
            if status != 200:
                raise StackError(f"could not tag MLflow experiment {name!r}: HTTP {status} {answer}")
        return exp["experiment_id"]
    tags = [{"key": k, "value": v} for k, v in contract.EXPERIMENT_TAGS.items()]
    status, body = http_json("POST", f"{base}/create", {"name": name, "tags": tags})
    if status == 200:
        return body["experiment_id"]
    if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":
        return ensure_experiment(env)
    raise StackError(f"could not create MLflow experiment {name!r}: HTTP {status} {body}")


# --------------------------------------------------------------------------------------------------
# The Pushgateway and Prometheus
# --------------------------------------------------------------------------------------------------

def _ready(base_url: str) -> tuple[bool, str]:
    """Both speak Prometheus's /-/ready convention."""
    status, _ = http_get(f"{base_url}/-/ready")
    return status == 200, "ok" if status == 200 else f"GET /-/ready returned {status or 'no answer'}"


def pushgateway_health(env: dict) -> tuple[bool, str]:
    """The embedded one, whatever PUSHGATEWAY_URL the stages were given."""
    return _ready(pushgateway_url(env))


def statsd_exporter_health(env: dict) -> tuple[bool, str]:
    return _ready(f"http://{LOOPBACK}:{env['STATSD_EXPORTER_PORT']}")


def prometheus_health(env: dict) -> tuple[bool, str]:
    """Ready means the TSDB is open and the rules loaded (a rule file that does not parse stops it)."""
    return _ready(env["PROMETHEUS_URL"])


# --------------------------------------------------------------------------------------------------
# The cluster profile's Postgres and Redis
# --------------------------------------------------------------------------------------------------

def postgres_health(env: dict) -> tuple[bool, str]:
    """pg_isready: the server accepts connections (not merely listening while it recovers)."""
    import subprocess

    from scripts.devstack.services import postgres_binary

    probe = postgres_binary("pg_isready") or "pg_isready"
    proc = subprocess.run([probe, "-h", LOOPBACK, "-p", env["POSTGRES_PORT"], "-t", "3"],
                          capture_output=True, text=True, timeout=10)
    return proc.returncode == 0, (proc.stdout or proc.stderr).strip() or f"pg_isready exit {proc.returncode}"


def redis_health(env: dict) -> tuple[bool, str]:
    """AUTH with the .env password, then PING (Redis's own protocol; no client library needed here)."""
    password = env["REDIS_PASSWORD"].encode()
    try:
        with socket.create_connection((LOOPBACK, int(env["REDIS_PORT"])), timeout=3) as s:
            s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n" % (len(password), password))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError as e:
        return False, f"no answer on {LOOPBACK}:{env['REDIS_PORT']} ({e})"
    ok = reply.startswith(b"+OK\r\n+PONG")
    return ok, "ok" if ok else f"AUTH/PING answered {reply[:60]!r}"


def celery_workers_health(env: dict, names: list[str]) -> tuple[bool, str]:
    """Every named Celery worker answers a ping through the broker (the compose's worker healthcheck)."""
    import subprocess

    from scripts.devstack.env import AIRFLOW_VENV

    argv = [str(AIRFLOW_VENV / "bin" / "celery"), "--app", "airflow.providers.celery.executors.celery_executor.app",
            "inspect", "ping", "--timeout", "5", "--json"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, env={**os.environ, **env},
                              cwd=env["AIRFLOW_HOME"])
    except subprocess.TimeoutExpired:
        return False, "celery inspect ping did not answer within 90 s"
    try:
        replies = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    except ValueError:
        replies = {}
    answered = {name.split("@")[0] for name in replies}
    missing = [n for n in names if n not in answered]
    return not missing, "ok" if not missing else f"no pong from {', '.join(missing)} ({proc.stderr.strip()[-200:]})"


# --------------------------------------------------------------------------------------------------
# The cluster profile's Spark standalone cluster
# --------------------------------------------------------------------------------------------------

def spark_master_status(env: dict) -> dict | None:
    """The master's JSON status (workers, running and completed applications), None without an answer."""
    status, body = http_get(f"{spark_master_ui(env)}/json/")
    return json.loads(body) if status == 200 else None


def spark_cluster_health(env: dict) -> tuple[bool, str]:
    """Healthy when the master is ALIVE and every worker has registered with it."""
    status, wanted = spark_master_status(env), int(env.get("SPARK_WORKERS") or 2)
    if status is None:
        return False, f"no answer from the master's {spark_master_ui(env)}/json/"
    alive = [w for w in status.get("workers", []) if w.get("state") == "ALIVE"]
    if status.get("status") != "ALIVE" or len(alive) < wanted:
        return False, f"master {status.get('status')}, {len(alive)} of {wanted} workers alive"
    return True, "ok"


# --------------------------------------------------------------------------------------------------
# The local alert receiver
# --------------------------------------------------------------------------------------------------

def alert_receiver_health(env: dict) -> tuple[bool, str]:
    status, body = http_get(f"http://{LOOPBACK}:{env['ALERT_RECEIVER_PORT']}/health")
    ok = status == 200 and body.strip() == b"OK"
    return ok, "ok" if ok else f"GET /health returned {status or 'no answer'}"


# --------------------------------------------------------------------------------------------------
# Airflow
# --------------------------------------------------------------------------------------------------

def airflow_health(env: dict, since: dict[str, float] | None = None) -> tuple[dict[str, bool], str]:
    """Per-process health from the API server's monitor endpoint (heartbeats in the metadata DB).

    `since` maps components to the epoch they were (re)started: a heartbeat older than that belongs
    to a previous, killed process whose job row still looks alive for a while.
    """
    status, body = http_json("GET", f"{env['AIRFLOW_API_URL']}/api/v2/monitor/health", timeout=5)
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


def airflow_password(env: dict, user: str | None = None) -> str | None:
    """The generated password of ``user`` (default: the admin)."""
    try:
        return json.loads(password_file(env).read_text()).get(user or env.get("AIRFLOW_ADMIN_USER") or "admin")
    except (FileNotFoundError, ValueError):
        return None


def airflow_token(env: dict, password: str | None = None, user: str | None = None) -> str:
    """A JWT for the Airflow REST API (POST /auth/token), as the admin unless ``user`` is given."""
    user = user or env.get("AIRFLOW_ADMIN_USER") or "admin"
    password = password if password is not None else airflow_password(env, user)
    if password is None:
        raise StackError(f"no generated Airflow password in {password_file(env)} (is the stack up?)")
    status, body = http_json("POST", f"{env['AIRFLOW_API_URL']}/auth/token",
                             {"username": user, "password": password})
    if status not in (200, 201) or "access_token" not in body:
        raise StackError(f"Airflow /auth/token refused user {user!r}: HTTP {status} {body}")
    return body["access_token"]
