"""Schema changes of the RAW delivery: each date's delivered columns against the last accepted date's.

``raw_to_bronze`` reads every file with the vendor's own column names; ``map_columns`` maps them
onto ours (renames, extras). What a team wants to hear about is the *change*: a column that
appears, disappears, arrives under another name, or changes type. Each column is keyed by the
canonical name it maps to (an unknown column by its own name), so a vendor renaming ``bid_price``
to ``bid`` is a rename, not a removal plus an addition. Types are compared only where both dates
deliver the column in a typed format (Parquet): CSV and JSON lines carry every value as text.

The date's schema is kept in ``raw_schemas`` once Bronze is published (that is what "accepted"
means); its changes go to ``schema_events`` (both partitioned by trade date, overwritten on a
rerun), onto the stage run (``schema.*``) and into the verdict ``quality_gate.schema``:
the rules file's ``[schema] on_change`` = ``warn`` (default: recorded, the date's health is a
warning), ``fail`` (the date stops before Bronze, one alert) or ``off``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jobs import contract as c

ADDED, REMOVED, RENAMED, RETYPED = "added", "removed", "renamed", "retyped"
LEVELS = ("off", "warn", "fail")
SCHEMA_COLUMNS = "trade_date DATE, column_key STRING, delivered_names STRING, data_types STRING, recorded_at TIMESTAMP"
EVENT_COLUMNS = ("trade_date DATE, change STRING, column_key STRING, old_value STRING, new_value STRING, "
                 "previous_date DATE, level STRING, detected_at TIMESTAMP")


@dataclass(frozen=True)
class ColumnSchema:
    names: str          # the delivered name(s), "|"-joined when files of the date disagree
    types: str | None   # Parquet types, "|"-joined; None when only text formats carried it


@dataclass(frozen=True)
class SchemaChange:
    change: str
    column: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        if self.change == ADDED:
            return f"added {self.new}"
        if self.change == REMOVED:
            return f"removed {self.old}"
        if self.change == RENAMED:
            return f"renamed {self.old} -> {self.new} ({self.column})"
        return f"retyped {self.column} {self.old} -> {self.new}"


def delivered_schema(files: Iterable) -> dict[str, ColumnSchema]:
    """Column key -> delivered names and Parquet types, over the date's loaded files (raw_files.LoadedFile)."""
    names: dict[str, set[str]] = {}
    types: dict[str, set[str]] = {}
    for f in files:
        for name, kind in f.delivered:
            key = f.mapping.renames.get(name, name)
            names.setdefault(key, set()).add(name)
            if f.format == "parquet":
                types.setdefault(key, set()).add(kind)
    return {k: ColumnSchema("|".join(sorted(v)), "|".join(sorted(types[k])) if k in types else None)
            for k, v in sorted(names.items())}


def compare(previous: Mapping[str, ColumnSchema], current: Mapping[str, ColumnSchema]) -> list[SchemaChange]:
    changes = [SchemaChange(REMOVED, k, previous[k].names, None) for k in previous if k not in current]
    changes += [SchemaChange(ADDED, k, None, current[k].names) for k in current if k not in previous]
    for key in sorted(set(previous) & set(current)):
        before, now = previous[key], current[key]
        if before.names != now.names:
            changes.append(SchemaChange(RENAMED, key, before.names, now.names))
        if before.types and now.types and before.types != now.types:
            changes.append(SchemaChange(RETYPED, key, before.types, now.types))
    order = {RENAMED: 0, RETYPED: 1, REMOVED: 2, ADDED: 3}
    return sorted(changes, key=lambda ch: (order[ch.change], ch.column))


def level(rules: Mapping) -> str:
    value = str(rules.get("on_change", "warn")).lower()
    if value not in LEVELS:
        raise ValueError(f"[schema] on_change = {value!r}: choose one of {', '.join(LEVELS)}")
    return value


def previous_schema(spark, settings, trade_date: dt.date) -> tuple[dt.date | None, dict[str, ColumnSchema]]:
    """The schema of the latest accepted date before ``trade_date`` (none before the first)."""
    table = settings.table(c.RAW_SCHEMAS)
    if not spark.catalog.tableExists(table):
        return None, {}
    rows = spark.sql(f"SELECT * FROM {table} WHERE trade_date = (SELECT max(trade_date) FROM {table} "
                     f"WHERE trade_date < DATE'{trade_date.isoformat()}')").collect()
    if not rows:
        return None, {}
    return rows[0]["trade_date"], {r["column_key"]: ColumnSchema(r["delivered_names"], r["data_types"]) for r in rows}


def _overwrite_date(spark, table: str, ddl: str, rows: list[tuple], trade_date: dt.date) -> None:
    from pyspark.sql import functions as F

    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({ddl}) USING iceberg PARTITIONED BY (trade_date)")
    spark.createDataFrame(rows, schema=ddl).writeTo(table).overwrite(F.col("trade_date") == F.lit(trade_date))


def record_events(spark, settings, trade_date: dt.date, changes: list[SchemaChange], previous_date, how: str) -> None:
    """This date's events, replacing those of an earlier run of the date; no commit when there is
    nothing to add or to take back."""
    table = settings.table(c.SCHEMA_EVENTS)
    day = trade_date.isoformat()
    if not changes and (not spark.catalog.tableExists(table)
                        or not spark.sql(f"SELECT 1 FROM {table} WHERE trade_date = DATE'{day}' LIMIT 1").collect()):
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [(trade_date, ch.change, ch.column, ch.old, ch.new, previous_date, how, now) for ch in changes]
    _overwrite_date(spark, table, EVENT_COLUMNS, rows, trade_date)


def judge(spark, settings, tracker, trade_date: dt.date, schema: Mapping[str, ColumnSchema]) -> list[SchemaChange]:
    """Compare, record, and pass, warn or stop (QualityGateFailed) as ``[schema] on_change`` says."""
    import sys

    from jobs.quality.rules import QualityGateFailed

    gate = f"{c.TAG_QUALITY_GATE}.schema"
    how = "off" if settings.quality_gates == "off" else level(settings.quality_rules("schema"))
    if how == "fail" and settings.quality_gates == "warn":
        how = "warn"
    if how == "off":
        tracker.tags({gate: "off"})
        return []
    previous_date, previous = previous_schema(spark, settings, trade_date)
    changes = compare(previous, schema) if previous_date else []
    record_events(spark, settings, trade_date, changes, previous_date, how)
    tracker.metrics({"schema.changes": len(changes)})
    if previous_date:
        tracker.tags({"schema.compared_with": previous_date.isoformat()})
    if not changes:
        tracker.tags({gate: "passed"})
        return changes
    message = f"RAW schema of {trade_date} changed since {previous_date}: " + "; ".join(map(str, changes))
    tracker.tags({"schema.changes": message[:4900], gate: "warned" if how == "warn" else "failed"})
    if how == "warn":
        print(f"WARNING {message}", file=sys.stderr)
        return changes
    raise QualityGateFailed(message)


def accept(spark, settings, trade_date: dt.date, schema: Mapping[str, ColumnSchema]) -> None:
    """Keep the date's schema as the one later dates are compared with (after Bronze is published)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [(trade_date, k, v.names, v.types, now) for k, v in schema.items()]
    _overwrite_date(spark, settings.table(c.RAW_SCHEMAS), SCHEMA_COLUMNS, rows, trade_date)
