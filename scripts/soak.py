"""What `make soak` and `make test-soak` run: the nights, their events, the knobs.

The soak itself is tests/soak/test_soak.py (a temporary stack, the real scheduler); this module
keeps its plan where the configuration lives, so the SOAK_* knobs of .env.example are read here.
Standard library only.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    variant: str
    nights: tuple[dt.date, ...]        # consecutive calendar days, each triggered as its nightly run
    events: dict[dt.date, str]         # "late", "never", "mlflow-outage" (or combined with "+")
    rerun: dt.date                     # a night cleared via REST after all nights ran
    backfill: dt.date                  # an older date backfilled after newer dates made the champion
    ticks_per_date: int
    memory_ratio: float


def plan_from_env() -> Plan:
    """The long plan around Chuseok 2026 (KRX closed 09-24, 09-25) or its short twin."""
    variant = os.environ.get("SOAK_VARIANT") or "short"
    ticks = int(os.environ.get("SOAK_TICKS_PER_DATE") or "20000")
    ratio = float(os.environ.get("SOAK_MEMORY_RATIO") or "1.3")
    if variant == "long":
        days = int(os.environ.get("SOAK_DAYS") or "13")
        if days < 12:
            raise ValueError("SOAK_DAYS must be at least 12: the long plan's events run to 2026-09-29")
        first = dt.date(2026, 9, 18)
        nights = tuple(first + dt.timedelta(days=i) for i in range(days))
        events = {dt.date(2026, 9, 21): "late", dt.date(2026, 9, 23): "mlflow-outage",
                  dt.date(2026, 9, 29): "never"}
        return Plan(variant, nights, events, dt.date(2026, 9, 22), dt.date(2026, 9, 17), ticks, ratio)
    if variant != "short":
        raise ValueError(f"SOAK_VARIANT must be short or long, not {variant!r}")
    nights = tuple(dt.date(2026, 9, 22) + dt.timedelta(days=i) for i in range(7))
    events = {dt.date(2026, 9, 23): "late+mlflow-outage", dt.date(2026, 9, 28): "never"}
    return Plan(variant, nights, events, dt.date(2026, 9, 22), dt.date(2026, 9, 21), ticks, ratio)
