"""Alerts arrive: a real local HTTP receiver stands in for Slack (no external network here)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lakehouse_mlops.notify import FailureNotifier, send_alert


@pytest.fixture
def receiver(monkeypatch):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("AIRFLOW_UI_URL", "http://airflow.example:8080")
    yield received
    server.shutdown()
    server.server_close()


class FakeTI:
    dag_id, run_id, task_id, try_number = "ml_pipeline", "scheduled__2026-11-24T17:00:00+00:00", "bronze_to_silver", 3

    def xcom_pull(self, task_ids):
        assert task_ids == "start_tracking"
        return {"trade_date": "2026-11-24", "parent_run_id": "abc"}


class FakeDagRun:
    dag_id, run_id = FakeTI.dag_id, FakeTI.run_id


def test_task_failure_reaches_the_webhook_with_what_a_person_needs(receiver):
    FailureNotifier().notify({"ti": FakeTI(), "dag_run": FakeDagRun(),
                              "exception": RuntimeError("row accounting broken: 10 in, 9 out")})
    assert len(receiver) == 1
    msg = receiver[0]
    assert msg["dag"] == "ml_pipeline" and msg["task"] == "bronze_to_silver"
    assert msg["trade_date"] == "2026-11-24"
    assert "row accounting broken" in msg["error"] and "RuntimeError" in msg["error"]
    assert msg["log_url"] == ("http://airflow.example:8080/dags/ml_pipeline/runs/"
                              "scheduled__2026-11-24T17%3A00%3A00%2B00%3A00/tasks/bronze_to_silver?try_number=3")
    assert "bronze_to_silver" in msg["text"]  # Slack shows `text`


def test_an_unreachable_webhook_is_retried_then_reported_not_raised(monkeypatch):
    import lakehouse_mlops.notify as notify

    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")  # nothing listens on port 9
    waits = []
    monkeypatch.setattr(notify.time, "sleep", waits.append)  # backoff observed, not waited out
    assert send_alert("test", {"a": 1}) == []
    assert waits == [2, 4]


def test_the_error_summary_is_the_jobs_own_exception_not_the_command_line():
    from lakehouse_mlops.notify import summarize_error

    spark_failure = Exception(
        "Cannot execute: /opt/jobs-venv/bin/spark-submit --master local[*] " + "--conf a=b " * 300
        + "jobs/stages/raw_to_bronze.py. Error code is: 1.\nLast spark-submit output:\n"
        "Traceback (most recent call last):\n"
        "File \"/work/jobs/stages/raw_to_bronze.py\", line 23, in run\n"
        "FileNotFoundError: no RAW ticks for 2026-11-23 at /data/raw/ticks/trade_date=2026-11-23")
    assert summarize_error(spark_failure) == \
        "FileNotFoundError: no RAW ticks for 2026-11-23 at /data/raw/ticks/trade_date=2026-11-23"
    gate = Exception("Cannot execute: spark-submit jobs/stages/bronze_to_silver.py. Error code is: 1.\n"
                     "jobs.quality.rules.QualityGateFailed: quality gate 'silver' failed for 2026-11-25, "
                     "nothing published: rejected_share = 0.08, allowed <= 0.05 (max_rejected_share)")
    assert summarize_error(gate).endswith("QualityGateFailed: quality gate 'silver' failed for 2026-11-25, "
                                          "nothing published: rejected_share = 0.08, allowed <= 0.05 "
                                          "(max_rejected_share)")
    assert summarize_error(RuntimeError("boom")) == "RuntimeError: boom"
    assert summarize_error(None) == "unknown"


def test_already_alerted_failures_send_nothing(receiver):
    """finish_tracking fails the run for failures the failed task itself has paged about."""
    from lakehouse_mlops.notify import AlreadyAlerted

    FailureNotifier().notify({"ti": FakeTI(), "dag_run": FakeDagRun(),
                              "exception": AlreadyAlerted("did not succeed: bronze_to_silver")})
    assert receiver == []


def test_a_missing_delivery_is_one_alert_titled_with_what_is_missing(receiver):
    from lakehouse_mlops.raw_sensor import DeliveryNotComplete

    error = DeliveryNotComplete("RAW for 2026-11-24 not delivered by 07:00 Asia/Seoul\n"
                                "/data/raw/ticks/trade_date=2026-11-24: 0 data file(s), no marker _SUCCESS yet")
    FailureNotifier().notify({"ti": FakeTI(), "dag_run": FakeDagRun(), "exception": error})
    assert len(receiver) == 1
    assert receiver[0]["title"] == "RAW for 2026-11-24 not delivered by 07:00 Asia/Seoul"
    assert receiver[0]["trade_date"] == "2026-11-24" and receiver[0]["task"] == "bronze_to_silver"


def test_a_failure_before_tracking_still_names_the_trade_date(receiver):
    """start_tracking itself failed (MLflow down): the date comes from the form or the asset event."""

    class NoXcomTI(FakeTI):
        task_id = "start_tracking"

        def xcom_pull(self, task_ids):
            return None

    FailureNotifier().notify({"ti": NoXcomTI(), "dag_run": FakeDagRun(), "params": {"trade_date": "2026-11-30"},
                              "exception": ConnectionError("MLflow at http://127.0.0.1:5000 refused")})
    assert receiver[0]["trade_date"] == "2026-11-30" and receiver[0]["task"] == "start_tracking"
