"""Train the next-bar direction classifier on features up to the trade date and register it."""
from __future__ import annotations

import os
import sys

from jobs.lakehouse import FEATURES, current_snapshot, read_snapshot, stage_cli
from jobs.transforms.features import FEATURE_COLUMNS, LABEL, training_window
from jobs.transforms.modeling import DEFAULT_PARAMS, X, evaluate, evaluation_figures, time_split, train_classifier

HOLDOUT_FRACTION = 0.2
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def load_training_frame(spark, settings, snapshot_id: int, trade_date, lookback_days: int):
    """The exact rows a model sees, from one pinned Iceberg snapshot (reproducible lineage)."""
    frame = read_snapshot(spark, settings.table(FEATURES), snapshot_id)
    cols = ["trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL]
    return training_window(frame, trade_date, lookback_days).select(*cols).toPandas()


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
    model = train_classifier(split.train)
    holdout = evaluate(model, split.holdout)
    tracker.params({
        **{f"model.{k}": v for k, v in DEFAULT_PARAMS.items()},
        "algorithm": type(model).__name__,
        "features_table": table,
        "features_snapshot_id": snap.snapshot_id,
        "lookback_days": days,
        "holdout_fraction": HOLDOUT_FRACTION,
        "holdout_start": split.holdout_start.isoformat(),
        "train_dates": ",".join(sorted({str(d) for d in frame["trade_date"]})),
    })
    tracker.tags({"lineage.features_table": table, "lineage.features_snapshot_id": snap.snapshot_id})
    tracker.metrics({
        **holdout,
        **{f"train_{k}": v for k, v in evaluate(model, split.train).items()},
        "rows_in": len(frame), "train_rows": len(split.train), "holdout_rows": len(split.holdout),
    })
    for name, fig in evaluation_figures(model, split.holdout).items():
        mlflow.log_figure(fig, name)
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
                       "features_snapshot_id": snap.snapshot_id, "holdout_auc": holdout["auc"]}.items():
        client.set_model_version_tag(settings.model_name, version, key, str(value))
    tracker.tags({"model.name": settings.model_name, "model.version": version})


if __name__ == "__main__":
    sys.exit(stage_cli("model_training", run))
