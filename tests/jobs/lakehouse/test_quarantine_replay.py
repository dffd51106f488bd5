"""Replaying quarantine after a rule change (issue 16, item 7), through the real stages.

Real local Spark and Iceberg (the unit catalog, this module's own namespace), the real
raw_to_bronze and bronze_to_silver, then jobs.ops.replay_quarantine's CLI. MLflow is off
(LAKEHOUSE_TRACKING=off): each replayed date still leaves its stage_runs row. The delivery holds
ticks of an underlying the rules do not list yet (KOSDAQ150); listing it and replaying publishes them.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs import contract
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.tables import current_snapshot, partition_rows
from jobs.ops import replay_quarantine
from jobs.stages import bronze_to_silver, raw_to_bronze
from jobs.synthetic import raw_ticks as gen

NAMESPACE = "replay_unit"
DAY = dt.date(2026, 5, 12)  # a Tuesday in the past (Silver rejects ticks later than their ingestion)
TICKS, OTHER = 2000, 120  # the first 120 ticks are re-labelled as KOSDAQ150 contracts


def with_other_underlying(table: pa.Table) -> pa.Table:
    ids = table.column("contract_id").to_pylist()
    ids = [i.replace("KOSPI200-", "KOSDAQ150-", 1) if n < OTHER and i else i for n, i in enumerate(ids)]
    under = ["KOSDAQ150" if n < OTHER else u for n, u in enumerate(table.column("underlying").to_pylist())]
    table = table.set_column(table.column_names.index("contract_id"), "contract_id", pa.array(ids))
    return table.set_column(table.column_names.index("underlying"), "underlying", pa.array(under))


def argv(stage):
    return ["--trade-date", DAY.isoformat(), "--dag-id", contract.ML_PIPELINE, "--run-id", f"scheduled__{DAY}",
            "--task-id", stage, "--try-number", "1"]


def t(settings, name):
    return f"{settings.catalog}.{NAMESPACE}.{name}"


def counts(spark, settings):
    return {name: partition_rows(spark, t(settings, name), DAY) for name in (contract.BRONZE, contract.SILVER,
                                                                          contract.QUARANTINE)}


@pytest.fixture(scope="module")
def env(spark, settings):
    mp = pytest.MonkeyPatch()
    mp.setenv("LAKEHOUSE_TRACKING", "off")
    mp.setenv("DEPENDENCY_PREFLIGHT", "off")
    mp.setenv("ICEBERG_NAMESPACE", NAMESPACE)
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.{NAMESPACE}")
    table = with_other_underlying(gen.generate_ticks(DAY, TICKS, bad_share=0.0))
    gen.write_raw(table, settings.raw_ticks_path, DAY)
    assert pc.sum(pc.equal(table.column("underlying"), "KOSDAQ150")).as_py() == OTHER
    assert stage_cli(contract.RAW_TO_BRONZE, raw_to_bronze.run, argv=argv(contract.RAW_TO_BRONZE)) == 0
    mp.setenv("QUALITY_GATES", "warn")  # 6 % rejected is over max_rejected_share; the gate is not the point here
    assert stage_cli(contract.BRONZE_TO_SILVER, bronze_to_silver.run, argv=argv(contract.BRONZE_TO_SILVER)) == 0
    yield mp
    mp.undo()


def unknown_contract_rows(spark, settings) -> int:
    return spark.table(t(settings, contract.QUARANTINE)).where(
        f"trade_date = DATE'{DAY}' AND reject_reason = 'unknown_contract'").count()


def test_listing_the_underlying_and_replaying_publishes_its_rows_once(spark, settings, env, capsys):
    before, unknown = counts(spark, settings), unknown_contract_rows(spark, settings)
    assert unknown >= OTHER
    env.setenv("KNOWN_UNDERLYINGS", "KOSPI200,KOSDAQ150")
    dry = replay_quarantine.main(["--from", str(DAY), "--to", str(DAY), "--dry-run"])
    assert dry == 0 and counts(spark, settings) == before  # a dry run writes nothing
    assert f"would publish {OTHER} rows" in capsys.readouterr().out

    assert replay_quarantine.main(["--from", str(DAY - dt.timedelta(days=2)), "--to", str(DAY)]) == 0
    out = capsys.readouterr().out
    after = counts(spark, settings)
    assert after[contract.SILVER] == before[contract.SILVER] + OTHER
    assert after[contract.QUARANTINE] == before[contract.QUARANTINE] - OTHER
    assert after[contract.BRONZE] == after[contract.SILVER] + after[contract.QUARANTINE]  # nothing lost
    assert unknown_contract_rows(spark, settings) == unknown - OTHER
    # Sunday 05-10 is no trade date; Monday 05-11 has nothing in Bronze and moves nothing.
    assert f"2 dates checked, published {OTHER} rows" in out
    assert f"make backfill FROM={DAY} TO={DAY}" in out

    [row] = spark.table(t(settings, contract.STAGE_RUNS)).where(
        f"stage = '{contract.QUARANTINE_REPLAY}' AND state = 'success' AND rows_out = {after[contract.SILVER]}"
    ).collect()
    assert (row["rows_in"], row["rows_rejected"]) == (after[contract.BRONZE], after[contract.QUARANTINE])


def test_a_second_replay_commits_nothing(spark, settings, env, capsys):
    env.setenv("KNOWN_UNDERLYINGS", "KOSPI200,KOSDAQ150")
    snaps = {n: current_snapshot(spark, t(settings, n)).snapshot_id for n in (contract.SILVER, contract.QUARANTINE)}
    assert replay_quarantine.main(["--from", str(DAY), "--to", str(DAY)]) == 0
    assert "published 0 rows" in capsys.readouterr().out
    assert {n: current_snapshot(spark, t(settings, n)).snapshot_id for n in snaps} == snaps


def test_stricter_rules_are_refused_and_write_nothing(spark, settings, env, capsys):
    env.setenv("KNOWN_UNDERLYINGS", "KOSDAQ150")  # would withdraw every KOSPI200 row
    before = counts(spark, settings)
    assert replay_quarantine.main(["--from", str(DAY), "--to", str(DAY)]) == 1
    assert f"failed: {DAY}" in capsys.readouterr().out
    assert counts(spark, settings) == before
    refused = spark.table(t(settings, contract.STAGE_RUNS)).where(
        f"stage = '{contract.QUARANTINE_REPLAY}' AND state = 'failed'").collect()
    assert refused and "ReplayRefused" in refused[-1]["error"] and "--allow-withdraw" in refused[-1]["error"]
