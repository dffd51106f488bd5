"""scripts/stack.py with a subset of services (LAKEHOUSE_SERVICES) and `stop`/`start` of one service.

The session's stack was brought up with LAKEHOUSE_SERVICES from faults_support (conftest.py).
"""
from __future__ import annotations

import uuid

from faults_support import SERVICES


def test_up_started_only_the_selected_services(stack):
    from scripts.devstack.health import port_open

    assert stack.started_services == SERVICES.split(",")
    assert not port_open(int(stack.env["AIRFLOW_API_PORT"]))
    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr  # judged on the selected services
    rows = {line.split()[0]: line.split()[-1] for line in status.stdout.splitlines()[1:] if line.strip()}
    assert {rows[name] for name in SERVICES.split(",")} == {"healthy"}
    assert rows["airflow-scheduler"] == "stopped"
    everything = stack.cli("status", env_overrides={"LAKEHOUSE_SERVICES": ""})
    assert everything.returncode == 1  # without the selection, a stopped Airflow is unhealthy


def test_stop_and_start_one_service_keeps_the_others_and_its_data(stack):
    from scripts.devstack.health import mlflow_health, port_open, s3_client

    key = f"faults/{uuid.uuid4().hex}.txt"
    s3 = s3_client(stack.env)
    s3.put_object(Bucket=stack.env["S3_BUCKET"], Key=key, Body=b"kept")
    stopped = stack.cli("stop", "seaweedfs")
    try:
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("stopped: seaweedfs")
        assert not port_open(int(stack.env["SEAWEEDFS_S3_PORT"]))
        assert mlflow_health(stack.env)[0], "stopping SeaweedFS must leave MLflow running"
        status = stack.cli("status")
        assert status.returncode == 1
        assert any(line.startswith("seaweedfs") and line.endswith("stopped") for line in status.stdout.splitlines())
    finally:
        started = stack.cli("start", "seaweedfs")
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.startswith("seaweedfs: started (healthy")
    assert s3.get_object(Bucket=stack.env["S3_BUCKET"], Key=key)["Body"].read() == b"kept"
    again = stack.cli("start", "seaweedfs")
    assert again.returncode == 0 and again.stdout.startswith("seaweedfs: already running")


def test_unknown_services_are_refused_before_anything_changes(stack):
    from scripts.devstack.health import mlflow_health

    stop = stack.cli("stop", "mlflow", "cassandra")
    assert stop.returncode == 1
    assert ("unknown service(s) cassandra; choose from seaweedfs, postgres, redis, hive-metastore, trino, mlflow, "
            "spark, pushgateway, prometheus, statsd-exporter, airflow") in stop.stderr
    assert mlflow_health(stack.env)[0], "a refused stop must not stop the valid names either"
    up = stack.cli("up", env_overrides={"LAKEHOUSE_SERVICES": "seaweedfs,hive"})
    assert up.returncode == 1 and "unknown service(s) hive" in up.stderr
    assert stack.cli("start").returncode == 2
