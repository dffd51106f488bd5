"""A stage's anomaly check: its watched figures against their history in ``stage_runs``.

Each stage names the figures it watches (``jobs.quality.anomalies`` families: volume, freshness,
null share per column, reject share per reason). They are logged as ``watch.<figure>`` metrics, so
the try's ``stage_runs`` row keeps them in ``figures`` and tomorrow's check learns from them. The
findings go to the run (``quality_gate.anomaly`` tag, one ``anomaly.<figure>`` tag explaining each
anomaly), to the ``anomaly_checks`` table (one row per figure judged, replaced by a rerun) and,
through the tag, to the stage_runs row, the health verdict and the morning report. A ``fail``-level
anomaly stops the layer before it is published (deterministic: one alert, no retries).

Needs the facts tables (``LAKEHOUSE_FACTS``) and gates that are not off; ``QUALITY_GATES=warn``
turns a failing anomaly into a warning like any gate.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from dataclasses import replace

from jobs import contract as c
from jobs.lakehouse.facts import SUCCESS, WATCH_PREFIX, facts_enabled
from jobs.quality import anomalies as a
from jobs.quality.rules import QualityGateFailed

TAG = f"{c.TAG_QUALITY_GATE}.{c.ANOMALY_GATE}"
CHECK_COLUMNS = (
    ("trade_date", "DATE"),
    ("stage", "STRING"),
    ("figure", "STRING"),
    ("value", "DOUBLE"),
    ("level", "STRING"),
    ("baseline_median", "DOUBLE"),
    ("baseline_spread", "DOUBLE"),
    ("robust_z", "DOUBLE"),
    ("history_dates", "INT"),
    ("same_weekday", "BOOLEAN"),
    ("explanation", "STRING"),
    ("dag_id", "STRING"),
    ("run_id", "STRING"),
    ("try_number", "INT"),
    ("checked_at", "TIMESTAMP"),
)


class AnomalyDetected(QualityGateFailed):
    """A watched figure left its baseline at the ``fail`` level: the layer was not published."""


def watched_history(spark, settings, stage: str, trade_date: dt.date, lookback: int) -> dict[dt.date, dict]:
    """Per earlier date, the watched figures of the stage's latest successful try (any DAG run)."""
    table = settings.table(c.STAGE_RUNS)
    if not spark.catalog.tableExists(table):
        return {}
    from pyspark.sql import functions as F

    rows = (spark.table(table)
            .where((F.col("stage") == stage) & (F.col("state") == SUCCESS) & (F.col("trade_date") < F.lit(trade_date)))
            .select("trade_date", "ended_at", "figures").collect())
    latest: dict[dt.date, tuple] = {}
    for row in rows:
        if row["trade_date"] not in latest or row["ended_at"] > latest[row["trade_date"]][0]:
            latest[row["trade_date"]] = (row["ended_at"], dict(row["figures"] or {}))
    recent = sorted(latest, reverse=True)[: lookback]
    return {d: {k: v for k, v in latest[d][1].items() if a.family(k)} for d in recent}


def check_rows(ctx, findings: list[a.Finding]) -> list[tuple]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = []
    for f in findings:
        b = f.baseline
        out.append((ctx.trade_date, ctx.stage, f.figure, f.value, f.level,
                    b.median if b else None, b.spread if b else None, f.robust_z, f.history_dates,
                    b.same_weekday if b else None, f.explain(ctx.trade_date), ctx.dag_id, ctx.run_id,
                    ctx.try_number, now))
    return out


def write_checks(spark, settings, ctx, findings: list[a.Finding]) -> None:
    """Replace the (date, stage) rows of ``anomaly_checks``: a rerun's checks are the date's checks."""
    from pyspark.sql import functions as F

    target = settings.table(c.ANOMALY_CHECKS)
    ddl = ", ".join(f"{name} {kind}" for name, kind in CHECK_COLUMNS)
    spark.sql(f"CREATE TABLE IF NOT EXISTS {target} ({ddl}) USING iceberg PARTITIONED BY (trade_date)")
    frame = spark.createDataFrame(check_rows(ctx, findings), schema=ddl)
    frame.writeTo(target).overwrite((F.col("trade_date") == F.lit(ctx.trade_date)) & (F.col("stage") == ctx.stage))


def check_anomalies(spark, settings, tracker, ctx, figures: Mapping[str, float | None]) -> list[a.Finding]:
    """Log the watched figures, judge them against history, record the findings; raise on a fail."""
    figures = {k: float(v) for k, v in figures.items() if v is not None}
    tracker.metrics({WATCH_PREFIX + k: v for k, v in figures.items()})
    rules = settings.quality_rules("anomalies")
    if settings.quality_gates == "off" or not facts_enabled() or spark is None:
        return []
    if all(a.family_rules(rules, name)["on_anomaly"] == "off" for name in a.FAMILIES):
        tracker.tags({TAG: "off"})
        return []
    try:
        lookback = int(a.family_rules(rules, a.VOLUME)["lookback_dates"])
        history = watched_history(spark, settings, ctx.stage, ctx.trade_date, lookback)
    except Exception as exc:  # no history, no judgement: said on the run, never a failed stage
        print(f"anomaly history not read from {c.STAGE_RUNS}: {type(exc).__name__}: {exc}", file=sys.stderr)
        tracker.tags({TAG: "unknown"})
        return []
    findings = a.judge(figures, history, ctx.trade_date, rules)
    if settings.quality_gates == "warn":  # gates only warn: so do anomalies
        findings = [replace(f, level="warn") if f.level == "fail" else f for f in findings]
    anomalous = [f for f in findings if f.anomalous]
    verdict = a.verdict(findings)
    tracker.tags({TAG: verdict, **{c.TAG_ANOMALY_PREFIX + f.figure: f"{f.level}: {f.explain(ctx.trade_date)}"[:4900]
                                   for f in anomalous}})
    tracker.metrics({"anomalies": len(anomalous),
                     **{f"anomaly_z.{f.figure}": f.robust_z for f in anomalous if f.robust_z is not None}})
    for f in anomalous:
        print(f"{'ERROR' if f.level == 'fail' else 'WARNING'} anomaly: {f.explain(ctx.trade_date)}", file=sys.stderr)
    try:
        write_checks(spark, settings, ctx, findings)
    except Exception as exc:  # recording never fails a stage; the run's tags still hold the findings
        print(f"anomaly checks not recorded in {c.ANOMALY_CHECKS}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if verdict == "failed":
        raise AnomalyDetected(a.failure_message(ctx.stage, ctx.trade_date, findings))
    return findings
