"""Train the next-bar direction classifier on features up to the trade date and register it."""
from __future__ import annotations

import datetime as dt
import json
import os
import sys

from jobs.lakehouse import FEATURES, current_snapshot, read_snapshot, stage_cli
from jobs.transforms.features import FEATURE_COLUMNS, LABEL, training_window
from jobs.transforms.modeling import (
    DEFAULT_PARAMS, X, best_candidate, evaluate, evaluation_figures, roc_points, sweep, time_split,
    train_classifier,
)

HOLDOUT_FRACTION = 0.2
ROC_ARTIFACT = "roc_points.json"  # the morning report draws the ROC from these
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def load_training_frame(spark, settings, snapshot_id: int, trade_date, lookback_days: int):
    """The exact rows a model sees, from one pinned Iceberg snapshot (reproducible lineage)."""
    frame = read_snapshot(spark, settings.table(FEATURES), snapshot_id)
    cols = ["trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL]
    return training_window(frame, trade_date, lookback_days).select(*cols).toPandas()


def snapshot_sql(table: str, snapshot_id: int, trade_date, lookback: int) -> str:
    """The exact query that reproduces the training rows (Iceberg time travel)."""
    start = trade_date - dt.timedelta(days=lookback - 1)
    return (f"SELECT * FROM {table} VERSION AS OF {snapshot_id} "
            f"WHERE trade_date BETWEEN DATE '{start}' AND DATE '{trade_date}' AND {LABEL} IS NOT NULL")


def log_lineage(table: str, snapshot_id: int, trade_date, lookback: int, split) -> None:
    """MLflow dataset inputs naming the Iceberg table and snapshot each split came from."""
    import mlflow
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    source = SparkDatasetSource(sql=snapshot_sql(table, snapshot_id, trade_date, lookback))
    for context, part in (("training", split.train), ("holdout", split.holdout)):
        dataset = mlflow.data.from_pandas(part, source=source, targets=LABEL,
                                          name=f"{table}@{snapshot_id}:{context}")
        mlflow.log_input(dataset, context=context)


def lookback_days() -> int:
    return int(os.environ.get("TRAINING_LOOKBACK_DAYS") or 20)


def run(spark, settings, ctx, tracker) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    table = settings.table(FEATURES)
    snap = current_snapshot(spark, table)
    if snap is None:
        raise RuntimeError(f"{table} has no snapshot: run feature_engineering first")
    days = lookback_days()
    frame = load_training_frame(spark, settings, snap.snapshot_id, ctx.trade_date, days)
    split = time_split(frame, HOLDOUT_FRACTION)

    # Hyperparameter sweep: one nested run per candidate, chosen on validation, not on the holdout.
    candidates = sweep(split.train)
    for i, cand in enumerate(candidates):
        with mlflow.start_run(run_name=f"candidate {i}", nested=True,
                              tags={"pipeline.role": "candidate", "pipeline.trade_date": ctx.trade_date.isoformat()}):
            mlflow.log_params(cand.params)
            mlflow.log_metrics({f"val_{k}": v for k, v in cand.validation.items() if v == v})
    best = best_candidate(candidates)
    model = train_classifier(split.train, best.params)
    holdout = evaluate(model, split.holdout)
    tracker.params({
        **{f"model.{k}": v for k, v in {**DEFAULT_PARAMS, **best.params}.items()},
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
        **{f"train_{k}": v for k, v in evaluate(model, split.train).items()},
        "rows_in": len(frame), "train_rows": len(split.train), "holdout_rows": len(split.holdout),
        "candidates": len(candidates),
    })
    for name, fig in evaluation_figures(model, split.holdout).items():
        mlflow.log_figure(fig, name)
    mlflow.log_dict(roc_points(model, split.holdout), ROC_ARTIFACT)
    example = X(split.train.head(5))
    info = mlflow.sklearn.log_model(
        sk_model=model,
        name="model",
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        registered_model_name=settings.model_name,
        pyfunc_predict_fn="predict_proba",
        # skops (MLflow's safe default format) asks us to vouch for the tree predictor type:
        # we trained it ourselves in this run.
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in {"trade_date": ctx.trade_date.isoformat(), "features_table": table,
                       "features_snapshot_id": snap.snapshot_id, "holdout_auc": holdout["auc"],
                       "training_sql": snapshot_sql(table, snap.snapshot_id, ctx.trade_date, days)}.items():
        client.set_model_version_tag(settings.model_name, version, key, str(value))
    tracker.tags({"model.name": settings.model_name, "model.version": version})


if __name__ == "__main__":
    sys.exit(stage_cli("model_training", run))
