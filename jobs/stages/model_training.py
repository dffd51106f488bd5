"""Train the next-bar direction classifier on features up to the trade date and register it.

The computation is ``jobs.ml.modeling.fit``; this stage pins the features snapshot, logs the
sweep, the figures and the lineage, and registers the model with the tags deployment reads.
"""
from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession

from jobs import contract as c
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.registry import (
    HOLDOUT_FRACTION,
    ROC_ARTIFACT,
    load_training_frame,
    model_tag_retain_days,
    protect_training_snapshot,
    snapshot_sql,
)
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import current_snapshot
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.ml.modeling import Split, evaluation_figures, feature_matrix, fit, roc_points
from jobs.schema import LABEL


def log_lineage(table: str, snapshot_id: int, trade_date, lookback: int, split: Split) -> None:
    """MLflow dataset inputs naming the Iceberg table and snapshot each split came from."""
    import mlflow
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    source = SparkDatasetSource(sql=snapshot_sql(table, snapshot_id, trade_date, lookback))
    for context, part in (("training", split.train), ("holdout", split.holdout)):
        dataset = mlflow.data.from_pandas(part, source=source, targets=LABEL,
                                          name=f"{table}@{snapshot_id}:{context}")
        mlflow.log_input(dataset, context=context)


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    table = settings.table(c.FEATURES)
    snap = current_snapshot(spark, table)
    if snap is None:
        raise RuntimeError(f"{table} has no snapshot: run {c.FEATURE_ENGINEERING} first")
    days = settings.training_lookback_days
    frame = load_training_frame(spark, settings, snap.snapshot_id, ctx.trade_date, days)
    result = fit(frame, HOLDOUT_FRACTION)
    split, best, model = result.split, result.best, result.model

    # Hyperparameter sweep: one nested run per candidate, chosen on validation, not on the holdout.
    for i, cand in enumerate(result.candidates):
        with mlflow.start_run(run_name=f"candidate {i}", nested=True,
                              tags={c.TAG_ROLE: c.ROLE_CANDIDATE, c.TAG_TRADE_DATE: ctx.trade_date.isoformat()}):
            mlflow.log_params(cand.params)
            mlflow.log_metrics({f"val_{k}": v for k, v in cand.validation.items() if v == v})
    holdout = result.holdout_metrics
    tracker.params({
        **{f"model.{k}": v for k, v in result.params.items()},
        "best_params": json.dumps(best.params, sort_keys=True),
        "algorithm": type(model).__name__,
        "features_table": table,
        "features_snapshot_id": snap.snapshot_id,
        "lookback_days": days,
        "holdout_fraction": HOLDOUT_FRACTION,
        "holdout_start": split.holdout_start.isoformat(),
        "train_dates": ",".join(sorted({str(d) for d in frame["trade_date"]})),
    })
    tracker.tags({"lineage.features_table": table, "lineage.features_snapshot_id": snap.snapshot_id})
    log_lineage(table, snap.snapshot_id, ctx.trade_date, days, split)
    tracker.metrics({
        **holdout,
        **{f"val_{k}": v for k, v in best.validation.items()},
        **{f"train_{k}": v for k, v in result.train_metrics.items()},
        c.METRIC_ROWS_IN: len(frame), "train_rows": len(split.train), "holdout_rows": len(split.holdout),
        "candidates": len(result.candidates),
    })
    for name, fig in evaluation_figures(model, split.holdout).items():
        mlflow.log_figure(fig, name)
    mlflow.log_dict(roc_points(model, split.holdout), ROC_ARTIFACT)
    example = feature_matrix(split.train.head(5))
    info = mlflow.sklearn.log_model(
        sk_model=model,
        name="model",
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        registered_model_name=settings.model_name,
        pyfunc_predict_fn="predict_proba",
        # skops (MLflow's safe default format) asks us to vouch for the tree predictor type:
        # we trained it ourselves in this run.
        skops_trusted_types=list(c.SKOPS_TRUSTED_TYPES),
    )
    version = str(info.registered_model_version)
    # Lineage before anything reads it: the snapshot gets an Iceberg tag that expiry keeps, and the
    # version records the last trade date it learnt from (deployment never lets it replace a
    # champion trained on newer data).
    tag = c.model_snapshot_tag(version)
    protect_training_snapshot(spark, settings, version, snap.snapshot_id, model_tag_retain_days())
    through = str(max(frame["trade_date"]))[:10]  # a date (or a pandas Timestamp): YYYY-MM-DD
    client = MlflowClient()
    for key, value in {"trade_date": ctx.trade_date.isoformat(), c.VERSION_TAG_FEATURES_TABLE: table,
                       c.VERSION_TAG_FEATURES_SNAPSHOT: snap.snapshot_id, c.VERSION_TAG_DATA_THROUGH: through,
                       "holdout_auc": holdout["auc"],
                       "training_sql": snapshot_sql(table, tag, ctx.trade_date, days)}.items():
        client.set_model_version_tag(settings.model_name, version, key, str(value))
    tracker.tags({c.TAG_MODEL_NAME: settings.model_name, c.TAG_MODEL_VERSION: version,
                  c.VERSION_TAG_FEATURES_REF: tag, c.VERSION_TAG_DATA_THROUGH: through})


if __name__ == "__main__":
    sys.exit(stage_cli(c.MODEL_TRAINING, run))
