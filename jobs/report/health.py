"""One verdict per trade date: healthy, warning, degraded or failed, with the reasons.

The morning report opens with it, the DAG run's parent MLflow run carries it as a tag
(``pipeline.health``), and the 30-day strip under it is the same judgement over the
``stage_runs`` facts table, so a bad week shows at a glance.

- failed: a stage did not finish (failed or never ran), a quality gate failed, or a fail-level
  anomaly stopped a layer;
- degraded: the drift share reached ``DRIFT_SHARE_THRESHOLD`` (retraining is triggered);
- warning: a gate only warned, a figure left its baseline (an anomaly, ``jobs.quality.anomalies``),
  a stage needed more than one try, or some feature drifted;
- healthy: none of these.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from jobs import contract as c
from jobs.contract import env

HEALTHY, WARNING, DEGRADED, FAILED = "healthy", "warning", "degraded", "failed"
VERDICTS = (HEALTHY, WARNING, DEGRADED, FAILED)
HISTORY_DAYS = 30


def drift_share_threshold() -> float:
    return float(env("DRIFT_SHARE_THRESHOLD", c.DEFAULT_DRIFT_SHARE_THRESHOLD))


def _worst(found: list[tuple[str, str]]) -> dict:
    verdict = max((v for v, _ in found), key=VERDICTS.index, default=HEALTHY)
    return {"verdict": verdict, "reasons": [why for v, why in found if v == verdict]}


def _drift_findings(share: float | None, threshold: float) -> list[tuple[str, str]]:
    if share is None or share <= 0:
        return []
    if share >= threshold:
        return [(DEGRADED, f"drift share {share:.0%} >= {threshold:.0%}: retraining")]
    return [(WARNING, f"drift share {share:.0%} (below {threshold:.0%})")]


def judge(report: Mapping, threshold: float | None = None) -> dict:
    """The verdict of one DAG run from its morning-report dict (jobs.report.collect)."""
    threshold = drift_share_threshold() if threshold is None else threshold
    found: list[tuple[str, str]] = []
    for stage in report.get("stages") or []:
        if not isinstance(stage, Mapping):
            continue
        status = stage.get("status") or "NOT RUN"
        if status != "FINISHED":
            found.append((FAILED, f"{stage.get('stage')} {status}"))
        elif (stage.get("tries") or 1) > 1:
            found.append((WARNING, f"{stage.get('stage')} needed {stage['tries']} tries"))
    for layer, verdict in sorted((report.get("gates") or {}).items()):
        if verdict == "failed":
            found.append((FAILED, f"quality gate {layer} failed"))
        elif verdict == "warned":
            found.append((WARNING, f"quality gate {layer} warned"))
    for anomaly in report.get("anomalies") or []:
        level = FAILED if anomaly.get("level") == "fail" else WARNING
        found.append((level, f"anomaly in {anomaly.get('stage')}: {anomaly.get('explanation')}"))
    found += _drift_findings((report.get("drift") or {}).get("drift_share"), threshold)
    return _worst(found)


def judge_facts(rows: Iterable[Mapping], threshold: float | None = None) -> dict:
    """The verdict of one trade date from its stage_runs rows: its latest DAG run, the last try of each stage."""
    threshold = drift_share_threshold() if threshold is None else threshold
    rows = list(rows)
    if not rows:
        return {"verdict": None, "reasons": []}
    latest_run = max(rows, key=lambda r: r["ended_at"])["run_id"]
    tries: dict[str, list[Mapping]] = {}
    for row in rows:
        if row["run_id"] == latest_run:
            tries.setdefault(row["stage"], []).append(row)
    found: list[tuple[str, str]] = []
    for stage, attempts in sorted(tries.items()):
        last = max(attempts, key=lambda r: (r["try_number"] or 0, r["ended_at"]))
        if last["state"] != "success":
            found.append((FAILED, f"{stage} failed"))
        elif len(attempts) > 1:
            found.append((WARNING, f"{stage} needed {len(attempts)} tries"))
        for layer, verdict in sorted(dict(last.get("gates") or {}).items()):
            if verdict in ("failed", "warned"):
                what = f"anomaly in {stage}" if layer == c.ANOMALY_GATE else f"quality gate {layer}"
                found.append((FAILED if verdict == "failed" else WARNING, f"{what} {verdict}"))
        share = dict(last.get("figures") or {}).get(c.METRIC_DRIFT_SHARE)
        found += _drift_findings(share, threshold)
    return _worst(found)


def history(rows: Iterable[Mapping], until: dt.date, days: int = HISTORY_DAYS, dag_id: str = c.ML_PIPELINE,
            threshold: float | None = None) -> list[dict]:
    """The strip: one entry per calendar day up to ``until``; ``verdict`` None where nothing ran."""
    by_date: dict[dt.date, list[Mapping]] = {}
    for row in rows:
        if row.get("dag_id") == dag_id:
            by_date.setdefault(row["trade_date"], []).append(row)
    strip = []
    for back in range(days - 1, -1, -1):
        day = until - dt.timedelta(days=back)
        strip.append({"trade_date": day.isoformat(), **judge_facts(by_date.get(day, []), threshold)})
    return strip


def read_history(until: dt.date, days: int = HISTORY_DAYS) -> tuple[list[dict] | None, str | None]:
    """The strip from the stage_runs table through pyiceberg, or (None, why) when it cannot be read."""
    try:
        from pyiceberg.expressions import GreaterThanOrEqual

        from jobs.lakehouse.settings import Settings

        settings = Settings.from_env()
        ident = f"{settings.namespace}.{c.STAGE_RUNS}"
        catalog = settings.pyiceberg_catalog()
        if not catalog.table_exists(ident):
            return history([], until, days), None
        since = (until - dt.timedelta(days=days - 1)).isoformat()
        rows = catalog.load_table(ident).scan(row_filter=GreaterThanOrEqual("trade_date", since)).to_arrow()
        return history(rows.to_pylist(), until, days), None
    except Exception as exc:  # the report still renders without its history
        return None, f"{type(exc).__name__}: {exc}"
