"""Deadline alert: the daily run has not finished by a configured time (Airflow 3 Deadline Alerts).

``PIPELINE_DEADLINE_MINUTES`` after the scheduled time (default 240: 02:00 + 4 h = 06:00 in
``PIPELINE_TIMEZONE``), a run of ``ml_pipeline`` that has not succeeded yet makes the scheduler
queue ``deadline_missed`` on the triggerer, which sends the alert through ``notify.send_alert``.
A run that succeeds before the deadline removes it (Airflow prunes it). A run that has already
failed when its deadline passes sends nothing: its failure paged when it happened (every task's
failure notifier and the run's own), and a second page for the same night at 06:00 would break
"every failure reaches the user once". A run still queued, running or waiting for its delivery at
the deadline is the one this alert exists for.

Which runs get a deadline (``DailyRunDeadline``, a custom deadline reference registered by the
plugin in ``plugins/lakehouse_mlops_plugin.py``):

- scheduled runs: always, at logical date (the scheduled time) + the interval;
- manual and backfill runs: only if that moment is still ahead when the run is created, i.e.
  a hand-started run of today's date is watched like the scheduled one, while reruns and
  backfills of past dates (whose deadline passed long ago) do not raise alerts by the dozen;
- runs without a logical date: never;
- runs for a day KRX is closed (a holiday or a weekend, ``jobs.trade_calendar``): never, they
  skip by design and nobody waits for them.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from airflow.sdk import AsyncCallback, BaseDeadlineReference, DeadlineAlert

from jobs import contract
from jobs.trade_calendar import DEFAULT_TIMEZONE, is_trading_day, pipeline_timezone, resolve_trade_date
from lakehouse_mlops.config import PipelineConfig

log = logging.getLogger(__name__)
DEFAULT_MINUTES = 240


@dataclass(eq=False)  # equality and hash from serialize_reference (BaseDeadlineReference)
class DailyRunDeadline(BaseDeadlineReference):
    """The run's logical date (its scheduled time), for the runs described in the module doc."""

    minutes: int = DEFAULT_MINUTES
    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        return {"reference_type": self.reference_name, "minutes": self.minutes}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> DailyRunDeadline:
        return cls(minutes=int(reference_data.get("minutes", DEFAULT_MINUTES)))

    def _evaluate_with(self, *, session, dag_id: str, run_id: str, **kwargs) -> dt.datetime | None:
        """Evaluated by the scheduler (or API server) when the run is created; None: no deadline."""
        from airflow.models import DagRun
        from sqlalchemy import select

        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        try:
            trade_date = resolve_trade_date((getattr(run, "conf", None) or {}).get("trade_date"),
                                            run.logical_date or getattr(run, "run_after", None),
                                            pipeline_timezone())
        except ValueError:
            trade_date = None  # start_tracking fails such a run (and alerts); keep the deadline
        return reference_time(run.run_type, run.logical_date, self.minutes, dt.datetime.now(dt.UTC),
                              trade_date)


def reference_time(run_type, logical_date: dt.datetime | None, minutes: int,
                   now: dt.datetime, trade_date: dt.date | None = None) -> dt.datetime | None:
    """The rule above, as a pure function: the logical date, or None for runs without a deadline."""
    if logical_date is None:
        return None
    if trade_date is not None and not is_trading_day(trade_date):
        return None
    if str(getattr(run_type, "value", run_type)) == "scheduled":
        return logical_date
    return logical_date if logical_date + dt.timedelta(minutes=minutes) > now else None


def deadline_alert(cfg: PipelineConfig) -> DeadlineAlert | None:
    """The DAG's deadline from ``PIPELINE_DEADLINE_MINUTES``; None when it is 0 (disabled)."""
    if cfg.deadline_minutes <= 0:
        return None
    return DeadlineAlert(
        reference=DailyRunDeadline(minutes=cfg.deadline_minutes),
        interval=dt.timedelta(minutes=cfg.deadline_minutes),
        callback=AsyncCallback(deadline_missed, kwargs={"timezone": cfg.timezone,
                                                        "minutes": cfg.deadline_minutes}),
        name="daily_run_finished",
    )


def _as_datetime(value) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def alert_fields(context: dict, timezone: str, minutes: int | None = None) -> tuple[str, dict[str, object]]:
    """Title and fields of the alert, from the context the scheduler hands a deadline callback."""
    cfg = PipelineConfig.from_env()
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id = dag_run.get("dag_id", "?")
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id") or "?"
    zone = ZoneInfo(timezone)
    run_time = _as_datetime(dag_run.get("logical_date")) or _as_datetime(dag_run.get("run_after"))
    try:
        trade_date = resolve_trade_date((dag_run.get("conf") or {}).get("trade_date"), run_time, timezone)
    except ValueError:
        trade_date = None
    due = _as_datetime(deadline.get("deadline_time"))
    due_local = due.astimezone(zone) if due else None
    due_text = (f"{due_local:%Y-%m-%d %H:%M} {timezone} ({due:%H:%M} UTC)" if due else "?")
    title = (f"Deadline missed: {dag_id} for {trade_date or '?'} not finished by "
             f"{due_local:%H:%M} {timezone}" if due_local else f"Deadline missed: {dag_id}")
    fields: dict[str, object] = {
        "dag": dag_id,
        "run": run_id,
        "trade_date": trade_date.isoformat() if trade_date else None,
        "deadline": due_text,
        "deadline_rule": f"{minutes} min after the scheduled time" if minutes else None,
        "state": dag_run.get("state"),
        "run_url": contract.dag_run_url(cfg.airflow_ui_url, dag_id, run_id),
    }
    return title, fields


ALREADY_PAGED_STATES = frozenset({"failed"})


def send_deadline_alert(context: dict, timezone: str, minutes: int | None = None) -> list[str]:
    from lakehouse_mlops.notify import send_alert

    title, fields = alert_fields(context, timezone, minutes)
    if fields.get("state") in ALREADY_PAGED_STATES:
        log.info("%s: not sent, the run already failed and paged when it did (%s)", title, fields)
        return []
    log.warning("%s (%s)", title, fields)
    return send_alert(title, fields)


async def deadline_missed(context: dict | None = None, timezone: str = DEFAULT_TIMEZONE,
                          minutes: int | None = None, **kwargs) -> list[str]:
    """AsyncCallback run by the triggerer; delivery (blocking, with retries) runs in a thread."""
    return await asyncio.to_thread(send_deadline_alert, context or {}, timezone, minutes)
