"""When a RAW delivery counts as complete, how long ml_pipeline waits, and that the wait defers.

The rule is pure (delivery.py) and tested as such; the listing and the sensor run against real
local folders; the trigger runs on a real event loop. The s3:// listing (boto3 list_objects_v2)
is not exercised by these tests.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from jobs import contract
from lakehouse_mlops.config import PipelineConfig
from lakehouse_mlops.delivery import Entry, delivery_deadline, delivery_state, list_folder
from lakehouse_mlops.raw_sensor import DeliveryNotComplete, RawDeliverySensor, RawDeliveryTrigger

KST = ZoneInfo("Asia/Seoul")
DAY = dt.date(2026, 11, 27)
NOW = 1_800_000_000.0


def test_with_a_marker_the_delivery_is_complete_only_once_the_marker_is_there():
    data = [Entry("ticks-1.parquet", 100, NOW - 3600), Entry(".ticks-2.parquet.tmp", 50, NOW)]
    assert delivery_state(data, "_SUCCESS", 300, NOW) == (False, "1 data file(s), no marker _SUCCESS yet")
    done, seen = delivery_state([*data, Entry("_SUCCESS", 0, NOW)], "_SUCCESS", 300, NOW)
    assert done and "1 data file(s)" in seen
    assert not delivery_state([Entry("_SUCCESS", 0, NOW)], "DONE", 300, NOW)[0]  # another marker name


def test_without_a_marker_it_is_complete_after_a_quiet_period_with_at_least_one_file():
    assert delivery_state([], None, 300, NOW) == (False, "no data file yet")
    assert not delivery_state([Entry("_SUCCESS", 0, NOW - 9999)], None, 300, NOW)[0]  # not a data file
    files = [Entry("a.csv", 10, NOW - 1000), Entry("b.csv", 10, NOW - 299)]
    assert not delivery_state(files, None, 300, NOW)[0]  # b.csv changed 299 s ago
    assert delivery_state(files, None, 300, NOW + 1)[0]


def test_the_timeout_is_a_clock_time_after_the_scheduled_run_or_a_duration():
    started = dt.datetime(2026, 11, 28, 2, 0, 5, tzinfo=KST)
    due, text = delivery_deadline("07:00", DAY, "Asia/Seoul", "0 2 * * *", started)
    assert due == dt.datetime(2026, 11, 28, 7, 0, tzinfo=KST) and text == "07:00 Asia/Seoul"
    # A clock time before the schedule's: the next morning's.
    due, _ = delivery_deadline("01:30", DAY, "Asia/Seoul", "0 2 * * *", started)
    assert due == dt.datetime(2026, 11, 29, 1, 30, tzinfo=KST)
    assert delivery_deadline("90", DAY, "Asia/Seoul", "0 2 * * *", started)[0] == started + dt.timedelta(minutes=90)
    assert delivery_deadline("45s", DAY, "Asia/Seoul", "0 2 * * *", started)[0] == started + dt.timedelta(seconds=45)
    for bad in ("7am", "25:00", ""):
        with pytest.raises(ValueError, match="RAW_DELIVERY_TIMEOUT"):
            delivery_deadline(bad, DAY, "Asia/Seoul", "0 2 * * *", started)


def test_local_listing_sees_files_and_a_missing_folder_is_empty(tmp_path):
    folder = contract.raw_date_folder(tmp_path, DAY)
    assert folder.endswith("/trade_date=2026-11-27") and list_folder(folder) == []
    os.makedirs(folder)
    Path(folder, "ticks.parquet").write_bytes(b"x" * 7)
    assert [(e.name, e.size) for e in list_folder(folder)] == [("ticks.parquet", 7)]
    assert [e.name for e in list_folder(f"file://{folder}")] == ["ticks.parquet"]
    with pytest.raises(ValueError, match="unsupported RAW location"):
        list_folder("hdfs://nn/raw")


def sensor(monkeypatch, tmp_path, timeout: str) -> RawDeliverySensor:
    monkeypatch.setenv("RAW_TICKS_PATH", str(tmp_path))
    monkeypatch.setenv("RAW_DELIVERY_TIMEOUT", timeout)
    return RawDeliverySensor(cfg=PipelineConfig.from_env())


class StartedTI:
    def __init__(self, day: dt.date = DAY):
        self.day = day

    def xcom_pull(self, task_ids):
        return {"trade_date": self.day.isoformat(), "parent_run_id": "p"}


def test_the_sensor_goes_straight_on_for_a_delivered_date(monkeypatch, tmp_path):
    folder = Path(contract.raw_date_folder(tmp_path, DAY))
    folder.mkdir()
    (folder / "ticks.parquet").write_bytes(b"x")
    (folder / "_SUCCESS").write_bytes(b"")
    assert sensor(monkeypatch, tmp_path, "07:00").execute({"ti": StartedTI()})["folder"] == str(folder)


def test_the_sensor_defers_to_the_triggerer_while_the_deadline_is_ahead(monkeypatch, tmp_path):
    with pytest.raises(TaskDeferred) as deferred:
        sensor(monkeypatch, tmp_path, "30").execute({"ti": StartedTI()})
    trigger = deferred.value.trigger
    assert isinstance(trigger, RawDeliveryTrigger) and deferred.value.method_name == "execute_complete"
    path, kwargs = trigger.serialize()
    assert path == "lakehouse_mlops.raw_sensor.RawDeliveryTrigger"
    assert RawDeliveryTrigger(**kwargs).serialize() == (path, kwargs)  # what the triggerer rebuilds


def test_a_rerun_of_an_old_date_without_raw_fails_at_once_with_the_alert_text(monkeypatch, tmp_path):
    from lakehouse_mlops import parent_run

    recorded = []  # MLflow itself is not running in these DAG tests; tests/e2e reads the real parent run
    monkeypatch.setattr(parent_run, "record_task_error", lambda cfg, *args: recorded.append(args))
    old = StartedTI(dt.date(2021, 3, 2))  # its 07:00 deadline passed long before any test run
    with pytest.raises(DeliveryNotComplete, match=r"^RAW for 2021-03-02 not delivered by 07:00 Asia/Seoul"):
        sensor(monkeypatch, tmp_path, "07:00").execute({"ti": old})
    assert recorded == [("p", "wait_for_raw", "RAW for 2021-03-02 not delivered by 07:00 Asia/Seoul")]
    with pytest.raises(AirflowFailException, match="RAW_DELIVERY_TIMEOUT"):
        sensor(monkeypatch, tmp_path, "soon").execute({"ti": StartedTI()})


def first_event(trigger: RawDeliveryTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(first(), timeout=30))


def test_the_trigger_reports_a_complete_delivery_or_the_timeout(tmp_path):
    folder = tmp_path / "trade_date=2026-11-27"
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.3)).isoformat()
    event = first_event(RawDeliveryTrigger(str(folder), "_SUCCESS", 300, 0.1, soon))
    assert event == {"status": "timeout", "detail": "0 data file(s), no marker _SUCCESS yet"}
    folder.mkdir()
    (folder / "a.parquet").write_bytes(b"x")
    (folder / "_SUCCESS").write_bytes(b"")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    assert first_event(RawDeliveryTrigger(str(folder), "_SUCCESS", 300, 0.1, later))["status"] == "complete"
    op = RawDeliverySensor(cfg=PipelineConfig.from_env())
    with pytest.raises(DeliveryNotComplete, match="not delivered by 07:00 Asia/Seoul"):
        op.execute_complete({}, event={"status": "timeout", "detail": "x"}, trade_date="2026-11-27",
                            by="07:00 Asia/Seoul", folder=str(folder))
