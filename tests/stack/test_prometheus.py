"""Prometheus side of the pipeline (issue 17, items 1-2): the alerting rules pass Prometheus's own
rule tests, and a stage's figures reach a real Pushgateway with the names, labels and values the
rules query. Needs Debian's `prometheus` (promtool) and `prometheus-pushgateway` (make system-deps);
no stack, a few seconds.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "docker" / "prometheus" / "rules"
RULES = RULES_DIR / "lakehouse.rules.yml"
RULE_TESTS = RULES_DIR / "lakehouse.rules.test.yml"
PROMTOOL = shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
JOB = 'job="lakehouse_pipeline"'


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus: make system-deps)")
def test_rules_are_valid_and_pass_their_unit_tests():
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    tested = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=60, cwd=RULES_DIR)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _need_prometheus_client() -> None:
    """In CI (CI=true, `make deps` from requirements/jobs.lock) its absence fails; elsewhere it skips."""
    if importlib.util.find_spec("prometheus_client") is None and not os.environ.get("CI"):
        pytest.skip("prometheus-client not in this environment: pinned in requirements/jobs.lock, run make deps")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return getattr(exc, "code", 0) or 0, ""


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    """A real Pushgateway on 127.0.0.1, ready when its /-/ready answers 200.

    Its own persistence file in a temp folder: Debian's build defaults to the shared
    /var/lib/prometheus/pushgateway.data, which would carry metrics from one run into the next.
    """
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway not installed (Debian package: make system-deps)")
    port = _free_port()
    home = tmp_path_factory.mktemp("pushgateway")
    log = (home / "pushgateway.log").open("w")
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
                             f"--persistence.file={home / 'pushgateway.data'}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while _get(url + "/-/ready")[0] != 200:
            assert proc.poll() is None, f"pushgateway exited {proc.returncode}, log {log.name}"
            assert time.monotonic() < deadline, "pushgateway not ready within 30 s"
            time.sleep(0.05)  # poll interval between readiness checks; readiness itself is /-/ready
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _samples(url: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = _get(url + "/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("lakehouse_")}


def _value(samples, name: str, **labels) -> float:
    want = {"job": "lakehouse_pipeline", "instance": "", **labels}
    for (n, lbls), value in samples.items():
        if n == name and dict(lbls) == want:
            return value
    raise AssertionError(f"{name}{want} not in {sorted(k for k, _ in samples)}")


def test_stage_figures_reach_the_pushgateway(pushgateway):
    _need_prometheus_client()
    from jobs.lakehouse import metrics

    day = dt.date(2026, 3, 6)
    ok = metrics.StageFigures(
        stage="bronze_to_silver", trade_date=day, state=metrics.SUCCESS, duration_seconds=12.5,
        rows_in=1000, rows_out=940, rows_rejected=60, rejected_by_reason={"bad_type": 45, "null_key": 15},
        ended_at=1_772_800_000.0)
    assert metrics.push_stage(ok, url=pushgateway) is True
    monitoring = metrics.StageFigures(stage="monitoring", trade_date=day, state=metrics.SUCCESS,
                                      duration_seconds=30, drift_share=0.25)
    deployment = metrics.StageFigures(stage="model_deployment", trade_date=day, state=metrics.SUCCESS,
                                      champion_version=7, champion_trained_through=dt.date(2026, 3, 5),
                                      challenger_auc=0.61, promoted=1)
    assert metrics.push_stage(monitoring, url=pushgateway) and metrics.push_stage(deployment, url=pushgateway)

    s = _samples(pushgateway)
    assert {dict(lbls)["stage"] for _, lbls in s} == {"bronze_to_silver", "monitoring", "model_deployment"}
    midnight = dt.datetime(2026, 3, 6, tzinfo=dt.UTC).timestamp()
    b2s = {"stage": "bronze_to_silver"}
    assert _value(s, "lakehouse_stage_last_run_success", **b2s) == 1
    assert _value(s, "lakehouse_stage_duration_seconds", **b2s) == 12.5
    assert _value(s, "lakehouse_stage_last_run_trade_date_timestamp_seconds", **b2s) == midnight
    assert _value(s, "lakehouse_last_success_trade_date_timestamp_seconds", **b2s) == midnight
    assert _value(s, "lakehouse_stage_last_success_timestamp_seconds", **b2s) == 1_772_800_000.0
    assert _value(s, "lakehouse_stage_rows_in", **b2s) == 1000
    assert _value(s, "lakehouse_stage_rows_out", **b2s) == 940
    assert _value(s, "lakehouse_stage_rows_rejected", **b2s) == 60
    assert _value(s, "lakehouse_stage_rejected_ratio", **b2s) == pytest.approx(0.06)
    assert _value(s, "lakehouse_stage_rejected_rows", reason="bad_type", **b2s) == 45
    assert _value(s, "lakehouse_stage_rejected_rows", reason="null_key", **b2s) == 15
    assert _value(s, "lakehouse_feature_drift_ratio", stage="monitoring") == 0.25
    assert _value(s, "lakehouse_champion_model_version", stage="model_deployment") == 7
    assert _value(s, "lakehouse_champion_trained_through_timestamp_seconds", stage="model_deployment") == \
        dt.datetime(2026, 3, 5, tzinfo=dt.UTC).timestamp()
    assert _value(s, "lakehouse_challenger_holdout_auc", stage="model_deployment") == 0.61
    assert _value(s, "lakehouse_deployment_promoted", stage="model_deployment") == 1
    # Conventions: no counters (so no _total), no run ids or dates as labels, only job/instance/stage/reason.
    assert not [n for n, _ in s if n.endswith("_total")]
    assert {k for _, lbls in s for k, _ in lbls} == {"job", "instance", "stage", "reason"}

    # A failed retry replaces the run's state, keeps the last success's figures next to it.
    failed = metrics.StageFigures(stage="bronze_to_silver", trade_date=dt.date(2026, 3, 9),
                                  state=metrics.FAILED, duration_seconds=3.0)
    assert metrics.push_stage(failed, url=pushgateway)
    s = _samples(pushgateway)
    assert _value(s, "lakehouse_stage_last_run_success", **b2s) == 0
    assert _value(s, "lakehouse_stage_duration_seconds", **b2s) == 3.0
    assert _value(s, "lakehouse_stage_last_run_trade_date_timestamp_seconds", **b2s) == \
        dt.datetime(2026, 3, 9, tzinfo=dt.UTC).timestamp()
    assert _value(s, "lakehouse_last_success_trade_date_timestamp_seconds", **b2s) == midnight
    assert _value(s, "lakehouse_stage_rows_out", **b2s) == 940
    assert _value(s, "lakehouse_stage_last_run_success", stage="monitoring") == 1  # other groups untouched


def test_the_tracker_pushes_what_the_stage_logged(pushgateway, monkeypatch):
    """stage_run's hook: the figures a stage logged to MLflow, pushed when PUSHGATEWAY_URL is set."""
    _need_prometheus_client()
    from jobs.lakehouse.tracking import RunContext, StageTracker, push_stage_metrics

    tracker = StageTracker(run_id="not-a-label")
    tracker.logged_metrics.update({"rows_in": 50.0, "rows_out": 48.0, "rows_rejected": 2.0,
                                   "rejected.bad_type": 2.0, "rejected.not_a_reason": 9.0,
                                   "challenger_auc": 0.58, "promoted": 0.0})
    ctx = RunContext(stage="wired_stage", trade_date=dt.date(2026, 3, 6), run_id="manual__2026-03-06")
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    push_stage_metrics(ctx, tracker, "success", 4.0)
    s = _samples(pushgateway)
    assert _value(s, "lakehouse_stage_rows_out", stage="wired_stage") == 48
    assert _value(s, "lakehouse_stage_rejected_rows", stage="wired_stage", reason="bad_type") == 2
    assert _value(s, "lakehouse_challenger_holdout_auc", stage="wired_stage") == 0.58
    assert _value(s, "lakehouse_deployment_promoted", stage="wired_stage") == 0
    assert not [1 for n, lbls in s if dict(lbls).get("reason") == "not_a_reason"]  # only the fixed codes
    assert not [1 for _, lbls in s for v in dict(lbls).values() if "manual__" in v or "not-a-label" in v]


def test_off_by_default_and_a_failed_push_only_warns(monkeypatch, caplog):
    _need_prometheus_client()
    from jobs.lakehouse import metrics
    from jobs.lakehouse.tracking import RunContext, StageTracker, push_stage_metrics

    fig = metrics.StageFigures(stage="silver_to_gold", trade_date=dt.date(2026, 3, 6), state=metrics.SUCCESS)
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    assert metrics.push_stage(fig) is False
    monkeypatch.setenv("PUSHGATEWAY_URL", "")
    assert metrics.push_stage(fig) is False
    assert not caplog.records

    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="jobs.lakehouse.metrics"):
        started = time.monotonic()
        assert metrics.push_stage(fig, url=closed) is False
        monkeypatch.setenv("PUSHGATEWAY_URL", closed)
        push_stage_metrics(RunContext(stage="silver_to_gold", trade_date=dt.date(2026, 3, 6)),
                           StageTracker(run_id="r"), "failed", 1.0)  # must not raise
    assert time.monotonic() - started < 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "not pushed to " + closed in warnings[0].getMessage()


def test_stage_run_pushes_success_and_failure(pushgateway, monkeypatch, tmp_path):
    """The real hook: stage_run with MLflow (a SQLite store) pushes each run's state when it ends."""
    _need_prometheus_client()
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from jobs.lakehouse.settings import Settings
    from jobs.lakehouse.tracking import RunContext, stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LAKEHOUSE_TRACKING", "on")
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    settings = Settings.from_env()
    day = dt.date(2026, 3, 10)
    # Earlier suites in the same pytest process set MLflow's process-wide URI (tests/jobs, tests/stack).
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        with stage_run(RunContext(stage="hooked_ok", trade_date=day), settings, [], check_first=False) as tracker:
            tracker.metrics({"rows_in": 20, "rows_out": 19, "rows_rejected": 1, "rejected.null_key": 1})
        with pytest.raises(RuntimeError, match="boom"):
            with stage_run(RunContext(stage="hooked_failed", trade_date=day), settings, [], check_first=False):
                raise RuntimeError("boom")
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(previous)
    s = _samples(pushgateway)
    assert _value(s, "lakehouse_stage_last_run_success", stage="hooked_ok") == 1
    assert _value(s, "lakehouse_stage_rows_out", stage="hooked_ok") == 19
    assert _value(s, "lakehouse_stage_rejected_rows", stage="hooked_ok", reason="null_key") == 1
    assert _value(s, "lakehouse_stage_duration_seconds", stage="hooked_ok") > 0
    assert _value(s, "lakehouse_stage_last_run_success", stage="hooked_failed") == 0
    assert ("lakehouse_stage_last_success_timestamp_seconds",
            frozenset({"job": "lakehouse_pipeline", "instance": "", "stage": "hooked_failed"}.items())) not in s


# --------------------------------------------------------------------- the embedded stack's configuration

@pytest.mark.skipif(PUSHGATEWAY is None or shutil.which("prometheus") is None,
                    reason="prometheus / prometheus-pushgateway not installed (make system-deps)")
def test_the_embedded_stack_runs_both_on_loopback_and_its_stages_push_there(tmp_path, monkeypatch):
    """No stack started: what `up` would run, from the resolved configuration."""
    from scripts.devstack import services
    from scripts.devstack.env import PROMETHEUS as PROM_NAME
    from scripts.devstack.env import PUSHGATEWAY as PGW_NAME
    from scripts.devstack.env import catalog_services, job_services, resolve_env

    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    base = {"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": str(tmp_path / "home"),
            "PUSHGATEWAY_PORT": "19091", "PROMETHEUS_PORT": "19090"}
    env = resolve_env(base)
    assert env["PUSHGATEWAY_URL"] == "http://127.0.0.1:19091" and env["PROMETHEUS_URL"] == "http://127.0.0.1:19090"
    assert {PGW_NAME, PROM_NAME} <= set(catalog_services(env))
    assert PGW_NAME in job_services("hive").split(",") and PROM_NAME not in job_services("hive").split(",")
    # A loopback URL is the embedded one (the port decides); another one is the user's.
    assert resolve_env({**base, "PUSHGATEWAY_URL": "http://127.0.0.1:9091"})["PUSHGATEWAY_URL"] == \
        "http://127.0.0.1:19091"
    assert resolve_env({**base, "PUSHGATEWAY_URL": "http://pgw.example:9091"})["PUSHGATEWAY_URL"] == \
        "http://pgw.example:9091"

    pgw, prom = services.pushgateway_service(env), services.prometheus_service(env)
    assert "--web.listen-address=127.0.0.1:19091" in pgw.argv and "--web.listen-address=127.0.0.1:19090" in prom.argv
    assert any(a.startswith("--persistence.file=" + str(tmp_path / "home")) for a in pgw.argv)
    assert any(a.startswith("--storage.tsdb.path=" + str(tmp_path / "home")) for a in prom.argv)
    assert "--storage.tsdb.retention.time=7d" in prom.argv
    config = services.prometheus_config(env)
    scrape = {job["job_name"]: job for job in config["scrape_configs"]}
    assert scrape["pushgateway"]["honor_labels"] is True
    assert scrape["pushgateway"]["static_configs"] == [{"targets": ["127.0.0.1:19091"]}]
    rules = Path(config["rule_files"][0])
    assert rules.parent == RULES_DIR and sorted(RULES_DIR.glob(rules.name)) == [RULES]  # not the rule tests


def test_airflow_and_mlflow_metrics_are_wired_on_loopback(tmp_path, monkeypatch):
    """No stack started: statsd_exporter for Airflow (when make deps built it) and MLflow's /metrics, scraped
    by the embedded Prometheus; with MLFLOW_AUTH=on as MLflow's admin from a 0600 file (never in the config)."""
    from scripts.devstack import services
    from scripts.devstack.env import STATSD_EXPORTER, catalog_services, job_services, metrics_binary, resolve_env

    if metrics_binary(STATSD_EXPORTER) is None:  # make deps says why when it cannot build it
        pytest.skip("statsd_exporter not built (make deps builds it with Go into var/bin)")
    base = {"LAKEHOUSE_ENV_FILE": str(tmp_path / ".env"), "LAKEHOUSE_HOME": str(tmp_path / "home"),
            "STATSD_EXPORTER_PORT": "19102", "STATSD_PORT": "19125", "MLFLOW_PORT": "15000"}
    env = resolve_env(base)
    assert STATSD_EXPORTER in catalog_services(env) and STATSD_EXPORTER not in job_services("hive").split(",")
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == ("127.0.0.1", "19125")
    exporter = services.statsd_exporter_service(env)
    assert {"--web.listen-address=127.0.0.1:19102", "--statsd.listen-udp=127.0.0.1:19125",
            "--statsd.listen-tcp="} <= set(exporter.argv)
    mlflow = services.mlflow_service(env)
    assert mlflow.argv[mlflow.argv.index("--expose-prometheus") + 1] == str(services.mlflow_metrics_dir(env))
    scrape = {job["job_name"]: job for job in services.prometheus_config(env)["scrape_configs"]}
    assert scrape["airflow"]["static_configs"] == [{"targets": ["127.0.0.1:19102"]}]
    assert scrape["mlflow"]["static_configs"] == [{"targets": ["127.0.0.1:15000"]}]
    assert "basic_auth" not in scrape["mlflow"]

    monkeypatch.setenv("MLFLOW_AUTH", "on")
    secured = resolve_env(base)
    path = services.write_prometheus_config(secured)
    auth = {job["job_name"]: job for job in json.loads(path.read_text())["scrape_configs"]}["mlflow"]["basic_auth"]
    secret = Path(auth["password_file"])
    assert auth["username"] == secured["MLFLOW_ADMIN_USER"] and secured["MLFLOW_ADMIN_PASSWORD"] not in path.read_text()
    assert secret.read_text() == secured["MLFLOW_ADMIN_PASSWORD"] and secret.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("MLFLOW_AUTH", "off")
    services.write_prometheus_config(resolve_env(base))
    assert not secret.exists(), "the admin's password stays only while Prometheus needs it"


# --------------------------------------------------------------------- the dashboard on a real Prometheus

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture(scope="module")
def prometheus(pushgateway, tmp_path_factory):
    """A real Prometheus with the embedded stack's generated configuration, scraping the test's Pushgateway.

    Scrapes every second (the stack's 5 s would only make the test wait); ready when /-/ready answers.
    """
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package: make system-deps)")
    from scripts.devstack.services import prometheus_config

    port = _free_port()
    home = tmp_path_factory.mktemp("prometheus")
    config = prometheus_config({"PUSHGATEWAY_PORT": pushgateway.rsplit(":", 1)[1], "PROMETHEUS_PORT": str(port)})
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (home / "prometheus.yml").write_text(json.dumps(config))
    log = (home / "prometheus.log").open("w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={home / 'prometheus.yml'}",
                             f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get(url + "/-/ready")[0] != 200:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}, log {log.name}"
            assert time.monotonic() < deadline, "prometheus not ready within 60 s"
            time.sleep(0.05)  # poll interval between readiness checks; readiness itself is /-/ready
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _every_stage_pushed(day: dt.date, ended_at: float):
    """What a whole ml_pipeline run pushes: each stage's figures as that stage would report them."""
    from jobs import contract
    from jobs.lakehouse import metrics

    base = {"trade_date": day, "state": metrics.SUCCESS, "duration_seconds": 20.0, "ended_at": ended_at}
    special = {
        contract.RAW_TO_BRONZE: {"rows_in": 1000, "rows_out": 1000, "rows_rejected": 0},
        contract.BRONZE_TO_SILVER: {"rows_in": 1000, "rows_out": 960, "rows_rejected": 40,
                                    "rejected_by_reason": {"bad_type": 30, "null_key": 10}},
        contract.SILVER_TO_GOLD: {"rows_in": 960, "rows_out": 120},
        contract.FEATURE_ENGINEERING: {"rows_in": 120, "rows_out": 118},
        contract.MODEL_TRAINING: {"rows_in": 2300},
        contract.MODEL_DEPLOYMENT: {"champion_version": 3, "champion_trained_through": day,
                                    "challenger_auc": 0.57, "promoted": 1},
        contract.MONITORING: {"rows_in": 118, "drift_share": 0.1},
    }
    return [metrics.StageFigures(stage=stage, **base, **special[stage]) for stage in contract.STAGES]


def test_every_dashboard_panel_has_data_once_every_stage_pushed(pushgateway, prometheus, tmp_path):
    """Test A: the figures the stages push are the ones the dashboard queries (no "No data" panel)."""
    _need_prometheus_client()
    from jobs.lakehouse import metrics
    from scripts.devstack.dashboard import DASHBOARD, instant_query, panels_without_data

    ended_at = time.time()
    figures = _every_stage_pushed(dt.date.today() - dt.timedelta(days=1), ended_at)
    for fig in figures:
        assert metrics.push_stage(fig, url=pushgateway), fig.stage

    # Synchronisation: Prometheus has scraped this push when every stage's run time is the pushed one.
    query = f'lakehouse_stage_last_run_timestamp_seconds{{{JOB}}} == {ended_at!r}'
    deadline = time.monotonic() + 60
    while len(seen := instant_query(prometheus, query)) < len(figures):
        assert time.monotonic() < deadline, f"Prometheus did not scrape the push within 60 s: {seen}"
        time.sleep(0.2)  # poll interval; the condition is the query above
    assert panels_without_data(prometheus) == []
    # The check can fail: a panel over a metric nobody pushes is named.
    renamed = tmp_path / "renamed.json"
    renamed.write_text(DASHBOARD.read_text().replace("lakehouse_feature_drift_ratio", "lakehouse_feature_drift_share"))
    assert panels_without_data(prometheus, renamed) == ["Feature drift share (monitoring) / A"]
    # And they come with the labels the stages push (job/stage from the grouping key, honor_labels).
    assert {r["metric"]["stage"] for r in seen} == {f.stage for f in figures}
    assert {r["metric"]["job"] for r in seen} == {metrics.JOB}
