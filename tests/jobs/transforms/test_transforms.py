"""Pure transforms on small hand-made DataFrames, on real local Spark."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from jobs.schema import FEATURE_COLUMNS, LABEL, REASONS
from jobs.transforms.bronze import canonical, map_columns, to_bronze
from jobs.transforms.features import build_features, training_window
from jobs.transforms.gold import minute_bars
from jobs.transforms.silver import split_valid, standardize, with_reject_reason

D = dt.date(2026, 11, 24)
KST = "+09:00"
RAW_SCHEMA = (
    "exchange_ts timestamp, seq_no bigint, contract_id string, underlying string, option_type string, "
    "strike double, expiry date, underlying_price double, bid double, ask double, last double, "
    "bid_size int, ask_size int, last_size int"
)


def tick(seq, ts, contract="KOSPI200-20261210-C-340.0", bid=1.0, ask=1.1, last=1.05, size=1):
    return {
        "exchange_ts": dt.datetime.fromisoformat(f"2026-11-24T{ts}{KST}"), "seq_no": seq,
        "contract_id": contract,
        "underlying": "KOSPI200", "option_type": "C", "strike": 340.0, "expiry": dt.date(2026, 12, 10),
        "underlying_price": 345.0, "bid": bid, "ask": ask, "last": last,
        "bid_size": size, "ask_size": size, "last_size": size,
    }


def bronze_of(spark, rows):
    # Row dicts, not pandas: real nulls, as a vendor's Parquet file has them.
    raw = spark.createDataFrame([tuple(r.values()) for r in rows], RAW_SCHEMA)
    text = canonical(raw, map_columns(raw.columns), "file:/raw/ticks.parquet", "parquet")
    return to_bronze(text, D, dt.datetime(2026, 11, 26, 0, 0))


def test_bronze_keeps_every_row_and_adds_ingestion_metadata(spark):
    bronze = bronze_of(spark, [tick(1, "09:00:01"), tick(2, "09:00:02")])
    assert bronze.count() == 2
    row = bronze.first()
    assert row["trade_date"] == D
    assert row["_ingested_at"] == dt.datetime(2026, 11, 26, 0, 0)
    assert row["_source_file"] == "file:/raw/ticks.parquet" and row["_source_format"] == "parquet"
    # Delivered values as text; a timestamp keeps its instant through its offset.
    assert row["exchange_ts"] == "2026-11-24T09:00:01.000000+09:00" and row["bid"] == "1.0"


def test_silver_rejects_each_bad_kind_with_its_reason(spark):
    rows = [
        tick(1, "09:00:01"),
        tick(2, "09:00:02", contract=None),
        tick(3, "09:00:03", last=0.0),
        tick(4, "09:00:04", bid=2.0, ask=1.0),
        {**tick(5, "09:00:05"), "exchange_ts": dt.datetime.fromisoformat(f"2026-11-25T09:00:05{KST}")},
        tick(6, "09:00:06"),
        tick(6, "09:00:06"),  # the same exchange message delivered twice
    ]
    checked = with_reject_reason(standardize(bronze_of(spark, rows)), D)
    good, bad = split_valid(checked)
    reasons = sorted(r["reject_reason"] for r in bad.collect())
    assert reasons == sorted(["null_key", "non_positive_price", "crossed_quote", "outside_trade_date",
                              "duplicate"])
    assert set(reasons) <= set(REASONS)
    assert sorted(r["seq_no"] for r in good.collect()) == [1, 6]
    assert good.count() + bad.count() == len(rows)  # nothing silently dropped
    raw = json.loads(bad.filter("reject_reason = 'crossed_quote'").first()["raw_content"])
    assert raw["bid"] == "2.0" and raw["ask"] == "1.0" and raw["seq_no"] == "4"


def test_gold_bars_are_ohlc_per_contract_minute(spark):
    rows = [tick(1, "09:00:01", last=1.0, size=2), tick(2, "09:00:30", last=1.3, size=1),
            tick(3, "09:00:59", last=0.9, size=1), tick(4, "09:01:10", last=1.1, size=5)]
    silver, _ = split_valid(with_reject_reason(standardize(bronze_of(spark, rows)), D))
    bars = minute_bars(silver).orderBy("bar_ts").collect()
    assert len(bars) == 2
    first = bars[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (1.0, 1.3, 0.9, 0.9)
    assert first["volume"] == 4 and first["tick_count"] == 3
    assert first["vwap"] == pytest.approx((1.0 * 2 + 1.3 + 0.9) / 4)


def bars_frame(spark, mids, contract="C1", date=D):
    start = pd.Timestamp(f"{date}T09:00:00{KST}")
    rows = [{
        "trade_date": date, "contract_id": contract, "option_type": "C", "strike": 340.0,
        "expiry": dt.date(2026, 12, 10), "bar_ts": start + pd.Timedelta(minutes=i),
        "open": m, "high": m, "low": m, "close": m, "mid_close": m, "spread_mean": 0.05,
        "volume": 10 + i, "vwap": m, "bid_size_sum": 5, "ask_size_sum": 3,
        "underlying_close": 345.0, "tick_count": 3,
    } for i, m in enumerate(mids)]
    return spark.createDataFrame(pd.DataFrame(rows))


def test_features_never_look_ahead(spark):
    """Changing bar k must not change any feature of bars before k; only bar k-1's label."""
    mids = list(np.linspace(1.0, 2.0, 30))
    base = build_features(bars_frame(spark, mids)).orderBy("bar_ts").toPandas()
    shocked_mids = mids.copy()
    shocked_mids[20] = 5.0
    shocked = build_features(bars_frame(spark, shocked_mids)).orderBy("bar_ts").toPandas()
    cols = list(FEATURE_COLUMNS)
    pd.testing.assert_frame_equal(base.loc[:19, cols], shocked.loc[:19, cols])
    assert not base.loc[20:, cols].equals(shocked.loc[20:, cols])
    # Labels: only the bar right before the shock sees it.
    assert (base[LABEL].iloc[:19] == shocked[LABEL].iloc[:19]).all()
    assert (shocked["label_ts"].dropna() > shocked["bar_ts"][: len(shocked["label_ts"].dropna())]).all()


def test_label_is_next_bar_mid_direction_and_last_bar_has_none(spark):
    feats = build_features(bars_frame(spark, [1.0, 1.2, 1.1, 1.1])).orderBy("bar_ts").toPandas()
    assert feats[LABEL].iloc[:3].tolist() == [1, 0, 0]
    assert pd.isna(feats[LABEL].iloc[3])


def test_training_window_keeps_labelled_rows_up_to_the_date(spark):
    later = D + dt.timedelta(days=1)
    frame = build_features(bars_frame(spark, [1.0, 1.1, 1.2]).unionByName(
        bars_frame(spark, [1.0, 1.1, 1.2], date=later)))
    window = training_window(frame, D, lookback_days=5).toPandas()
    assert set(window["trade_date"]) == {D}
    assert window[LABEL].notna().all() and len(window) == 2
