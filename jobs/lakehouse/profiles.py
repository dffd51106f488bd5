"""Column profiles of what a stage published: one row per table, date and column in ``column_profiles``.

Counts, nulls, a distinct estimate, min and max for every atomic column, and for numeric ones the
mean and five quantiles, computed in one Spark aggregation over the frame the stage just wrote
(Silver, Gold, features). Stored next to the data, partitioned by trade date and table, so the
questions are SQL ("when did spread_rel's p95 move", "which column started to be null"), and
written with one overwrite of that (date, table) partition, so a rerun replaces its profile.
``LAKEHOUSE_FACTS=off`` switches it off with the stage_runs rows.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from contextlib import contextmanager

from jobs import contract as c
from jobs.lakehouse.facts import facts_enabled

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_COLUMNS = ("p05", "p25", "p50", "p75", "p95")
ACCURACY = 1000  # percentile_approx: relative error about 1/1000 of the rows
PROFILE_COLUMNS = (
    ("trade_date", "DATE"),
    ("table_name", "STRING"),
    ("column_name", "STRING"),
    ("data_type", "STRING"),
    ("rows", "BIGINT"),
    ("nulls", "BIGINT"),
    ("distinct_estimate", "BIGINT"),
    ("min_value", "STRING"),
    ("max_value", "STRING"),
    ("mean", "DOUBLE"),
    *((name, "DOUBLE") for name in QUANTILE_COLUMNS),
    ("profiled_at", "TIMESTAMP"),
)
PROFILE_NAMES = tuple(name for name, _ in PROFILE_COLUMNS)
_NUMERIC = ("ByteType", "ShortType", "IntegerType", "LongType", "FloatType", "DoubleType", "DecimalType")
_ATOMIC = (*_NUMERIC, "StringType", "BooleanType", "DateType", "TimestampType", "TimestampNTZType")


def profile_rows(df, table: str, trade_date: dt.date) -> list[tuple]:
    """The profile of ``df`` (one date of ``table``) as rows in PROFILE_COLUMNS order."""
    from pyspark.sql import functions as F

    columns = [(f.name, type(f.dataType).__name__, f.dataType.simpleString()) for f in df.schema.fields
               if type(f.dataType).__name__ in _ATOMIC]
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for i, (name, kind, _) in enumerate(columns):
        col = F.col(f"`{name}`")
        aggs += [F.count(col).alias(f"n{i}"), F.approx_count_distinct(col).alias(f"d{i}"),
                 F.min(col).cast("string").alias(f"lo{i}"), F.max(col).cast("string").alias(f"hi{i}")]
        if kind in _NUMERIC:
            as_double = col.cast("double")
            aggs += [F.avg(as_double).alias(f"m{i}"),
                     F.percentile_approx(as_double, list(QUANTILES), ACCURACY).alias(f"q{i}")]
    got = df.agg(*aggs).first().asDict()
    rows = int(got["__rows"])
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = []
    for i, (name, _kind, type_name) in enumerate(columns):
        quantiles = got.get(f"q{i}") or [None] * len(QUANTILES)
        out.append((trade_date, table, name, type_name, rows, rows - int(got[f"n{i}"]), int(got[f"d{i}"]),
                    got[f"lo{i}"], got[f"hi{i}"], got.get(f"m{i}"), *quantiles, now))
    return out


def null_shares(rows: list[tuple]) -> dict[str, float]:
    """``null_share.<column>`` of a profile (the anomaly check watches them)."""
    name, total, nulls = (PROFILE_NAMES.index(k) for k in ("column_name", "rows", "nulls"))
    return {f"null_share.{r[name]}": (r[nulls] / r[total] if r[total] else 0.0) for r in rows}


def publish_profile(spark, settings, rows: list[tuple], layer_table: str, trade_date: dt.date) -> None:
    """Replace the (date, table) profile in ``column_profiles``."""
    from pyspark.sql import functions as F

    target = settings.table(c.COLUMN_PROFILES)
    ddl = ", ".join(f"{name} {kind}" for name, kind in PROFILE_COLUMNS)
    spark.sql(f"CREATE TABLE IF NOT EXISTS {target} ({ddl}) USING iceberg PARTITIONED BY (trade_date, table_name)")
    frame = spark.createDataFrame(rows, schema=ddl)
    frame.writeTo(target).overwrite((F.col("trade_date") == F.lit(trade_date)) & (F.col("table_name") == layer_table))


def profile_and_publish(spark, settings, df, layer_table: str, trade_date: dt.date) -> int:
    """Profile ``df`` and replace the (date, table) profile; the number of columns, 0 with the facts off."""
    if not facts_enabled():
        return 0
    rows = profile_rows(df, layer_table, trade_date)
    publish_profile(spark, settings, rows, layer_table, trade_date)
    return len(rows)


@contextmanager
def watched_publish(spark, settings, tracker, ctx, df, layer: str, figures: Mapping[str, float] | None = None):
    """Profile ``df`` before it is published, check the anomalies, then let the caller publish it.

    A fail-level anomaly raises before the body runs (nothing published); once the body has
    published, the profile replaces the date's profile of ``layer``. ``df`` should be cached.
    """
    from jobs.lakehouse.anomalies import check_anomalies

    rows: list[tuple] = []
    if facts_enabled():
        try:
            rows = profile_rows(df, layer, ctx.trade_date)
        except Exception as exc:  # monitoring never fails a stage
            print(f"column profile of {layer} not computed: {type(exc).__name__}: {exc}", file=sys.stderr)
    check_anomalies(spark, settings, tracker, ctx, {**null_shares(rows), **(figures or {})})
    yield
    if not rows:
        return
    try:
        publish_profile(spark, settings, rows, layer, ctx.trade_date)
        tracker.metrics({"profiled_columns": len(rows)})
    except Exception as exc:  # monitoring never fails a stage
        print(f"column profile of {layer} not recorded: {type(exc).__name__}: {exc}", file=sys.stderr)
