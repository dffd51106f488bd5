"""RAW → Bronze: every vendor file, whatever its format, as canonical text columns plus provenance.

Bronze keeps values exactly as delivered (as text), so nothing a vendor sent is lost or coerced
before validation: Silver parses the text and quarantines what does not parse. Columns a vendor
renamed are mapped back (aliases), columns it added are kept as JSON in ``_extra``, lines that
did not parse are kept verbatim in ``_corrupt_record``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.schema import RAW_COLUMNS, REQUIRED_COLUMNS

CORRUPT = "_corrupt_record"
BRONZE_META = ("_extra", CORRUPT, "_source_file", "_source_format", "_ingested_at", "trade_date")

# Names vendors use for our columns (matched case-insensitively); RAW_COLUMN_ALIASES adds more.
DEFAULT_ALIASES = {
    "ts": "exchange_ts", "timestamp": "exchange_ts", "event_time": "exchange_ts", "time": "exchange_ts",
    "seq": "seq_no", "sequence": "seq_no", "seqno": "seq_no", "msg_seq": "seq_no",
    "symbol": "contract_id", "instrument": "contract_id", "instrument_id": "contract_id", "contract": "contract_id",
    "type": "option_type", "cp": "option_type", "put_call": "option_type",
    "strike_price": "strike", "expiration": "expiry", "expiry_date": "expiry", "maturity": "expiry",
    "spot": "underlying_price", "underlying_last": "underlying_price",
    "bid_price": "bid", "ask_price": "ask", "offer": "ask", "last_price": "last", "trade_price": "last",
    "price": "last",
    "bid_qty": "bid_size", "ask_qty": "ask_size", "last_qty": "last_size", "trade_size": "last_size",
    "volume": "last_size",
}


@dataclass(frozen=True)
class ColumnMapping:
    """How one file's columns map onto RAW_COLUMNS."""

    renames: dict[str, str]     # delivered name -> canonical name (only where they differ)
    extra: tuple[str, ...]      # delivered columns we do not know: kept in _extra
    missing: tuple[str, ...]    # canonical columns the file lacks

    @property
    def missing_required(self) -> tuple[str, ...]:
        return tuple(c for c in REQUIRED_COLUMNS if c in self.missing)


def map_columns(columns: list[str], aliases: dict[str, str] | None = None) -> ColumnMapping:
    """Map delivered column names to ours: exact name, then case-insensitive name, then alias.

    The first delivered column that claims a canonical name wins; later claimants stay extra, so
    a file with both ``price`` and ``last`` keeps both values.
    """
    table = {k.lower(): v for k, v in {**DEFAULT_ALIASES, **(aliases or {})}.items()}
    canonical = {c.lower(): c for c in RAW_COLUMNS}
    renames: dict[str, str] = {}
    claimed: set[str] = set()
    extra: list[str] = []
    ordered = sorted(columns, key=lambda c: (c.lower() not in canonical, columns.index(c)))
    for name in ordered:
        if name == CORRUPT:
            continue
        target = canonical.get(name.lower()) or table.get(name.lower())
        if target in RAW_COLUMNS and target not in claimed:
            claimed.add(target)
            if name != target:
                renames[name] = target
        else:
            extra.append(name)
    missing = tuple(c for c in RAW_COLUMNS if c not in claimed)
    return ColumnMapping(renames=renames, extra=tuple(sorted(extra, key=columns.index)), missing=missing)


def _as_text(df: DataFrame, name: str) -> F.Column:
    """A delivered value as text; timestamps keep their instant (ISO 8601 with the offset)."""
    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        fmt = ("yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX" if isinstance(dtype, T.TimestampType)
               else "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
        return F.date_format(col, fmt)
    if isinstance(dtype, (T.StructType, T.ArrayType, T.MapType)):
        return F.to_json(col)
    return col.cast("string")


def canonical(df: DataFrame, mapping: ColumnMapping, source_file: str, source_format: str) -> DataFrame:
    """One delivered file as Bronze text columns (without the batch columns, see ``to_bronze``)."""
    by_target = {target: name for name, target in mapping.renames.items()}
    cols = []
    for c in RAW_COLUMNS:
        if c in mapping.missing:
            cols.append(F.lit(None).cast("string").alias(c))
        else:
            cols.append(_as_text(df, by_target.get(c, c)).alias(c))
    if mapping.extra:
        extra = F.to_json(F.struct(*[_as_text(df, c).alias(c) for c in mapping.extra]))
    else:
        extra = F.lit(None).cast("string")
    corrupt = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None).cast("string")
    return df.select(
        *cols,
        extra.alias("_extra"),
        corrupt.alias(CORRUPT),
        F.lit(source_file).alias("_source_file"),
        F.lit(source_format).alias("_source_format"),
    )


def to_bronze(raw: DataFrame, trade_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Add the batch columns. ``ingested_at`` is passed in so one batch shares one time."""
    return (raw.withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
               .withColumn("trade_date", F.lit(trade_date).cast("date")))
