"""Anomalies against history: today's figures of a stage against the same figures of recent dates.

Fixed gates (``rules.py``) catch the impossible; they miss a feed that loses 5 % a day for a week
or a column whose null share jumps from 0.1 % to 0.8 % under a 1 % limit. This judges each figure
against a baseline learned from the stage's own recent history (``stage_runs``):

- the baseline is the median of the last ``lookback_dates`` published dates, and only of the same
  weekday when at least ``weekday_min_history`` of those exist (Monday volumes against Mondays);
- the spread is the MAD scaled to a standard deviation (1.4826 * MAD), floored by
  ``min_change`` (absolute) and ``min_relative_change`` (share of the median), so a perfectly
  stable history does not make the tiniest change an anomaly;
- the robust z-score ``(value - median) / spread`` beyond ``max_robust_z`` in the watched
  ``direction`` is an anomaly at the family's ``on_anomaly`` level (warn or fail);
- fewer than ``min_history`` earlier dates: not judged yet.

Rules live in the rules file's ``[anomalies]`` table; a family's own table
(``[anomalies.volume]``, ...) overrides any of its keys. Pure functions: the stage reads history
and records the results (``jobs.lakehouse.anomalies``).
"""
from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

LEVELS = ("off", "warn", "fail")
DIRECTIONS = ("both", "up", "down")
MAD_TO_SIGMA = 1.4826
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Figure families: the name a stage gives a figure starts with its family.
VOLUME = "volume"                  # rows delivered (raw_to_bronze)
FRESHNESS = "freshness_minutes"    # last tick to session close, minutes (raw_to_bronze)
NULL_SHARE = "null_share"          # null_share.<column> of what a layer publishes
REJECT_SHARE = "reject_share"      # reject_share.<reason> (bronze_to_silver)
FAMILIES = (VOLUME, FRESHNESS, NULL_SHARE, REJECT_SHARE)
_RULE_TABLES = {VOLUME: "volume", FRESHNESS: "freshness", NULL_SHARE: "null_share", REJECT_SHARE: "reject_share"}

DEFAULTS = {
    "on_anomaly": "warn",
    "lookback_dates": 30,
    "min_history": 5,
    "weekday_min_history": 3,
    "max_robust_z": 4.0,
    "direction": "both",
    "min_change": 0.0,
    "min_relative_change": 0.0,
}
FAMILY_DEFAULTS = {
    VOLUME: {"direction": "both", "min_relative_change": 0.02},
    FRESHNESS: {"direction": "up", "min_change": 15.0},
    NULL_SHARE: {"direction": "up", "min_change": 0.001},
    REJECT_SHARE: {"direction": "up", "min_change": 0.001},
}


def family(figure: str) -> str | None:
    head = figure.split(".", 1)[0]
    return head if head in FAMILIES else None


def family_rules(rules: Mapping, name: str) -> dict:
    """The settings of one family: defaults, the family's defaults, ``[anomalies]``, ``[anomalies.<family>]``."""
    top = {k: v for k, v in rules.items() if not isinstance(v, Mapping)}
    merged = {**DEFAULTS, **FAMILY_DEFAULTS.get(name, {}), **top, **dict(rules.get(_RULE_TABLES[name], {}))}
    if merged["on_anomaly"] not in LEVELS:
        raise ValueError(f"[anomalies] on_anomaly must be one of {', '.join(LEVELS)}, got {merged['on_anomaly']!r}")
    if merged["direction"] not in DIRECTIONS:
        raise ValueError(f"[anomalies.{name}] direction must be one of {', '.join(DIRECTIONS)}, "
                         f"got {merged['direction']!r}")
    return merged


@dataclass(frozen=True)
class Baseline:
    median: float
    spread: float       # the z-score's unit: 1.4826 * MAD, or the floor when that is larger
    dates: int          # earlier dates it learnt from
    same_weekday: bool  # learnt from the same weekday only


def baseline(history: Mapping[dt.date, float], trade_date: dt.date, settings: Mapping) -> Baseline | None:
    """The figure's baseline for ``trade_date`` from earlier dates, None with too little history."""
    earlier = sorted((d for d, v in history.items() if d < trade_date and v is not None and math.isfinite(v)),
                     reverse=True)[: int(settings["lookback_dates"])]
    if len(earlier) < int(settings["min_history"]):
        return None
    same = [d for d in earlier if d.weekday() == trade_date.weekday()]
    use_weekday = len(same) >= int(settings["weekday_min_history"])
    values = [float(history[d]) for d in (same if use_weekday else earlier)]
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    spread = max(MAD_TO_SIGMA * mad, float(settings["min_change"]),
                 float(settings["min_relative_change"]) * abs(median))
    return Baseline(median, spread, len(values), use_weekday)


@dataclass(frozen=True)
class Finding:
    figure: str
    value: float
    level: str              # "ok", "learning" (too little history), "warn" or "fail"
    baseline: Baseline | None = None
    robust_z: float | None = None
    history_dates: int = 0

    @property
    def anomalous(self) -> bool:
        return self.level in ("warn", "fail")

    def explain(self, trade_date: dt.date) -> str:
        if self.baseline is None:
            return f"{self.figure} = {_shown(self.value)}: not judged, {self.history_dates} earlier dates"
        b = self.baseline
        basis = f"earlier {WEEKDAYS[trade_date.weekday()]}s" if b.same_weekday else "earlier dates"
        side = "above" if self.value >= b.median else "below"
        return (f"{self.figure} = {_shown(self.value)} is {abs(self.robust_z or 0):.1f} robust z {side} "
                f"its baseline {_shown(b.median)} (median of {b.dates} {basis}, spread {_shown(b.spread)})")


def _shown(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def judge(figures: Mapping[str, float | None], history: Mapping[dt.date, Mapping[str, float]],
          trade_date: dt.date, rules: Mapping) -> list[Finding]:
    """One finding per watched figure of today; ``history`` maps earlier dates to their figures."""
    findings = []
    for figure, value in sorted(figures.items()):
        name = family(figure)
        if name is None or value is None or not math.isfinite(value):
            continue
        settings = family_rules(rules, name)
        if settings["on_anomaly"] == "off":
            continue
        series = {d: got[figure] for d, got in history.items() if got.get(figure) is not None}
        base = baseline(series, trade_date, settings)
        if base is None:
            findings.append(Finding(figure, float(value), "learning",
                                    history_dates=sum(1 for d in series if d < trade_date)))
            continue
        z = (float(value) - base.median) / base.spread if base.spread > 0 else 0.0
        direction = settings["direction"]
        beyond = (z > settings["max_robust_z"] if direction == "up" else
                  z < -settings["max_robust_z"] if direction == "down" else abs(z) > settings["max_robust_z"])
        level = settings["on_anomaly"] if beyond else "ok"
        findings.append(Finding(figure, float(value), level, base, z, base.dates))
    return findings


def verdict(findings: list[Finding]) -> str:
    """The stage's ``quality_gate.anomaly`` tag: failed, warned, passed, or learning (nothing judged yet)."""
    if any(f.level == "fail" for f in findings):
        return "failed"
    if any(f.level == "warn" for f in findings):
        return "warned"
    if any(f.level == "ok" for f in findings):
        return "passed"
    return "learning"


def failure_message(stage: str, trade_date: dt.date, findings: list[Finding]) -> str:
    lines = "; ".join(f.explain(trade_date) for f in findings if f.level == "fail")
    return f"anomaly in {stage} for {trade_date}, nothing published: {lines}"
