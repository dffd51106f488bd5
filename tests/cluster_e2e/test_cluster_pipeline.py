"""ml_pipeline for two dates and ml_retraining once on the cluster profile (issue 15, item 3).

Celery workers' own logs say which worker ran which task; the Spark master's and the workers'
JSON say which applications ran and where their executors were; MLflow holds each stage's figures.
"""
from __future__ import annotations

from cluster.cluster_support import apps_of, celery_workloads, executors_by_worker
from conftest import DATES, TICKS

from jobs import contract
from scripts.devstack.env import celery_worker_names


def test_the_demo_succeeds_on_the_cluster(demo):
    assert demo.returncode == 0, demo.output[-5000:]
    assert f"-> {contract.ML_RETRAINING}" in demo.output, demo.output[-3000:]  # the drift alert retrained


def test_tasks_ran_on_both_celery_workers(demo):
    ran = {w: {(d, t) for d, _, t, _ in celery_workloads(demo.stack.home, w)}
           for w in celery_worker_names(demo.stack.env)}
    assert len(ran) == 2 and all(ran.values()), ran
    dags = {d for tasks in ran.values() for d, _ in tasks}
    assert {contract.ML_PIPELINE, contract.ML_RETRAINING} <= dags
    stages = {t for tasks in ran.values() for d, t in tasks if d == contract.ML_PIPELINE}
    assert set(contract.STAGES) <= stages


def test_every_stage_was_an_application_of_the_master_with_executors_on_both_workers(demo):
    env = demo.stack.env
    for stage in contract.STAGES:
        apps = [a for a in apps_of(env, stage) if a["state"] == "FINISHED"]
        wanted = len(DATES) + (1 if stage in contract.RETRAINING_STAGES else 0)
        assert len(apps) >= wanted, (stage, apps)
        for app in apps:
            hosts = executors_by_worker(env, app["id"])
            assert len(hosts) == 2 and all(hosts.values()), (stage, app["name"], hosts)


def test_mlflow_holds_each_stage_figures(demo):
    from mlflow import MlflowClient

    client = MlflowClient(demo.stack.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(demo.stack.env["MLFLOW_EXPERIMENT_NAME"])
    runs = client.search_runs([experiment.experiment_id], f"tags.`{contract.TAG_STAGE}` = '{contract.RAW_TO_BRONZE}'")
    by_date = {r.data.tags.get(contract.TAG_TRADE_DATE): r for r in runs if r.info.status == "FINISHED"}
    assert {d.isoformat() for d in DATES} <= set(by_date)
    rows_in = sum(by_date[d.isoformat()].data.metrics[contract.METRIC_ROWS_IN] for d in DATES)
    assert rows_in >= TICKS  # the calm and the stressed date's ticks, plus the messy second delivery


# Each data stage's output table, whose rows for the date its rows_out counts.
STAGE_OUTPUT = {contract.RAW_TO_BRONZE: contract.BRONZE, contract.BRONZE_TO_SILVER: contract.SILVER,
                contract.SILVER_TO_GOLD: contract.GOLD, contract.FEATURE_ENGINEERING: contract.FEATURES}


def test_tables_and_mlflow_figures_equal_the_default_profiles(demo):
    """The same RAW through the default profile's engine (local Spark, in this process) into a fresh
    namespace of the same catalog: the cluster's tables hold the same rows, and MLflow's figures of
    every data stage and date are those rows."""
    from mlflow import MlflowClient
    from nights_support import clean_reprocessing, fingerprint

    cluster = fingerprint()
    reference = clean_reprocessing(list(DATES), "cluster_reference")
    assert cluster == reference, sorted(set(cluster.items()) ^ set(reference.items()))

    client = MlflowClient(demo.stack.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(demo.stack.env["MLFLOW_EXPERIMENT_NAME"])
    for stage, table in STAGE_OUTPUT.items():
        runs = client.search_runs([experiment.experiment_id], f"tags.`{contract.TAG_STAGE}` = '{stage}'",
                                  order_by=["attributes.start_time DESC"])
        for day in DATES:
            finished = [r for r in runs if r.info.status == "FINISHED"
                        and r.data.tags.get(contract.TAG_TRADE_DATE) == day.isoformat()]
            assert finished, (stage, day)
            figures = finished[0].data.metrics
            assert figures[contract.METRIC_ROWS_OUT] == reference[(table, day.isoformat())][0], (stage, day, figures)
            if stage == contract.BRONZE_TO_SILVER:
                rejected = reference.get((contract.QUARANTINE, day.isoformat()), (0, 0))[0]
                assert figures[contract.METRIC_ROWS_REJECTED] == rejected, (stage, day, figures)
