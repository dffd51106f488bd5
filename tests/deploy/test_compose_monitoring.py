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
