"""Publish the morning report of one DAG run on its MLflow parent run (HTML + PNG).

    python -m jobs.pipeline_report --parent-run-id RUN_ID

Collects what the stages logged (no Spark, no table scans), renders with ``jobs.report`` and
logs ``report/morning_report.{html,png}``. Also runs for failed DAG runs: that is the morning
the report matters most.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from jobs.lakehouse import STAGES
from jobs.model_training import ROC_ARTIFACT
from jobs.report import write_report
from jobs.transforms.drift import psi_band
from jobs.schema import REASONS

REPORT_DIR = "report"


def latest_stage_runs(client, parent) -> dict:
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=1000)
    return {r.data.tags["pipeline.stage"]: r for r in runs if "pipeline.stage" in r.data.tags}


def collect(client, parent_run_id: str, mlflow_ui_url: str) -> dict:
    """The report dict (see jobs.report.Report) from the parent run and its stage runs."""
    parent = client.get_run(parent_run_id)
    runs = latest_stage_runs(client, parent)
    m = {stage: run.data.metrics for stage, run in runs.items()}
    # The full pipeline reports every stage (missing = never ran); retraining only what it runs.
    expected = STAGES if parent.data.tags.get("airflow.dag_id") == "ml_pipeline" else [s for s in STAGES if s in runs]
    stages = [{"stage": s, "status": runs[s].info.status if s in runs else "NOT RUN",
               "duration_seconds": m.get(s, {}).get("duration_seconds"),
               "rows_in": m.get(s, {}).get("rows_in"), "rows_out": m.get(s, {}).get("rows_out"),
               "rows_rejected": m.get(s, {}).get("rows_rejected")} for s in expected]
    get = lambda stage, key: m.get(stage, {}).get(key)  # noqa: E731
    failed = any(s["status"] not in ("FINISHED",) for s in stages)
    report: dict = {
        "dag_run": {
            "dag_id": parent.data.tags.get("airflow.dag_id"), "run_id": parent.data.tags.get("airflow.run_id"),
            "trade_date": parent.data.tags.get("pipeline.trade_date"),
            "state": "failed" if failed else "success",
            "airflow_url": parent.data.tags.get("airflow.url"),
            "mlflow_url": f"{mlflow_ui_url}/#/experiments/{parent.info.experiment_id}/runs/{parent_run_id}",
        },
        "funnel": [[label, get(stage, key)] for label, stage, key in (
            ("RAW", "raw_to_bronze", "rows_in"), ("Bronze", "raw_to_bronze", "rows_out"),
            ("Silver", "bronze_to_silver", "rows_out"), ("Quarantine", "bronze_to_silver", "rows_rejected"),
            ("Gold bars", "silver_to_gold", "rows_out"), ("Features", "feature_engineering", "rows_out"),
            ("Predictions", "model_deployment", "rows_out"))],
        "stages": stages,
        "quality": {"rejected_share": get("bronze_to_silver", "rejected_share"),
                    # Reasons that occurred (twelve zero bars would hide the ones that matter).
                    "rejected_by_reason": {r: n for r in REASONS if (n := get("bronze_to_silver", f"rejected.{r}"))},
                    "files_quarantined": get("raw_to_bronze", "files_quarantined")},
        "drift": None,
        "model": None,
    }
    if "monitoring" in runs:
        mon = runs["monitoring"]
        threshold = float(mon.data.params.get("psi_threshold", 0.25))
        features = []
        for key, value in mon.data.metrics.items():
            if key.startswith("psi."):
                name = key[len("psi."):]
                features.append({"feature": name, "psi": value, "band": psi_band(value),
                                 "ks_pvalue": mon.data.metrics.get(f"ks_pvalue.{name}"),
                                 "wasserstein_norm": mon.data.metrics.get(f"wasserstein_norm.{name}"),
                                 "drifted": value >= threshold})
        report["drift"] = {"threshold": threshold, "drift_share": mon.data.metrics.get("drift_share"),
                           "prediction_psi": mon.data.metrics.get("prediction_psi"), "features": features}
    if "model_training" in runs or "model_deployment" in runs:
        dep = runs.get("model_deployment")
        train = runs.get("model_training")
        dm = dep.data.metrics if dep else {}
        roc = None
        if train is not None:
            try:
                import mlflow

                roc = mlflow.artifacts.load_dict(f"runs:/{train.info.run_id}/{ROC_ARTIFACT}")
            except Exception:  # an older run without the artifact: the panel says n/a
                roc = None
        challenger = {k: dm.get(f"challenger.{k}", (train.data.metrics if train else {}).get(k))
                      for k in ("auc", "accuracy", "f1", "log_loss")}
        champion = {k: dm[f"champion.{k}"] for k in ("auc", "accuracy", "f1", "log_loss") if f"champion.{k}" in dm}
        report["model"] = {
            "challenger_version": train.data.tags.get("model.version") if train else None,
            # The champion the challenger was compared with (before any promotion).
            "champion_version": None if not dep or dep.data.tags.get("model.champion_before") in (None, "none")
            else dep.data.tags["model.champion_before"],
            "decision": dep.data.tags.get("deployment.decision") if dep else None,
            "challenger": challenger, "champion": champion or None, "roc": roc,
        }
    return report


def publish(parent_run_id: str) -> dict:
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    ui = (os.environ.get("MLFLOW_UI_URL") or mlflow.get_tracking_uri()).rstrip("/")
    report = collect(client, parent_run_id, ui)
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_report(report, tmp).values():
            client.log_artifact(parent_run_id, str(path), REPORT_DIR)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent-run-id", required=True)
    args = parser.parse_args(argv)
    report = publish(args.parent_run_id)
    print(f"morning report for {report['dag_run']['trade_date']} ({report['dag_run']['state']}) "
          f"logged to run {args.parent_run_id} under {REPORT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
