"""Behaviour of the embedded stack (scripts/stack.py, scripts/devstack/) and of `make env` (scripts/make_env.py).

The stack tests run against real SeaweedFS, MLflow and Airflow processes (see conftest.py). They are
ordered: the last one takes the stack down and checks that nothing is left behind.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
JOBS_PYTHON = REPO / ".venv-jobs" / "bin" / "python"
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"

from scripts.devstack import dotenv, processes  # noqa: E402
from scripts.devstack import health as stack_health  # noqa: E402  (a test has a local `health`)
from scripts.devstack.env import StackError, resolve_env  # noqa: E402

SECRET_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AIRFLOW__CORE__FERNET_KEY",
               "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"]


# ----------------------------------------------------------------------------------------- make env


def run_make_env(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(JOBS_PYTHON), str(SCRIPTS / "make_env.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_make_env_generates_unique_valid_secrets(tmp_path):
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    for path in (first, second):
        out = run_make_env("--path", str(path), "--example", str(REPO / ".env.example"))
        assert out.returncode == 0, out.stderr
    a, b = dotenv.read_env_file(first), dotenv.read_env_file(second)

    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert not [k for k, v in a.items() if v.startswith("change-me")]
    for key in SECRET_KEYS:
        assert a[key] and a[key] != b[key], key
        assert a[key] not in out.stdout + out.stderr, f"{key} value was printed"
    assert "AWS_SECRET_ACCESS_KEY" in out.stdout  # names of what was generated are reported
    assert len(a["AWS_ACCESS_KEY_ID"]) == 20 and a["AWS_ACCESS_KEY_ID"].isalnum()
    assert a["AWS_ACCESS_KEY_ID"] == a["AWS_ACCESS_KEY_ID"].upper()
    assert len(a["AWS_SECRET_ACCESS_KEY"]) == 40
    assert len(base64.urlsafe_b64decode(a["AIRFLOW__CORE__FERNET_KEY"])) == 32
    assert len(a["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64  # HS512 wants a 64-byte key
    # Non-secret defaults are copied verbatim.
    assert a["S3_BUCKET"] == "lakehouse" and a["PIPELINE_SCHEDULE"] == "0 2 * * *"

    check = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c",
         "import sys; from cryptography.fernet import Fernet; f = Fernet(sys.argv[1]); "
         "assert f.decrypt(f.encrypt(b'x')) == b'x'", a["AIRFLOW__CORE__FERNET_KEY"]],
        capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_make_env_keeps_existing_file_and_appends_new_variables(tmp_path):
    example, path = tmp_path / "example", tmp_path / ".env"
    example.write_text("# bucket\nS3_BUCKET=lakehouse\nAWS_SECRET_ACCESS_KEY=change-me-secret\n")
    assert run_make_env("--path", str(path), "--example", str(example)).returncode == 0
    original = path.read_text()
    path.write_text(original.replace("S3_BUCKET=lakehouse", "S3_BUCKET=mine"))
    edited = path.read_text()

    out = run_make_env("--path", str(path), "--example", str(example))
    assert out.returncode == 0 and "left unchanged" in out.stdout
    assert path.read_text() == edited

    example.write_text(example.read_text() + "# a new token\nNEW_TOKEN=change-me-token\nNEW_PLAIN=1\n")
    out = run_make_env("--path", str(path), "--example", str(example))
    assert out.returncode == 0, out.stderr
    values = dotenv.read_env_file(path)
    assert values["S3_BUCKET"] == "mine"
    assert path.read_text().startswith(edited)  # existing lines untouched, new ones appended
    assert values["NEW_PLAIN"] == "1" and len(values["NEW_TOKEN"]) >= 40
    assert "NEW_TOKEN" in out.stdout and values["NEW_TOKEN"] not in out.stdout
    assert "# a new token" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    secret_before = values["AWS_SECRET_ACCESS_KEY"]
    assert run_make_env("--path", str(path), "--example", str(example), "--force").returncode == 0
    forced = dotenv.read_env_file(path)
    assert forced["S3_BUCKET"] == "lakehouse" and forced["AWS_SECRET_ACCESS_KEY"] != secret_before


def test_resolve_env_embedded_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = resolve_env({"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": "var/x",
                       "LAKEHOUSE_CATALOG": "jdbc", "MLFLOW_PORT": "5123", "SEAWEEDFS_S3_PORT": "8444",
                       "ICEBERG_CATALOG_URI": "", "ICEBERG_WAREHOUSE": "", "RAW_TICKS_PATH": "",
                       "SPARK_JARS": "", "SPARK_PACKAGES": ""})
    home = REPO / "var" / "x"
    assert (tmp_path / ".env").exists()  # created on first use
    assert env["LAKEHOUSE_HOME"] == str(home) and env["LAKEHOUSE_REPO"] == str(REPO)
    assert env["ICEBERG_CATALOG_URI"] == f"jdbc:sqlite:{home}/iceberg/catalog.db"
    assert env["ICEBERG_WAREHOUSE"] == f"file://{home}/iceberg/warehouse"
    assert env["RAW_TICKS_PATH"] == f"{home}/raw/ticks"
    jars = env["SPARK_JARS"].split(",") if env["SPARK_JARS"] else []
    assert jars == sorted(str(p) for p in (REPO / "var" / "jars").glob("*.jar"))
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5123"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:8444"
    assert env["SEAWEEDFS_S3_GRPC_PORT"] == "18444"
    assert "SEAWEEDFS_ADMIN_GRPC_PORT" not in env  # fixed at admin + 10000 by weed mini
    assert env["AIRFLOW_HOME"] == f"{home}/airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["PYSPARK_PYTHON"] == str(REPO / ".venv-jobs" / "bin" / "python")
    assert Path(env["JAVA_HOME"], "bin", "java").exists()
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["conn_type"] == "spark"
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"


def test_each_profile_keeps_its_own_home_and_unknown_ones_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_PROFILE", raising=False)
    monkeypatch.delenv("LAKEHOUSE_HOME", raising=False)
    base = {"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env")}
    assert resolve_env(base)["LAKEHOUSE_HOME"] == str(REPO / "var" / "stack")
    cluster = resolve_env({**base, "LAKEHOUSE_PROFILE": "Cluster"})
    assert cluster["LAKEHOUSE_PROFILE"] == "cluster"
    assert cluster["LAKEHOUSE_HOME"] == str(REPO / "var" / "stack-cluster")
    # An older .env spells out the default's folder: still the profile's own; any other folder is kept.
    assert resolve_env({**base, "LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_HOME": "./var/stack"})["LAKEHOUSE_HOME"] \
        == str(REPO / "var" / "stack-cluster")
    assert resolve_env({**base, "LAKEHOUSE_PROFILE": "cluster", "LAKEHOUSE_HOME": "var/mine"})["LAKEHOUSE_HOME"] \
        == str(REPO / "var" / "mine")
    with pytest.raises(StackError, match="LAKEHOUSE_PROFILE .* must be one of default, cluster, got 'k8s'"):
        resolve_env({**base, "LAKEHOUSE_PROFILE": "k8s"})


# -------------------------------------------------------------------------------------- the stack


def test_up_printed_the_password_once_and_is_idempotent(stack):
    password = stack_health.airflow_password(stack.env)
    assert password and f"password: {password}" in stack.up_output
    pids = {p.name: p.read_text() for p in (stack.home / "run").glob("*.pid")}
    # SeaweedFS, MLflow, the alert receiver and Airflow's four processes, plus the Hive metastore
    # (LAKEHOUSE_CATALOG=hive, the default), Trino (when the machine has a Java 24+ for it) and the
    # Pushgateway and Prometheus (when Debian's binaries are installed: make system-deps) and
    # statsd_exporter (when make deps could build it)
    optional = set(stack.started_services) & {"hive-metastore", "trino", "pushgateway", "prometheus",
                                              "statsd-exporter"}
    assert "hive-metastore" in optional
    assert len(pids) == 7 + len(optional), sorted(pids)

    again = stack.cli("up")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 3 + len(optional), again.stdout  # + seaweedfs, mlflow, airflow
    assert password not in again.stdout and "password: stored in" in again.stdout
    assert {p.name: p.read_text() for p in (stack.home / "run").glob("*.pid")} == pids


def test_status_exits_zero_when_healthy(stack):
    out = stack.cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("seaweedfs", "hive-metastore", "mlflow", "alert-receiver", "airflow-api-server", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer",
                 *set(stack.started_services) & {"pushgateway", "prometheus", "statsd-exporter"}):
        line = next(line for line in out.stdout.splitlines() if line.startswith(name + " "))
        assert line.endswith("healthy") and "unhealthy" not in line


def test_seaweedfs_components_reach_each_other(stack):
    # weed mini's maintenance worker dials the admin gRPC port itself; a wrong port only shows in the log.
    log = (stack.home / "logs" / "seaweedfs.log").read_text()
    assert "connection refused" not in log, log[-2000:]


def test_the_stacks_files_are_private_from_creation(stack):
    """0700 folders, 0600 files under LAKEHOUSE_HOME: logs, the generated password, SeaweedFS's keys, data.

    SeaweedFS sets its volume info files (*.vif) to 0644 itself; the 0700 home keeps those private.
    """
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    exposed = []
    for path in [stack.home, *stack.home.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or stat.S_ISSOCK(mode) or path.suffix == ".vif":
            continue
        if stat.S_IMODE(mode) & 0o077:
            exposed.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(stack.home)}")
    assert exposed == [], exposed[:20]


def test_mlflow_artifacts_land_in_the_bucket(stack):
    import mlflow

    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    # `up` created the pipeline's experiment already.
    assert mlflow.MlflowClient().get_experiment_by_name(stack.env["MLFLOW_EXPERIMENT_NAME"]) is not None
    experiment = mlflow.set_experiment(stack.env["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run() as run:
        mlflow.log_param("probe", "stack-test")
        mlflow.log_text("hello from the stack test", "probe/hello.txt")
    # Proxied artifacts: the client never needs S3 credentials.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")

    client = stack_health.s3_client(stack.env)
    listed = client.list_objects_v2(Bucket=stack.env["S3_BUCKET"], Prefix="mlflow/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    expected = f"mlflow/{experiment.experiment_id}/{run.info.run_id}/artifacts/probe/hello.txt"
    assert expected in keys, keys
    assert client.get_object(Bucket=stack.env["S3_BUCKET"], Key=expected)["Body"].read() == \
        b"hello from the stack test"


def test_airflow_health_and_token(stack):
    components, detail = stack_health.airflow_health(stack.env)
    assert all(components.values()), detail
    health = json.loads(detail)
    for key in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[key]["status"] == "healthy", health

    token = stack_health.airflow_token(stack.env)
    assert token.count(".") == 2  # a JWT
    req = urllib.request.Request(f"{stack.env['AIRFLOW_API_URL']}/api/v2/dags",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and "dags" in json.loads(resp.read())

    with pytest.raises(StackError, match="401"):
        stack_health.airflow_token(stack.env, password="not-the-password")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{stack.env['AIRFLOW_API_URL']}/api/v2/dags", timeout=10)
    assert err.value.code in (401, 403)


def _api(stack, method: str, path: str, body: dict | None = None) -> dict:
    token = stack_health.airflow_token(stack.env)
    status, payload = stack_health.http_json(method, f"{stack.env['AIRFLOW_API_URL']}/api/v2{path}", body,
                                             headers={"Authorization": f"Bearer {token}"})
    assert status in (200, 201), (method, path, status, payload)
    return payload


def test_airflow_task_runs_with_the_pipeline_environment(stack):
    """A real task through scheduler, LocalExecutor and the execution API inherits the stack's env."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # the dag-processor picks new files up within its refresh interval
        if any(d["dag_id"] == "stack_probe" for d in _api(stack, "GET", "/dags?dag_id_pattern=stack_probe")["dags"]):
            break
        time.sleep(1)
    else:
        pytest.fail("stack_probe DAG was never parsed:\n"
                    + processes.tail(stack.home / "logs" / "airflow-dag-processor.log"))

    run = _api(stack, "POST", "/dags/stack_probe/dagRuns", {"logical_date": None})
    state = run["state"]
    while time.monotonic() < deadline + 60 and state not in ("success", "failed"):
        time.sleep(1)
        state = _api(stack, "GET", f"/dags/stack_probe/dagRuns/{run['dag_run_id']}")["state"]
    assert state == "success", processes.tail(stack.home / "logs" / "airflow-scheduler.log")

    seen = json.loads((stack.home / "probe-env.json").read_text())
    for key in stack.probe_keys:
        assert seen[key] == stack.env[key], key
    assert seen["which spark-submit"] == stack.env["SPARK_SUBMIT_BINARY"]


def _probe_run(stack) -> str:
    """One stack_probe run through the real scheduler, to its end; its final state."""
    deadline = time.monotonic() + 90
    while not any(d["dag_id"] == "stack_probe" for d in _api(stack, "GET", "/dags?dag_id_pattern=stack_probe")["dags"]):
        assert time.monotonic() < deadline, "stack_probe DAG was never parsed"
        time.sleep(1)  # the dag-processor picks new files up within its refresh interval
    run = _api(stack, "POST", "/dags/stack_probe/dagRuns", {"logical_date": None})
    state = run["state"]
    while state not in ("success", "failed"):
        assert time.monotonic() < deadline + 60, f"stack_probe run still {state}"
        time.sleep(1)
        state = _api(stack, "GET", f"/dags/stack_probe/dagRuns/{run['dag_run_id']}")["state"]
    return state


def _series(stack, expr: str) -> list[dict]:
    from scripts.devstack.dashboard import instant_query

    return instant_query(stack.env["PROMETHEUS_URL"], expr)


def test_airflow_and_mlflow_metrics_reach_prometheus(stack):
    """Airflow's StatsD (through statsd_exporter) and MLflow's /metrics land in the stack's Prometheus with
    bounded labels, and every panel of the platform dashboard has data (issue 17, item 1)."""
    from nights_support import wait_until

    from scripts.devstack.dashboard import PLATFORM_DASHBOARD, panels_without_data

    started = set(stack.started_services)
    if not {"prometheus", "statsd-exporter"} <= started:
        pytest.skip(f"no Prometheus or statsd_exporter in this stack (started: {sorted(started)}; make deps)")
    assert _probe_run(stack) == "success"
    finished = 'airflow_task_finished_total{job="airflow", dag_id="stack_probe", task_id="dump_env", state="success"}'
    seen = wait_until(lambda: _series(stack, finished), 60, "the probe task's finish in Prometheus")
    assert float(seen[0]["value"][1]) >= 1
    durations = _series(stack, 'airflow_task_duration_seconds_count{job="airflow", dag_id="stack_probe"}')
    assert [r["metric"]["task_id"] for r in durations] == ["dump_env"], durations
    # No series of Airflow's carries a run or job id (they would grow without bound).
    labels = {k for r in _series(stack, '{job="airflow"}') for k in r["metric"]}
    assert labels and not labels & {"run_id", "job_id"}, labels
    assert wait_until(lambda: _series(stack, 'rate(airflow_scheduler_heartbeats_total{job="airflow"}[1m]) > 0'),
                      60, "scheduler heartbeats")

    # MLflow: requests of our own, then its counters by status.
    for _ in range(3):
        status, _ = stack_health.http_get(f"{stack.env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search"
                                          "?max_results=1")
        assert status == 200
    ok_requests = 'sum(mlflow_http_request_total{job="mlflow", method="GET", status="200"}) >= 3'
    assert wait_until(lambda: _series(stack, ok_requests), 60, "MLflow's request counter in Prometheus")
    assert _series(stack, 'up{job="mlflow"}')[0]["value"][1] == "1"

    empty: list[str] = []

    def every_panel_has_data() -> bool:
        empty[:] = panels_without_data(stack.env["PROMETHEUS_URL"], PLATFORM_DASHBOARD)
        return not empty

    try:
        wait_until(every_panel_has_data, 60, "data in every platform panel")
    except TimeoutError:
        pytest.fail(f"platform dashboard panels without data: {empty}")


def test_env_and_run(stack):
    out = stack.cli("env")
    assert f"export AIRFLOW_HOME='{stack.home}/airflow'" in out.stdout
    code = ("import os, sys; sys.exit(0 if os.environ['MLFLOW_TRACKING_URI'] == "
            f"'http://127.0.0.1:{stack.ports['MLFLOW_PORT']}' else 3)")
    assert stack.cli("run", "--", str(JOBS_PYTHON), "-c", code).returncode == 0
    assert stack.cli("run", "--", str(JOBS_PYTHON), "-c", "raise SystemExit(7)").returncode == 7


def test_down_stops_everything(stack):
    out = stack.cli("down", timeout=120)
    assert out.returncode == 0, out.stderr
    assert not list((stack.home / "run").glob("*.pid"))
    assert not list((stack.home / "run").glob("*.sock"))
    for var, port in stack.listening_ports.items():
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{var}={port} still open"
    assert stack.cli("status").returncode == 1
    again = stack.cli("down")
    assert again.returncode == 0 and "nothing was running" in again.stdout
