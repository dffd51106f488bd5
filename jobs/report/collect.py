"""What the morning report shows, read back from the DAG run's MLflow parent run and its stage runs.

No Spark and no table scans: every number is a metric, tag or param a stage logged (the ROC points
are the training run's artifact). A stage that never ran shows as ``NOT RUN``.
"""
from __future__ import annotations

from jobs import contract as c
from jobs.lakehouse.registry import ROC_ARTIFACT
from jobs.ml.drift import psi_band
from jobs.schema import REASONS

MODEL_METRICS = ("auc", "accuracy", "f1", "log_loss")


def stage_runs(client, parent) -> list:
    return [r for r in client.search_runs([parent.info.experiment_id],
                                          filter_string=c.child_runs_filter(parent.info.run_id),
                                          order_by=["attributes.start_time ASC"], max_results=1000)
            if c.TAG_STAGE in r.data.tags]


def latest_stage_runs(client, parent) -> dict:
    """The last try of every stage run under ``parent``, keyed by stage."""
    return c.latest_per_stage(stage_runs(client, parent))


def collect(client, parent_run_id: str, mlflow_ui_url: str) -> dict:
    """The report dict (see jobs.report.format.Report) from the parent run and its stage runs."""
    parent = client.get_run(parent_run_id)
    every = stage_runs(client, parent)
    runs = c.latest_per_stage(every)
    tries = {s: sum(1 for r in every if r.data.tags.get(c.TAG_STAGE) == s) for s in runs}
    m = {stage: run.data.metrics for stage, run in runs.items()}
    # The full pipeline reports every stage (missing = never ran); retraining only what it runs.
    full_pipeline = parent.data.tags.get(c.TAG_DAG_ID) == c.ML_PIPELINE
    expected = c.STAGES if full_pipeline else [s for s in c.STAGES if s in runs]
    stages = [{"stage": s, "status": runs[s].info.status if s in runs else "NOT RUN",
               "duration_seconds": m.get(s, {}).get(c.METRIC_DURATION),
               "rows_in": m.get(s, {}).get(c.METRIC_ROWS_IN), "rows_out": m.get(s, {}).get(c.METRIC_ROWS_OUT),
               "rows_rejected": m.get(s, {}).get(c.METRIC_ROWS_REJECTED), "tries": tries.get(s, 0)}
              for s in expected]
    gate_prefix = c.TAG_QUALITY_GATE + "."
    gates = {k.removeprefix(gate_prefix): v for run in runs.values() for k, v in run.data.tags.items()
             if k.startswith(gate_prefix) and "." not in k.removeprefix(gate_prefix)
             and k.removeprefix(gate_prefix) != c.ANOMALY_GATE}

    def get(stage: str, key: str):
        return m.get(stage, {}).get(key)

    failed = any(s["status"] not in ("FINISHED",) for s in stages)
    report: dict = {
        "dag_run": {
            "dag_id": parent.data.tags.get(c.TAG_DAG_ID), "run_id": parent.data.tags.get(c.TAG_RUN_ID),
            "trade_date": parent.data.tags.get(c.TAG_TRADE_DATE),
            "state": "failed" if failed else "success",
            "airflow_url": parent.data.tags.get(c.TAG_AIRFLOW_URL),
            "mlflow_url": c.mlflow_run_url(mlflow_ui_url, parent.info.experiment_id, parent_run_id),
        },
        "funnel": [[label, get(stage, key)] for label, stage, key in (
            ("RAW", c.RAW_TO_BRONZE, c.METRIC_ROWS_IN), ("Bronze", c.RAW_TO_BRONZE, c.METRIC_ROWS_OUT),
            ("Silver", c.BRONZE_TO_SILVER, c.METRIC_ROWS_OUT),
            ("Quarantine", c.BRONZE_TO_SILVER, c.METRIC_ROWS_REJECTED),
            ("Gold bars", c.SILVER_TO_GOLD, c.METRIC_ROWS_OUT), ("Features", c.FEATURE_ENGINEERING, c.METRIC_ROWS_OUT),
            ("Predictions", c.MODEL_DEPLOYMENT, c.METRIC_ROWS_OUT))],
        "stages": stages,
        "gates": gates,
        "anomalies": anomalies(runs),
        "quality": {"rejected_share": get(c.BRONZE_TO_SILVER, "rejected_share"),
                    # Reasons that occurred (twelve zero bars would hide the ones that matter).
                    "rejected_by_reason": {r: n for r in REASONS if (n := get(c.BRONZE_TO_SILVER, f"rejected.{r}"))},
                    "files_quarantined": get(c.RAW_TO_BRONZE, "files_quarantined")},
        "drift": None,
        "model": None,
    }
    if c.MONITORING in runs:
        report["drift"] = drift_section(runs[c.MONITORING])
    if c.MODEL_TRAINING in runs or c.MODEL_DEPLOYMENT in runs:
        report["model"] = model_section(runs.get(c.MODEL_TRAINING), runs.get(c.MODEL_DEPLOYMENT))
    return report


def anomalies(runs: dict) -> list[dict]:
    """Each anomaly a stage found against its history (jobs.lakehouse.anomalies), explained."""
    found = []
    for stage in c.STAGES:
        run = runs.get(stage)
        for key, value in sorted(run.data.tags.items()) if run else ():
            if key.startswith(c.TAG_ANOMALY_PREFIX):
                level, _, why = value.partition(": ")
                found.append({"stage": stage, "figure": key.removeprefix(c.TAG_ANOMALY_PREFIX),
                              "level": level, "explanation": why})
    return found


def drift_section(mon) -> dict:
    """PSI, its band and the distance tests per feature, as monitoring logged them."""
    threshold = float(mon.data.params.get("psi_threshold", 0.25))
    features = []
    for key, value in mon.data.metrics.items():
        if key.startswith("psi."):
            name = key[len("psi."):]
            excluded = mon.data.tags.get(c.TAG_DRIFT_EXCLUDED_PREFIX + name)
            features.append({"feature": name, "psi": value, "band": psi_band(value),
                             "ks_pvalue": mon.data.metrics.get(f"ks_pvalue.{name}"),
                             "wasserstein_norm": mon.data.metrics.get(f"wasserstein_norm.{name}"),
                             "drifted": value >= threshold and not excluded, "excluded": excluded})
    return {"threshold": threshold, "drift_share": mon.data.metrics.get(c.METRIC_DRIFT_SHARE),
            "prediction_psi": mon.data.metrics.get("prediction_psi"), "features": features}


def model_section(train, dep) -> dict:
    """Challenger against the champion it was compared with, the decision and the holdout ROC."""
    dm = dep.data.metrics if dep else {}
    roc = None
    if train is not None:
        try:
            import mlflow

            roc = mlflow.artifacts.load_dict(f"runs:/{train.info.run_id}/{ROC_ARTIFACT}")
        except Exception:  # an older run without the artifact: the panel says n/a
            roc = None
    challenger = {k: dm.get(f"challenger.{k}", (train.data.metrics if train else {}).get(k)) for k in MODEL_METRICS}
    champion = {k: dm[f"champion.{k}"] for k in MODEL_METRICS if f"champion.{k}" in dm}
    return {
        "challenger_version": train.data.tags.get(c.TAG_MODEL_VERSION) if train else None,
        # The champion the challenger was compared with (before any promotion).
        "champion_version": None if not dep or dep.data.tags.get(c.TAG_CHAMPION_BEFORE) in (None, "none")
        else dep.data.tags[c.TAG_CHAMPION_BEFORE],
        "decision": dep.data.tags.get(c.TAG_DEPLOYMENT_DECISION) if dep else None,
        "challenger": challenger, "champion": champion or None, "roc": roc,
    }
