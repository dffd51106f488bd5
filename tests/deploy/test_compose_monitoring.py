"""The production compose's monitoring: Pushgateway, Prometheus and Grafana (issue 17), checked statically.

No Docker engine here: the services are checked in the interpolated compose file, their mounted
configuration in the repository (promtool parses Prometheus's), and the names that must agree
across files (datasource uid, dashboard folder, rules folder, Pushgateway address) are compared.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_compose import COMPOSE_FILE, ENV_EXAMPLE, REPO, interpolate_tree, service_env

from scripts.devstack import dashboard, dotenv

MONITORING = ("pushgateway", "prometheus", "grafana")
PINNED = re.compile(r"^(prom/pushgateway:v1|prom/prometheus:v3|grafana/grafana:1[12])\.\d+\.\d+$")
PROMTOOL = shutil.which("promtool")
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker"]


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return interpolate_tree(raw, dotenv.read_env_file(ENV_EXAMPLE))


def _mounts(svc: dict) -> dict[str, str]:
    """container path -> host path of the bind mounts (./...) with :ro checked by the caller."""
    out = {}
    for vol in svc.get("volumes", []):
        source, target, *mode = vol.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], f"{vol}: configuration from the repository is mounted read-only"
            out[target] = source
    return out


def test_monitoring_services_pinned_and_published_on_loopback_only(compose):
    for name in MONITORING:
        svc = compose["services"][name]
        assert PINNED.match(svc["image"]), f"{name}: {svc['image']} is not a pinned release"
        ports = svc["ports"]
        assert ports and all(p.startswith("127.0.0.1:") for p in ports), f"{name}: {ports}"


def test_mounted_configuration_exists_in_the_repository(compose):
    expected = {
        "prometheus": {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"},
        "grafana": {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"},
    }
    for name, targets in expected.items():
        mounts = _mounts(compose["services"][name])
        assert set(mounts) == targets, (name, mounts)
        for source in mounts.values():
            assert (REPO / source).exists(), source
    for name in MONITORING:  # state in named volumes, so a recreated container keeps it
        named = [v.split(":")[0] for v in compose["services"][name]["volumes"] if not v.startswith("./")]
        assert named and set(named) <= set(compose["volumes"]), name


def test_prometheus_scrapes_the_pushgateway_with_honor_labels_and_loads_the_rules(compose):
    config = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["pushgateway"]["honor_labels"] is True
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]
    # The stages push to the compose Pushgateway by default.
    for name in AIRFLOW_SERVICES:
        assert service_env(compose, name)["PUSHGATEWAY_URL"] == "http://pushgateway:9091", name


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus: make system-deps)")
def test_promtool_accepts_the_production_config():
    check = subprocess.run([PROMTOOL, "check", "config", str(REPO / "docker" / "prometheus" / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisions_the_datasource_and_the_dashboards_folder(compose):
    grafana = REPO / "docker" / "grafana"
    datasource = yaml.safe_load(dashboard.DATASOURCE_FILE.read_text())["datasources"][0]
    assert datasource["uid"] == dashboard.DATASOURCE_UID and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((grafana / "provisioning" / "dashboards" / "lakehouse.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert _mounts(compose["services"]["grafana"])["/var/lib/grafana/dashboards"] == "./docker/grafana/dashboards"
    assert Path(REPO, "docker/grafana/dashboards", dashboard.DASHBOARD.name) == dashboard.DASHBOARD
    env = service_env(compose, "grafana")
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == dotenv.read_env_file(ENV_EXAMPLE)["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith(dotenv.PLACEHOLDER)  # no secret in git
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"


# ------------------------------------------------------------------- Airflow's and MLflow's own metrics

def test_airflow_sends_statsd_as_the_embedded_stack_does(compose):
    """One source of truth: the compose's AIRFLOW__METRICS__* are the embedded stack's, host aside."""
    from scripts.devstack.env import airflow_statsd_settings

    expected = airflow_statsd_settings("statsd-exporter", "9125")
    for name in AIRFLOW_SERVICES:
        env = service_env(compose, name)
        assert {k: env.get(k) for k in expected} == expected, name
    command = compose["services"]["statsd-exporter"]["command"]
    assert f"--statsd.listen-udp=:{expected['AIRFLOW__METRICS__STATSD_PORT']}" in command
    assert "--statsd.listen-tcp=" in command


def test_statsd_exporter_is_the_version_make_deps_builds_with_the_repositorys_mapping(compose):
    svc = compose["services"]["statsd-exporter"]
    pinned = next(line for line in (REPO / "requirements" / "go" / "statsd_exporter.txt").read_text().splitlines()
                  if line.startswith("github.com/"))
    assert svc["image"] == f"prom/statsd-exporter:{pinned.split('@')[1]}", (svc["image"], pinned)
    mounts = _mounts(svc)
    assert mounts == {"/etc/statsd-exporter/airflow-mappings.yml": "./docker/statsd-exporter/airflow-mappings.yml"}
    assert f"--statsd.mapping-config={next(iter(mounts))}" in svc["command"]
    assert "ports" not in svc, "Airflow's metrics stay on the compose network (Prometheus scrapes them)"
    assert svc["healthcheck"]["test"][-1] == "http://localhost:9102/-/ready"


def test_prometheus_scrapes_mlflow_as_its_admin_and_airflow_through_the_exporter(compose):
    config = yaml.safe_load((REPO / "docker" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["airflow"]["static_configs"][0]["targets"] == ["statsd-exporter:9102"]
    assert "--web.listen-address=:9102" in compose["services"]["statsd-exporter"]["command"]
    # MLflow: /metrics behind its basic-auth app, the admin's password from .env via a compose config.
    mlflow = compose["services"]["mlflow"]
    assert "--expose-prometheus=/mlflow-metrics" in mlflow["command"] and "/mlflow-metrics" in mlflow["tmpfs"]
    assert jobs["mlflow"]["static_configs"][0]["targets"] == ["mlflow:5000"]
    auth = jobs["mlflow"]["basic_auth"]
    assert "password" not in auth, "no password in the repository"
    assert auth["username"] == service_env(compose, "mlflow-auth-init")["MLFLOW_ADMIN_USER"]
    mount = next(c for c in compose["services"]["prometheus"]["configs"] if c["source"] == "mlflow-scrape-password")
    assert mount["target"] == auth["password_file"] and mount["uid"] == "65534" and mount["mode"] == 0o400
    content = compose["configs"]["mlflow-scrape-password"]["content"]
    assert content == dotenv.read_env_file(ENV_EXAMPLE)["MLFLOW_ADMIN_PASSWORD"]
    assert content.startswith(dotenv.PLACEHOLDER)
