"""The trade-date rule, both directions: which trade date a run processes, and which run processes a date.

The daily schedule (``PIPELINE_SCHEDULE``, a cron expression read in ``PIPELINE_TIMEZONE``) fires
once a day after the session has closed and processes the session of the day before. Cron-triggered
runs in Airflow 3 have no data interval to speak of (start == end == run time), so the date is
derived here, once, and handed to every stage. Standard library only (see ``jobs/contract.py``),
except for the ``holidays`` package (pinned in both environments), imported lazily by
:func:`krx_holidays`: the KRX session calendar is the library's XKRX financial calendar, not a
weekday rule kept by hand.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from jobs.contract import env

DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_TIMEZONE = "Asia/Seoul"
KRX_CLOSED_WEEKDAYS = {5, 6}  # Saturday, Sunday


def pipeline_schedule() -> str:
    return env("PIPELINE_SCHEDULE", DEFAULT_SCHEDULE)


def pipeline_timezone() -> str:
    return env("PIPELINE_TIMEZONE", DEFAULT_TIMEZONE)


def resolve_trade_date(requested: str | None, run_time: dt.datetime | None, timezone: str) -> dt.date:
    """The trade date a run processes: the one asked for, else the day before the run (local time)."""
    if requested:
        try:
            return dt.date.fromisoformat(str(requested))
        except ValueError:
            raise ValueError(f"trade_date must be YYYY-MM-DD, got {requested!r}") from None
    if run_time is None:
        raise ValueError("run has neither a trade_date parameter nor a logical date / run_after")
    return run_time.astimezone(ZoneInfo(timezone)).date() - dt.timedelta(days=1)


def daily_run_time(schedule: str) -> dt.time:
    """The local time of day a daily cron schedule (``M H * * *``) fires at."""
    fields = schedule.split()
    if len(fields) != 5 or any(f != "*" for f in fields[2:4]) or not (fields[0].isdigit() and fields[1].isdigit()):
        raise ValueError(f"PIPELINE_SCHEDULE must be a daily cron expression 'M H * * *' "
                         f"(optionally with a day-of-week field), got {schedule!r}")
    minute, hour = int(fields[0]), int(fields[1])
    if not (0 <= minute < 60 and 0 <= hour < 24):
        raise ValueError(f"PIPELINE_SCHEDULE has no valid time of day: {schedule!r}")
    return dt.time(hour, minute)


def logical_date_for(trade_date: dt.date, schedule: str | None = None, timezone: str | None = None) -> dt.datetime:
    """The scheduled run that processes ``trade_date``: the schedule's tick on the next local day.

    The inverse of :func:`resolve_trade_date` (``resolve_trade_date(None, logical_date_for(d)) == d``).
    """
    zone = ZoneInfo(timezone or pipeline_timezone())
    return dt.datetime.combine(trade_date + dt.timedelta(days=1), daily_run_time(schedule or pipeline_schedule()), zone)


@lru_cache(maxsize=32)
def krx_holidays(year: int) -> dict[dt.date, str]:
    """The Korea Exchange's non-weekend closing days of ``year``, with their names."""
    import holidays  # the one third-party import of this module (tests/dags/test_contract_boundary.py)

    return dict(holidays.financial_holidays("XKRX", years=year).items())


def closed_reason(day: dt.date) -> str | None:
    """Why KRX has no session on ``day`` ("Saturday", "Chuseok", ...); None on a trading day."""
    if day.weekday() in KRX_CLOSED_WEEKDAYS:
        return day.strftime("%A")
    return krx_holidays(day.year).get(day)


def is_trading_day(day: dt.date) -> bool:
    return closed_reason(day) is None


def next_trading_day(day: dt.date) -> dt.date:
    """The first KRX session after ``day``: the date a nightly run must finish next once ``day`` is done."""
    nxt = day + dt.timedelta(days=1)
    while not is_trading_day(nxt):
        nxt += dt.timedelta(days=1)
    return nxt
