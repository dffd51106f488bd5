"""The model registry and the lineage of every registered version.

A version's training run logs the Iceberg snapshot of the features table, the trade date, the
lookback and the holdout fraction; ``training_split`` rebuilds exactly the rows it was trained
and judged on, so deployment compares challenger and champion on that holdout and monitoring
measures drift against that training data.
"""
from __future__ import annotations

import datetime as dt

from jobs.contract import CHAMPION, FEATURES, MODEL_TRAINING, PREVIOUS, stage_runs_filter
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import read_snapshot
from jobs.lakehouse.tracking import RunContext, mlflow_experiment_id
from jobs.schema import FEATURE_COLUMNS, LABEL

HOLDOUT_FRACTION = 0.2
ROC_ARTIFACT = "roc_points.json"  # the morning report draws the ROC from these


# --------------------------------------------------------------------------------------------------
# Lineage: the rows a version was trained on
# --------------------------------------------------------------------------------------------------

def load_training_frame(spark, settings: Settings, snapshot_id: int, trade_date: dt.date, lookback_days: int):
    """The exact rows a model sees, from one pinned Iceberg snapshot (reproducible lineage)."""
    from jobs.transforms.features import training_window

    frame = read_snapshot(spark, settings.table(FEATURES), snapshot_id)
    cols = ["trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL]
    return training_window(frame, trade_date, lookback_days).select(*cols).toPandas()


def snapshot_sql(table: str, snapshot_id: int, trade_date: dt.date, lookback: int) -> str:
    """The exact query that reproduces the training rows (Iceberg time travel)."""
    start = trade_date - dt.timedelta(days=lookback - 1)
    return (f"SELECT * FROM {table} VERSION AS OF {snapshot_id} "
            f"WHERE trade_date BETWEEN DATE '{start}' AND DATE '{trade_date}' AND {LABEL} IS NOT NULL")


def training_params(version) -> dict[str, str]:
    """The params the training run of a registered version logged (snapshot, date, lookback, ...)."""
    from mlflow import MlflowClient

    return MlflowClient().get_run(version.run_id).data.params


def training_split(spark, settings: Settings, version, params: dict[str, str] | None = None):
    """The version's train/holdout split, rebuilt from the snapshot its training run pinned."""
    from jobs.ml.modeling import time_split

    params = params if params is not None else training_params(version)
    frame = load_training_frame(spark, settings, int(params["features_snapshot_id"]),
                                dt.date.fromisoformat(params["trade_date"]), int(params["lookback_days"]))
    return time_split(frame, float(params.get("holdout_fraction", HOLDOUT_FRACTION)))


# --------------------------------------------------------------------------------------------------
# Aliases: champion and previous
# --------------------------------------------------------------------------------------------------

def model_version_by_alias(settings: Settings, alias: str):
    """The registered version behind an alias, or None when the alias is not set yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def training_run_of_dag_run(settings: Settings, ctx: RunContext):
    """The latest finished model_training run of the same DAG run (None outside Airflow)."""
    import mlflow

    if not ctx.run_id:
        return None
    runs = mlflow.search_runs(
        experiment_ids=[mlflow_experiment_id(settings)],
        filter_string=stage_runs_filter(MODEL_TRAINING, run_id=ctx.run_id, status="FINISHED"),
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0] if runs else None


def promote(settings: Settings, version: str) -> None:
    """Make ``version`` the champion; the outgoing champion keeps the ``previous`` alias."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current = model_version_by_alias(settings, CHAMPION)
    if current is not None and current.version == str(version):
        return
    if current is not None:
        client.set_registered_model_alias(settings.model_name, PREVIOUS, current.version)
    client.set_registered_model_alias(settings.model_name, CHAMPION, str(version))


def rollback_champion(settings: Settings) -> tuple[str, str]:
    """Swap ``champion`` and ``previous``; returns (old champion, new champion) versions."""
    champion = model_version_by_alias(settings, CHAMPION)
    previous = model_version_by_alias(settings, PREVIOUS)
    if champion is None or previous is None:
        raise RuntimeError(f"{settings.model_name} needs both '{CHAMPION}' and '{PREVIOUS}' aliases to roll back")
    promote(settings, previous.version)
    return champion.version, previous.version
