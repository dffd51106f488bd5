"""Schema changes of the RAW delivery (issue 16, item 3), through the real raw_to_bronze stage.

Real local Spark and Iceberg (the unit catalog), Parquet deliveries written with pyarrow; a
recording tracker in place of MLflow. Dates are this module's own (other modules share the tables).
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs import contract
from jobs.lakehouse.schema_changes import ColumnSchema, SchemaChange, compare
from jobs.lakehouse.tables import partition_rows
from jobs.lakehouse.tracking import NullTracker, RunContext
from jobs.quality.rules import QualityGateFailed
from jobs.stages import raw_to_bronze
from jobs.synthetic import raw_ticks as gen

# After every other module's dates (2026-11-*): nothing later is compared with them.
FIRST, SECOND, THIRD = dt.date(2027, 3, 2), dt.date(2027, 3, 3), dt.date(2027, 3, 4)
TICKS = 500


def test_renames_retypes_removals_and_additions_are_told_apart():
    before = {"bid": ColumnSchema("bid", "double"), "last": ColumnSchema("last", "double"),
              "strike": ColumnSchema("strike", "double"), "venue": ColumnSchema("venue", None)}
    now = {"bid": ColumnSchema("bid_price", "double"), "last": ColumnSchema("last", "string"),
           "venue": ColumnSchema("venue", None), "source": ColumnSchema("source", "string")}
    assert [str(ch) for ch in compare(before, now)] == [
        "renamed bid -> bid_price (bid)", "retyped last double -> string", "removed strike", "added source"]
    # Text formats carry no types: a column delivered by CSV after Parquet is not "retyped".
    assert compare({"bid": ColumnSchema("bid", "double")}, {"bid": ColumnSchema("bid", None)}) == []
    assert compare(before, before) == []
    assert compare({}, now)[0] == SchemaChange("added", "bid", None, "bid_price")


class Recorder(NullTracker):
    pass


def deliver(settings, day, change=lambda t: t):
    gen.write_raw(change(gen.generate_ticks(day, TICKS)), settings.raw_ticks_path, day)


def changed(table: pa.Table) -> pa.Table:
    """The vendor renames bid, drops strike, adds venue and sends last_size as text."""
    table = table.rename_columns(["bid_price" if n == "bid" else n for n in table.column_names])
    table = table.drop(["strike"]).append_column("venue", pa.array(["KRX"] * table.num_rows))
    i = table.column_names.index("last_size")
    return table.set_column(i, "last_size", pc.cast(table.column("last_size"), pa.string()))


def run(spark, settings, day) -> Recorder:
    rec = Recorder()
    raw_to_bronze.run(spark, settings, RunContext(stage=contract.RAW_TO_BRONZE, trade_date=day), rec)
    return rec


def events(spark, settings, day) -> list[tuple]:
    rows = spark.table(settings.table(contract.SCHEMA_EVENTS)).where(f"trade_date = DATE'{day}'").collect()
    return sorted((r["change"], r["column_key"], r["old_value"], r["new_value"], r["previous_date"]) for r in rows)


@pytest.fixture(scope="module")
def warned(spark, settings):
    deliver(settings, FIRST)
    first = run(spark, settings, FIRST)
    deliver(settings, SECOND, changed)
    return first, run(spark, settings, SECOND)


def test_the_first_date_has_nothing_to_compare_and_passes(warned):
    first, _ = warned
    assert first.logged_tags["quality_gate.schema"] == "passed" and first.logged_metrics["schema.changes"] == 0


def test_a_changed_delivery_is_recorded_warned_and_still_published(spark, settings, warned):
    _, second = warned
    assert events(spark, settings, SECOND) == [
        ("added", "venue", None, "venue", FIRST), ("removed", "strike", "strike", None, FIRST),
        ("renamed", "bid", "bid", "bid_price", FIRST), ("retyped", "last_size", "int", "string", FIRST)]
    assert second.logged_tags["quality_gate.schema"] == "warned"
    assert second.logged_metrics["schema.changes"] == 4
    assert "renamed bid -> bid_price (bid)" in second.logged_tags["schema.changes"]
    assert partition_rows(spark, settings.table(contract.BRONZE), SECOND) == TICKS


def test_a_rerun_with_the_usual_delivery_takes_its_events_back(spark, settings, warned):
    deliver(settings, SECOND)  # the vendor re-sends the date as before
    rerun = run(spark, settings, SECOND)
    assert rerun.logged_tags["quality_gate.schema"] == "passed" and events(spark, settings, SECOND) == []


def test_on_change_fail_stops_before_bronze_and_names_the_changes(spark, settings, warned, tmp_path, monkeypatch):
    from jobs.quality.rules import DEFAULT_RULES_FILE

    rules = tmp_path / "gates.toml"
    rules.write_text(DEFAULT_RULES_FILE.read_text().replace('on_change = "warn"', 'on_change = "fail"'))
    monkeypatch.setenv("QUALITY_GATES_FILE", str(rules))
    from jobs.lakehouse.settings import Settings

    strict = Settings.from_env()
    deliver(settings, THIRD, changed)
    rec = Recorder()
    with pytest.raises(QualityGateFailed, match=f"RAW schema of {THIRD} changed since {SECOND}: renamed bid"):
        raw_to_bronze.run(spark, strict, RunContext(stage=contract.RAW_TO_BRONZE, trade_date=THIRD), rec)
    assert rec.logged_tags["quality_gate.schema"] == "failed"
    assert not spark.sql(f"SELECT 1 FROM {settings.table(contract.BRONZE)} WHERE trade_date = DATE'{THIRD}'").collect()
    assert len(events(spark, settings, THIRD)) == 4
