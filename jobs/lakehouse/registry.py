"""The model registry and the lineage of every registered version.

A version's training run logs the Iceberg snapshot of the features table, the trade date, the
lookback and the holdout fraction; ``training_split`` rebuilds exactly the rows it was trained
and judged on, so deployment compares challenger and champion on that holdout and monitoring
measures drift against that training data. The snapshot is pinned by an Iceberg tag
(``model_v<version>``) so snapshot expiry never takes a registered model's lineage away.

The ``champion`` alias only moves through ``move_champion``: a compare-and-set under a registry
lock (MLflow has no CAS on aliases), so a challenger replaces the champion it was compared with
or nothing at all.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from jobs.contract import (
    CHAMPION,
    FEATURES,
    MODEL_TRAINING,
    PREVIOUS,
    VERSION_TAG_DATA_THROUGH,
    VERSION_TAG_FEATURES_REF,
    VERSION_TAG_FEATURES_SNAPSHOT,
    VERSION_TAG_FEATURES_TABLE,
    env,
    model_snapshot_tag,
    stage_runs_filter,
)
from jobs.lakehouse.settings import Settings
from jobs.lakehouse.tables import ensure_snapshot_tag, read_snapshot, snapshot_refs
from jobs.lakehouse.tracking import RunContext, mlflow_experiment_id
from jobs.schema import FEATURE_COLUMNS, LABEL

HOLDOUT_FRACTION = 0.2
ROC_ARTIFACT = "roc_points.json"  # the morning report draws the ROC from these


def model_tag_retain_days() -> int:
    """Days a non-serving version's training snapshot tag lives (champion and previous: always)."""
    return int(env("ICEBERG_MODEL_TAG_RETAIN_DAYS", "365"))


# --------------------------------------------------------------------------------------------------
# Lineage: the rows a version was trained on
# --------------------------------------------------------------------------------------------------

def load_training_frame(spark, settings: Settings, snapshot_id: int | str, trade_date: dt.date,
                        lookback_days: int):
    """The exact rows a model sees, from one pinned Iceberg snapshot id or tag (reproducible lineage)."""
    from jobs.transforms.features import training_window

    frame = read_snapshot(spark, settings.table(FEATURES), snapshot_id)
    cols = ["trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL]
    return training_window(frame, trade_date, lookback_days).select(*cols).toPandas()


def snapshot_sql(table: str, snapshot_id: int | str, trade_date: dt.date, lookback: int) -> str:
    """The exact query that reproduces the training rows (Iceberg time travel; a tag is quoted)."""
    start = trade_date - dt.timedelta(days=lookback - 1)
    version = f"'{snapshot_id}'" if isinstance(snapshot_id, str) else snapshot_id
    return (f"SELECT * FROM {table} VERSION AS OF {version} "
            f"WHERE trade_date BETWEEN DATE '{start}' AND DATE '{trade_date}' AND {LABEL} IS NOT NULL")


def training_params(version) -> dict[str, str]:
    """The params the training run of a registered version logged (snapshot, date, lookback, ...)."""
    from mlflow import MlflowClient

    return MlflowClient().get_run(version.run_id).data.params


def lineage_ref(spark, settings: Settings, version, params: dict[str, str]) -> int | str:
    """How to read a version's training snapshot: its Iceberg tag, else (older versions) the id.

    The tag survives snapshot expiry; a bare id works only while the snapshot is still there.
    """
    tags = getattr(version, "tags", None) or {}
    tag = tags.get(VERSION_TAG_FEATURES_REF)
    table = tags.get(VERSION_TAG_FEATURES_TABLE) or params.get("features_table") or settings.table(FEATURES)
    if tag and tag in snapshot_refs(spark, table):
        return tag
    return int(params["features_snapshot_id"])


def training_split(spark, settings: Settings, version, params: dict[str, str] | None = None):
    """The version's train/holdout split, rebuilt from the snapshot its training run pinned."""
    from jobs.ml.modeling import time_split

    params = params if params is not None else training_params(version)
    frame = load_training_frame(spark, settings, lineage_ref(spark, settings, version, params),
                                dt.date.fromisoformat(params["trade_date"]), int(params["lookback_days"]))
    return time_split(frame, float(params.get("holdout_fraction", HOLDOUT_FRACTION)))


def protect_training_snapshot(spark, settings: Settings, version: str, snapshot_id: int,
                              retain_days: int | None) -> str:
    """Tag the features snapshot ``version`` trained on and name the tag on the version."""
    from mlflow import MlflowClient

    tag = model_snapshot_tag(version)
    outcome = ensure_snapshot_tag(spark, settings.table(FEATURES), tag, snapshot_id, retain_days)
    MlflowClient().set_model_version_tag(settings.model_name, str(version), VERSION_TAG_FEATURES_REF, tag)
    return outcome


def ensure_lineage_tags(spark, settings: Settings) -> dict[str, str]:
    """Re-ensure every registered version's snapshot tag (maintenance runs this before expiry).

    Serving versions (champion, previous) are tagged with no expiry, the others for
    ICEBERG_MODEL_TAG_RETAIN_DAYS after their snapshot. Returns version -> outcome
    (created, updated, kept, snapshot_expired, no_lineage).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    serving = {v.version for v in (model_version_by_alias(settings, a) for a in (CHAMPION, PREVIOUS)) if v}
    outcomes: dict[str, str] = {}
    refs_by_table: dict[str, dict] = {}
    for version in client.search_model_versions(f"name = '{settings.model_name}'", max_results=10_000):
        snapshot = version.tags.get(VERSION_TAG_FEATURES_SNAPSHOT)
        if not snapshot:
            outcomes[version.version] = "no_lineage"
            continue
        table = version.tags.get(VERSION_TAG_FEATURES_TABLE) or settings.table(FEATURES)
        if table not in refs_by_table:
            refs_by_table[table] = snapshot_refs(spark, table)
        tag = model_snapshot_tag(version.version)
        retain = None if version.version in serving else model_tag_retain_days()
        outcomes[version.version] = ensure_snapshot_tag(spark, table, tag, int(snapshot), retain,
                                                        refs=refs_by_table[table])
        if version.tags.get(VERSION_TAG_FEATURES_REF) != tag and outcomes[version.version] != "snapshot_expired":
            client.set_model_version_tag(settings.model_name, version.version, VERSION_TAG_FEATURES_REF, tag)
    return outcomes


def data_through(version) -> dt.date | None:
    """The last trade date in a version's training data (older versions: their training date)."""
    tags = getattr(version, "tags", None) or {}
    value = tags.get(VERSION_TAG_DATA_THROUGH) or tags.get("trade_date")
    return dt.date.fromisoformat(value) if value else None


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
    """The latest finished model_training run of the same DAG run (None outside Airflow).

    Scoped by DAG id and run id: a manual run id can repeat across DAGs (ml_pipeline and
    ml_retraining), and the other DAG's model is not this run's challenger.
    """
    import mlflow

    if not ctx.run_id:
        return None
    runs = mlflow.search_runs(
        experiment_ids=[mlflow_experiment_id(settings)],
        filter_string=stage_runs_filter(MODEL_TRAINING, dag_id=ctx.dag_id, run_id=ctx.run_id, status="FINISHED"),
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return runs[0] if runs else None


PROMOTION_LOCK_SUFFIX = ".promotion-lock"
LOCK_WAIT_SECONDS = 120.0
LOCK_STALE_SECONDS = 600.0  # a holder that died mid-promotion; a promotion takes well under a second


class PromotionLockTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def promotion_lock(settings: Settings, owner: str = "") -> Iterator[None]:
    """Mutual exclusion for alias moves, held in the MLflow server itself.

    MLflow aliases have no compare-and-set, but creating a registered model is atomic (its name
    is a primary key): the holder creates ``<model>.promotion-lock`` and deletes it when done. The
    Airflow pool ``model_promotion`` already serialises the DAGs; this also covers promotions from
    outside Airflow (make rollback, a shell) and any second scheduler.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = settings.model_name + PROMOTION_LOCK_SUFFIX
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = 0.05
    while True:
        try:
            client.create_registered_model(name, tags={"lock.owner": owner, "lock.acquired_at": str(time.time())},
                                           description=f"held while {owner} moves the aliases of {settings.model_name}")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with contextlib.suppress(MlflowException):  # the holder may release it meanwhile
            held_since = float(client.get_registered_model(name).tags.get("lock.acquired_at", "0"))
            if time.time() - held_since > LOCK_STALE_SECONDS:
                print(f"breaking a stale promotion lock held since {held_since:.0f}", file=sys.stderr)
                client.delete_registered_model(name)
                continue
        if time.monotonic() > deadline:
            raise PromotionLockTimeout(f"{name} still held after {LOCK_WAIT_SECONDS:.0f} s")
        time.sleep(delay)  # a retry backoff while another promotion finishes, not a synchronisation
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)


@dataclass(frozen=True)
class AliasMove:
    moved: bool
    champion_before: str | None  # what the alias pointed at when it was re-read under the lock
    reason: str


def move_champion(settings: Settings, version: str, expected: str | None, owner: str = "") -> AliasMove:
    """Compare-and-set: make ``version`` champion only if the champion is still ``expected``.

    ``expected`` is the champion the challenger was compared with (None: there was none). The
    alias is re-read under the promotion lock; if it moved since the comparison, nothing is written
    and the reason says so. The outgoing champion keeps the ``previous`` alias.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    with promotion_lock(settings, owner):
        current = model_version_by_alias(settings, CHAMPION)
        now = current.version if current is not None else None
        if now != (str(expected) if expected is not None else None):
            return AliasMove(False, now, f"refused: champion moved from {_v(expected)} to {_v(now)} "
                                         f"since v{version} was compared")
        if now == str(version):
            return AliasMove(True, now, f"v{version} is already champion")
        if now is not None:
            client.set_registered_model_alias(settings.model_name, PREVIOUS, now)
        client.set_registered_model_alias(settings.model_name, CHAMPION, str(version))
        return AliasMove(True, now, f"champion {_v(now)} -> v{version}")


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "none"


def promote(settings: Settings, version: str) -> None:
    """Make ``version`` the champion whatever it is now (the outgoing one keeps ``previous``)."""
    current = model_version_by_alias(settings, CHAMPION)
    move = move_champion(settings, version, current.version if current else None)
    if not move.moved:
        raise RuntimeError(move.reason)


def rollback_champion(settings: Settings) -> tuple[str, str]:
    """Swap ``champion`` and ``previous``; returns (old champion, new champion) versions."""
    champion = model_version_by_alias(settings, CHAMPION)
    previous = model_version_by_alias(settings, PREVIOUS)
    if champion is None or previous is None:
        raise RuntimeError(f"{settings.model_name} needs both '{CHAMPION}' and '{PREVIOUS}' aliases to roll back")
    move = move_champion(settings, previous.version, champion.version)
    if not move.moved:
        raise RuntimeError(move.reason)
    return champion.version, previous.version
