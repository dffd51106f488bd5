"""Maintenance bounds the tables and keeps lineage: real Spark, real Iceberg, a real MLflow server.

A model is trained (the real ``model_training.run``), its date is rerun N times on every table,
then one maintenance run (the real ``iceberg_maintenance.run``) expires everything expirable
(max age 0, keep 1). The champion's training split, read through its tag, is identical and a
re-fit gives identical metrics; snapshot counts, data files and bytes are bounded.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from lakehouse_support import scoped_settings, write_features

from jobs.contract import (
    BRONZE,
    CHAMPION,
    FEATURES,
    ICEBERG_MAINTENANCE,
    MODEL_TRAINING,
    PREDICTIONS,
    model_snapshot_tag,
)
from jobs.lakehouse.registry import (
    HOLDOUT_FRACTION,
    lineage_ref,
    model_version_by_alias,
    move_champion,
    training_params,
    training_split,
)
from jobs.lakehouse.tables import read_snapshot, replace_date_partition, snapshot_refs, table_footprint
from jobs.lakehouse.tracking import RunContext, stage_run
from jobs.ml.modeling import fit
from jobs.ops import iceberg_maintenance
from jobs.stages import model_training

DAYS = (dt.date(2026, 11, 23), dt.date(2026, 11, 24), dt.date(2026, 11, 25))
RERUNS = 4
POLICY = iceberg_maintenance.Policy(snapshot_max_age_days=0, retain_last=1, orphan_min_age_hours=24,
                                    metadata_versions_max=2)
OTHER_TABLES = (BRONZE, PREDICTIONS)  # small stand-ins: maintenance treats every table alike


def write_other(spark, settings, name, day):
    rows = [(day, i, f"row-{i}-{'x' * 40}") for i in range(200)]
    df = spark.createDataFrame(rows, "trade_date date, n int, payload string").repartition(2)
    return replace_date_partition(df, settings.table(name), day)


def table_dir(settings, name) -> Path:
    return Path(settings.warehouse.removeprefix("file://")) / settings.namespace / name


def disk_files(settings, name, suffix) -> list[Path]:
    return sorted(p for p in table_dir(settings, name).rglob(f"*{suffix}") if p.is_file())


@pytest.fixture(scope="module")
def maintained(settings, spark, mlflow_server):
    from mlflow import MlflowClient

    s = scoped_settings(settings, spark, "maint", "MaintModel")
    for day in DAYS:
        write_features(spark, s, day)
        for name in OTHER_TABLES:
            write_other(spark, s, name, day)
    ctx = RunContext(stage=MODEL_TRAINING, trade_date=DAYS[-1], dag_id="ml_pipeline", run_id="scheduled__d3",
                     task_id=MODEL_TRAINING)
    with stage_run(ctx, s) as tracker:
        model_training.run(spark, s, ctx, tracker)
    training = MlflowClient().get_run(tracker.run_id)
    version = training.data.tags["model.version"]
    assert move_champion(s, version, None).moved
    champion = model_version_by_alias(s, CHAMPION)
    split_before = training_split(spark, s, champion)
    # A version registered before tags existed: maintenance must tag it before it expires anything.
    spark.sql(f"ALTER TABLE {s.table(FEATURES)} DROP TAG `{model_snapshot_tag(version)}`")
    first_snapshot = spark.sql(f"SELECT snapshot_id FROM {s.table(FEATURES)}.snapshots "
                               f"ORDER BY committed_at LIMIT 1").collect()[0][0]
    for _ in range(RERUNS):  # reruns of the last date: same rows, a new snapshot each time
        write_features(spark, s, DAYS[-1])
        for name in OTHER_TABLES:
            write_other(spark, s, name, DAYS[-1])
    tables = (FEATURES, *OTHER_TABLES)
    before = {name: table_footprint(spark, s.table(name)) for name in tables}
    disk_before = {name: sum(p.stat().st_size for p in disk_files(s, name, "")) for name in tables}
    mctx = RunContext(stage=ICEBERG_MAINTENANCE, trade_date=DAYS[-1])
    with stage_run(mctx, s) as mtracker:
        report = iceberg_maintenance.run(spark, s, mctx, mtracker, policy=POLICY)
    return {"settings": s, "version": version, "training": training, "split_before": split_before,
            "first_snapshot": first_snapshot, "before": before, "disk_before": disk_before, "report": report,
            "maintenance_run": MlflowClient().get_run(mtracker.run_id), "tables": tables}


def test_snapshots_files_and_bytes_are_bounded_after_reruns(maintained, spark):
    s, before, report = maintained["settings"], maintained["before"], maintained["report"]
    for name in maintained["tables"]:
        table = s.table(name)
        after = table_footprint(spark, table)
        assert before[name].snapshots == 1 + len(DAYS) + RERUNS  # the empty create, then one per write
        # Everything expirable went: the current snapshot, plus the champion's tagged one.
        assert after.snapshots == (2 if name == FEATURES else 1), (name, after)
        assert report[name]["after.snapshots"] == after.snapshots
        # Storage holds exactly what live snapshots reference: no unreferenced data file on disk.
        referenced = {Path(r["file_path"].removeprefix("file:")).resolve() for r in
                      spark.sql(f"SELECT DISTINCT file_path FROM {table}.all_data_files").collect()}
        on_disk = {p.resolve() for p in disk_files(s, name, ".parquet") if "/data/" in str(p)}
        assert on_disk == referenced, name
        assert sum(p.stat().st_size for p in on_disk) == after.data_bytes
        # The current data are three dates; one more version of the last date is allowed for the tag.
        dates_kept = len(DAYS) + (1 if name == FEATURES else 0)
        assert after.data_bytes <= before[name].data_bytes * dates_kept / (len(DAYS) + RERUNS) * 1.1, name
        # Old metadata files are deleted beyond metadata_versions_max.
        assert len(disk_files(s, name, ".metadata.json")) <= POLICY.metadata_versions_max + 1, name
        assert sum(p.stat().st_size for p in disk_files(s, name, "")) < maintained["disk_before"][name]


def test_the_untagged_history_is_really_gone(maintained, spark):
    s = maintained["settings"]
    with pytest.raises(Exception, match="(?i)snapshot"):
        read_snapshot(spark, s.table(FEATURES), int(maintained["first_snapshot"])).count()


def test_the_champions_snapshot_was_retagged_first_and_lineage_reads_go_through_it(maintained, spark):
    s, version = maintained["settings"], maintained["version"]
    tag = model_snapshot_tag(version)
    assert maintained["report"]["lineage"] == {version: "created"}
    ref = snapshot_refs(spark, s.table(FEATURES))[tag]
    assert ref.type == "TAG" and ref.max_age_ms is None  # the champion's lineage never ages out
    assert ref.snapshot_id == int(maintained["training"].data.params["features_snapshot_id"])
    champion = model_version_by_alias(s, CHAMPION)
    assert lineage_ref(spark, s, champion, training_params(champion)) == tag


def test_retraining_from_the_logged_snapshot_gives_identical_metrics(maintained, spark):
    s = maintained["settings"]
    champion = model_version_by_alias(s, CHAMPION)
    split = training_split(spark, s, champion)
    before = maintained["split_before"]
    key = ["bar_ts", "contract_id"]
    for part in ("train", "holdout"):
        pd.testing.assert_frame_equal(getattr(split, part).sort_values(key).reset_index(drop=True),
                                      getattr(before, part).sort_values(key).reset_index(drop=True))
    frame = pd.concat([split.train, split.holdout])
    refit = fit(frame, HOLDOUT_FRACTION)
    logged = maintained["training"].data.metrics
    assert refit.holdout_metrics, "no holdout metrics"
    for name, value in refit.holdout_metrics.items():
        assert value == pytest.approx(logged[name], rel=1e-12, abs=1e-12), name


def test_what_maintenance_did_is_in_mlflow(maintained):
    run = maintained["maintenance_run"]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in maintained["tables"]:
        assert metrics[f"{name}.before.snapshots"] == 1 + len(DAYS) + RERUNS
        assert metrics[f"{name}.after.snapshots"] == (2 if name == FEATURES else 1)
        assert f"{name}.after.data_bytes" in metrics and f"{name}.deleted_data_files" in metrics
    assert metrics["tables_failed"] == 0 and metrics["lineage.tags_written"] == 1
