"""The champion only moves forward, and only as a compare-and-set, on real Spark and a real MLflow server.

Training and deployment are the real stage bodies (``model_training.run``, ``model_deployment.run``)
inside real MLflow stage runs, on synthetic feature rows in a real Iceberg table. The race tests
drive ``contest`` / ``move_champion`` against the same server from two threads; their holdout
scores are fixed numbers (what is under test is the registry, not the classifier).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest
from lakehouse_support import scoped_settings, write_features

from jobs.contract import (
    CHAMPION,
    MODEL_DEPLOYMENT,
    MODEL_TRAINING,
    PREDICTIONS,
    PREVIOUS,
    TAG_DEPLOYMENT_DECISION,
    TAG_DEPLOYMENT_REASON,
    TAG_MODEL_VERSION,
    VERSION_TAG_DATA_THROUGH,
)
from jobs.lakehouse.registry import PROMOTION_LOCK_SUFFIX, model_version_by_alias, move_champion
from jobs.lakehouse.tracking import RunContext, stage_run
from jobs.stages import model_deployment, model_training

D0, D1, D2 = dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25)


@pytest.fixture(scope="module")
def promo(settings, spark, mlflow_server):
    scoped = scoped_settings(settings, spark, "promo", "PromoModel")
    for day in (D0, D1, D2):
        write_features(spark, scoped, day)
    return scoped


def stage(module, stage_name, spark, settings, day, dag_id, run_id):
    """One stage run the way the DAG task runs it: its own MLflow run tagged with the DAG run."""
    from mlflow import MlflowClient

    ctx = RunContext(stage=stage_name, trade_date=day, dag_id=dag_id, run_id=run_id, task_id=stage_name)
    with stage_run(ctx, settings) as tracker:
        module.run(spark, settings, ctx, tracker)
    return MlflowClient().get_run(tracker.run_id)


def test_a_backfill_scores_with_the_champion_and_never_takes_it(promo, spark):
    from mlflow import MlflowClient

    client = MlflowClient()
    newest = stage(model_training, MODEL_TRAINING, spark, promo, D2, "ml_pipeline", "scheduled__2026-11-25")
    v_new = newest.data.tags[TAG_MODEL_VERSION]
    first = stage(model_deployment, MODEL_DEPLOYMENT, spark, promo, D2, "ml_pipeline", "scheduled__2026-11-25")
    assert first.data.tags[TAG_DEPLOYMENT_DECISION] == "promoted"
    assert model_version_by_alias(promo, CHAMPION).version == v_new
    assert client.get_model_version(promo.model_name, v_new).tags[VERSION_TAG_DATA_THROUGH] == D2.isoformat()

    # A backfill of the older date D1, and (same run id, other DAG) a retraining that finishes later.
    backfill = stage(model_training, MODEL_TRAINING, spark, promo, D1, "ml_pipeline", "manual__backfill")
    decoy = stage(model_training, MODEL_TRAINING, spark, promo, D1, "ml_retraining", "manual__backfill")
    v_old, v_decoy = backfill.data.tags[TAG_MODEL_VERSION], decoy.data.tags[TAG_MODEL_VERSION]
    assert client.get_model_version(promo.model_name, v_old).tags[VERSION_TAG_DATA_THROUGH] == D1.isoformat()

    deploy = stage(model_deployment, MODEL_DEPLOYMENT, spark, promo, D1, "ml_pipeline", "manual__backfill")
    # This DAG run's own model was the challenger, not the other DAG's newer one with the same run id.
    assert int(deploy.data.metrics["challenger_version"]) == int(v_old) != int(v_decoy)
    assert deploy.data.tags[TAG_DEPLOYMENT_DECISION] == "kept_champion"
    assert deploy.data.tags[TAG_DEPLOYMENT_REASON] == \
        "challenger trained through 2026-11-24 < champion through 2026-11-25"
    assert "challenger.auc" in deploy.data.metrics  # the challenger's result is recorded
    assert deploy.data.metrics["promoted"] == 0
    assert model_version_by_alias(promo, CHAMPION).version == v_new
    assert model_version_by_alias(promo, PREVIOUS) is None
    assert client.get_model_version(promo.model_name, v_old).tags[TAG_DEPLOYMENT_DECISION] == "kept_champion"
    # The old date is scored by the current champion.
    served = spark.table(promo.table(PREDICTIONS)).where(f"trade_date = DATE '{D1}'") \
        .select("model_version").distinct().collect()
    assert [r["model_version"] for r in served] == [int(v_new)]


# ---------------------------------------------------------------------------------------------
# Compare-and-set: the re-read refusal and two promotions at once
# ---------------------------------------------------------------------------------------------

AUC = {"1": 0.60, "2": 0.65, "3": 0.70}  # race versions: 1 oldest data and worst, 3 newest and best
THROUGH = {"1": D0, "2": D1, "3": D2}


@pytest.fixture(scope="module")
def race(settings, mlflow_server):
    """A registered model with three versions of known data dates (no artifact: scores are fixed)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    scoped = dataclasses.replace(settings, model_name="PromoRace", promotion_margin=0.0, experiment="unit-tests")
    mlflow.set_experiment(scoped.experiment)
    with mlflow.start_run(run_name="race versions") as run:
        pass
    client.create_registered_model(scoped.model_name)
    for v in ("1", "2", "3"):
        mv = client.create_model_version(scoped.model_name, f"runs:/{run.info.run_id}/model",
                                         run_id=run.info.run_id,
                                         tags={VERSION_TAG_DATA_THROUGH: THROUGH[v].isoformat()})
        assert mv.version == v
    return scoped


def versions(settings, *numbers):
    from mlflow import MlflowClient

    client = MlflowClient()
    return [client.get_model_version(settings.model_name, n) for n in numbers]


def reset(settings, champion: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for alias in (CHAMPION, PREVIOUS):
        client.delete_registered_model_alias(settings.model_name, alias) if model_version_by_alias(
            settings, alias) else None
    assert move_champion(settings, champion, None).moved


def fixed_scores(version) -> dict[str, float]:
    return {"auc": AUC[version.version]}


def test_the_alias_moves_only_from_the_champion_it_was_compared_with(race):
    reset(race, "1")
    # v3 was compared with champion v1; meanwhile another promotion made v2 champion.
    assert move_champion(race, "2", "1").moved
    refused = move_champion(race, "3", "1")
    assert not refused.moved and refused.champion_before == "2"
    assert refused.reason == "refused: champion moved from v1 to v2 since v3 was compared"
    assert model_version_by_alias(race, CHAMPION).version == "2"
    assert model_version_by_alias(race, PREVIOUS).version == "1"


def test_a_refused_challenger_is_compared_again_with_the_new_champion(race):
    reset(race, "1")
    (v3,) = versions(race, "3")
    moved = []

    def score(version):
        if version.version == "1" and not moved:  # while v3 is compared with v1, v2 is promoted
            moved.append(move_champion(race, "2", "1"))
        return fixed_scores(version)

    verdict = model_deployment.contest(race, v3, score)
    assert moved[0].moved
    assert verdict.decision == "promoted"
    assert verdict.refusals == ["refused: champion moved from v1 to v2 since v3 was compared"]
    assert verdict.champion_before.version == "2"
    assert model_version_by_alias(race, CHAMPION).version == "3"
    assert model_version_by_alias(race, PREVIOUS).version == "2"


@pytest.mark.parametrize("round_", range(3))
def test_two_promotions_at_once_end_with_the_newest_data_and_a_true_previous(race, round_):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    reset(race, "1")
    v2, v3 = versions(race, "2", "3")
    compared = threading.Barrier(2, timeout=60)  # both have compared with v1 before either moves
    first_call: set[str] = set()
    verdicts: dict[str, model_deployment.Verdict] = {}
    errors: list[BaseException] = []

    def promote(challenger):
        def score(version):
            if version.version == "1" and challenger.version not in first_call:
                first_call.add(challenger.version)
                compared.wait()
            return fixed_scores(version)
        try:
            verdicts[challenger.version] = model_deployment.contest(race, challenger, score,
                                                                     owner=f"thread-{challenger.version}")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert set(verdicts) == {"2", "3"}
    # Exactly one of them found the champion moved under it.
    assert sorted(len(v.refusals) for v in verdicts.values()) == [0, 1]
    champion = model_version_by_alias(race, CHAMPION).version
    previous = model_version_by_alias(race, PREVIOUS).version
    assert champion == "3"  # the newest training data wins, whichever thread moved first
    assert verdicts["3"].decision == "promoted"
    assert previous == verdicts["3"].champion_before.version  # the one it actually replaced
    if verdicts["2"].decision == "promoted":  # v2 went first: v3 then replaced it
        assert previous == "2" and verdicts["2"].champion_before.version == "1"
    else:  # v3 went first: v2 re-compared with v3 and lost on data age
        assert previous == "1" and verdicts["2"].decision == "kept_champion"
        assert verdicts["2"].reason == "challenger trained through 2026-11-24 < champion through 2026-11-25"
    with pytest.raises(MlflowException):  # the lock is released
        MlflowClient().get_registered_model(race.model_name + PROMOTION_LOCK_SUFFIX)
