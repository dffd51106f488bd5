"""Champion/challenger on one holdout, alias moves, then batch scoring of the champion in Spark."""
from __future__ import annotations

import datetime as dt
import sys

from pyspark.sql import SparkSession

from jobs.contract import (
    CHAMPION,
    FEATURES,
    MODEL_DEPLOYMENT,
    MODEL_TRAINING,
    PREDICTIONS,
    TAG_CHAMPION_BEFORE,
    TAG_DEPLOYMENT_DECISION,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
)
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.registry import model_version_by_alias, training_run_of_dag_run, training_split
from jobs.lakehouse.registry import promote as promote_version
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import partition_rows, read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.ml.modeling import evaluate
from jobs.schema import FEATURE_COLUMNS


def challenger_version(settings: Settings, ctx: RunContext):
    """The version trained by this DAG run, else (manual run) the newest registered version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    training = training_run_of_dag_run(settings, ctx)
    if training is not None and TAG_MODEL_VERSION in training.data.tags:
        return client.get_model_version(settings.model_name, training.data.tags[TAG_MODEL_VERSION])
    versions = client.search_model_versions(f"name = '{settings.model_name}'",
                                            order_by=["version_number DESC"], max_results=1)
    if not versions:
        raise RuntimeError(f"no registered version of {settings.model_name}: run {MODEL_TRAINING} first")
    return versions[0]


def decide(challenger_auc: float, champion_auc: float | None, margin: float) -> bool:
    """Promote when there is no champion or the challenger is at least as good (plus margin)."""
    return champion_auc is None or challenger_auc >= champion_auc + margin


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    import mlflow
    from pyspark.sql import functions as F

    challenger = challenger_version(settings, ctx)
    holdout = training_split(spark, settings, challenger).holdout  # the challenger's own holdout

    def load(version):
        return mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version.version}")

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
    tracker.tags({TAG_DEPLOYMENT_DECISION: "promoted" if should_promote else "kept_champion",
                  TAG_CHAMPION_BEFORE: champion.version if champion else "none",
                  TAG_MODEL_NAME: settings.model_name, "model.champion_version": serving.version})

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
        F.lit(dt.datetime.now(dt.UTC).replace(microsecond=0)).cast("timestamp").alias("scored_at"),
    )
    snap = replace_date_partition(predictions, settings.table(PREDICTIONS), ctx.trade_date)
    tracker.published(snap, rows_in=partition_rows(spark, features_table, ctx.trade_date))


if __name__ == "__main__":
    sys.exit(stage_cli(MODEL_DEPLOYMENT, run))
