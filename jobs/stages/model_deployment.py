"""Champion/challenger on one holdout, alias moves, then batch scoring of the champion in Spark."""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from jobs.contract import (
    CHAMPION,
    FEATURES,
    MODEL_DEPLOYMENT,
    MODEL_TRAINING,
    PREDICTIONS,
    TAG_CHAMPION_BEFORE,
    TAG_DEPLOYMENT_DECISION,
    TAG_DEPLOYMENT_REASON,
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    VERSION_TAG_DATA_THROUGH,
)
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.model_trust import load_trusted_model, trusted_model_uri
from jobs.lakehouse.registry import (
    data_through,
    model_version_by_alias,
    move_champion,
    training_run_of_dag_run,
    training_split,
)
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import partition_rows, read_date, replace_date_partition
from jobs.lakehouse.tracking import RunContext, StageTracker
from jobs.ml.modeling import evaluate
from jobs.schema import FEATURE_COLUMNS

# Compare-and-set attempts: each refusal (the champion moved meanwhile) re-compares with the new one.
MAX_ATTEMPTS = 3


def challenger_version(settings: Settings, ctx: RunContext):
    """The version trained by this DAG run, else (manual run) the newest registered version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if ctx.run_id:  # inside Airflow: only this DAG run's own model is its challenger
        training = training_run_of_dag_run(settings, ctx)
        if training is None or TAG_MODEL_VERSION not in training.data.tags:
            raise RuntimeError(f"no finished {MODEL_TRAINING} run with a registered model in "
                               f"{ctx.dag_id} run {ctx.run_id}")
        return client.get_model_version(settings.model_name, training.data.tags[TAG_MODEL_VERSION])
    versions = client.search_model_versions(f"name = '{settings.model_name}'",
                                            order_by=["version_number DESC"], max_results=1)
    if not versions:
        raise RuntimeError(f"no registered version of {settings.model_name}: run {MODEL_TRAINING} first")
    return versions[0]


def decide(challenger_auc: float, champion_auc: float | None, margin: float) -> bool:
    """Promote when there is no champion or the challenger is at least as good (plus margin)."""
    return champion_auc is None or challenger_auc >= champion_auc + margin


@dataclass
class Verdict:
    """What deployment decided about its challenger, and why (tagged on the run and the version)."""

    decision: str  # promoted | kept_champion | refused
    reason: str
    challenger_metrics: dict[str, float]
    champion_before: object = None  # the champion compared with last (None: there was none)
    champion_metrics: dict[str, float] | None = None
    refusals: list[str] = field(default_factory=list)


def contest(settings: Settings, challenger, score: Callable[[object], dict[str, float]], owner: str = "") -> Verdict:
    """Champion/challenger with the champion that is current when the alias moves.

    A challenger trained on data older than the champion's never takes the alias (a backfill or a
    rerun of an old date is scored and recorded, nothing more). Otherwise the better holdout AUC
    wins, and the move is a compare-and-set against the champion just compared with; if another
    promotion moved the alias meanwhile, the challenger is compared again with the new champion.
    """
    challenger_metrics = score(challenger)
    through = data_through(challenger)
    refusals: list[str] = []
    champion = None
    champion_metrics = None
    for _ in range(MAX_ATTEMPTS):
        champion = model_version_by_alias(settings, CHAMPION)
        champion_metrics = None
        if champion is None:
            reason = f"no champion yet: v{challenger.version} trained through {through}"
        elif champion.version == challenger.version:
            return Verdict("promoted", f"v{challenger.version} is already champion", challenger_metrics,
                           champion, None, refusals)
        else:
            champion_through = data_through(champion)
            if through and champion_through and through < champion_through:
                return Verdict("kept_champion", f"challenger trained through {through} < champion through "
                               f"{champion_through}", challenger_metrics, champion, None, refusals)
            champion_metrics = score(champion)
            a, b = challenger_metrics["auc"], champion_metrics["auc"]
            if not decide(a, b, settings.promotion_margin):
                return Verdict("kept_champion", f"challenger auc {a:.4f} < champion v{champion.version} auc "
                               f"{b:.4f} + margin {settings.promotion_margin}", challenger_metrics, champion,
                               champion_metrics, refusals)
            reason = (f"challenger auc {a:.4f} >= champion v{champion.version} auc {b:.4f} + margin "
                      f"{settings.promotion_margin}; trained through {through} >= {champion_through}")
        move = move_champion(settings, challenger.version, champion.version if champion else None, owner)
        if move.moved:
            return Verdict("promoted", reason, challenger_metrics, champion, champion_metrics, refusals)
        print(move.reason, file=sys.stderr)
        refusals.append(move.reason)
    return Verdict("refused", "; ".join(refusals), challenger_metrics, champion, champion_metrics, refusals)


def record(settings: Settings, tracker: StageTracker, challenger, verdict: Verdict) -> None:
    """The decision and its reason on the deployment run and on the challenger version."""
    from mlflow import MlflowClient

    champion = verdict.champion_before
    tracker.metrics({f"challenger.{k}": v for k, v in verdict.challenger_metrics.items()})
    if verdict.champion_metrics:
        tracker.metrics({f"champion.{k}": v for k, v in verdict.champion_metrics.items()})
    tracker.metrics({
        "challenger_version": int(challenger.version),
        "challenger_auc": verdict.challenger_metrics["auc"],
        "champion_auc_before": verdict.champion_metrics["auc"] if verdict.champion_metrics else None,
        "promoted": int(verdict.decision == "promoted"),
        "promotion_refusals": len(verdict.refusals),
    })
    tracker.tags({TAG_DEPLOYMENT_DECISION: verdict.decision, TAG_DEPLOYMENT_REASON: verdict.reason[:4900],
                  TAG_CHAMPION_BEFORE: champion.version if champion else "none",
                  TAG_MODEL_NAME: settings.model_name,
                  f"challenger.{VERSION_TAG_DATA_THROUGH}": str(data_through(challenger))})
    client = MlflowClient()
    for key, value in {TAG_DEPLOYMENT_DECISION: verdict.decision, TAG_DEPLOYMENT_REASON: verdict.reason[:4900],
                       "deployment.challenger_auc": verdict.challenger_metrics["auc"]}.items():
        client.set_model_version_tag(settings.model_name, challenger.version, key, str(value))


def run(spark: SparkSession, settings: Settings, ctx: RunContext, tracker: StageTracker) -> None:
    import mlflow
    from pyspark.sql import functions as F

    challenger = challenger_version(settings, ctx)
    holdout = training_split(spark, settings, challenger).holdout  # the challenger's own holdout

    def score(version) -> dict[str, float]:
        return evaluate(load_trusted_model(settings, version), holdout)

    verdict = contest(settings, challenger, score, owner=f"{ctx.dag_id or 'manual'} {ctx.run_id or ''}".strip())
    record(settings, tracker, challenger, verdict)
    # Score with the champion as it stands now (this run's challenger only if it won).
    serving = model_version_by_alias(settings, CHAMPION)
    if serving is None:
        raise RuntimeError(f"{settings.model_name} has no '{CHAMPION}': {verdict.reason}")
    tracker.metrics({"champion_version": int(serving.version), "holdout_rows": len(holdout)})
    through = data_through(serving)
    tracker.tags({"model.champion_version": serving.version,
                  "model.champion_data_through": through.isoformat() if through else ""})

    # Batch scoring, distributed: the champion's registered version as a Spark UDF.
    uri = trusted_model_uri(settings, serving)
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
