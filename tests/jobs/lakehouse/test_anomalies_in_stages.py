"""Anomalies against history (issue 16, item 2), through the real stages and the stage_runs table.

Real local Spark and Iceberg (the unit catalog, this module's own namespace, so other modules'
dates are not its history), the real stage_cli of raw_to_bronze and bronze_to_silver, real
Parquet deliveries. MLflow is off (LAKEHOUSE_TRACKING=off): each try's figures reach stage_runs
from what it reported to its tracker, as they do from MLflow on the stack, and the next date learns
from them. Planted: five normal dates, then a slow drop in volume (-4.5 % a day), then a burst of
nulls under the fixed null-share gate, then a volume drop at the fail level.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from jobs import contract
from jobs.lakehouse.cli import stage_cli
from jobs.lakehouse.tables import partition_rows
from jobs.quality.rules import DEFAULT_RULES_FILE
from jobs.report import health
from jobs.stages import bronze_to_silver, raw_to_bronze
from jobs.synthetic import raw_ticks as gen

NAMESPACE = "anomaly_unit"
# Consecutive KRX trading days (in the past: Silver rejects ticks later than their ingestion).
DAYS = [dt.date(2026, 4, d) for d in (6, 7, 8, 9, 10, 13, 14, 15, 16, 17)]
NORMAL = dict(zip(DAYS[:5], (2000, 2030, 1980, 2010, 1990), strict=True))
DROP = dict(zip(DAYS[5:8], (1910, 1820, 1730), strict=True))  # 4.5 % less each day
BURST, FAIL = DAYS[8], DAYS[9]
NULLS = 14  # of 2000 rows: 0.7 % null underlying_price, under silver.max_null_share 1 %


def with_nulls(table: pa.Table, n: int) -> pa.Table:
    i = table.column_names.index("underlying_price")
    values = table.column("underlying_price").to_pylist()
    return table.set_column(i, "underlying_price", pa.array([None] * n + values[n:], pa.float64()))


def argv(day: dt.date, stage: str) -> list[str]:
    return ["--trade-date", day.isoformat(), "--dag-id", contract.ML_PIPELINE, "--run-id", f"scheduled__{day}",
            "--task-id", stage, "--try-number", "1"]


@pytest.fixture(scope="module")
def nights(spark, settings, tmp_path_factory):
    """Every planted date through both stages, in calendar order; the exit codes per date."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAKEHOUSE_TRACKING", "off")
    mp.setenv("DEPENDENCY_PREFLIGHT", "off")
    mp.setenv("ICEBERG_NAMESPACE", NAMESPACE)
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.{NAMESPACE}")
    fail_rules = tmp_path_factory.mktemp("rules") / "quality_gates.toml"
    fail_rules.write_text(DEFAULT_RULES_FILE.read_text().replace(
        "[anomalies.volume]", '[anomalies.volume]\non_anomaly = "fail"', 1))
    codes = {}
    try:
        for day in DAYS:
            ticks = {**NORMAL, **DROP}.get(day, 2000 if day == BURST else 1000)
            table = gen.generate_ticks(day, ticks, bad_share=0.0)
            gen.write_raw(with_nulls(table, NULLS) if day == BURST else table, settings.raw_ticks_path, day)
            if day == FAIL:
                mp.setenv("QUALITY_GATES_FILE", str(fail_rules))
            codes[day] = (stage_cli(contract.RAW_TO_BRONZE, raw_to_bronze.run, argv=argv(day, contract.RAW_TO_BRONZE)),
                          stage_cli(contract.BRONZE_TO_SILVER, bronze_to_silver.run,
                                    argv=argv(day, contract.BRONZE_TO_SILVER)) if day != FAIL else None)
        yield codes
    finally:
        mp.undo()


def table(spark, settings, name):
    return f"{settings.catalog}.{NAMESPACE}.{name}"


def checks(spark, settings, day, stage) -> dict[str, dict]:
    rows = spark.table(table(spark, settings, contract.ANOMALY_CHECKS)) \
        .where(f"trade_date = DATE'{day}' AND stage = '{stage}'").collect()
    return {r["figure"]: r.asDict() for r in rows}


def stage_run(spark, settings, day, stage) -> dict:
    [row] = spark.table(table(spark, settings, contract.STAGE_RUNS)) \
        .where(f"trade_date = DATE'{day}' AND stage = '{stage}'").collect()
    return row.asDict(recursive=True)


def test_the_first_dates_learn_and_pass(spark, settings, nights):
    assert all(nights[d] == (0, 0) for d in NORMAL)
    first = checks(spark, settings, DAYS[0], contract.RAW_TO_BRONZE)["volume"]
    assert (first["level"], first["history_dates"], first["baseline_median"]) == ("learning", 0, None)
    # Every try keeps its watched figures in stage_runs: the next dates' history.
    assert stage_run(spark, settings, DAYS[0], contract.RAW_TO_BRONZE)["figures"]["volume"] == 2000
    assert stage_run(spark, settings, DAYS[4], contract.RAW_TO_BRONZE)["gates"]["anomaly"] == "learning"


def test_a_slow_volume_drop_is_flagged_once_it_leaves_the_baseline(spark, settings, nights):
    levels = {d: checks(spark, settings, d, contract.RAW_TO_BRONZE)["volume"]["level"] for d in DROP}
    assert list(levels.values()) == ["ok", "warn", "warn"]
    assert all(nights[d] == (0, 0) for d in DROP)  # a warning publishes
    second = checks(spark, settings, DAYS[6], contract.RAW_TO_BRONZE)["volume"]
    assert second["history_dates"] == 6 and second["robust_z"] < -4
    assert "volume = 1,820 is 4.4 robust z below its baseline 1,995 (median of 6 earlier dates" in second["explanation"]
    row = stage_run(spark, settings, DAYS[6], contract.RAW_TO_BRONZE)
    assert row["gates"]["anomaly"] == "warned" and row["gates"]["bronze"] == "passed"  # the fixed gate saw nothing
    assert partition_rows(spark, table(spark, settings, contract.BRONZE), DAYS[6]) == 1820
    verdict = health.judge_facts([row])
    assert verdict == {"verdict": "warning", "reasons": ["anomaly in raw_to_bronze warned"]}


def test_a_null_burst_under_the_fixed_gate_is_flagged(spark, settings, nights):
    assert nights[BURST] == (0, 0)
    got = checks(spark, settings, BURST, contract.BRONZE_TO_SILVER)
    burst = got["null_share.underlying_price"]
    assert burst["level"] == "warn" and burst["value"] == pytest.approx(NULLS / 2000)
    assert [f for f, r in got.items() if r["level"] != "ok"] == ["null_share.underlying_price"]
    assert {"reject_share.crossed_quote", "null_share.spread", "null_share.mid"} <= set(got)
    row = stage_run(spark, settings, BURST, contract.BRONZE_TO_SILVER)
    assert row["gates"] == {"silver": "passed", "anomaly": "warned"}
    assert checks(spark, settings, BURST, contract.RAW_TO_BRONZE)["volume"]["level"] == "ok"


def test_a_fail_level_anomaly_publishes_nothing_and_fails_once(spark, settings, nights):
    assert nights[FAIL][0] == contract.EXIT_DETERMINISTIC  # no retries: the same data fails the same way
    assert partition_rows(spark, table(spark, settings, contract.BRONZE), FAIL) == 0
    row = stage_run(spark, settings, FAIL, contract.RAW_TO_BRONZE)
    assert row["state"] == "failed" and row["gates"]["anomaly"] == "failed"
    assert "AnomalyDetected" in row["error"]
    assert "anomaly in raw_to_bronze for 2026-04-17, nothing published" in row["error"]
    assert checks(spark, settings, FAIL, contract.RAW_TO_BRONZE)["volume"]["level"] == "fail"


def test_the_readme_query_lists_the_anomalies(spark, settings, nights):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("**Anomalies against history.**", 1)[1]
    query = re.search(r"```sql\n(.*?);?\n```", section, re.S).group(1)
    query = query.replace("hive_prod.option_ticks_db.anomaly_checks", table(spark, settings, contract.ANOMALY_CHECKS))
    rows = spark.sql(query.replace("current_date", "DATE'2026-04-20'")).collect()  # the clock of the planted dates
    assert [(r["trade_date"], r["figure"], r["level"]) for r in rows] == [
        (FAIL, "volume", "fail"), (BURST, "null_share.underlying_price", "warn"),
        (DAYS[7], "volume", "warn"), (DAYS[6], "volume", "warn")]
