"""Monitoring: feature drift against the champion's training data and realised performance."""
from __future__ import annotations

import datetime as dt
import sys

from pyspark.sql import SparkSession

from jobs.contract import (
    CHAMPION,
    DRIFT,
    FEATURES,
    METRIC_DRIFT_SHARE,
    MODEL_DEPLOYMENT,
    MONITORING,
    PREDICTIONS,
    TAG_DRIFT_EXCLUDED_PREFIX,
    TAG_DRIFT_FEATURES,
)
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.model_trust import load_trusted_model
from jobs.lakehouse.registry import lineage_ref, model_version_by_alias, training_params, training_split
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.ml.drift import feature_drift, psi
from jobs.ml.modeling import feature_matrix
from jobs.schema import DRIFT_EXCLUDED, FEATURE_COLUMNS, LABEL


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F
    from sklearn import metrics

    champion = model_version_by_alias(settings, CHAMPION)
    if champion is None:
        raise RuntimeError(f"{settings.model_name} has no '{CHAMPION}' alias: run {MODEL_DEPLOYMENT} first")
    params = training_params(champion)
    reference = training_split(spark, settings, champion, params).train  # what the champion learnt from
    current = read_date(spark, settings.table(FEATURES), ctx.trade_date) \
        .select("contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL).toPandas()
    if current.empty:
        raise RuntimeError(f"no features for {ctx.trade_date}")
    drift = feature_drift(reference, current, FEATURE_COLUMNS, settings.drift_psi_threshold, DRIFT_EXCLUDED)
    tracker.metrics({f"psi.{name}": value for name, value in drift["psi"].items() if np.isfinite(value)})
    tracker.metrics({METRIC_DRIFT_SHARE: drift["drift_share"], "drifted_features": len(drift["drifted"]),
                     "reference_rows": len(reference), "current_rows": len(current)})
    tracker.params({"psi_threshold": settings.drift_psi_threshold,
                    "reference_model_version": champion.version,
                    "reference_snapshot_id": params["features_snapshot_id"],
                    # the Iceberg tag the baseline was read through (it outlives snapshot expiry)
                    "reference_snapshot_ref": lineage_ref(spark, settings, champion, params)})
    tracker.metrics({f"{test}.{name}": value for name, result in drift["tests"].items()
                     for test, value in result.items() if np.isfinite(value)})
    tracker.tags({TAG_DRIFT_FEATURES: ",".join(drift["drifted"]) or "none",
                  "drift.moderate_features": ",".join(c for c, b in drift["bands"].items() if b == "moderate")
                  or "none",
                  **{f"{TAG_DRIFT_EXCLUDED_PREFIX}{name}": why for name, why in drift["excluded"].items()}})

    # Realised performance of what was served for this date, where labels have arrived.
    served = read_date(spark, settings.table(PREDICTIONS), ctx.trade_date) \
        .select("contract_id", "bar_ts", "prob_up", "predicted_up").toPandas()
    # Prediction drift: today's served scores against the champion's scores on its training data.
    champion_model = load_trusted_model(settings, champion)
    reference_scores = champion_model.predict_proba(feature_matrix(reference))[:, 1]
    if not served.empty:
        tracker.metrics({"prediction_psi": psi(reference_scores, served["prob_up"].to_numpy(dtype=float))})
    joined = served.merge(current[["contract_id", "bar_ts", LABEL]], on=["contract_id", "bar_ts"])
    joined = joined.dropna(subset=[LABEL])
    if dt.date.fromisoformat(params["trade_date"]) >= ctx.trade_date:
        # The serving model trained on this date: only its holdout window is out of sample.
        joined = joined[joined["bar_ts"] >= pd.Timestamp(params["holdout_start"])]
    if not joined.empty and joined[LABEL].nunique() > 1:
        y = joined[LABEL].astype(int)
        tracker.metrics({
            "realized_auc": metrics.roc_auc_score(y, joined["prob_up"]),
            "realized_accuracy": metrics.accuracy_score(y, joined["predicted_up"]),
            "prediction_mean": float(joined["prob_up"].mean()),
            "labelled_predictions": len(joined),
        })

    rows = pd.DataFrame({
        "trade_date": ctx.trade_date,
        "feature": list(drift["psi"]),
        "psi": [float(v) for v in drift["psi"].values()],
        "drifted": [name in drift["drifted"] for name in drift["psi"]],
        "psi_band": [drift["bands"][name] for name in drift["psi"]],
        "ks_pvalue": [drift["tests"][name]["ks_pvalue"] for name in drift["psi"]],
        "wasserstein_norm": [drift["tests"][name]["wasserstein_norm"] for name in drift["psi"]],
        "psi_threshold": settings.drift_psi_threshold,
        "reference_model_version": int(champion.version),
        "reference_snapshot_id": int(params["features_snapshot_id"]),
    })
    reason = F.lit(None).cast("string")  # why a feature is not judged (NULL: it is)
    for name, why in drift["excluded"].items():
        reason = F.when(F.col("feature") == name, F.lit(why)).otherwise(reason)
    frame = spark.createDataFrame(rows).withColumn("excluded_reason", reason)
    snap = replace_date_partition(frame, settings.table(DRIFT), ctx.trade_date)
    tracker.published(snap, rows_in=len(FEATURE_COLUMNS))


if __name__ == "__main__":
    sys.exit(stage_cli(MONITORING, run))
