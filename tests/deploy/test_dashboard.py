"""The Grafana dashboards (docker/grafana/dashboards: the pipeline's, Airflow's and MLflow's), checked
without Grafana.

Grafana cannot be installed here, so the JSON is validated the way Grafana would fail on it: panel
ids, layout, the datasource its provisioning file defines, and PromQL that Prometheus's own parser
accepts (promtool, each query as a recording rule). Whether each query returns data is checked on a
real Prometheus: tests/stack/test_prometheus.py (pushed figures) and tests/e2e (after a real run).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from jobs.lakehouse import metrics
from scripts.devstack import dashboard

PROMTOOL = shutil.which("promtool")
STATSD_MAPPINGS = dashboard.REPO / "docker" / "statsd-exporter" / "airflow-mappings.yml"
METRIC_NAME = re.compile(r"\b(lakehouse_[a-z_]+)\b")
SELECTOR = re.compile(r"\b(lakehouse_[a-z_]+)\{([^}]*)\}")


@pytest.fixture(scope="module")
def board() -> dict:
    return dashboard.load()


@pytest.fixture(scope="module", params=[p.name for p in dashboard.DASHBOARDS])
def any_board(request) -> dict:
    return dashboard.load(dashboard.GRAFANA / "dashboards" / request.param)


def test_every_dashboard_file_is_one_the_tests_know():
    """Grafana provisions every JSON in the folder; each must be checked here and on a real Prometheus."""
    assert sorted((dashboard.GRAFANA / "dashboards").glob("*.json")) == sorted(dashboard.DASHBOARDS)
    uids = [dashboard.load(p)["uid"] for p in dashboard.DASHBOARDS]
    assert len(set(uids)) == len(uids), uids


def test_panels_have_unique_ids_a_layout_and_a_query(any_board):
    board = any_board
    panels = dashboard.panels(board)
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    assert board["uid"] and board["title"]
    for p in panels:
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and all(isinstance(grid[k], int) for k in "hwxy"), p["title"]
        assert 0 < grid["w"] and grid["x"] + grid["w"] <= 24, p["title"]
        assert p["targets"] and all(t.get("expr", "").strip() for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_every_panel_and_target_uses_the_provisioned_datasource(any_board):
    board = any_board
    provisioned = yaml.safe_load(dashboard.DATASOURCE_FILE.read_text())["datasources"]
    assert [d["uid"] for d in provisioned] == [dashboard.DATASOURCE_UID]
    assert provisioned[0]["type"] == "prometheus"
    for p in dashboard.panels(board):
        assert p["datasource"] == {"type": "prometheus", "uid": dashboard.DATASOURCE_UID}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == dashboard.DATASOURCE_UID, p["title"]


def test_queries_use_only_pushed_metrics_of_the_pipelines_job(board):
    """A renamed metric in jobs/lakehouse/metrics.py must fail here, not as an empty panel in production."""
    pushed = set(metrics.RUN_FAMILIES) | set(metrics.SUCCESS_FAMILIES)
    used = set()
    for name, expr in dashboard.queries(board):
        bare = re.sub(r"\{[^}]*\}", "", expr)  # label values are no metric names
        names = set(METRIC_NAME.findall(bare))
        assert names and names <= pushed, (name, names - pushed)
        selectors = SELECTOR.findall(expr)
        assert len(selectors) == len(METRIC_NAME.findall(bare)), f"{name}: a metric without a selector"
        assert all(f'job="{metrics.JOB}"' in labels for _, labels in selectors), name
        used |= names
    # Every figure the stages push shows in some panel.
    assert pushed - used == set(), pushed - used


def test_platform_queries_use_the_exporters_names_and_jobs():
    """Airflow series are the mapping file's names under job="airflow"; MLflow's under job="mlflow"."""
    mappings = yaml.safe_load(STATSD_MAPPINGS.read_text())["mappings"]
    mapped = {m["name"] for m in mappings}
    histograms = {f"{n}_{s}" for n in mapped for s in ("sum", "count", "bucket")}
    seen = set()
    for name, expr in dashboard.queries(dashboard.load(dashboard.PLATFORM_DASHBOARD)):
        for metric, labels in re.findall(r"\b((?:airflow|mlflow)_[a-z_]+)\{([^}]*)\}", expr):
            job = metric.split("_", 1)[0]
            assert f'job="{job}"' in labels, (name, metric)
            if job == "airflow":
                assert metric in mapped | histograms, (name, metric)
            seen.add(job)
    assert seen == {"airflow", "mlflow"}
    # Bounded labels: the mappings never turn an id into a label or a name.
    assert all("$" not in str(m.get("labels", {})) or m["match"].endswith(".*") for m in mappings)


def test_grafana_variables_are_replaced_and_unknown_ones_refused():
    assert dashboard.concrete("changes(x[$__range]) + rate(y[${__rate_interval}])") == "changes(x[1h]) + rate(y[1m])"
    with pytest.raises(KeyError, match="stage"):
        dashboard.concrete('x{stage="$stage"}')


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus: make system-deps)")
def test_every_query_parses_as_promql(any_board, tmp_path):
    queries = dashboard.queries(any_board)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(queries)} rules found" in check.stdout
