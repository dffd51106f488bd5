"""The daily-run deadline (Airflow Deadline Alerts) and how a backfill range maps to trade dates.

No services: the DAG is parsed and serialized the way the dag-processor does it, the custom deadline
reference goes through Airflow's plugin registry, and the callback posts to a local HTTP receiver.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import AsyncCallback

from jobs.trade_calendar import is_trading_day, resolve_trade_date
from lakehouse_mlops.deadline import DailyRunDeadline, deadline_missed, reference_time

REPO = Path(__file__).resolve().parents[2]
KST = ZoneInfo("Asia/Seoul")
UTC = dt.UTC


def parse_pipeline():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["ml_pipeline"]


@pytest.fixture(scope="module")
def dag():
    return parse_pipeline()


def the_deadline(dag):
    alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline] if dag.deadline else []
    assert len(alerts) == 1, alerts
    return alerts[0]


# ------------------------------------------------------------------------------------------ deadline

def test_the_daily_run_has_a_deadline_four_hours_after_its_schedule_by_default(dag):
    alert = the_deadline(dag)
    assert alert.interval == dt.timedelta(minutes=240)  # 02:00 + 4 h = 06:00 Asia/Seoul
    assert alert.reference == DailyRunDeadline(minutes=240)
    assert isinstance(alert.callback, AsyncCallback)  # runs on the triggerer
    assert alert.callback.path == "lakehouse_mlops.deadline.deadline_missed"
    assert alert.callback.kwargs == {"timezone": "Asia/Seoul", "minutes": 240}


@pytest.mark.parametrize("value, minutes", [("30", 30), ("90", 90), ("0", None), ("off", None)])
def test_the_deadline_comes_from_pipeline_deadline_minutes(monkeypatch, value, minutes):
    monkeypatch.setenv("PIPELINE_DEADLINE_MINUTES", value)
    dag = parse_pipeline()
    if minutes is None:
        assert not dag.deadline
    else:
        alert = the_deadline(dag)
        assert alert.interval == dt.timedelta(minutes=minutes)
        assert alert.reference == DailyRunDeadline(minutes=minutes)
    assert not parse_pipeline_retraining().deadline  # asset-triggered: no schedule to be late against


def parse_pipeline_retraining():
    return DagBag(dag_folder=str(REPO / "dags")).dags["ml_retraining"]


def test_the_custom_reference_survives_serialization_through_the_plugin_registry(dag):
    """What the dag-processor writes and the scheduler reads back when it creates a run."""
    from airflow import plugins_manager
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels
    from airflow.serialization.encoders import encode_deadline_alert
    from airflow.serialization.serialized_objects import DagSerialization

    assert "lakehouse_mlops.deadline.DailyRunDeadline" in plugins_manager.get_deadline_references_plugins()
    encoded = DagSerialization.to_dict(dag)["dag"]["deadline"]
    assert encoded[0]["reference"]["__class_path"] == "lakehouse_mlops.deadline.DailyRunDeadline"
    decoded = decode_deadline_alert(encode_deadline_alert(the_deadline(dag)))
    assert isinstance(decoded.reference, SerializedReferenceModels.TYPES.DAGRUN)  # evaluated at run creation
    assert decoded.reference.inner_ref == DailyRunDeadline(minutes=240)
    assert decoded.interval == dt.timedelta(minutes=240)

    # Evaluated the way the scheduler does, against the run it just created.
    logical = dt.datetime(2026, 11, 26, 2, tzinfo=KST)
    run = SimpleNamespace(run_type="scheduled", logical_date=logical.astimezone(UTC))
    session = SimpleNamespace(scalar=lambda query: run)
    due = decoded.reference.evaluate_with(session=session, interval=decoded.interval,
                                          dag_id="ml_pipeline", run_id="scheduled__2026-11-25T17:00:00+00:00")
    assert due == dt.datetime(2026, 11, 26, 6, tzinfo=KST)


def test_which_runs_get_a_deadline():
    logical = dt.datetime(2026, 11, 26, 2, tzinfo=KST)
    before, after = dt.datetime(2026, 11, 26, 3, tzinfo=KST), dt.datetime(2026, 11, 27, 9, tzinfo=KST)
    # The scheduled run: always, even if the scheduler created it late.
    assert reference_time("scheduled", logical, 240, after) == logical
    # A hand-started or backfilled run of today's date, created before 06:00, is watched the same way ...
    assert reference_time("manual", logical, 240, before) == logical
    assert reference_time("backfill", logical, 240, before) == logical
    # ... reruns and backfills of past dates are not: their deadline passed long ago.
    assert reference_time("manual", logical, 240, after) is None
    assert reference_time("backfill", logical, 240, after) is None
    assert reference_time("manual", None, 240, before) is None


@pytest.fixture
def receiver(monkeypatch):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("AIRFLOW_UI_URL", "http://airflow.example:8080")
    yield received
    server.shutdown()
    server.server_close()


def test_a_missed_deadline_reaches_the_webhook_with_date_deadline_and_link(receiver):
    # The context Airflow's scheduler hands the callback: the DAG run as the REST API renders it.
    context = {
        "dag_run": {"dag_id": "ml_pipeline", "dag_run_id": "scheduled__2026-11-25T17:00:00+00:00",
                    "logical_date": "2026-11-25T17:00:00Z", "run_after": "2026-11-25T17:00:00Z",
                    "run_type": "scheduled", "state": "running", "conf": {}},
        "deadline": {"id": "0193", "deadline_time": dt.datetime(2026, 11, 25, 21, 0, tzinfo=UTC)},
    }
    delivered = asyncio.run(deadline_missed(context=context, timezone="Asia/Seoul", minutes=240))
    assert delivered == ["webhook"] and len(receiver) == 1
    msg = receiver[0]
    assert msg["title"] == "Deadline missed: ml_pipeline for 2026-11-25 not finished by 06:00 Asia/Seoul"
    assert msg["dag"] == "ml_pipeline" and msg["run"] == "scheduled__2026-11-25T17:00:00+00:00"
    assert msg["trade_date"] == "2026-11-25"
    assert msg["deadline"] == "2026-11-26 06:00 Asia/Seoul (21:00 UTC)"
    assert msg["state"] == "running"
    assert msg["run_url"] == ("http://airflow.example:8080/dags/ml_pipeline/runs/"
                              "scheduled__2026-11-25T17%3A00%3A00%2B00%3A00")
    assert "Deadline missed" in msg["text"]  # Slack shows `text`


def test_a_run_that_already_failed_is_not_paged_again_at_its_deadline(receiver):
    """Its failure paged when it happened (the task's notifier); the 06:00 deadline adds no second page.

    Seen: the run the scheduler starts on unpause after a backfill fails at wait_for_raw and pages;
    without this, the same night paged again at 06:00 KST.
    """
    def context(state):
        return {"dag_run": {"dag_id": "ml_pipeline", "dag_run_id": "scheduled__2026-11-25T17:00:00+00:00",
                            "logical_date": "2026-11-25T17:00:00Z", "run_type": "scheduled", "state": state,
                            "conf": {}},
                "deadline": {"id": "0194", "deadline_time": dt.datetime(2026, 11, 25, 21, 0, tzinfo=UTC)}}

    assert asyncio.run(deadline_missed(context=context("failed"), timezone="Asia/Seoul", minutes=240)) == []
    assert receiver == []
    for state in ("queued", "running"):  # not finished: this is what the deadline is for
        assert asyncio.run(deadline_missed(context=context(state), timezone="Asia/Seoul", minutes=240)) == ["webhook"]
    assert [m["state"] for m in receiver] == ["queued", "running"]


# ------------------------------------------------------------------------------------------ backfill

def backfill_trade_dates(dag, from_date: dt.datetime, to_date: dt.datetime) -> list[dt.date]:
    """The runs Airflow's backfill creates for [from_date, to_date], as the trade dates they process."""
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    return [resolve_trade_date(None, info.logical_date, "Asia/Seoul")
            for info in serialized.iter_dagrun_infos_between(from_date, to_date)]


def test_a_backfill_between_the_0200_ticks_after_two_trade_dates_runs_each_trade_date_once(dag):
    """`make backfill FROM=2026-11-20 TO=2026-11-26` sends exactly these bounds (scripts/demo.py)."""
    first, last = dt.date(2026, 11, 20), dt.date(2026, 11, 26)
    days = backfill_trade_dates(dag, dt.datetime.combine(first + dt.timedelta(days=1), dt.time(2), KST),
                                dt.datetime.combine(last + dt.timedelta(days=1), dt.time(2), KST))
    assert days == [first + dt.timedelta(days=i) for i in range(7)]  # both ends included, no gaps
    assert [d for d in days if not is_trading_day(d)] == [dt.date(2026, 11, 21), dt.date(2026, 11, 22)]


def test_date_only_bounds_are_utc_midnight_and_shift_the_range(dag):
    """`airflow backfill create --from-date 2026-11-25 --to-date 2026-11-27` (default_timezone UTC):
    02:00 KST is 17:00 UTC the day before, so the runs are trade dates 11-25 and 11-26, not 11-27."""
    days = backfill_trade_dates(dag, dt.datetime(2026, 11, 25, tzinfo=UTC), dt.datetime(2026, 11, 27, tzinfo=UTC))
    assert days == [dt.date(2026, 11, 25), dt.date(2026, 11, 26)]
