"""Anomalies against a baseline learnt from history (issue 16, item 2): the judgement itself.

Pure functions over plain histories; the stage-level test against real Spark, Iceberg and the
stage_runs table is tests/jobs/lakehouse/test_anomalies_in_stages.py.
"""
from __future__ import annotations

import datetime as dt
import random

import pytest

from jobs.quality import anomalies as a
from jobs.quality.rules import load_rules

RULES = load_rules()["anomalies"]  # the shipped rules file
START = dt.date(2026, 8, 3)  # a Monday


def trading_days(n: int, start: dt.date = START) -> list[dt.date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def noisy(values: dict[dt.date, float], figure: str) -> dict[dt.date, dict[str, float]]:
    return {d: {figure: v} for d, v in values.items()}


def levels(figure: str, series: dict[dt.date, float], rules=RULES) -> dict[dt.date, str]:
    """Walk the dates in order, judging each against the ones before it (as the nightly stage does)."""
    out = {}
    for day in sorted(series):
        history = noisy({d: v for d, v in series.items() if d < day}, figure)
        (finding,) = a.judge({figure: series[day]}, history, day, rules)
        out[day] = finding.level
    return out


def test_a_slow_drop_in_volume_is_caught_while_the_fixed_ratio_gate_still_passes():
    rng = random.Random(7)
    days = trading_days(40)
    series = {d: 100_000 * (1 + rng.uniform(-0.03, 0.03)) for d in days[:30]}
    for i, d in enumerate(days[30:], start=1):  # then 4 % less every day
        series[d] = 100_000 * (0.96 ** i)
    got = levels(a.VOLUME, series)
    assert all(got[d] in ("learning", "ok") for d in days[:30]), "stable noise must not be an anomaly"
    first = next(d for d in days[30:] if got[d] == "warn")
    ratio = series[first] / 100_000
    assert ratio >= 0.85, f"caught only at {ratio:.0%} of normal volume"
    assert 0.2 <= ratio <= 5.0  # the fixed volume_ratio gate [0.2, 5.0] would still pass this date
    assert all(got[d] == "warn" for d in days[days.index(first):])  # and it stays flagged


def test_a_sudden_null_burst_is_caught_below_the_fixed_null_gate():
    days = trading_days(12)
    series = {d: 0.0003 * (i % 3) for i, d in enumerate(days[:-1])}  # a few nulls per 10k rows
    series[days[-1]] = 0.008  # under the 1 % max_null_share gate of silver.underlying_price
    got = levels("null_share.underlying_price", series)
    assert got[days[-1]] == "warn"
    assert set(got[d] for d in days[:-1]) <= {"learning", "ok"}
    (finding,) = a.judge({"null_share.underlying_price": 0.008},
                         noisy({d: series[d] for d in days[:-1]}, "null_share.underlying_price"), days[-1], RULES)
    text = finding.explain(days[-1])
    assert "null_share.underlying_price = 0.008" in text and "robust z above its baseline" in text


def test_weekday_seasonality_is_learnt_not_flagged():
    days = trading_days(30)  # six weeks: Mondays carry twice the volume
    series = {d: 200_000.0 if d.weekday() == 0 else 100_000.0 for d in days}
    got = levels(a.VOLUME, series)
    mondays = [d for d in days if d.weekday() == 0]
    # Once three Mondays are known, Monday is judged against Mondays only.
    assert all(got[d] == "ok" for d in mondays[3:])
    flat = {**RULES, "weekday_min_history": 1000}  # without seasonality the same Mondays are anomalies
    assert all(levels(a.VOLUME, series, flat)[d] == "warn" for d in mondays[1:])


def test_too_little_history_is_not_judged():
    days = trading_days(5)
    history = noisy({d: 1.0 for d in days[:4]}, a.VOLUME)
    (finding,) = a.judge({a.VOLUME: 1e9}, history, days[4], RULES)
    assert (finding.level, finding.history_dates) == ("learning", 4)
    assert a.verdict([finding]) == "learning"


def test_direction_and_floor():
    days = trading_days(11)
    history = noisy({d: 0.0 for d in days[:10]}, "reject_share.crossed_quote")
    # Fewer rejects than usual is good news, and 0.1 % more is one z of the 0.1 % floor.
    for value in (0.0, 0.001):
        (f,) = a.judge({"reject_share.crossed_quote": value}, history, days[10], RULES)
        assert f.level == "ok", value
    (f,) = a.judge({"reject_share.crossed_quote": 0.05}, history, days[10], RULES)
    assert f.level == "warn" and f.robust_z == pytest.approx(50.0)


def test_levels_per_family_from_the_rules_file():
    rules = {**RULES, "volume": {**RULES.get("volume", {}), "on_anomaly": "fail"},
             "null_share": {"on_anomaly": "off"}}
    days = trading_days(11)
    history = {d: {a.VOLUME: 100.0, "null_share.x": 0.0} for d in days[:10]}
    found = a.judge({a.VOLUME: 10.0, "null_share.x": 0.9, "unwatched": 5.0}, history, days[10], rules)
    assert [(f.figure, f.level) for f in found] == [(a.VOLUME, "fail")]
    assert a.verdict(found) == "failed"
    assert "nothing published" in a.failure_message("raw_to_bronze", days[10], found)
    with pytest.raises(ValueError, match="on_anomaly must be one of"):
        a.judge({a.VOLUME: 1.0}, history, days[10], {"on_anomaly": "page"})
