"""wait_for_raw: ml_pipeline waits for the trade date's RAW delivery on the triggerer, not on a worker.

The rule of a complete delivery is in ``delivery.py`` (a marker file, or a quiet period). The task
checks once on the worker (a rerun of a delivered date goes straight on), then defers to
``RawDeliveryTrigger``, an asyncio poll on the triggerer that holds no worker slot. At the
``RAW_DELIVERY_TIMEOUT`` it fails once, with no retry, so raw_to_bronze never starts and the alert
says what is missing ("RAW for 2026-11-27 not delivered by 07:00 Asia/Seoul").
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from jobs import contract
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.delivery import delivery_deadline, delivery_state, list_folder

log = logging.getLogger(__name__)


class DeliveryNotComplete(AirflowFailException):
    """The delivery did not complete by the timeout; its message is the alert's title."""

    @property
    def alert_title(self) -> str:
        return str(self).splitlines()[0]


class RawDeliveryTrigger(BaseTrigger):
    """Poll the date's RAW folder every ``poll_seconds`` until it is complete or ``deadline`` passes."""

    def __init__(self, folder: str, marker: str | None, quiet_seconds: float, poll_seconds: float,
                 deadline: str):
        super().__init__()
        self.folder, self.marker, self.deadline = folder, marker, deadline
        self.quiet_seconds, self.poll_seconds = float(quiet_seconds), float(poll_seconds)

    def serialize(self):
        return (f"{__name__}.RawDeliveryTrigger", {
            "folder": self.folder, "marker": self.marker, "quiet_seconds": self.quiet_seconds,
            "poll_seconds": self.poll_seconds, "deadline": self.deadline})

    async def run(self):
        deadline = dt.datetime.fromisoformat(self.deadline)
        seen = "not listed yet"
        while True:
            try:
                entries = await asyncio.to_thread(list_folder, self.folder)
                done, seen = delivery_state(entries, self.marker, self.quiet_seconds, time.time())
                if done:
                    yield TriggerEvent({"status": "complete", "detail": seen})
                    return
            except Exception as exc:  # storage briefly unreachable: keep polling until the deadline
                seen = f"listing failed: {type(exc).__name__}: {exc}"
                log.warning("RAW delivery %s: %s", self.folder, seen)
            left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
            if left <= 0:
                yield TriggerEvent({"status": "timeout", "detail": seen})
                return
            await asyncio.sleep(min(self.poll_seconds, left))


class RawDeliverySensor(BaseOperator):
    """Deferrable: succeed when the trade date's RAW is complete, fail (once) at the timeout."""

    ui_color = "#e8f4e8"

    def __init__(self, *, cfg: PipelineConfig, **kwargs):
        kwargs.setdefault("task_id", contract.WAIT_FOR_RAW)
        kwargs["retries"] = 0  # waiting longer is the timeout's job; a retry would only wait again
        super().__init__(**kwargs)
        self.cfg = cfg

    def execute(self, context):
        started = context["ti"].xcom_pull(task_ids=contract.START_TRACKING)
        trade_date = dt.date.fromisoformat(started["trade_date"])
        cfg = self.cfg
        folder = contract.raw_date_folder(cfg.raw_ticks_path, trade_date)
        try:
            deadline, by = delivery_deadline(cfg.raw_delivery_timeout, trade_date, cfg.timezone, cfg.schedule,
                                             dt.datetime.now(dt.UTC))
            done, seen = delivery_state(list_folder(folder), cfg.raw_delivery_marker,
                                        cfg.raw_delivery_quiet_seconds, time.time())
        except ValueError as exc:  # a bad RAW_DELIVERY_TIMEOUT or RAW_TICKS_PATH: no retry helps
            raise AirflowFailException(str(exc)) from exc
        self.log.info("RAW for %s at %s: %s (waiting until %s)", trade_date, folder, seen, by)
        if done:
            return {"folder": folder, "detail": seen}
        if dt.datetime.now(dt.UTC) >= deadline:
            self._fail(context, f"RAW for {trade_date} not delivered by {by}\n{folder}: {seen}")
        self.defer(
            trigger=RawDeliveryTrigger(folder, cfg.raw_delivery_marker, cfg.raw_delivery_quiet_seconds,
                                       cfg.raw_delivery_poll_seconds, deadline.isoformat()),
            method_name="execute_complete",
            kwargs={"trade_date": trade_date.isoformat(), "by": by, "folder": folder},
            # A backstop should the triggerer be gone; the trigger itself ends at the deadline.
            timeout=(deadline - dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=10),
        )

    def _fail(self, context, message: str):
        """Fail once, leaving the reason on the MLflow parent run too (its note names wait_for_raw)."""
        from lakehouse_mlops import parent_run

        ti = context.get("ti")
        started = (ti.xcom_pull(task_ids=contract.START_TRACKING) if ti is not None else None) or {}
        if started.get("parent_run_id"):
            parent_run.record_task_error(self.cfg, started["parent_run_id"], self.task_id, message.splitlines()[0])
        raise DeliveryNotComplete(message)

    def execute_complete(self, context, event=None, trade_date=None, by=None, folder=None):
        event = event or {}
        if event.get("status") == "complete":
            self.log.info("RAW for %s complete: %s", trade_date, event.get("detail"))
            return {"folder": folder, "detail": event.get("detail")}
        self._fail(context, f"RAW for {trade_date} not delivered by {by}\n"
                            f"{folder}: {event.get('detail', 'no event')}")
