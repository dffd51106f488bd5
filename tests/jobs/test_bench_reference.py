"""The benchmark's DuckDB reference implements the pipeline's Bronze → Gold logic: same rows out.

A tiny generated delivery plus a second vendor file whose text values break every row rule goes
through the real Spark stages and through ``bench/duckdb_reference.py``; Silver, the quarantine
per reason and every Gold bar must agree.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from bench import duckdb_reference as ref
from jobs.contract import GOLD, QUARANTINE, SILVER
from jobs.lakehouse.tables import partition_rows
from jobs.lakehouse.tracking import NullTracker, RunContext
from jobs.stages import bronze_to_silver, raw_to_bronze, silver_to_gold
from jobs.synthetic import raw_ticks as gen
from jobs.transforms import bronze, gold, silver

DAY = dt.date(2026, 3, 3)   # a Tuesday; contracts expire 2026-03-12 and 2026-04-09


def test_reference_constants_follow_the_transforms():
    assert ref.RAW_COLUMNS == bronze.RAW_COLUMNS
    assert ref.REASONS == silver.REASONS
    assert ref.SILVER_COLUMNS == silver.SILVER_COLUMNS
    assert ref.TYPES == silver._TYPES
    assert ref.CONTRACT_ID_PATTERN == silver.CONTRACT_ID_PATTERN
    assert ref.BAR_KEYS == gold.BAR_KEYS


def messy_rows(good: pa.Table) -> pa.Table:
    """Text values, one row per rule (and a re-delivered message with another price)."""
    first = good.slice(0, 1).to_pylist()[0]
    cid = "KOSPI200-20260312-C-350.0"
    base = {"exchange_ts": "2026-03-03T10:00:00+09:00", "seq_no": "9000001", "contract_id": cid,
            "underlying": "KOSPI200", "option_type": "C", "strike": "350.0", "expiry": "2026-03-12",
            "underlying_price": "350.1", "bid": "5.1", "ask": "5.2", "last": "5.15",
            "bid_size": "10", "ask_size": "12", "last_size": "3"}
    variants = [
        {},                                                            # good
        {"seq_no": "9000002", "exchange_ts": "2026-03-03T10:00:30.5+09:00", "last": "5.3"},  # good, same bar
        {"seq_no": "12.5"},                                            # bad_type
        {"bid": "n/a"},                                                # bad_type
        {"contract_id": ""},                                           # null_key
        {"contract_id": "garbage"},                                    # unknown_contract (form)
        {"contract_id": "NIKKEI-20260312-C-350.0", "underlying": None},  # unknown_contract (underlying)
        {"option_type": "P"},                                          # unknown_contract (inconsistent)
        {"contract_id": "KOSPI200-20260212-C-350.0", "expiry": None},  # unknown_contract (expired)
        {"last": " "},                                                 # missing_price
        {"ask": "0"},                                                  # non_positive_price
        {"bid": "5.3"},                                                # crossed_quote
        {"exchange_ts": "2030-01-02T10:00:00+09:00"},                  # future_timestamp
        {"exchange_ts": "2026-03-03 01:30:00"},                        # wrong_timezone (UTC sent naive)
        {"exchange_ts": "2026-03-02T10:00:00+09:00"},                  # outside_trade_date
        {"exchange_ts": "2026-03-03T16:30:00+09:00"},                  # outside_session
        # The generator's first message again, later file, another price: a duplicate, not a new tick.
        {"exchange_ts": first["exchange_ts"].isoformat(), "seq_no": str(first["seq_no"]),
         "contract_id": first["contract_id"], "last": "999.0", "bid": "1.0", "ask": "999.5"},
    ]
    rows = [{**base, "seq_no": str(9000100 + i), **v} for i, v in enumerate(variants)]
    rows[0]["seq_no"], rows[1]["seq_no"] = "9000001", "9000002"
    return pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in ref.RAW_COLUMNS]))


def test_duckdb_reference_gives_the_same_silver_quarantine_and_gold_as_spark(spark, settings, tmp_path):
    raw_root = tmp_path / "raw"
    good = gen.generate_ticks(DAY, 3000, seed=11, bad_share=0.01)
    gen.write_raw(good, str(raw_root), DAY)
    pq.write_table(messy_rows(good), raw_root / f"trade_date={DAY}" / "vendor2.parquet")

    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.catalog}.bench_reference")
    cfg = dataclasses.replace(settings, namespace="bench_reference", raw_ticks_path=str(raw_root),
                              quality_gates="off")
    for stage in (raw_to_bronze, bronze_to_silver, silver_to_gold):
        stage.run(spark, cfg, RunContext(stage=stage.__name__.rsplit(".", 1)[-1], trade_date=DAY), NullTracker())

    rules = cfg.row_rules()
    out = ref.run_reference(raw_root / f"trade_date={DAY}", tmp_path / "duck", DAY, timezone=rules.timezone,
                            session_open=rules.session_open, session_close=rules.session_close,
                            known_underlyings=rules.known_underlyings, threads=2)

    spark_rejected = {r["reject_reason"]: r["n"] for r in spark.sql(
        f"SELECT reject_reason, count(*) AS n FROM {cfg.table(QUARANTINE)} "
        f"WHERE trade_date = DATE '{DAY}' GROUP BY 1").collect()}
    assert out["rejected"] == {r: spark_rejected.get(r, 0) for r in ref.REASONS}
    # Every rule fired at least once, so the comparison covers all of them.
    assert all(out["rejected"][r] > 0 for r in ref.REASONS if r != "malformed_record")
    assert out["rows"]["raw"] == 3000 + 17
    assert out["rows"]["silver"] == partition_rows(spark, cfg.table(SILVER), DAY)

    result = ref.compare_gold(ref.gold_frame_spark(spark, cfg.table(GOLD), DAY),
                              ref.gold_frame_duckdb(out["paths"]["gold"]))
    assert result["match"], result
    assert result["rows_spark"] == out["rows"]["gold"] > 0
