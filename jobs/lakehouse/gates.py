"""Gate policy: log a layer's figures, judge them with ``jobs.quality.rules``, then pass, warn or stop.

Call ``quality_gate`` after computing the figures and before writing the layer's table, so a
failing batch is explained on the run and never published.
"""
from __future__ import annotations

import datetime as dt
import sys

from jobs.contract import TAG_QUALITY_GATE
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tracking import StageTracker
from jobs.quality.rules import QualityGateFailed, evaluate, failure_message


def gates_enabled(settings: Settings) -> bool:
    return settings.quality_gates != "off"


def quality_gate(layer: str, settings: Settings, tracker: StageTracker, trade_date: dt.date,
                 figures: dict[str, float | None]) -> None:
    """Log the layer's figures and gate results; raise before publishing when a gate fails."""
    tag = f"{TAG_QUALITY_GATE}.{layer}"
    tracker.metrics({f"dq.{k}": v for k, v in figures.items()})
    if settings.quality_gates == "off":
        tracker.tags({tag: "off"})
        return
    results = evaluate(settings.quality_rules(layer), figures)
    tracker.metrics({f"gate.{r.rule}": 1.0 if r.passed else 0.0 for r in results if not r.skipped})
    failed = [r for r in results if not r.passed]
    if not failed:
        tracker.tags({tag: "passed"})
        return
    message = failure_message(layer, trade_date, failed)
    if settings.quality_gates == "warn":
        tracker.tags({tag: "warned", f"{tag}.failures": message[:4900]})
        print(f"WARNING {message}", file=sys.stderr)
        return
    tracker.tags({tag: "failed"})
    raise QualityGateFailed(message)
