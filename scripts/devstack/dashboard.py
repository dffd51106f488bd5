"""The Grafana dashboard's queries, run against a real Prometheus (Grafana itself is not installed here).

The dashboards are kept as JSON (docker/grafana/dashboards: the pipeline's figures, and the platform's,
Airflow and MLflow). A panel whose
query returns no series shows "No data" in Grafana; `panels_without_data` finds those by running
each panel's query as an instant query, with Grafana's variables replaced by concrete values.
Standard library only: tests/stack, tests/e2e and tests/deploy use it from either environment.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "lakehouse-pipeline.json"
# Airflow's own metrics (through statsd_exporter) and MLflow's /metrics.
PLATFORM_DASHBOARD = GRAFANA / "dashboards" / "lakehouse-platform.json"
DASHBOARDS = (DASHBOARD, PLATFORM_DASHBOARD)
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DATASOURCE_UID = "lakehouse-prometheus"

# Grafana's built-in interval variables, as an instant query over a freshly filled Prometheus sees them.
GRAFANA_VARIABLES = {"__range": "1h", "__rate_interval": "1m", "__interval": "15s", "__range_s": "3600"}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def load(path: Path = DASHBOARD) -> dict:
    return json.loads(Path(path).read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, rows' collapsed children included."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out += p.get("panels", [])
    return [p for p in out if p.get("type") != "row"]


def concrete(expr: str) -> str:
    """The query with Grafana's variables replaced (an unknown variable raises: it would break the panel)."""
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title / refId, concrete expr) of every target."""
    return [(f"{p['title']} / {t.get('refId', '?')}", concrete(t.get("expr", "")))
            for p in panels(dashboard) for t in p.get("targets", [])]


def instant_query(prometheus_url: str, expr: str, timeout: float = 10.0) -> list[dict]:
    """The result vector of an instant query; raises on an HTTP or PromQL error."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr!r}: {body}")
    result = body["data"]["result"]
    return result if isinstance(result, list) else [result]


def panels_without_data(prometheus_url: str, dashboard_path: Path = DASHBOARD) -> list[str]:
    """Targets ("panel / refId") whose query returns no series from this Prometheus right now."""
    return [name for name, expr in queries(load(dashboard_path)) if not instant_query(prometheus_url, expr)]
