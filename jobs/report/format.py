"""Shared by the PNG and the HTML report: number formats, status colours, and tolerant readers
of the report dict (a missing or None value reads as "n/a", never as an error)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

NA = "n/a"
METRICS = ("auc", "accuracy", "f1", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
MODERATE_PSI = 0.1  # the usual "moderate shift" line, drawn next to the configured threshold
QUARANTINE = "quarantine"

# Status vocabulary of Airflow task/DAG states and MLflow run statuses, mapped to three looks.
_OK = {"success", "finished", "promoted", "kept_champion"}
_BAD = {"failed", "upstream_failed", "killed", "error"}

C_OK, C_BAD, C_WARN, C_OTHER = "#2e7d32", "#c62828", "#ef6c00", "#9e9e9e"
C_MAIN, C_ALT = "#1565c0", "#90a4ae"
BAND_COLOURS = {"stable": C_OK, "moderate": C_WARN, "major": C_BAD}


class DagRun(TypedDict, total=False):
    dag_id: str
    run_id: str
    trade_date: str
    state: str
    mlflow_url: str
    airflow_url: str


class Report(TypedDict, total=False):
    """Documentation of the input; every key (and most values) may be missing or None.

    funnel: [[label, rows], ...] from RAW to predictions (a "Quarantine" row is drawn apart).
    stages: [{stage, status, duration_seconds, rows_in, rows_out, rows_rejected}, ...].
    quality: {rejected_share, rejected_by_reason: {reason: rows}}.
    anomalies: [{stage, figure, level (warn | fail), explanation}, ...] against each figure's history.
    drift: {threshold, drift_share, prediction_psi,
            features: [{feature, psi, band, ks_pvalue, wasserstein_norm, drifted, excluded (why not judged)}, ...]}.
    model: {challenger_version, champion_version, decision, challenger: {metric: value},
            champion: {metric: value} | None, roc: {fpr, tpr, auc} | None}.
    """
    dag_run: DagRun
    funnel: list
    stages: list
    quality: dict
    anomalies: list
    drift: dict | None
    model: dict | None


def _section(report: Mapping | None, key: str) -> dict:
    value = (report or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def _list(report: Mapping | None, key: str) -> list:
    value = (report or {}).get(key)
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value: Any) -> float | None:
    """A finite-or-infinite float, or None for anything that cannot be plotted."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt_int(value: Any) -> str:
    number = _num(value)
    if number is None:
        return NA if value is None or _blank(value) else str(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{int(round(number)):,}"


def fmt_float(value: Any, digits: int = 3) -> str:
    number = _num(value)
    if number is None:
        return NA if value is None or _blank(value) else str(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def fmt_pct(value: Any, digits: int = 2) -> str:
    number = _num(value)
    if number is None or math.isinf(number):
        return fmt_float(value)
    return f"{number * 100:.{digits}f}%"


def _blank(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value) or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return NA if value is None or _blank(value) else str(value)


def _mpl(value: Any, limit: int = 80) -> str:
    """Dict text for matplotlib: '$' would switch on mathtext (and can fail to parse)."""
    text = _text(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _compact(x: float) -> str:
    """Axis ticks only; exact counts are in the bar labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def _status_kind(status: Any) -> str:
    key = str(status or "").strip().lower()
    return "ok" if key in _OK else "bad" if key in _BAD else "other"


def _status_colour(status: Any) -> str:
    return {"ok": C_OK, "bad": C_BAD}.get(_status_kind(status), C_OTHER)


def _is_quarantine(label: Any) -> bool:
    return QUARANTINE in str(label).lower()


def _funnel_rows(report: Mapping) -> list[tuple[str, float | None]]:
    rows = []
    for item in _list(report, "funnel"):
        if isinstance(item, Mapping):
            label, count = item.get("label", item.get("stage")), item.get("rows", item.get("count"))
        elif isinstance(item, (list, tuple)) and item:
            label, count = item[0], item[1] if len(item) > 1 else None
        else:
            continue
        rows.append((_text(label), _num(count)))
    return rows


def _drift_features(drift: Mapping) -> list[dict]:
    """Highest PSI first; unknown PSI last, so the eye lands on what moved."""
    features = [f for f in drift.get("features") or [] if isinstance(f, Mapping)]
    return sorted(features, key=lambda f: (_num(f.get("psi")) is None, -(_num(f.get("psi")) or 0.0)))


def _is_drifted(feature: Mapping, threshold: float | None) -> bool:
    if feature.get("drifted") is not None:
        return bool(feature.get("drifted"))
    psi = _num(feature.get("psi"))
    return psi is not None and threshold is not None and psi >= threshold


def _decision_text(model: Mapping) -> str:
    return _text(model.get("decision")).replace("_", " ")


def _title_line(report: Mapping) -> str:
    run = _section(report, "dag_run")
    verdict = _section(report, "health").get("verdict")
    return (f"Morning report · trade date {_text(run.get('trade_date'))} · "
            f"run state {_text(run.get('state')).upper()} · "
            + (f"health {_text(verdict).upper()} · " if verdict else "") +
            f"{_text(run.get('dag_id'))} / {_text(run.get('run_id'))}")
