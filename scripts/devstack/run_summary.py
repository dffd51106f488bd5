"""What the runs of a demo (or any session) did: every run touched, its links, local reports, alerts.

`make demo` prints this at the end; the figures per date come from the MLflow parent and stage runs,
the report copies from the parent run's artifacts, the alerts from the local receiver, and the rows
per table per date of silver, gold and features from one query answered by the embedded Trino.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from jobs.contract import (
    BRONZE_TO_SILVER,
    FEATURE_ENGINEERING,
    METRIC_DRIFT_SHARE,
    METRIC_DURATION,
    METRIC_ROWS_IN,
    METRIC_ROWS_OUT,
    METRIC_ROWS_REJECTED,
    ML_PIPELINE,
    ML_RETRAINING,
    MODEL_DEPLOYMENT,
    MODEL_TRAINING,
    MONITORING,
    RAW_TO_BRONZE,
    REPORT_HTML_ARTIFACT,
    SILVER_TO_GOLD,
    STAGES,
    TAG_DEPLOYMENT_DECISION,
    TAG_DRIFT_FEATURES,
    TAG_ERROR,
    TAG_MODEL_VERSION,
    TAG_QUALITY_GATE,
    TAG_SNAPSHOT_ID,
    TAG_TRADE_DATE,
    child_runs_filter,
    dag_run_url,
    latest_per_stage,
    mlflow_experiment_url,
    mlflow_run_url,
    parent_run_filter,
)
from scripts.devstack.airflow_api import Airflow
from scripts.devstack.alert_receiver import read_alerts
from scripts.devstack.env import alert_receiver_used, alerts_file
from scripts.devstack.health import password_file, s3_client
from scripts.devstack.progress import duration, parse_time, run_seconds
from scripts.devstack.trino import demo_query, format_demo_query

# The DAGs whose runs the summary lists (the demo's own, the retraining they trigger, and any other).
SUMMARY_DAGS = (ML_PIPELINE, ML_RETRAINING)
REPORT_FOLDER = str(PurePosixPath(REPORT_HTML_ARTIFACT).parent)  # where publish_report puts the report

# --------------------------------------------------------------------------------------------------
# Every run the demo touched: its own, the retraining they triggered, and any other since it began
# --------------------------------------------------------------------------------------------------

def touched_since(run: Mapping, began: dt.datetime) -> bool:
    """Whether a REST DAG run was queued, started or finished at or after ``began`` (aware)."""
    return any((at := parse_time(run.get(key))) is not None and at >= began
               for key in ("queued_at", "start_date", "end_date"))


def origin_of(dag_id: str, run: Mapping, own: Mapping[str, Iterable[str]]) -> str:
    """Who started a run, in words a newcomer reads in the summary."""
    if run["dag_run_id"] in set(own.get(dag_id, ())):
        return "started by the demo" if dag_id == ML_PIPELINE else "started by the demo's drift alert"
    kind = run.get("run_type") or "other"
    if kind == "scheduled":
        return "NOT started by the demo: the scheduler created it (e.g. on unpause, for the latest schedule tick)"
    return f"NOT started by the demo ({kind} run)"


def touched_runs(airflow: Airflow, began: dt.datetime, own: Mapping[str, Iterable[str]],
                 dags: Iterable[str] = SUMMARY_DAGS) -> list[dict]:
    """REST DAG runs of ``dags`` that are the demo's or were active since ``began``, the demo's first."""
    found = []
    for dag_id in dags:
        mine = set(own.get(dag_id, ()))
        for run in airflow.runs_of(dag_id):
            if run["dag_run_id"] in mine or touched_since(run, began):
                entry = {**run, "dag_id": dag_id, "origin": origin_of(dag_id, run, own),
                         "by_demo": run["dag_run_id"] in mine}
                if dag_id == ML_PIPELINE and run.get("logical_date"):
                    entry["trade_date"] = airflow.trade_date_of(run["logical_date"]).isoformat()
                found.append(entry)
    # The demo's own ml_pipeline runs first (they own the plain <date>.html names), then the rest.
    return sorted(found, key=lambda r: (r["dag_id"] != ML_PIPELINE, not r["by_demo"], str(r.get("queued_at") or "")))


def report_name(entry: Mapping, taken: set[str]) -> str:
    """The local file stem of a run's morning report: <date> for the demo's runs, qualified for others."""
    date = entry.get("trade_date") or "undated"
    stem = date if entry["dag_id"] == ML_PIPELINE and entry.get("by_demo") else f"{date}-{entry['dag_id']}"
    name, i = stem, 2
    while name in taken:
        name, i = f"{stem}-{i}", i + 1
    taken.add(name)
    return name


def fetch_reports(client, parent_run_id: str, folder: Path, stem: str) -> dict[str, str]:
    """Copy the parent run's report/*.html and *.png to <folder>/<stem>.html|.png (they open without MLflow)."""
    names = {Path(f.path).suffix.lstrip("."): f.path for f in client.list_artifacts(parent_run_id, REPORT_FOLDER)
             if not f.is_dir and Path(f.path).suffix in (".html", ".png")}
    copied = {}
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in sorted(names.items()):
            local = client.download_artifacts(parent_run_id, path, tmp)
            target = folder / f"{stem}.{kind}"
            shutil.copyfile(local, target)
            copied[kind] = str(target)
    return copied


def link_runs(env: dict, client, experiment_id: str | None, entries: list[dict]) -> list[dict]:
    """Add the Airflow and MLflow URLs, the trade date and the local report copies to each run."""
    folder = Path(env["LAKEHOUSE_HOME"]) / "reports"
    taken: set[str] = set()
    for entry in entries:
        entry["airflow_url"] = dag_run_url(env["AIRFLOW_UI_URL"], entry["dag_id"], entry["dag_run_id"])
        parents = client.search_runs([experiment_id], parent_run_filter(entry["dag_id"], entry["dag_run_id"]),
                                     max_results=1) if experiment_id else []
        if not parents:
            continue
        parent = parents[0]
        entry["mlflow_url"] = mlflow_run_url(env["MLFLOW_UI_URL"], experiment_id, parent.info.run_id)
        entry["trade_date"] = parent.data.tags.get(TAG_TRADE_DATE) or entry.get("trade_date")
        try:
            entry["reports"] = fetch_reports(client, parent.info.run_id, folder, report_name(entry, taken))
        except Exception as exc:  # the summary still shows the links
            entry["report_error"] = f"{type(exc).__name__}: {exc}"
    return entries


def format_runs(entries: list[Mapping]) -> list[str]:
    """The summary block that points at everything: one paragraph per run, links on their own lines."""
    lines = [f"\nRuns of {' and '.join(SUMMARY_DAGS)} during this demo ({len(entries)}):"]
    for e in entries:
        took = run_seconds(e)
        lines.append(f"  {e['dag_id']} {e.get('trade_date') or '-'}  {str(e.get('state', '?')).upper():<8}"
                     f"{'  in ' + duration(took) if took is not None else ''}  {e['origin']}")
        lines.append(f"    run      : {e['dag_run_id']}")
        lines.append(f"    Airflow  : {e.get('airflow_url', '-')}")
        lines.append(f"    MLflow   : {e.get('mlflow_url') or '(no parent run: tracking never started)'}")
        reports = e.get("reports") or {}
        if reports:
            lines.append("    report   : " + "  ".join(reports[k] for k in sorted(reports)))
        elif e.get("mlflow_url"):
            why = f" ({e['report_error']})" if e.get("report_error") else ""
            lines.append(f"    report   : not published{why}")
    return lines


def format_alerts(env: Mapping, alerts: list[Mapping] | None) -> list[str]:
    """The alerts that would have paged someone (None: they went to a real channel, not recorded here)."""
    if alerts is None:
        target = env.get("ALERT_WEBHOOK_URL") or ("e-mail" if env.get("SMTP_HOST") else "")
        return [f"\nAlerts: sent to {target.split('?')[0] if target else 'no channel (ALERT_WEBHOOK_URL unset)'}; "
                "not recorded locally"]
    where = alerts_file(env) if env.get("LAKEHOUSE_HOME") else "the local receiver"
    if not alerts:
        return [f"\nAlerts: none sent during this demo (the local receiver records them in {where})"]
    lines = [f"\nAlerts that would have paged someone ({len(alerts)}; recorded in {where}):"]
    for a in alerts:
        p = a.get("payload") if isinstance(a.get("payload"), dict) else {"title": str(a.get("payload"))}
        at = parse_time(a.get("received_at"))
        detail = ", ".join(f"{k} {p[k]}" for k in ("task", "trade_date", "error") if p.get(k))
        lines.append(f"  {at:%H:%M:%S} {p.get('title', '?')}" if at else f"  {p.get('title', '?')}")
        if detail:
            lines.append(f"           {detail[:200]}")
        if p.get("log_url"):
            lines.append(f"           log: {p['log_url']}")
    return lines


# --------------------------------------------------------------------------------------------------
# Summary, read back from MLflow, the registry, Iceberg and SeaweedFS
# --------------------------------------------------------------------------------------------------

def _stage_runs(client, experiment_id: str, run_id: str) -> dict:
    """The date's MLflow parent run and the latest try of each stage under it."""
    parents = client.search_runs([experiment_id], filter_string=parent_run_filter(ML_PIPELINE, run_id), max_results=1)
    if not parents:
        return {"parent": None, "stages": {}}
    parent = parents[0]
    children = client.search_runs([experiment_id], filter_string=child_runs_filter(parent.info.run_id),
                                  order_by=["attributes.start_time ASC"])
    stages = {stage: {"status": child.info.status, "metrics": child.data.metrics, "tags": child.data.tags,
                      "run_id": child.info.run_id}
              for stage, child in latest_per_stage(children).items()}
    return {"parent": {"run_id": parent.info.run_id, "status": parent.info.status}, "stages": stages}


def collect_summary(env: dict, runs: dict[str, str], touched: list[dict] | None = None,
                    began: dt.datetime | None = None) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from jobs.contract import ALL_TABLES, CHAMPION, FEATURES, GOLD, SILVER
    from jobs.lakehouse.settings import Settings

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    settings = Settings.from_env()
    exp = client.get_experiment_by_name(settings.experiment)
    summary: dict = {"experiment_id": exp.experiment_id if exp else None,
                     "dates": {label: _stage_runs(client, exp.experiment_id, run_id) for label, run_id in runs.items()}}
    try:
        champion = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        summary["champion"] = {"version": champion.version, "run_id": champion.run_id,
                               "tags": dict(champion.tags)}
    except Exception:  # no champion yet
        summary["champion"] = None
    catalog = settings.pyiceberg_catalog()
    tables = {}
    for name in ALL_TABLES:
        ident = f"{settings.namespace}.{name}"
        if catalog.table_exists(ident):
            snap = catalog.load_table(ident).current_snapshot()
            tables[name] = {"rows": int(snap.summary.get("total-records", 0)) if snap else 0,
                            "snapshot_id": snap.snapshot_id if snap else None}
    summary["tables"] = tables
    summary["trino"] = demo_query(env, [t for t in (SILVER, GOLD, FEATURES) if t in tables])
    listing = s3_client(env).list_objects_v2(Bucket=env.get("S3_BUCKET", "lakehouse"), Prefix="mlflow/")
    summary["s3_mlflow_objects"] = listing.get("KeyCount", 0)
    summary["runs"] = link_runs(env, client, summary["experiment_id"], touched or [])
    summary["alerts"] = read_alerts(alerts_file(env), began) if alert_receiver_used(env) else None
    return summary


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def _quality_lines(stages: dict) -> list[str]:
    """Files and rows set aside, by reason, and the quality gates' verdicts."""
    bronze = stages.get(RAW_TO_BRONZE, {}).get("metrics", {})
    silver = stages.get(BRONZE_TO_SILVER, {}).get("metrics", {})
    files = {k.split(".", 1)[1]: int(v) for k, v in bronze.items() if k.startswith("files_quarantined.") and v}
    rows = {k.split(".", 1)[1]: int(v) for k, v in silver.items() if k.startswith("rejected.") and v}
    gates = {layer: stages.get(stage, {}).get("tags", {}).get(f"{TAG_QUALITY_GATE}.{layer}")
             for layer, stage in (("bronze", RAW_TO_BRONZE), ("silver", BRONZE_TO_SILVER),
                                  ("gold", SILVER_TO_GOLD), ("features", FEATURE_ENGINEERING))}
    out = []
    if files:
        out.append("  files quarantined: " + ", ".join(f"{r} {n}" for r, n in files.items()))
    if rows:
        out.append("  rows quarantined: " + ", ".join(f"{r} {n:,}" for r, n in rows.items()))
    if any(gates.values()):
        out.append("  quality gates: " + ", ".join(f"{layer} {state}" for layer, state in gates.items() if state))
    return out


def _stage_line(stage: str, s: dict | None) -> str:
    if not s:
        return f"  {stage:<22}{'(no run)':>12}"
    m = s["metrics"]
    return (f"  {stage:<22}{_fmt(m.get(METRIC_ROWS_IN)):>12}{_fmt(m.get(METRIC_ROWS_OUT)):>12}"
            f"{_fmt(m.get(METRIC_ROWS_REJECTED)):>10}{_fmt(m.get(METRIC_DURATION), 1):>9}  "
            f"{s['tags'].get(TAG_SNAPSHOT_ID, '')}"
            + ("" if s["status"] == "FINISHED" else f"  [{s['status']}: {s['tags'].get(TAG_ERROR, '')[:80]}]"))


def _model_lines(stages: dict) -> list[str]:
    """Training, deployment and monitoring figures of one date."""
    lines = []
    train = stages.get(MODEL_TRAINING, {}).get("metrics", {})
    deploy = stages.get(MODEL_DEPLOYMENT, {})
    monitor = stages.get(MONITORING, {})
    if train:
        lines.append(f"  model: v{stages[MODEL_TRAINING]['tags'].get(TAG_MODEL_VERSION, '?')} "
                     f"holdout AUC {_fmt(train.get('auc'), 3)}  accuracy {_fmt(train.get('accuracy'), 3)}  "
                     f"F1 {_fmt(train.get('f1'), 3)}  log loss {_fmt(train.get('log_loss'), 3)}")
    if deploy:
        lines.append(f"  deployment: {deploy['tags'].get(TAG_DEPLOYMENT_DECISION, '?')}, "
                     f"champion v{deploy['tags'].get('model.champion_version', '?')}")
    if monitor:
        mm = monitor["metrics"]
        lines.append(f"  monitoring: drift share {_fmt(mm.get(METRIC_DRIFT_SHARE), 2)} "
                     f"(drifted: {monitor['tags'].get(TAG_DRIFT_FEATURES, '-')}), "
                     f"realised AUC {_fmt(mm.get('realized_auc'), 3)}")
    return lines


def format_summary(env: dict, summary: dict, states: dict[str, str]) -> str:
    lines = ["", "=" * 96, "lakehouse-mlops demo summary", "=" * 96]
    for label, info in summary["dates"].items():
        parent = info["parent"] or {}
        lines.append(f"\nTrade date {label}: Airflow run {states.get(label, '?').upper()}, "
                     f"MLflow parent run {parent.get('status', 'missing')}")
        lines.append(f"  {'stage':<22}{'rows in':>12}{'rows out':>12}{'rejected':>10}{'seconds':>9}  snapshot")
        lines.extend(_stage_line(stage, info["stages"].get(stage)) for stage in STAGES)
        lines.extend(_quality_lines(info["stages"]))
        lines.extend(_model_lines(info["stages"]))
    champ = summary.get("champion")
    lines.append("\nModel registry: " + (
        f"{os.environ.get('MLFLOW_MODEL_NAME', 'TickPricePredictor')}@champion = version {champ['version']}"
        if champ else "no champion"))
    lines.append("Iceberg tables (rows in current snapshot):")
    for name, t in summary["tables"].items():
        lines.append(f"  {name:<28}{t['rows']:>12,}  snapshot {t['snapshot_id']}")
    if summary.get("trino"):
        lines.extend(format_demo_query(env, summary["trino"]))
    lines.append(f"MLflow artifacts in SeaweedFS s3://{env.get('S3_BUCKET', 'lakehouse')}/mlflow/: "
                 f"{summary['s3_mlflow_objects']} objects")
    exp = summary.get("experiment_id")
    lines.extend(format_runs(summary.get("runs", [])))
    lines.extend(format_alerts(env, summary.get("alerts")))
    lines += [
        "",
        f"Airflow UI : {env['AIRFLOW_API_URL']}/dags/{ML_PIPELINE}   (user {env.get('AIRFLOW_ADMIN_USER') or 'admin'}, "
        f"password in {password_file(env)})",
        f"MLflow UI  : {mlflow_experiment_url(env['MLFLOW_UI_URL'], exp) if exp else env['MLFLOW_UI_URL']}",
        f"S3 (SeaweedFS): {env['MLFLOW_S3_ENDPOINT_URL']}  bucket {env.get('S3_BUCKET', 'lakehouse')}",
        *_prometheus_lines(env),
        "Services keep running for browsing; `make down` stops them.",
    ]
    return "\n".join(lines)


def _prometheus_lines(env: dict) -> list[str]:
    """Where the stages' pushed figures are, when the stack runs Prometheus (Debian's binary installed)."""
    from scripts.devstack.env import PROMETHEUS
    from scripts.devstack.processes import read_pid

    if not env.get("PROMETHEUS_URL") or not env.get("LAKEHOUSE_HOME") or read_pid(env, PROMETHEUS) is None:
        return []
    url = env["PROMETHEUS_URL"]
    return [f"Prometheus : {url}/graph?g0.expr=lakehouse_stage_rows_out  (alerts: {url}/alerts; "
            f"Grafana dashboard for production: docker/grafana/dashboards/lakehouse-pipeline.json)"]


