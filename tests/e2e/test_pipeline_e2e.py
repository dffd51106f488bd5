"""End to end: the DAG run by Airflow's scheduler against real services, checked at every store.

Asserts the MLflow contract an independent checker reads (experiment, parent and child runs,
tags, metrics), the Iceberg tables through pyiceberg, artifacts in SeaweedFS, the model registry,
the UI link between Airflow and MLflow, a Deadline Alert that fires for real, and, last (they
rewrite tables), idempotent reruns and Airflow backfills: three reruns of a date and a backfill of
processed dates leave every table with the same rows and contents per date.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import mlflow
import pytest
from browser import ARTIFACTS, chromium
from e2e_support import (
    DRIFT_DATE,
    GOOD_DATES,
    MESSY_DATE,
    MISSING_DATE,
    RAW_DELIVERY_BY,
    TICKS_PER_DATE,
    assert_champion_retrains_to_its_metrics,
)
from mlflow import MlflowClient

from jobs import contract
from jobs.contract import BRONZE, DRIFT, FEATURES, GOLD, PREDICTIONS, QUARANTINE, QUARANTINE_FILES, SILVER, STAGES
from jobs.lakehouse.settings import Settings
from jobs.schema import REASONS

REPO = Path(__file__).resolve().parents[2]
TABLE_STAGES = {contract.RAW_TO_BRONZE: BRONZE, contract.BRONZE_TO_SILVER: SILVER, contract.SILVER_TO_GOLD: GOLD,
                contract.FEATURE_ENGINEERING: FEATURES, contract.MODEL_DEPLOYMENT: PREDICTIONS,
                contract.MONITORING: DRIFT}


@pytest.fixture(scope="module")
def client(pipeline):
    mlflow.set_tracking_uri(pipeline.stack.env["MLFLOW_TRACKING_URI"])
    return MlflowClient()


@pytest.fixture(scope="module")
def experiment_id(client):
    exp = client.get_experiment_by_name("lakehouse-tick-pipeline")
    assert exp is not None
    return exp.experiment_id


def parent_of(client, experiment_id, run_id, dag_id=contract.ML_PIPELINE):
    runs = client.search_runs([experiment_id], filter_string=contract.parent_run_filter(dag_id, run_id))
    assert len(runs) == 1, f"expected one parent run for {run_id}, found {len(runs)}"
    return runs[0]


def children_of(client, experiment_id, parent_run_id):
    return client.search_runs([experiment_id], filter_string=contract.child_runs_filter(parent_run_id),
                              order_by=["attributes.start_time ASC"])


latest_by_stage = contract.latest_per_stage


OK_DATES = (*GOOD_DATES, DRIFT_DATE)


def bronze_rows(pipeline, day) -> int:
    """Ticks of the clean feed plus, on the messy date, every row of the vendor files that load."""
    return TICKS_PER_DATE + (pipeline.messy["rows_loaded"] if day == MESSY_DATE else 0)


def test_good_dates_succeed_and_the_missing_date_fails(pipeline):
    assert pipeline.states == {"missing": "failed", **{d.isoformat(): "success" for d in OK_DATES}}


def test_one_parent_run_per_dag_run_closed_with_the_outcome(pipeline, client, experiment_id):
    for label, run_id in pipeline.runs.items():
        parent = parent_of(client, experiment_id, run_id)
        assert parent.data.tags["airflow.dag_id"] == "ml_pipeline"
        assert parent.data.tags["airflow.run_id"] == run_id
        # The morning report hangs on every parent run, failed ones included.
        report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
        assert report == {"report/morning_report.html", "report/morning_report.png"}, label
        if label == "missing":
            assert parent.info.status == "FAILED"
            assert "raw_to_bronze" in parent.data.tags["error"]
            assert parent.data.tags["pipeline.trade_date"] == MISSING_DATE.isoformat()
        else:
            assert parent.info.status == "FINISHED"
            assert parent.data.tags["pipeline.trade_date"] == label
            assert parent.data.metrics["raw_to_bronze.rows_out"] == bronze_rows(pipeline, dt.date.fromisoformat(label))


def test_every_stage_has_a_child_run_with_the_contract_tags_and_metrics(pipeline, client, experiment_id):
    for d in OK_DATES:
        run_id = pipeline.runs[d.isoformat()]
        parent = parent_of(client, experiment_id, run_id)
        stages = latest_by_stage(children_of(client, experiment_id, parent.info.run_id))
        assert sorted(stages) == sorted(STAGES)
        for stage, run in stages.items():
            tags, metrics = run.data.tags, run.data.metrics
            assert run.info.status == "FINISHED", (stage, tags.get("error"))
            assert tags["airflow.task_id"] == stage and tags["airflow.dag_id"] == "ml_pipeline"
            assert tags["airflow.run_id"] == run_id and int(tags["airflow.try_number"]) >= 1
            assert metrics["duration_seconds"] > 0
            if stage in TABLE_STAGES:
                assert tags["iceberg.table"].endswith(TABLE_STAGES[stage])
                assert int(tags["iceberg.snapshot_id"]) != 0
                assert metrics["rows_in"] > 0 and metrics["rows_out"] > 0, stage
        silver = stages["bronze_to_silver"].data.metrics
        assert silver["rows_rejected"] > 0  # the generator plants bad rows
        assert silver["rows_in"] == silver["rows_out"] + silver["rows_rejected"]
        assert stages["raw_to_bronze"].data.metrics["rows_in"] == bronze_rows(pipeline, d)
        for layer, stage in (("bronze", "raw_to_bronze"), ("silver", "bronze_to_silver"), ("gold", "silver_to_gold"),
                             ("features", "feature_engineering")):
            assert stages[stage].data.tags[f"quality_gate.{layer}"] == "passed"
            assert stages[stage].data.metrics["dq.rows"] > 0 and stages[stage].data.metrics["gate.min_rows"] == 1
        train = stages["model_training"].data.metrics
        assert {"auc", "accuracy", "f1", "log_loss"} <= set(train)
        assert 0 <= train["auc"] <= 1


def test_snapshot_ids_logged_are_real_iceberg_snapshots(pipeline, client, experiment_id):
    catalog = Settings.from_env().pyiceberg_catalog()
    run_id = pipeline.runs[GOOD_DATES[-1].isoformat()]
    stages = latest_by_stage(children_of(client, experiment_id, parent_of(client, experiment_id, run_id).info.run_id))
    for stage in TABLE_STAGES:
        tags = stages[stage].data.tags
        table = catalog.load_table(tags["iceberg.table"].split(".", 1)[1])
        assert table.snapshot_by_id(int(tags["iceberg.snapshot_id"])) is not None, stage


def test_every_stage_try_is_a_row_of_stage_runs_with_its_mlflow_figures(pipeline, client, experiment_id):
    """The facts table (issue 16, item 1) on hive_prod and SeaweedFS: one row per stage try of the
    DAG run, its MLflow run id, rows and snapshots equal to what the run logged."""
    settings = Settings.from_env()
    facts = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{contract.STAGE_RUNS}")
    rows = facts.scan().to_arrow().to_pylist()
    for d in OK_DATES:
        run_id = pipeline.runs[d.isoformat()]
        children = children_of(client, experiment_id, parent_of(client, experiment_id, run_id).info.run_id)
        mine = {r["mlflow_run_id"]: r for r in rows if r["run_id"] == run_id}
        assert {r["stage"] for r in mine.values()} == set(STAGES), d
        for run in latest_by_stage(children).values():
            row = mine[run.info.run_id]
            assert row["state"] == "success" and row["trade_date"] == d and row["dag_id"] == contract.ML_PIPELINE
            assert row["try_number"] == int(run.data.tags["airflow.try_number"])
            logged = run.data.metrics.get("rows_out")
            assert row["rows_out"] == (int(logged) if logged is not None else None), run.info.run_name
            if "iceberg.snapshot_id" in run.data.tags:
                assert dict(row["snapshots_out"])[run.data.tags["iceberg.table"]] == \
                    int(run.data.tags["iceberg.snapshot_id"])
        silver = next(r for r in mine.values() if r["stage"] == "bronze_to_silver")
        assert silver["rows_in"] == silver["rows_out"] + silver["rows_rejected"] and silver["rows_rejected"] > 0
        assert sum(dict(silver["rejected_by_reason"]).values()) == silver["rows_rejected"]
        # Three demo dates are fewer than the anomaly check's min_history: it learns, and says so.
        assert dict(silver["gates"]) == {"silver": "passed", "anomaly": "learning"}
        assert settings.table(contract.BRONZE) in dict(silver["snapshots_in"])
        assert dict(silver["figures"])["reject_share.duplicate"] > 0  # tomorrow's history
    checks = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{contract.ANOMALY_CHECKS}") \
        .scan().to_arrow().to_pylist()
    volume = {r["trade_date"]: r for r in checks if r["stage"] == contract.RAW_TO_BRONZE and r["figure"] == "volume"}
    for d in OK_DATES:  # a later e2e rerun of the date (with more history by then) replaces its checks
        assert volume[d]["level"] != "learning" or volume[d]["history_dates"] < 5, volume[d]
    assert {r["stage"] for r in checks} == {contract.RAW_TO_BRONZE, contract.BRONZE_TO_SILVER,
                                            contract.SILVER_TO_GOLD, contract.FEATURE_ENGINEERING}


def test_silver_gold_and_features_are_profiled_per_date_and_column(pipeline):
    """column_profiles (issue 16, item 1) on hive_prod: each layer's date profiled once per column,
    its row count that of the date in the layer's table."""
    settings = Settings.from_env()
    catalog = settings.pyiceberg_catalog()
    profiles = catalog.load_table(f"{settings.namespace}.{contract.COLUMN_PROFILES}").scan().to_arrow().to_pylist()
    for layer in (SILVER, GOLD, FEATURES):
        columns = {f.name for f in catalog.load_table(f"{settings.namespace}.{layer}").schema().fields}
        counts = date_counts(layer)
        for d in OK_DATES:
            mine = [p for p in profiles if p["table_name"] == layer and p["trade_date"] == d]
            assert len(mine) == len({p["column_name"] for p in mine}), (layer, d)  # reruns replaced, not added
            assert {p["column_name"] for p in mine} <= columns and "trade_date" in {p["column_name"] for p in mine}
            assert {p["rows"] for p in mine} == {counts[d]}, (layer, d)


def date_counts(table_name):
    settings = Settings.from_env()
    table = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{table_name}")
    dates = table.scan(selected_fields=("trade_date",)).to_arrow().column("trade_date").to_pylist()
    return {d: dates.count(d) for d in set(dates)}


def test_tables_hold_every_good_date_and_quarantine_explains_rejects(pipeline):
    assert date_counts(BRONZE) == {d: bronze_rows(pipeline, d) for d in OK_DATES}
    for name in (SILVER, GOLD, FEATURES, PREDICTIONS):
        counts = date_counts(name)
        assert set(counts) == set(OK_DATES) and all(n > 0 for n in counts.values()), name
    settings = Settings.from_env()
    quarantine = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{QUARANTINE}").scan().to_arrow()
    reasons = set(quarantine.column("reject_reason").to_pylist())
    assert reasons and reasons <= set(REASONS)
    assert all(quarantine.column("raw_content").to_pylist())


def test_the_messy_delivery_is_quarantined_by_file_and_by_row_and_logged(pipeline, client, experiment_id):
    settings = Settings.from_env()
    files = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{QUARANTINE_FILES}").scan(
        row_filter=f"trade_date = '{MESSY_DATE}'").to_arrow().to_pylist()
    assert {Path(f["source_file"]).name: f["reason"] for f in files} == pipeline.messy["files"]
    stages = latest_by_stage(children_of(client, experiment_id, parent_of(
        client, experiment_id, pipeline.runs[MESSY_DATE.isoformat()]).info.run_id))
    bronze = stages["raw_to_bronze"].data
    assert bronze.metrics["files_quarantined"] == 3 and bronze.metrics["files_loaded"] == 3
    assert "ts->exchange_ts" in bronze.tags["schema.renamed"] and bronze.tags["schema.extra_columns"] == "venue"
    silver = stages["bronze_to_silver"].data.metrics
    for reason, n in pipeline.messy["rejected"].items():
        assert silver[f"rejected.{reason}"] >= n, reason   # the clean feed plants duplicates too
    assert silver["rejected.wrong_timezone"] == 5 and silver["rejected.future_timestamp"] == 1
    assert silver["rows_in"] == silver["rows_out"] + silver["rows_rejected"]


def test_champion_is_registered_and_its_artifacts_live_in_seaweedfs(pipeline, client):
    from scripts.devstack import health as stack

    champion = client.get_model_version_by_alias("TickPricePredictor", "champion")
    assert champion.tags["features_snapshot_id"]
    run = client.get_run(champion.run_id)
    assert run.data.tags["pipeline.stage"] == "model_training"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"confusion_matrix.png", "roc_curve.png"} <= artifacts
    s3 = stack.s3_client(pipeline.stack.env)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=pipeline.stack.env["S3_BUCKET"], Prefix="mlflow/") for o in page.get("Contents", [])]
    assert any(k.endswith("roc_curve.png") and champion.run_id in k for k in keys)
    assert any(k.endswith("/MLmodel") for k in keys)
    # The same model loads outside Spark as a plain pyfunc.
    model = mlflow.pyfunc.load_model("models:/TickPricePredictor@champion")
    assert model.metadata.signature is not None


def test_a_date_whose_raw_never_came_starts_no_spark_job(pipeline, client, experiment_id):
    """Its delivery deadline is long past: wait_for_raw fails on its first try, Bronze never starts."""
    parent = parent_of(client, experiment_id, pipeline.runs["missing"])
    assert not [c for c in children_of(client, experiment_id, parent.info.run_id)
                if c.data.tags["pipeline.stage"] == "raw_to_bronze"]
    states = pipeline.airflow.task_states(pipeline.runs["missing"])
    assert states["wait_for_raw"] == "failed" and states["raw_to_bronze"] == "upstream_failed"
    assert states["finish_tracking"] == "failed"  # the run is red, not green with skipped leaves


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_task_instance_links_to_its_mlflow_run_and_back(pipeline, client, experiment_id):
    env = pipeline.stack.env
    run_id = pipeline.runs[GOOD_DATES[0].isoformat()]
    stages = latest_by_stage(children_of(client, experiment_id, parent_of(client, experiment_id, run_id).info.run_id))
    child = stages["silver_to_gold"]
    # The UI's extra-links endpoint offers the link for this task instance ...
    status, body = pipeline.airflow.call(
        "GET",
        f"/api/v2/dags/ml_pipeline/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/silver_to_gold/links")
    assert status == 200, body
    link = body["extra_links"]["MLflow run"]
    # ... which wants the same login as the UI (issue 14) ...
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        opener.open(env["AIRFLOW_API_URL"] + link)
    assert anonymous.value.code == 401
    # ... and, logged in, following it lands on exactly this MLflow run.
    try:
        opener.open(urllib.request.Request(env["AIRFLOW_API_URL"] + link, headers=pipeline.airflow.auth_header))
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as err:
        assert err.code == 302, err.code
        location = err.headers["Location"]
    assert location == contract.mlflow_run_url(env["MLFLOW_UI_URL"], experiment_id, child.info.run_id)
    back = child.data.tags["airflow.url"]
    assert back.startswith(env["AIRFLOW_UI_URL"]) and urllib.parse.quote(run_id, safe="") in back


def test_training_sweep_is_nested_and_lineage_names_the_snapshot(pipeline, client, experiment_id):
    champion = client.get_model_version_by_alias("TickPricePredictor", "champion")
    run = client.get_run(champion.run_id)
    candidates = client.search_runs([experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{champion.run_id}' and tags.`pipeline.role` = 'candidate'"))
    assert len(candidates) == int(run.data.metrics["candidates"]) >= 3
    assert run.data.metrics["val_auc"] == max(c.data.metrics["val_auc"] for c in candidates)
    snapshot = champion.tags["features_snapshot_id"]
    settings = Settings.from_env()
    assert settings.catalog == "hive_prod"  # the stack's default catalog, as in the user's lakehouse
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {f"{settings.table(FEATURES)}@{snapshot}:training",
                           f"{settings.table(FEATURES)}@{snapshot}:holdout"}
    tag = champion.tags[contract.VERSION_TAG_FEATURES_REF]  # the Iceberg tag that keeps the snapshot past expiry
    assert tag == contract.model_snapshot_tag(champion.version)
    assert f"VERSION AS OF '{tag}'" in champion.tags["training_sql"]
    refs = settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{FEATURES}").refs()
    assert refs[tag].snapshot_ref_type == "tag" and refs[tag].snapshot_id == int(snapshot)


def test_champion_retrains_from_its_logged_snapshot_to_the_same_metrics(pipeline, client):
    """Later dates have committed newer feature snapshots since; time travel still finds the rows.

    Runs in its own process, as a data scientist's notebook would: its JVM and catalog
    connections end with it.
    """
    assert_champion_retrains_to_its_metrics(client)


def test_rollback_swaps_champion_and_previous(pipeline, client):
    """On a throw-away registered model, so the pipeline's own aliases stay as the run left them."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    name = "RollbackProbe"
    mlflow.set_experiment("rollback-probe")
    versions = []
    for _ in range(2):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]),
                                            name="model", registered_model_name=name)
            versions.append(str(info.registered_model_version))
    client.set_registered_model_alias(name, "champion", versions[1])
    client.set_registered_model_alias(name, "previous", versions[0])
    env = {**pipeline.stack.env, "MLFLOW_MODEL_NAME": name}
    out = subprocess.run([sys.executable, "-m", "jobs.ops.rollback_champion"], env={**os.environ, **env},
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert client.get_model_version_by_alias(name, "champion").version == versions[0]
    assert client.get_model_version_by_alias(name, "previous").version == versions[1]
    client.delete_registered_model_alias(name, "previous")
    refused = subprocess.run([sys.executable, "-m", "jobs.ops.rollback_champion"], env={**os.environ, **env},
                             capture_output=True, text=True, cwd=REPO)
    assert refused.returncode == 1 and "needs both" in refused.stderr



def test_a_drifted_date_alerts_and_triggers_retraining(pipeline, client, experiment_id):
    states = pipeline.airflow.task_states(pipeline.runs[DRIFT_DATE.isoformat()])
    assert states["drift_gate"] == "success"
    for d in GOOD_DATES:  # calm days do not alert
        assert pipeline.airflow.task_states(pipeline.runs[d.isoformat()])["drift_gate"] == "skipped"
    alerts = [m for m in pipeline.webhook.messages if m["title"].startswith("Feature drift")]
    assert len(alerts) == 1 and alerts[0]["trade_date"] == DRIFT_DATE.isoformat()
    assert "spread_rel" in alerts[0]["drifted_features"]
    # The asset event started exactly one retraining run, which succeeded ...
    assert list(pipeline.retraining.values()) == ["success"]
    (retraining_run,) = pipeline.retraining
    parent = parent_of(client, experiment_id, retraining_run, dag_id=contract.ML_RETRAINING)
    assert parent.data.tags["airflow.dag_id"] == "ml_retraining"
    assert parent.data.tags["pipeline.trade_date"] == DRIFT_DATE.isoformat()
    assert parent.info.status == "FINISHED"
    # ... trained on the recent days only.
    stages = latest_by_stage(children_of(client, experiment_id, parent.info.run_id))
    assert set(stages) == {"model_training", "model_deployment"}
    assert stages["model_training"].data.params["lookback_days"] == "5"


def test_a_failed_task_alerts_with_date_error_and_log_link(pipeline):
    failures = [m for m in pipeline.webhook.messages if m.get("run") == pipeline.runs["missing"]]
    assert len(failures) == 1  # once: not per try, and finish_tracking does not page again
    alert = failures[0]
    assert alert["title"] == f"RAW for {MISSING_DATE} not delivered by {RAW_DELIVERY_BY} Asia/Seoul"
    assert alert["dag"] == "ml_pipeline" and alert["task"] == "wait_for_raw"
    assert alert["trade_date"] == MISSING_DATE.isoformat()
    assert "not delivered" in alert["error"]
    assert alert["log_url"].startswith(pipeline.stack.env["AIRFLOW_UI_URL"]) and "try_number=1" in alert["log_url"]


def test_the_morning_report_shows_the_run(pipeline, client, experiment_id, tmp_path):
    parent = parent_of(client, experiment_id, pipeline.runs[DRIFT_DATE.isoformat()])
    page = Path(mlflow.artifacts.download_artifacts(
        f"runs:/{parent.info.run_id}/report/morning_report.html", dst_path=str(tmp_path))).read_text()
    for section in ("Row funnel", "Stage durations", "Data quality", "Feature drift", "Model", "ROC"):
        assert section in page, section
    assert DRIFT_DATE.isoformat() in page and f"{TICKS_PER_DATE:,}" in page
    assert "data:image/png;base64," in page
    # Health (issue 16, item 5): the drifted date is degraded, on the parent run and atop the page, with
    # its 30-day strip read from hive_prod's stage_runs (the date itself judged from its own rows).
    assert parent.data.tags[contract.TAG_HEALTH] == "degraded"
    assert page.index('class="badge h-degraded">degraded</span>') < page.index("<h2>")
    assert page.count('<span class="h-') == 30 and "history unavailable" not in page
    assert f'title="{DRIFT_DATE.isoformat()}: degraded"' in page
    png = Path(mlflow.artifacts.download_artifacts(
        f"runs:/{parent.info.run_id}/report/morning_report.png", dst_path=str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_the_mlflow_ui_shows_the_report_and_the_stage_runs(pipeline, client, experiment_id, tmp_path):
    """Headless Debian Chromium renders the MLflow UI (a React app) as a person would see it."""
    label = GOOD_DATES[0].isoformat()
    parent = parent_of(client, experiment_id, pipeline.runs[label])
    run_url = contract.mlflow_run_url(pipeline.stack.env["MLFLOW_UI_URL"], experiment_id, parent.info.run_id)
    overview = chromium(tmp_path, "--dump-dom", run_url)
    assert overview.returncode == 0, overview.stderr[-2000:]
    assert f"ml_pipeline {label}" in overview.stdout and "Child runs" in overview.stdout
    for stage in STAGES:
        assert f"{stage} {label}" in overview.stdout, stage
    report_url = contract.mlflow_artifact_url(pipeline.stack.env["MLFLOW_UI_URL"], experiment_id, parent.info.run_id,
                                              contract.REPORT_PNG_ARTIFACT)
    page = chromium(tmp_path, "--dump-dom", report_url)
    assert "report/morning_report.png" in page.stdout
    shot = ARTIFACTS / "mlflow_parent_run_report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    taken = chromium(tmp_path, f"--screenshot={shot}", report_url)
    assert taken.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000


def deadline_alerts(pipeline) -> list[dict]:
    return [m for m in pipeline.webhook.messages if m["title"].startswith("Deadline missed")]


def test_a_run_not_finished_by_its_deadline_alerts_through_the_webhook(pipeline):
    """A real Airflow Deadline Alert: scheduler → triggerer → lakehouse_mlops.deadline → webhook.

    A run of today's date is made whose deadline (logical date + PIPELINE_DEADLINE_MINUTES) lies
    40 s ahead, while the DAG is paused so it cannot finish in time. Its trade date is a trading day
    (closed days get no deadline), and once the alert is in, the run is marked failed through the API
    before it can start, so it touches no table. The session's runs of past dates got no deadline at all.
    """
    trade_date = "2026-11-20"  # a Friday, KRX open
    airflow, env = pipeline.airflow, pipeline.stack.env
    minutes = int(env.get("PIPELINE_DEADLINE_MINUTES") or 240)
    due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=40)
    logical = due - dt.timedelta(minutes=minutes)
    run_id = f"e2e_deadline__{logical:%Y%m%dT%H%M%S}"
    assert airflow.call("PATCH", "/api/v2/dags/ml_pipeline", {"is_paused": True})[0] == 200
    try:
        status, body = airflow.call("POST", "/api/v2/dags/ml_pipeline/dagRuns", {
            "dag_run_id": run_id, "logical_date": logical.isoformat(), "conf": {"trade_date": trade_date},
            "note": "e2e: a run that misses its deadline"})
        assert status in (200, 201), body
        waited = time.monotonic()
        while not deadline_alerts(pipeline) and time.monotonic() - waited < 240:
            time.sleep(2)
        took = time.monotonic() - waited
        marked = airflow.call("PATCH", f"/api/v2/dags/ml_pipeline/dagRuns/{urllib.parse.quote(run_id, safe='')}",
                              {"state": "failed"})
        assert marked[0] == 200, marked
    finally:
        airflow.unpause()
    assert airflow.wait({"deadline probe": run_id}, timeout=300) == {"deadline probe": "failed"}
    assert [a for a in deadline_alerts(pipeline) if a["run"] in pipeline.runs.values()] == []  # past dates
    alerts = [a for a in deadline_alerts(pipeline) if a["run"] == run_id]
    assert len(alerts) == 1, f"expected one deadline alert for the probe: {deadline_alerts(pipeline)}"
    alert = alerts[0]
    assert took >= 30, f"alerted after {took:.0f}s, before the deadline"
    local = due.astimezone(ZoneInfo("Asia/Seoul"))
    assert alert["title"] == f"Deadline missed: ml_pipeline for {trade_date} not finished by {local:%H:%M} Asia/Seoul"
    assert alert["dag"] == "ml_pipeline" and alert["run"] == run_id and alert["trade_date"] == trade_date
    assert alert["deadline"] == f"{local:%Y-%m-%d %H:%M} Asia/Seoul ({due:%H:%M} UTC)"
    assert alert["state"] == "queued"
    assert alert["run_url"] == f"{env['AIRFLOW_UI_URL']}/dags/ml_pipeline/runs/{urllib.parse.quote(run_id, safe='')}"


# --------------------------------------------------------------------------------------------------
# Reruns and backfills (last: they rewrite the tables). Every table must come back with the same
# rows per date and the same contents, without duplicate keys and without losing a date.
# --------------------------------------------------------------------------------------------------

RERUN_TABLES = (BRONZE, SILVER, QUARANTINE, QUARANTINE_FILES, GOLD, FEATURES, PREDICTIONS)
# Unique per trade date (Bronze keeps re-delivered ticks as delivered, so it has no key).
KEYS = {SILVER: ("contract_id", "seq_no"), GOLD: ("contract_id", "bar_ts"),
        FEATURES: ("contract_id", "bar_ts"), PREDICTIONS: ("contract_id", "bar_ts")}
# Which model scored a bar depends on the champion at rerun time, not on the data: compared only
# when the same model version scored the date before and after.
MODEL_COLUMNS = {"prob_up", "predicted_up", "model_name", "model_version"}


def table_frame(name: str):
    settings = Settings.from_env()
    return settings.pyiceberg_catalog().load_table(f"{settings.namespace}.{name}").scan().to_arrow().to_pandas()


def row_hashes(frame):
    """One hash per row, floats to 13 significant digits (Spark may sum in another order)."""
    import numpy as np
    import pandas as pd

    columns = {}
    for col in sorted(frame.columns):
        values = frame[col]
        if pd.api.types.is_float_dtype(values):
            columns[col] = pd.Series(np.char.mod("%.13g", values.to_numpy(dtype=float)), index=frame.index)
        elif values.dtype == object:
            columns[col] = values.map(repr)
        else:
            columns[col] = values
    return pd.util.hash_pandas_object(pd.DataFrame(columns, index=frame.index), index=False).to_numpy()


def checksum(hashes) -> str:
    import hashlib

    import numpy as np

    return hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()


def table_state(name: str) -> dict[str, dict]:
    """Per trade date: rows, a checksum of the contents (order-free), duplicate keys, models used.

    Left out of the contents: batch stamps (columns ending in `_at`: `_ingested_at`, `scored_at`),
    the ingestion time quoted in a `future_timestamp` reject detail, and the model's scores.
    """
    frame = table_frame(name)
    if {"reject_reason", "reject_detail"} <= set(frame.columns):
        frame.loc[frame["reject_reason"] == "future_timestamp", "reject_detail"] = "<ingestion time>"
    content = frame.drop(columns=[c for c in frame.columns if c.endswith("_at") or c in MODEL_COLUMNS])
    scored = frame.drop(columns=[c for c in frame.columns if c.endswith("_at")])
    hashes, scored_hashes = row_hashes(content), row_hashes(scored)
    days = frame["trade_date"].astype(str).to_numpy()
    state = {}
    for day in sorted(set(days)):
        rows = days == day
        part = frame[rows]
        state[day] = {
            "rows": int(rows.sum()),
            "checksum": checksum(hashes[rows]),
            "duplicate_keys": int(part.duplicated(subset=list(KEYS[name])).sum()) if name in KEYS else 0,
            "models": sorted(map(int, set(part["model_version"]))) if "model_version" in part else None,
            "scored_checksum": checksum(scored_hashes[rows]),
        }
    return state


def all_tables() -> dict[str, dict[str, dict]]:
    return {name: table_state(name) for name in RERUN_TABLES}


@pytest.fixture(scope="module")
def baseline(pipeline) -> dict[str, dict[str, dict]]:
    """Every table before the first rerun (the first test asking for it takes it)."""
    state = all_tables()
    ok = {d.isoformat() for d in OK_DATES}
    for name in RERUN_TABLES:
        assert set(state[name]) == ({MESSY_DATE.isoformat()} if name == QUARANTINE_FILES else ok), name
        assert not any(day["duplicate_keys"] for day in state[name].values()), name
    return state


def assert_tables_as_before(baseline: dict) -> None:
    after = all_tables()
    for name in RERUN_TABLES:
        assert set(after[name]) == set(baseline[name]), f"{name}: dates {sorted(after[name])}"  # none lost or added
        for day, before in baseline[name].items():
            now = after[name][day]
            assert now["duplicate_keys"] == 0, (name, day)
            assert (now["rows"], now["checksum"]) == (before["rows"], before["checksum"]), (name, day)
            if now["models"] == before["models"]:  # the same model scored it: the same scores
                assert now["scored_checksum"] == before["scored_checksum"], (name, day)


def settle_retraining(pipeline) -> None:
    """A rerun whose drift gate fires starts ml_retraining, which rescores that date: let it finish."""
    time.sleep(5)
    active = {r["dag_run_id"]: r["dag_run_id"] for r in pipeline.airflow.runs_of("ml_retraining")
              if r["state"] not in ("success", "failed")}
    if active:
        pipeline.airflow.wait(active, timeout=900, dag_id="ml_retraining")


def stage_tries(client, experiment_id, run_id: str, stage: str = "raw_to_bronze") -> list[int]:
    parent = parent_of(client, experiment_id, run_id)  # asserts there is exactly one
    return sorted(int(c.data.tags["airflow.try_number"]) for c in children_of(client, experiment_id, parent.info.run_id)
                  if c.data.tags["pipeline.stage"] == stage)


def test_rerunning_a_date_yields_the_same_tables(pipeline, client, experiment_id, baseline):
    before = {name: date_counts(name) for name in (BRONZE, SILVER, GOLD, FEATURES, PREDICTIONS)}
    label = GOOD_DATES[0].isoformat()
    run_id = pipeline.airflow.run_date(GOOD_DATES[0])  # exists already: cleared and rerun
    assert run_id == pipeline.runs[label]
    assert pipeline.airflow.wait({label: run_id}, timeout=900) == {label: "success"}
    after = {name: date_counts(name) for name in before}
    assert after == before
    # Still one parent run for the DAG run; the stage ran again as a second try.
    parent = parent_of(client, experiment_id, run_id)
    tries = [int(c.data.tags["airflow.try_number"]) for c in children_of(client, experiment_id, parent.info.run_id)
             if c.data.tags["pipeline.stage"] == "raw_to_bronze"]
    assert sorted(tries) == [1, 2]
    assert parent.info.status == "FINISHED"
    settle_retraining(pipeline)
    assert_tables_as_before(baseline)


@pytest.mark.drill  # about 9 minutes: make test-drills
def test_three_reruns_of_a_date_leave_every_table_as_it_was(pipeline, client, experiment_id, baseline):
    """The whole DAG run of one date cleared and rerun until it has run three times more."""
    day = GOOD_DATES[0]
    run_id = pipeline.runs[day.isoformat()]
    while len(stage_tries(client, experiment_id, run_id)) < 4:  # the first run + three reruns
        pipeline.airflow.clear(run_id)
        assert pipeline.airflow.wait({day.isoformat(): run_id}, timeout=900) == {day.isoformat(): "success"}
        settle_retraining(pipeline)
    assert stage_tries(client, experiment_id, run_id) == [1, 2, 3, 4]
    assert parent_of(client, experiment_id, run_id).info.status == "FINISHED"
    assert_tables_as_before(baseline)


def test_a_backfill_maps_trade_dates_to_the_0200_runs(pipeline):
    """Dry run: trade dates 11-20..11-26 are the seven 02:00 Asia/Seoul runs of 11-21..11-27."""
    airflow = pipeline.airflow
    plan = airflow.backfill(dt.date(2026, 11, 20), dt.date(2026, 11, 26), reprocess="completed", dry_run=True)
    logical = [dt.datetime.fromisoformat(e["logical_date"].replace("Z", "+00:00")) for e in plan["backfills"]]
    assert logical == [airflow.logical_date_for(dt.date(2026, 11, 20) + dt.timedelta(days=i)) for i in range(7)]
    assert [airflow.trade_date_of(t) for t in logical] == [dt.date(2026, 11, 20) + dt.timedelta(days=i)
                                                             for i in range(7)]
    # Without reprocessing, dates that already have a run are left alone.
    plan = airflow.backfill(dt.date(2026, 11, 20), dt.date(2026, 11, 26), reprocess="none", dry_run=True)
    have_runs = {MISSING_DATE, *OK_DATES}
    assert [airflow.trade_date_of(e["logical_date"]) for e in plan["backfills"]] == [
        dt.date(2026, 11, 20) + dt.timedelta(days=i) for i in range(7)
        if dt.date(2026, 11, 20) + dt.timedelta(days=i) not in have_runs]


def test_a_backfill_over_a_weekend_skips_both_days_and_writes_nothing(pipeline, baseline):
    airflow = pipeline.airflow
    saturday, sunday = dt.date(2026, 11, 21), dt.date(2026, 11, 22)
    created = airflow.backfill(saturday, sunday)
    runs = airflow.backfill_runs(created)
    assert sorted(runs) == [saturday.isoformat(), sunday.isoformat()]
    assert airflow.wait(runs, timeout=600) == {d: "success" for d in runs}
    for run_id in runs.values():
        states = airflow.task_states(run_id)
        assert states["start_tracking"] == "skipped" and all(states[s] == "skipped" for s in STAGES), states
    airflow.wait_backfill(created["id"])
    assert_tables_as_before(baseline)


@pytest.mark.parametrize("span", [
    # Both are drills (make test-drills): last-date ~5 min, every-good-date ~9 min. make test keeps
    # the backfill of an old date through REST (test_month_of_nights) and the weekend backfill above.
    pytest.param("last date", id="last-date", marks=pytest.mark.drill),
    pytest.param("every good date", id="every-good-date", marks=pytest.mark.drill),
])
def test_a_backfill_of_processed_dates_reruns_them_in_place_and_leaves_every_table_as_it_was(
        pipeline, client, experiment_id, baseline, span):
    airflow = pipeline.airflow
    dates = GOOD_DATES[-1:] if span == "last date" else GOOD_DATES
    created = airflow.backfill(dates[0], dates[-1])  # reprocess completed, one run at a time
    runs = airflow.backfill_runs(created)
    # Airflow clears the existing run of each date and makes it a backfill run: same run id, so
    # the same MLflow parent run, and no second run of a date.
    assert runs == {d.isoformat(): pipeline.runs[d.isoformat()] for d in dates}
    assert airflow.wait(runs, timeout=1800) == {d: "success" for d in runs}
    airflow.wait_backfill(created["id"])
    settle_retraining(pipeline)
    for day, run_id in runs.items():
        assert airflow.call("GET", f"/api/v2/dags/ml_pipeline/dagRuns/{urllib.parse.quote(run_id, safe='')}")[1][
            "run_type"] == "backfill"
        parent = parent_of(client, experiment_id, run_id)
        assert parent.info.status == "FINISHED" and parent.data.tags["pipeline.trade_date"] == day
    assert_tables_as_before(baseline)
    # Reruns and backfills of past dates raised no deadline alert (only the probe's, above).
    assert len(deadline_alerts(pipeline)) <= 1
