"""RAW Parquet → Bronze → Silver → Gold in DuckDB: the single-machine reference of ``make bench``.

The same logic as the Spark stages, written once more in SQL so the benchmark can say how far
Spark on one machine is from a single-process engine on the same input:

* Bronze (``jobs/stages/raw_to_bronze.py`` for a Parquet delivery): every column as delivered text plus
  provenance, written to Parquet (zstd).
* Silver (``jobs/transforms/silver.py``): parse the text, derive contract attributes from the id,
  the reject rules in ``REASONS`` order (first match wins), then ``duplicate`` among good rows;
  good rows to ``silver.parquet``, the rest with reason, detail and delivered values to
  ``quarantine.parquet``.
* Gold (``jobs/transforms/gold.py``): per-contract one-minute bars (OHLC by (exchange_ts, seq_no),
  mid close, mean spread, volume, VWAP, size sums, underlying close, tick count).

Each layer is materialised (Parquet files instead of Iceberg tables) and read back by the next,
as the Spark stages do. Only canonical column names are handled (no vendor aliases, CSV or JSON):
the benchmark's input is the generator's Parquet.

    python -m bench.duckdb_reference --raw DIR --out DIR --trade-date 2026-03-03   (prints JSON)
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import sys
import time
from pathlib import Path

# The shapes come from jobs/schema.py, the one list the Spark transforms use as well.
from jobs.schema import BAR_KEYS, CONTRACT_ID_PATTERN, RAW_COLUMNS, REASONS, SILVER_COLUMNS
from jobs.schema import RAW_TYPES as TYPES

GOLD_VALUES = ("open", "high", "low", "close", "mid_close", "spread_mean", "vwap", "underlying_close")
GOLD_COUNTS = ("volume", "bid_size_sum", "ask_size_sum", "tick_count")
_DUCK_TYPES = {"bigint": "BIGINT", "int": "INTEGER", "double": "DOUBLE", "date": "DATE",
               "timestamp": "TIMESTAMPTZ"}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parse(c: str) -> str:
    """jobs.transforms.silver._parse: trimmed text → typed value, NULL when it does not parse."""
    raw = f"trim({c})"
    kind = TYPES[c]
    if kind == "string":
        return f"CASE WHEN {raw} <> '' THEN {raw} END"
    if kind in ("int", "bigint"):  # "12.0" is whole; "12.5" is not a size or a sequence number
        num = f"TRY_CAST({raw} AS DOUBLE)"
        return f"CASE WHEN {num} = floor({num}) THEN TRY_CAST({num} AS {_DUCK_TYPES[kind]}) END"
    return f"TRY_CAST({raw} AS {_DUCK_TYPES[kind]})"


def bronze_sql(files: dict[str, list[str]], trade_date: dt.date, ingested_at: dt.datetime) -> str:
    """Every file's rows as delivered text (``files``: path -> its columns), one file at a time."""
    parts = []
    for path, columns in files.items():
        cols = [f"CAST({c} AS VARCHAR) AS {c}" if c in columns else f"CAST(NULL AS VARCHAR) AS {c}"
                for c in RAW_COLUMNS]
        parts.append(f"""
        SELECT {', '.join(cols)},
               CAST(NULL AS VARCHAR) AS _extra,
               CAST(NULL AS VARCHAR) AS _corrupt_record,
               {_q(path)} AS _source_file,
               'parquet' AS _source_format,
               TIMESTAMPTZ {_q(ingested_at.isoformat())} AS _ingested_at,
               DATE {_q(trade_date.isoformat())} AS trade_date
        FROM read_parquet({_q(path)})""")
    return "\n        UNION ALL".join(parts)


def checked_sql(bronze: str, trade_date: dt.date, session_open: dt.time, session_close: dt.time,
                known_underlyings: tuple[str, ...]) -> str:
    """standardize + with_reject_reason of jobs/transforms/silver.py, one row per Bronze row."""
    parsed = {c: _parse(c) for c in RAW_COLUMNS}
    bad = ", ".join(f"CASE WHEN {c} IS NOT NULL AND trim({c}) <> '' AND ({parsed[c]}) IS NULL THEN '{c}' END"
                    for c in RAW_COLUMNS if TYPES[c] != "string")
    pat = _q(CONTRACT_ID_PATTERN)
    cid = f"({parsed['contract_id']})"
    derived = {
        "underlying": f"NULLIF(regexp_extract({cid}, {pat}, 1), '')",
        "expiry": f"CAST(try_strptime(regexp_extract({cid}, {pat}, 2), '%Y%m%d') AS DATE)",
        "option_type": f"NULLIF(regexp_extract({cid}, {pat}, 3), '')",
        "strike": f"TRY_CAST(regexp_extract({cid}, {pat}, 4) AS DOUBLE)",
    }
    typed = ",\n               ".join(
        f"coalesce({parsed[c]}, {derived[c]}) AS {c}" if c in derived else f"{parsed[c]} AS {c}"
        for c in RAW_COLUMNS)
    raw_struct = ", ".join(f"{c} := {c}" for c in (*RAW_COLUMNS, "_extra"))
    typed_struct = ", ".join(f"{c} := {c}" for c in RAW_COLUMNS)
    day = f"DATE {_q(trade_date.isoformat())}"
    fmt = "'%H:%M:%S.%f'"
    opens, closes = _q(session_open.strftime("%H:%M:%S.%f")), _q(session_close.strftime("%H:%M:%S.%f"))

    def in_session(ts: str) -> str:
        return f"(strftime({ts}, {fmt}) >= {opens} AND strftime({ts}, {fmt}) <= {closes})"

    # The same wall-clock time read as UTC (Spark's from_utc_timestamp(ts, zone)).
    as_if_utc = "timezone('UTC', timezone(current_setting('TimeZone'), exchange_ts))"
    known = ", ".join(_q(u) for u in known_underlyings) or "NULL"
    rules = [
        ("malformed_record", "_malformed", "'line does not parse'"),
        ("bad_type", "_bad_types IS NOT NULL", "'not parsable: ' || _bad_types"),
        ("null_key", "contract_id IS NULL OR exchange_ts IS NULL OR seq_no IS NULL",
         "'contract_id, exchange_ts and seq_no are required'"),
        ("unknown_contract", "_id_underlying = ''",
         "'contract id not of the form UNDERLYING-YYYYMMDD-C|P-STRIKE: ' || contract_id"),
        ("unknown_contract", f"NOT (_id_underlying IN ({known}))", "'underlying not listed: ' || _id_underlying"),
        ("unknown_contract", "coalesce(option_type <> _id_type OR strike <> _id_strike OR expiry <> _id_expiry "
                             "OR underlying <> _id_underlying, false)",
         "'type, strike, expiry or underlying disagree with the contract id'"),
        ("unknown_contract", f"_id_expiry < {day}", "'expired on ' || CAST(_id_expiry AS VARCHAR)"),
        ("missing_price", "bid IS NULL OR ask IS NULL OR last IS NULL", "'bid, ask and last are required'"),
        ("non_positive_price", "bid <= 0 OR ask <= 0 OR last <= 0", "'price <= 0'"),
        ("crossed_quote", "bid > ask", "'bid > ask'"),
        ("future_timestamp", "exchange_ts > _ingested_at",
         "'later than ingestion at ' || CAST(_ingested_at AS VARCHAR)"),
        ("wrong_timezone",
         f"NOT {in_session('exchange_ts')} AND {in_session(as_if_utc)} AND CAST({as_if_utc} AS DATE) = {day}",
         "'in session only if read as UTC: ' || CAST(exchange_ts AS VARCHAR)"),
        ("outside_trade_date", f"CAST(exchange_ts AS DATE) <> {day}",
         "'on ' || CAST(CAST(exchange_ts AS DATE) AS VARCHAR)"),
        ("outside_session", f"NOT {in_session('exchange_ts')}", "'at ' || strftime(exchange_ts, '%H:%M:%S')"),
    ]
    reason = "CASE " + " ".join(f"WHEN {cond} THEN '{code}'" for code, cond, _ in rules) + " END"
    detail = "CASE " + " ".join(f"WHEN {cond} THEN {why}" for _, cond, why in rules) + " END"
    return f"""
    WITH typed AS (
        SELECT trade_date, _source_file, _ingested_at,
               {typed},
               _corrupt_record IS NOT NULL AS _malformed,
               NULLIF(concat_ws(',', {bad}), '') AS _bad_types,
               CASE WHEN _corrupt_record IS NOT NULL THEN _corrupt_record
                    ELSE to_json(struct_pack({raw_struct})) END AS _raw,
               regexp_extract({cid}, {pat}, 1) AS _id_underlying,
               CAST(try_strptime(regexp_extract({cid}, {pat}, 2), '%Y%m%d') AS DATE) AS _id_expiry,
               regexp_extract({cid}, {pat}, 3) AS _id_type,
               TRY_CAST(regexp_extract({cid}, {pat}, 4) AS DOUBLE) AS _id_strike
        FROM {bronze}
    ), reasons AS (
        SELECT *, (bid + ask) / 2 AS mid, ask - bid AS spread,
               {reason} AS reject_reason, {detail} AS reject_detail
        FROM typed
    ), ranked AS (
        SELECT *, reject_reason IS NULL AND row_number() OVER (
                      PARTITION BY contract_id, seq_no, reject_reason IS NULL
                      ORDER BY _source_file, _ingested_at, exchange_ts) > 1 AS _dup
        FROM reasons
    )
    SELECT * EXCLUDE (_dup, _raw, _malformed, _bad_types, _id_underlying, _id_expiry, _id_type, _id_strike,
                      reject_reason, reject_detail),
           CASE WHEN _dup THEN 'duplicate' ELSE reject_reason END AS reject_reason,
           CASE WHEN _dup THEN 'same contract_id and seq_no as an earlier row' ELSE reject_detail END
               AS reject_detail,
           -- as Spark: the delivered values for rule rejects, the typed values for duplicates
           CASE WHEN reject_reason IS NOT NULL THEN _raw
                WHEN _dup THEN to_json(struct_pack({typed_struct})) END AS raw_content
    FROM ranked"""


def gold_sql(silver: str) -> str:
    key = "{'ts': exchange_ts, 'seq': seq_no}"
    return f"""
        SELECT trade_date, contract_id, option_type, strike, expiry, date_trunc('minute', exchange_ts) AS bar_ts,
               arg_min_null(last, {key}) AS open,
               max(last) AS high,
               min(last) AS low,
               arg_max_null(last, {key}) AS close,
               arg_max_null(mid, {key}) AS mid_close,
               avg(spread) AS spread_mean,
               CAST(sum(last_size) AS BIGINT) AS volume,
               sum(last * last_size) / sum(last_size) AS vwap,
               CAST(sum(bid_size) AS BIGINT) AS bid_size_sum,
               CAST(sum(ask_size) AS BIGINT) AS ask_size_sum,
               arg_max_null(underlying_price, {key}) AS underlying_close,
               count(*) AS tick_count
        FROM {silver}
        GROUP BY ALL"""


def raw_files(raw: str | Path) -> list[str]:
    """The visible Parquet files of a RAW date folder (or one file)."""
    path = Path(raw)
    if path.is_file():
        return [str(path)]
    files = sorted(f for f in glob.glob(str(path / "*.parquet")) if not Path(f).name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"no Parquet RAW files in {path}")
    return files


def run_reference(raw: str | Path, out: str | Path, trade_date: dt.date, *, timezone: str = "Asia/Seoul",
                  session_open: dt.time = dt.time(8, 45), session_close: dt.time = dt.time(15, 45),
                  known_underlyings: tuple[str, ...] = ("KOSPI200",), threads: int | None = None) -> dict:
    """Bronze, Silver (+ quarantine) and Gold Parquet files under ``out``; seconds and rows per layer."""
    import duckdb

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = raw_files(raw)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET TimeZone = {_q(timezone)}")
    con.execute(f"SET temp_directory = {_q(str(out / '.tmp'))}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    seconds: dict[str, float] = {}
    paths = {k: str(out / f"{k}.parquet") for k in ("bronze", "silver", "quarantine", "gold")}
    zstd = "(FORMAT parquet, COMPRESSION zstd)"

    t = time.perf_counter()
    columns = {f: [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_q(f)})").fetchall()]
               for f in files}
    ingested_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    con.execute(f"COPY ({bronze_sql(columns, trade_date, ingested_at)}) TO {_q(paths['bronze'])} {zstd}")
    seconds["bronze"] = time.perf_counter() - t

    t = time.perf_counter()
    con.execute("CREATE TEMP TABLE checked AS " + checked_sql(
        f"read_parquet({_q(paths['bronze'])})", trade_date, session_open, session_close, known_underlyings))
    con.execute(f"COPY (SELECT {', '.join(SILVER_COLUMNS)} FROM checked WHERE reject_reason IS NULL) "
                f"TO {_q(paths['silver'])} {zstd}")
    con.execute(f"""COPY (SELECT trade_date, 'bronze_to_silver' AS stage, reject_reason, reject_detail, _source_file,
                                 raw_content, _ingested_at
                          FROM checked WHERE reject_reason IS NOT NULL) TO {_q(paths['quarantine'])} {zstd}""")
    rejected = dict(con.execute("SELECT reject_reason, count(*) FROM checked WHERE reject_reason IS NOT NULL "
                                "GROUP BY 1").fetchall())
    bronze_rows = con.execute("SELECT count(*) FROM checked").fetchone()[0]
    con.execute("DROP TABLE checked")
    seconds["silver"] = time.perf_counter() - t

    t = time.perf_counter()
    silver_files = f"read_parquet({_q(paths['silver'])})"
    con.execute(f"COPY ({gold_sql(silver_files)}) TO {_q(paths['gold'])} {zstd}")
    seconds["gold"] = time.perf_counter() - t
    seconds["bronze_to_gold"] = time.perf_counter() - started

    def rows(name: str) -> int:
        return con.execute(f"SELECT count(*) FROM read_parquet({_q(paths[name])})").fetchone()[0]

    result = {
        "seconds": seconds,
        "rows": {"raw": bronze_rows, "bronze": rows("bronze"), "silver": rows("silver"),
                 "quarantine": rows("quarantine"), "gold": rows("gold")},
        "rejected": {r: int(rejected.get(r, 0)) for r in REASONS},
        "paths": paths,
        "duckdb_version": duckdb.__version__,
        "threads": int(con.execute("SELECT current_setting('threads')").fetchone()[0]),
    }
    con.close()
    return result


# --------------------------------------------------------------------------------------------------
# Gold rows, side by side
# --------------------------------------------------------------------------------------------------

def gold_frame_duckdb(path: str | Path):
    """Gold rows as pandas with bar_ts as UTC epoch microseconds and expiry as ISO text."""
    import duckdb

    con = duckdb.connect()
    try:
        return con.execute(f"""SELECT * EXCLUDE (bar_ts, expiry, trade_date), CAST(trade_date AS VARCHAR) AS trade_date,
                                      CAST(expiry AS VARCHAR) AS expiry, epoch_us(bar_ts) AS bar_us
                               FROM read_parquet({_q(str(path))})""").fetchdf()
    finally:
        con.close()


def gold_frame_spark(spark, table: str, trade_date: dt.date):
    """The same columns from the Spark Gold table (one trade date)."""
    cols = [c for c in (*BAR_KEYS, *GOLD_VALUES, *GOLD_COUNTS) if c not in ("bar_ts", "expiry", "trade_date")]
    return spark.sql(f"""SELECT {', '.join(cols)}, CAST(trade_date AS STRING) AS trade_date,
                                CAST(expiry AS STRING) AS expiry, unix_micros(bar_ts) AS bar_us
                         FROM {table} WHERE trade_date = DATE '{trade_date.isoformat()}'""").toPandas()


def compare_gold(spark_rows, duck_rows, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> dict:
    """Same bars (keys), same counts exactly, same prices within float tolerance (summation order differs)."""
    keys = ["trade_date", "contract_id", "bar_us"]
    s = spark_rows.set_index(keys).sort_index()
    d = duck_rows.set_index(keys).sort_index()
    only_spark = s.index.difference(d.index)
    only_duck = d.index.difference(s.index)
    both = s.index.intersection(d.index)
    s, d = s.loc[both], d.loc[both]
    mismatched: dict[str, int] = {}
    max_rel = 0.0
    for c in ("option_type", "expiry", *GOLD_COUNTS):
        bad = int((s[c].astype("object").where(s[c].notna(), None).values
                   != d[c].astype("object").where(d[c].notna(), None).values).sum())
        if bad:
            mismatched[c] = bad
    for c in ("strike", *GOLD_VALUES):
        bad = 0
        for a, b in zip(s[c].to_numpy(dtype=float), d[c].to_numpy(dtype=float), strict=False):
            if math.isnan(a) and math.isnan(b):
                continue
            if not math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol):
                bad += 1
            elif a != b:
                max_rel = max(max_rel, abs(a - b) / max(abs(a), abs(b)))
        if bad:
            mismatched[c] = bad
    return {
        "match": not len(only_spark) and not len(only_duck) and not mismatched,
        "rows_spark": int(len(spark_rows)), "rows_duckdb": int(len(duck_rows)),
        "only_spark": int(len(only_spark)), "only_duckdb": int(len(only_duck)),
        "mismatched_values": mismatched, "max_rel_diff": max_rel, "rel_tol": rel_tol,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duckdb_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", required=True, help="RAW date folder (trade_date=YYYY-MM-DD) or one Parquet file")
    parser.add_argument("--out", required=True, help="folder for bronze/silver/quarantine/gold.parquet")
    parser.add_argument("--trade-date", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    args = parser.parse_args(argv)
    from jobs.lakehouse.settings import Settings

    rules = Settings.from_env().row_rules()  # PIPELINE_TIMEZONE, TRADING_SESSION, KNOWN_UNDERLYINGS
    result = run_reference(args.raw, args.out, args.trade_date, timezone=rules.timezone,
                           session_open=rules.session_open, session_close=rules.session_close,
                           known_underlyings=rules.known_underlyings, threads=args.threads)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
