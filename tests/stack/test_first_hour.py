"""The first hour (issue 18): progress while a user waits, a summary that points at everything, open/logs/status.

Against the session's real stack (conftest.py) where there is one to talk to: the local alert
receiver, `stack.py status|open|logs`, `make logs`, the demo's report download from MLflow and the
progress watcher on a real scheduler with a run ahead of the awaited one. The formatting functions
are pure and get REST-shaped dicts.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from scripts.devstack import cli, progress, run_summary
from scripts.devstack.airflow_api import Airflow
from scripts.devstack.alert_receiver import read_alerts

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
NOW = dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.UTC)


def _post(url: str, payload: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


# ------------------------------------------------------------------------------- the alert receiver


def test_alert_receiver_records_what_the_plugin_sends(stack):
    url = stack.env["ALERT_WEBHOOK_URL"]
    assert url == f"http://127.0.0.1:{stack.ports['ALERT_RECEIVER_PORT']}/alerts"  # ALERT_WEBHOOK_URL left unset
    since = dt.datetime.now(dt.UTC)
    assert _post(url, {"title": "probe alert", "trade_date": "2026-11-26"}) == 200
    # The plugin's own sender, in the Airflow environment, with the stack's variables.
    code = ("import sys; from lakehouse_mlops.notify import send_alert; "
            "sys.exit(0 if send_alert('Airflow task failed: ml_pipeline.raw_to_bronze', "
            "{'task': 'raw_to_bronze', 'trade_date': '2026-11-27', 'error': 'FileNotFoundError: x'}) == ['webhook'] "
            "else 3)")
    env = {**os.environ, **stack.env,
           "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    sent = subprocess.run([str(AIRFLOW_PYTHON), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    alerts = read_alerts(stack.home / "alerts" / "alerts.jsonl", since)
    assert [a["payload"]["title"] for a in alerts] == ["probe alert", "Airflow task failed: ml_pipeline.raw_to_bronze"]
    assert alerts[1]["payload"]["trade_date"] == "2026-11-27" and alerts[1]["path"] == "/alerts"
    lines = "\n".join(run_summary.format_alerts(stack.env, alerts))
    assert "Alerts that would have paged someone (2;" in lines
    assert "Airflow task failed: ml_pipeline.raw_to_bronze" in lines and "FileNotFoundError: x" in lines


def test_format_alerts_without_the_receiver_or_without_alerts():
    env = {"ALERT_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/secret?x=1"}
    assert "not recorded locally" in run_summary.format_alerts(env, None)[0]
    assert "none sent" in run_summary.format_alerts({"LAKEHOUSE_HOME": "/tmp/h"}, [])[0]


# ------------------------------------------------------------------------------- status, open, logs


def test_status_shows_health_port_pid_and_memory(stack):
    out = stack.cli("status")
    assert out.returncode == 0, out.stdout + out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["SERVICE", "PID", "PORT", "RSS", "MB", "PSS", "MB", "HEALTH"]
    table = {line.split()[0]: line.split() for line in rows if line.split() and line.split()[0] in
             ("seaweedfs", "mlflow", "alert-receiver", "airflow-api-server", "airflow-scheduler")}
    assert table["alert-receiver"][2] == str(stack.ports["ALERT_RECEIVER_PORT"])
    assert table["mlflow"][2] == str(stack.ports["MLFLOW_PORT"])
    for name, cols in table.items():
        assert cols[1].isdigit() and cols[-1] == "healthy", cols
        assert float(cols[3]) > 1, f"{name}: RSS {cols[3]} MB"


def test_open_prints_every_ui_with_its_login(stack):
    out = stack.cli("open", env_overrides={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert out.returncode == 0, out.stderr
    assert f"http://127.0.0.1:{stack.ports['AIRFLOW_API_PORT']}" in out.stdout
    assert f"http://127.0.0.1:{stack.ports['MLFLOW_PORT']}" in out.stdout
    assert f"http://127.0.0.1:{stack.ports['SEAWEEDFS_S3_PORT']}" in out.stdout
    assert "user admin" in out.stdout and "simple_auth_manager_passwords.json.generated" in out.stdout
    assert "no display" in out.stdout  # nothing tried to open a browser


def test_make_logs_names_the_valid_services_for_an_unknown_one(stack):
    out = subprocess.run(["make", "-s", "logs", "SERVICE=nope"], cwd=REPO, env=stack.proc_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "unknown service nope" in out.stderr
    for name in ("seaweedfs", "mlflow", "alert-receiver", "airflow-scheduler", "airflow-api-server", "airflow"):
        assert name in out.stderr.split("valid names:")[1], out.stderr


def test_logs_of_one_service(stack):
    out = stack.cli("logs", "alert-receiver", "--no-follow")
    assert out.returncode == 0, out.stderr
    assert "alert receiver on http://127.0.0.1:" in out.stdout


def test_make_help_lists_the_new_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    listed = {line.split()[1] for line in out.stdout.splitlines() if line.strip().startswith("make ")}
    assert {"open", "logs", "status", "demo", "deps", "up"} <= listed


def test_a_health_wait_says_what_it_waits_for(monkeypatch, capsys, tmp_path):
    """`make up` is never silent while a service comes up: a heartbeat with the elapsed seconds."""
    monkeypatch.setattr(cli, "HEARTBEAT_SECONDS", 0.0)
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.0)
    answers = iter([(False, "GET /health returned no answer")] * 3 + [(True, "ok")])
    env = {"LAKEHOUSE_HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mlflow.pid").write_text(f"{os.getpid()}\n")  # a live process stands in for MLflow
    cli._wait(env, ["mlflow"], lambda: next(answers), "MLflow", 60)
    err = capsys.readouterr().err
    assert "waiting for MLflow: 0s of at most 60s (GET /health returned no answer; log: " in err
    assert "mlflow.log" in err


# ------------------------------------------------------------------------------- the demo's progress


def _ti(task_id, state, **kw):
    return {"task_id": task_id, "state": state, "map_index": -1, **kw}


FINISHED = [{"dag_run_id": f"demo__2026-11-2{i}", "state": "success", "run_type": "manual",
             "start_date": f"2026-11-27T00:{10 * i:02d}:00Z", "end_date": f"2026-11-27T00:{10 * i + m:02d}:00Z"}
            for i, m in ((1, 6), (2, 8), (3, 7))]


def test_progress_shows_task_k_of_n_elapsed_and_the_median_estimate():
    run = {"dag_run_id": "demo__2026-11-26", "state": "running", "start_date": "2026-11-27T00:58:00Z"}
    tis = [_ti("start_tracking", "success"), _ti("raw_to_bronze", "success"),
           _ti("bronze_to_silver", "running", start_date="2026-11-27T00:59:30Z", try_number=1),
           *(_ti(f"t{i}", None) for i in range(8))]
    median, count = progress.estimate([*FINISHED, run])
    assert (median, count) == (420.0, 3)  # 6, 8 and 7 minutes
    line = progress.heartbeat_line("2026-11-26", run, tis, 11, median, count, NOW)
    assert line == ("2026-11-26: task 3/11 bronze_to_silver running 30s; elapsed 2m00s, "
                    "estimate 7m00s (median of 3 earlier runs), ~5m00s left")
    first = progress.heartbeat_line("2026-11-26", run, tis, 11, None, 0, NOW)
    assert "no estimate yet" in first


def test_progress_names_a_scheduled_run_ahead_of_the_demos_own():
    scheduled = {"dag_run_id": "scheduled__2026-11-26T17:00:00+00:00", "state": "running", "run_type": "scheduled",
                 "start_date": "2026-11-27T00:50:00Z", "run_after": "2026-11-26T17:00:00Z"}
    mine = {"dag_run_id": "demo__2026-11-24", "state": "queued", "run_type": "manual",
            "queued_at": "2026-11-27T00:55:00Z", "run_after": "2026-11-27T00:55:00Z"}
    later = {**mine, "dag_run_id": "demo__2026-11-25", "run_after": "2026-11-27T00:55:01Z"}
    runs = {r["dag_run_id"]: r for r in (*FINISHED, scheduled, mine, later)}
    assert [r["dag_run_id"] for r in progress.ahead_of(mine["dag_run_id"], runs.values())] == [scheduled["dag_run_id"]]
    assert progress.ahead_of(scheduled["dag_run_id"], runs.values()) == []

    class Client:  # what heartbeat_lines asks the REST API: the blocking run's task instances
        def task_instances(self, run_id, dag_id):
            assert run_id == scheduled["dag_run_id"]
            return [_ti("start_tracking", "success"), _ti("raw_to_bronze", "up_for_retry", try_number=2),
                    *(_ti(f"t{i}", None) for i in range(9))]

    lines = progress.heartbeat_lines(Client(), {"2026-11-24": mine["dag_run_id"], "2026-11-25": later["dag_run_id"]},
                                     {}, runs, {}, 11, 420.0, 3, NOW, "ml_pipeline")
    assert lines[0].startswith("2026-11-24: queued 5m00s, estimate 7m00s")
    assert ("waits behind scheduled__2026-11-26T17:00:00+00:00 (a scheduled run not started here): running, "
            "task 2/11 raw_to_bronze up_for_retry (try 2)") in lines[0]
    assert lines[1].startswith("2026-11-25: queued") and "waits behind scheduled__" in lines[1]


def test_watch_names_the_run_ahead_on_the_real_scheduler(stack):
    """A run the demo did not start holds the only slot: the watcher says so before it is released."""
    airflow = Airflow(stack.env)
    airflow.wait_for_dag("stack_probe_serial")
    began = dt.datetime.now(dt.UTC)
    blocker = airflow.call("POST", "/api/v2/dags/stack_probe_serial/dagRuns",
                           {"dag_run_id": "blocker", "logical_date": None})[1]["dag_run_id"]
    mine = airflow.call("POST", "/api/v2/dags/stack_probe_serial/dagRuns",
                        {"dag_run_id": "mine", "logical_date": None})[1]["dag_run_id"]
    home = Path(stack.env["LAKEHOUSE_HOME"])
    (home / f"release-{mine}").touch()

    class Out(io.StringIO):
        """Releases the blocker once the watcher has named it, as a person would cancel it."""
        def write(self, text):
            if "NOTE:" in text and "blocker" in text:
                (home / f"release-{blocker}").touch()
            sys.stdout.write(text)
            return super().write(text)

    out = Out()
    states = progress.watch(airflow, {"probe": mine}, "stack_probe_serial", timeout=240, out=out, heartbeat=0)
    text = out.getvalue()
    assert states == {"probe": "success"}, text
    assert "NOTE: stack_probe_serial run blocker (a manual run not started here): " in text
    assert "is ahead of the runs awaited here" in text
    assert "probe: queued" in text and "waits behind blocker" in text  # heartbeats while it waited
    assert "probe done" in text and "probe run SUCCESS after" in text
    assert airflow.run_state(blocker, "stack_probe_serial") == "success"

    # The summary lists both, the one it did not start included, with their final states.
    touched = run_summary.touched_runs(airflow, began, {"stack_probe_serial": [mine]}, dags=["stack_probe_serial"])
    assert [(t["dag_run_id"], t["state"], t["by_demo"]) for t in touched] == \
        [("mine", "success", True), ("blocker", "success", False)]
    assert touched[1]["origin"] == "NOT started by the demo (manual run)"


# ------------------------------------------------------------------------------- the demo's summary


def _entry(**kw):
    base = {"dag_id": "ml_pipeline", "dag_run_id": "demo__2026-11-24__20261127T000000", "state": "success",
            "run_type": "manual", "start_date": "2026-11-27T00:00:00Z", "end_date": "2026-11-27T00:06:05Z",
            "queued_at": "2026-11-27T00:00:00Z", "trade_date": "2026-11-24", "by_demo": True}
    return {**base, **kw}


def test_touched_runs_include_the_ones_the_demo_did_not_start():
    began = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)
    old = {"dag_run_id": "manual__old", "queued_at": "2026-11-20T00:00:00Z", "start_date": "2026-11-20T00:00:01Z",
           "end_date": "2026-11-20T00:05:00Z", "state": "success"}
    scheduled = {"dag_run_id": "scheduled__2026-11-26T17:00:00+00:00", "run_type": "scheduled", "state": "failed",
                 "queued_at": "2026-11-27T00:00:01Z"}
    assert not run_summary.touched_since(old, began) and run_summary.touched_since(scheduled, began)
    origin = run_summary.origin_of("ml_pipeline", scheduled, {"ml_pipeline": ["demo__x"]})
    assert origin.startswith("NOT started by the demo")
    assert run_summary.origin_of("ml_pipeline", {"dag_run_id": "demo__x"}, {"ml_pipeline": ["demo__x"]}) == \
        "started by the demo"
    taken: set[str] = set()
    assert run_summary.report_name(_entry(), taken) == "2026-11-24"
    assert run_summary.report_name(_entry(by_demo=False), taken) == "2026-11-24-ml_pipeline"
    assert run_summary.report_name(_entry(dag_id="ml_retraining", by_demo=False), taken) == "2026-11-24-ml_retraining"


def test_summary_points_at_every_run_with_links_and_local_reports():
    entries = [
        _entry(origin="started by the demo", airflow_url="http://127.0.0.1:8080/dags/ml_pipeline/runs/demo__x",
               mlflow_url="http://127.0.0.1:5000/#/experiments/1/runs/abc",
               reports={"html": "/h/var/stack/reports/2026-11-24.html", "png": "/h/var/stack/reports/2026-11-24.png"}),
        _entry(dag_run_id="scheduled__2026-11-26T17:00:00+00:00", state="failed", trade_date="2026-11-27",
               by_demo=False, origin="NOT started by the demo: the scheduler created it", end_date=None,
               airflow_url="http://127.0.0.1:8080/dags/ml_pipeline/runs/scheduled__2026-11-26T17%3A00%3A00%2B00%3A00"),
    ]
    text = "\n".join(run_summary.format_runs(entries))
    assert "Runs of ml_pipeline and ml_retraining during this demo (2):" in text
    assert "ml_pipeline 2026-11-24  SUCCESS   in 6m05s  started by the demo" in text
    assert "Airflow  : http://127.0.0.1:8080/dags/ml_pipeline/runs/demo__x" in text
    assert "MLflow   : http://127.0.0.1:5000/#/experiments/1/runs/abc" in text
    assert "report   : /h/var/stack/reports/2026-11-24.html  /h/var/stack/reports/2026-11-24.png" in text
    assert "ml_pipeline 2026-11-27  FAILED    NOT started by the demo" in text
    assert "(no parent run: tracking never started)" in text


def test_the_morning_report_is_copied_out_of_mlflow(stack, monkeypatch):
    """link_runs finds the parent run by its contract filter and downloads report/*.html|png."""
    import mlflow
    from mlflow import MlflowClient

    from jobs.contract import ROLE_DAG_RUN, TAG_DAG_ID, TAG_ROLE, TAG_RUN_ID, TAG_TRADE_DATE, mlflow_run_url

    for key in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.setenv(key, stack.env[key])
    mlflow.set_tracking_uri(stack.env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    exp = client.get_experiment_by_name(stack.env["MLFLOW_EXPERIMENT_NAME"]).experiment_id
    run_id = "demo__2026-11-25__20261127T000000"
    parent = client.create_run(exp, tags={TAG_DAG_ID: "ml_pipeline", TAG_RUN_ID: run_id, TAG_ROLE: ROLE_DAG_RUN,
                                          TAG_TRADE_DATE: "2026-11-25"})
    client.log_text(parent.info.run_id, "<html>morning</html>", "report/morning_report.html")
    client.log_text(parent.info.run_id, "not really a png", "report/morning_report.png")
    client.set_terminated(parent.info.run_id)

    entries = run_summary.link_runs(stack.env, client, exp, [_entry(dag_run_id=run_id, trade_date=None,
                                                             origin="started by the demo")])
    reports = Path(stack.env["LAKEHOUSE_HOME"]) / "reports"
    assert entries[0]["trade_date"] == "2026-11-25"
    assert entries[0]["reports"] == {"html": str(reports / "2026-11-25.html"), "png": str(reports / "2026-11-25.png")}
    assert (reports / "2026-11-25.html").read_text() == "<html>morning</html>"
    assert entries[0]["mlflow_url"] == mlflow_run_url(stack.env["MLFLOW_UI_URL"], exp, parent.info.run_id)
    assert f"/#/experiments/{exp}/runs/{parent.info.run_id}" in entries[0]["mlflow_url"]
    assert entries[0]["airflow_url"].startswith(f"{stack.env['AIRFLOW_UI_URL']}/dags/ml_pipeline/runs/demo__2026-11-25")


@pytest.mark.parametrize("seconds, text", [(None, "?"), (5, "5s"), (65, "1m05s"), (3720, "1h02m")])
def test_durations_read_like_a_person_writes_them(seconds, text):
    assert progress.duration(seconds) == text
