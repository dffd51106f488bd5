"""Bronze → Silver: typed, validated, de-duplicated ticks; everything else set aside with a reason.

Rules are checked in the order of ``REASONS`` and the first that matches names the row's reason.
A rejected row keeps what the vendor delivered (``raw_content``): the verbatim line for a
malformed record, otherwise the delivered values as JSON, so nothing is lost.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.contract import BRONZE_TO_SILVER
from jobs.schema import CONTRACT_ID_PATTERN, RAW_COLUMNS, REASONS, SILVER_COLUMNS  # noqa: F401  (REASONS: the rule order below)
from jobs.schema import RAW_TYPES as _TYPES
from jobs.transforms.bronze import CORRUPT


@dataclass(frozen=True)
class RowRules:
    """Row-level validation settings (from the environment, see ``Settings.row_rules``)."""

    session_open: dt.time = dt.time(8, 45)
    session_close: dt.time = dt.time(15, 45)
    known_underlyings: tuple[str, ...] = ("KOSPI200",)
    timezone: str = "Asia/Seoul"   # the Spark session time zone: naive timestamps are read in it


def _parse(name: str) -> F.Column:
    raw = F.trim(F.col(name))
    kind = _TYPES[name]
    if kind == "string":
        return F.when(raw != "", raw)
    if kind in ("int", "bigint"):
        # "12.0" is a whole number; "12.5" is not a size or a sequence number.
        number = raw.cast("double")
        return F.when(number == F.floor(number), number.cast(kind))
    return raw.cast(kind)


def standardize(bronze: DataFrame) -> DataFrame:
    """Parse Bronze text into the Silver types; derive mid, spread and missing contract attributes.

    Keeps ``_bad_types`` (delivered but unparsable columns) and ``_raw`` (the delivered values)
    for ``with_reject_reason``.
    """
    parsed = {c: _parse(c) for c in RAW_COLUMNS}
    bad_types = F.concat_ws(",", *[
        F.when(F.col(c).isNotNull() & (F.trim(F.col(c)) != "") & parsed[c].isNull(), F.lit(c))
        for c in RAW_COLUMNS if _TYPES[c] != "string"
    ])
    cid = parsed["contract_id"]
    derived = {
        "underlying": F.regexp_extract(cid, CONTRACT_ID_PATTERN, 1),
        "expiry": F.to_date(F.regexp_extract(cid, CONTRACT_ID_PATTERN, 2), "yyyyMMdd"),
        "option_type": F.regexp_extract(cid, CONTRACT_ID_PATTERN, 3),
        "strike": F.regexp_extract(cid, CONTRACT_ID_PATTERN, 4).cast("double"),
    }
    typed = [
        (F.coalesce(parsed[c], F.when(derived[c] != "", derived[c]) if _TYPES[c] == "string" else derived[c])
         if c in derived else parsed[c]).alias(c)
        for c in RAW_COLUMNS
    ]
    raw_values = F.struct(*[F.col(c) for c in RAW_COLUMNS], F.col("_extra"))
    raw = F.when(F.col(CORRUPT).isNotNull(), F.col(CORRUPT)).otherwise(F.to_json(raw_values))
    out = bronze.select(
        "trade_date", "_source_file", "_ingested_at", *typed,
        F.col(CORRUPT).isNotNull().alias("_malformed"),
        F.when(bad_types != "", bad_types).alias("_bad_types"),
        raw.alias("_raw"),
        # What the contract id says, kept to check the delivered attributes against it.
        *[derived[c].alias(f"_id_{name}") for c, name in (("underlying", "underlying"), ("expiry", "expiry"),
                                                          ("option_type", "type"), ("strike", "strike"))],
    )
    return (out.withColumn("mid", (F.col("bid") + F.col("ask")) / 2)
               .withColumn("spread", F.col("ask") - F.col("bid")))


def _in_session(ts: F.Column, rules: RowRules) -> F.Column:
    clock = F.date_format(ts, "HH:mm:ss.SSSSSS")
    return (clock >= F.lit(rules.session_open.strftime("%H:%M:%S.%f"))) & \
        (clock <= F.lit(rules.session_close.strftime("%H:%M:%S.%f")))


def with_reject_reason(ticks: DataFrame, trade_date: dt.date, rules: RowRules = RowRules()) -> DataFrame:
    """Add ``reject_reason``, ``reject_detail`` and ``raw_content`` (all null for a good row)."""
    ts, day = F.col("exchange_ts"), F.lit(trade_date)
    unknown_underlying = ~F.col("_id_underlying").isin(*rules.known_underlyings)
    inconsistent = (F.col("option_type") != F.col("_id_type")) | (F.col("strike") != F.col("_id_strike")) \
        | (F.col("expiry") != F.col("_id_expiry")) | (F.col("underlying") != F.col("_id_underlying"))
    prices = [F.col(c) for c in ("bid", "ask", "last")]
    missing_price = prices[0].isNull() | prices[1].isNull() | prices[2].isNull()
    # The same wall-clock time read as UTC and rendered in the pipeline zone.
    as_if_utc = F.from_utc_timestamp(ts, rules.timezone)
    utc_feed = ~_in_session(ts, rules) & _in_session(as_if_utc, rules) & (F.to_date(as_if_utc) == day)
    rules_in_order = [
        ("malformed_record", F.col("_malformed"), F.lit("line does not parse")),
        ("bad_type", F.col("_bad_types").isNotNull(), F.concat(F.lit("not parsable: "), F.col("_bad_types"))),
        ("null_key", F.col("contract_id").isNull() | ts.isNull() | F.col("seq_no").isNull(),
         F.lit("contract_id, exchange_ts and seq_no are required")),
        ("unknown_contract", F.col("_id_underlying") == "",
         F.concat(F.lit("contract id not of the form UNDERLYING-YYYYMMDD-C|P-STRIKE: "), F.col("contract_id"))),
        ("unknown_contract", unknown_underlying,
         F.concat(F.lit("underlying not listed: "), F.col("_id_underlying"))),
        ("unknown_contract", F.coalesce(inconsistent, F.lit(False)),
         F.lit("type, strike, expiry or underlying disagree with the contract id")),
        ("unknown_contract", F.col("_id_expiry") < day, F.concat(F.lit("expired on "), F.col("_id_expiry"))),
        ("missing_price", missing_price, F.lit("bid, ask and last are required")),
        ("non_positive_price", (prices[0] <= 0) | (prices[1] <= 0) | (prices[2] <= 0), F.lit("price <= 0")),
        ("crossed_quote", F.col("bid") > F.col("ask"), F.lit("bid > ask")),
        ("future_timestamp", ts > F.col("_ingested_at"),
         F.concat(F.lit("later than ingestion at "), F.col("_ingested_at").cast("string"))),
        ("wrong_timezone", utc_feed, F.concat(F.lit("in session only if read as UTC: "), ts.cast("string"))),
        ("outside_trade_date", F.to_date(ts) != day, F.concat(F.lit("on "), F.to_date(ts).cast("string"))),
        ("outside_session", ~_in_session(ts, rules), F.concat(F.lit("at "), F.date_format(ts, "HH:mm:ss"))),
    ]
    reason = detail = None
    for code, condition, why in rules_in_order:
        reason = (F.when(condition, F.lit(code)) if reason is None else reason.when(condition, F.lit(code)))
        detail = (F.when(condition, why) if detail is None else detail.when(condition, why))
    checked = (ticks.withColumn("reject_reason", reason).withColumn("reject_detail", detail)
               .withColumn("raw_content", F.when(F.col("reject_reason").isNotNull(), F.col("_raw")))
               .drop("_raw", "_malformed", "_bad_types", "_id_underlying", "_id_expiry", "_id_type", "_id_strike"))
    # Re-deliveries of the same exchange message among otherwise good rows: keep the first copy.
    first_copy = Window.partitionBy("contract_id", "seq_no", F.col("reject_reason").isNull()) \
        .orderBy("_source_file", "_ingested_at", "exchange_ts")
    dup = F.col("reject_reason").isNull() & (F.row_number().over(first_copy) > 1)
    return (checked
            .withColumn("reject_detail", F.when(dup, F.lit("same contract_id and seq_no as an earlier row"))
                        .otherwise(F.col("reject_detail")))
            .withColumn("reject_reason", F.when(dup, F.lit("duplicate")).otherwise(F.col("reject_reason"))))


def split_valid(checked: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(silver rows, quarantined rows with reason, detail and what was delivered)."""
    good = checked.filter(F.col("reject_reason").isNull()).select(*SILVER_COLUMNS)
    typed = F.to_json(F.struct(*[F.col(c) for c in RAW_COLUMNS]))
    bad = checked.filter(F.col("reject_reason").isNotNull()).select(
        "trade_date",
        F.lit(BRONZE_TO_SILVER).alias("stage"),
        "reject_reason",
        "reject_detail",
        "_source_file",
        F.coalesce(F.col("raw_content"), typed).alias("raw_content"),
        "_ingested_at",
    )
    return good, bad
