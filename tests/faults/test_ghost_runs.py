"""Ghost runs outside Airflow: a stage started by hand supersedes a RUNNING run of the same stage and
trade date that has no DAG run (its process died), and leaves everything else alone.

The Airflow case (same stage, date and parent run) is the kill drill in test_atomic_write.py.
"""
from __future__ import annotations

import datetime as dt

DAY = dt.date(2026, 11, 27)
STAGE = "silver_to_gold"


def test_a_manual_rerun_supersedes_the_ghost_of_the_same_stage_and_date(stack, client, experiment_id):
    from jobs.lakehouse.cli import stage_cli

    tags = {"pipeline.stage": STAGE, "pipeline.trade_date": DAY.isoformat()}
    # What killed runs leave behind: RUNNING runs (and a RUNNING nested run) nobody will end.
    ghost = client.create_run(experiment_id, run_name=f"{STAGE} {DAY}", tags=tags)
    ghost_child = client.create_run(experiment_id, tags={"mlflow.parentRunId": ghost.info.run_id})
    # Not ghosts of this rerun: another date, and a run that belongs to a DAG run.
    other_date = client.create_run(experiment_id, tags={**tags, "pipeline.trade_date": "2026-11-26"})
    dag_run = client.create_run(experiment_id, tags={**tags, "airflow.run_id": "scheduled__2026-11-28"})
    seen = {}

    def body(spark, settings, ctx, tracker):
        seen["run_id"] = tracker.run_id

    try:
        assert stage_cli(STAGE, body, argv=["--trade-date", DAY.isoformat()], needs_spark=False) == 0
        status = {name: client.get_run(run.info.run_id) for name, run in
                  {"ghost": ghost, "ghost_child": ghost_child, "other_date": other_date, "dag_run": dag_run}.items()}
        rerun = client.get_run(seen["run_id"])
        assert rerun.info.status == "FINISHED"
        for name in ("ghost", "ghost_child"):
            assert status[name].info.status == "KILLED", name
            assert status[name].data.tags["superseded_by"] == rerun.info.run_id, name
        for name in ("other_date", "dag_run"):
            assert status[name].info.status == "RUNNING", name
            assert "superseded_by" not in status[name].data.tags, name
    finally:
        for run in (other_date, dag_run):
            client.set_terminated(run.info.run_id, status="KILLED")
