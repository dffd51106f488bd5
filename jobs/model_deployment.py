"""Champion/challenger on one holdout, alias moves, then batch scoring of the champion in Spark."""
from __future__ import annotations

import datetime as dt
import sys

from jobs.lakehouse import (
    CHAMPION, FEATURES, PREDICTIONS, model_version_by_alias, partition_rows, read_date,
    replace_date_partition, stage_cli, training_run_of_dag_run,
)
from jobs.lakehouse import promote as promote_version
from jobs.model_training import HOLDOUT_FRACTION, load_training_frame
from jobs.transforms.features import FEATURE_COLUMNS
from jobs.transforms.modeling import evaluate, time_split


def challenger_version(settings, ctx):
    """The version trained by this DAG run, else (manual run) the newest registered version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    training = training_run_of_dag_run(settings, ctx)
    if training is not None and "model.version" in training.data.tags:
        return client.get_model_version(settings.model_name, training.data.tags["model.version"])
    versions = client.search_model_versions(f"name = '{settings.model_name}'",
                                            order_by=["version_number DESC"], max_results=1)
    if not versions:
        raise RuntimeError(f"no registered version of {settings.model_name}: run model_training first")
    return versions[0]


def holdout_of(spark, settings, version):
    """Rebuild the challenger's holdout from the snapshot its training run pinned."""
    from mlflow import MlflowClient

    params = MlflowClient().get_run(version.run_id).data.params
    frame = load_training_frame(spark, settings, int(params["features_snapshot_id"]),
                                dt.date.fromisoformat(params["trade_date"]), int(params["lookback_days"]))
    return time_split(frame, float(params.get("holdout_fraction", HOLDOUT_FRACTION))).holdout


def decide(challenger_auc: float, champion_auc: float | None, margin: float) -> bool:
    """Promote when there is no champion or the challenger is at least as good (plus margin)."""
    return champion_auc is None or challenger_auc >= champion_auc + margin


def run(spark, settings, ctx, tracker) -> None:
    import mlflow
    from pyspark.sql import functions as F

    challenger = challenger_version(settings, ctx)
    holdout = holdout_of(spark, settings, challenger)
    load = lambda v: mlflow.sklearn.load_model(f"models:/{settings.model_name}/{v.version}")  # noqa: E731
    challenger_metrics = evaluate(load(challenger), holdout)
    champion = model_version_by_alias(settings, CHAMPION)
    champion_metrics = None
    if champion is not None and champion.version != challenger.version:
        champion_metrics = evaluate(load(champion), holdout)
    should_promote = champion is None or champion.version == challenger.version or decide(
        challenger_metrics["auc"], champion_metrics["auc"] if champion_metrics else None,
        settings.promotion_margin)
    if should_promote:
        promote_version(settings, challenger.version)
    serving = challenger if should_promote else champion
    tracker.metrics({f"challenger.{k}": v for k, v in challenger_metrics.items()})
    if champion_metrics:
        tracker.metrics({f"champion.{k}": v for k, v in champion_metrics.items()})
    tracker.metrics({
        "challenger_version": int(challenger.version),
        "challenger_auc": challenger_metrics["auc"],
        "champion_auc_before": champion_metrics["auc"] if champion_metrics else None,
        "champion_version": int(serving.version),
        "promoted": int(should_promote),
        "holdout_rows": len(holdout),
    })
    tracker.tags({"deployment.decision": "promoted" if should_promote else "kept_champion",
                  "model.champion_before": champion.version if champion else "none",
                  "model.name": settings.model_name, "model.champion_version": serving.version})

    # Batch scoring, distributed: the registered champion as a Spark UDF.
    uri = f"models:/{settings.model_name}@{CHAMPION}"
    predict = mlflow.pyfunc.spark_udf(spark, uri, result_type="array<double>", env_manager="local")
    features_table = settings.table(FEATURES)
    features = read_date(spark, features_table, ctx.trade_date)
    scored = features.withColumn(
        "proba", predict(F.struct(*[F.col(c).cast("double").alias(c) for c in FEATURE_COLUMNS])))
    predictions = scored.select(
        "trade_date", "contract_id", "bar_ts",
        F.col("proba")[1].alias("prob_up"),
        (F.col("proba")[1] >= 0.5).cast("int").alias("predicted_up"),
        F.lit(settings.model_name).alias("model_name"),
        F.lit(int(serving.version)).alias("model_version"),
        F.lit(dt.datetime.now(dt.timezone.utc).replace(microsecond=0)).cast("timestamp").alias("scored_at"),
    )
    snap = replace_date_partition(predictions, settings.table(PREDICTIONS), ctx.trade_date)
    tracker.published(snap, rows_in=partition_rows(spark, features_table, ctx.trade_date))


if __name__ == "__main__":
    sys.exit(stage_cli("model_deployment", run))
