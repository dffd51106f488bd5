"""Unpausing ml_pipeline never starts a run for a tick already past, whatever the hour.

Airflow 3.3.2's CronTriggerTimetable(run_immediately=False) still picks the latest tick when the
DAG is unpaused within max(10 % of the interval, 5 min) of it (timetables/trigger.py
``_calc_first_run``; ``False`` is treated like ``None``): for ``0 2 * * *`` until 04:24 Seoul.
The clock is set by patching the ``utcnow`` that module reads; the timetable is the one the
scheduler sees, after the DAG serializer's round trip.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables import trigger
from airflow.timetables.base import TimeRestriction

REPO = Path(__file__).resolve().parents[2]
KST = ZoneInfo("Asia/Seoul")
# 03:20 Seoul: 80 minutes after the 02:00 tick, inside the 144-minute window of a daily schedule.
INSIDE_THE_WINDOW = dt.datetime(2026, 11, 26, 3, 20, tzinfo=KST)
PAST_TICK = dt.datetime(2026, 11, 26, 2, 0, tzinfo=KST)
NEXT_TICK = dt.datetime(2026, 11, 27, 2, 0, tzinfo=KST)


@pytest.fixture(scope="module")
def scheduled_timetable():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    encoded = DagSerialization.to_dict(bag.dags["ml_pipeline"])
    assert encoded["dag"]["timetable"]["__var"]["run_immediately"] == 0.0  # timedelta(0), in seconds
    return DagSerialization.from_dict(encoded).timetable


def first_run_on_unpause(timetable, now: dt.datetime, monkeypatch) -> dt.datetime:
    monkeypatch.setattr(trigger, "utcnow", lambda: pendulum.instance(now.astimezone(dt.UTC)))
    info = timetable.next_dagrun_info(last_automated_data_interval=None,
                                      restriction=TimeRestriction(earliest=None, latest=None, catchup=False))
    return info.run_after


def test_the_serialized_timetable_decodes_run_immediately_as_a_zero_timedelta(scheduled_timetable):
    assert scheduled_timetable._run_immediately == dt.timedelta(0)
    assert scheduled_timetable._run_immediately is not False


def test_unpausing_inside_the_window_waits_for_the_next_tick(scheduled_timetable, monkeypatch):
    assert first_run_on_unpause(scheduled_timetable, INSIDE_THE_WINDOW, monkeypatch) == NEXT_TICK


@pytest.mark.parametrize("minutes_after_tick", [1, 60, 143, 600])
def test_at_any_time_after_a_tick_the_first_run_is_the_next_one(scheduled_timetable, monkeypatch,
                                                                minutes_after_tick):
    now = PAST_TICK + dt.timedelta(minutes=minutes_after_tick)
    assert first_run_on_unpause(scheduled_timetable, now, monkeypatch) == NEXT_TICK


def test_without_the_fix_the_same_clock_starts_the_past_tick(monkeypatch):
    """The Airflow behaviour the DAG avoids: this is what made the demo depend on the hour."""
    legacy = trigger.CronTriggerTimetable("0 2 * * *", timezone="Asia/Seoul", run_immediately=False)
    assert first_run_on_unpause(legacy, INSIDE_THE_WINDOW, monkeypatch) == PAST_TICK
