"""Tests for the synthetic RAW tick generator: determinism, market realism, bad rows, I/O, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from jobs.synthetic import raw_ticks as g

REPO_ROOT = Path(__file__).resolve().parents[3]
DAY = date(2026, 11, 24)  # a Tuesday
N = 20_000
US_PER_DAY = 86_400 * 1_000_000
KST_OFFSET_US = 9 * 3600 * 1_000_000


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    return g.generate_ticks(DAY, N, seed=7, bad_share=0.0)


@pytest.fixture(scope="module")
def dirty() -> pa.Table:
    return g.generate_ticks(DAY, N, seed=7, bad_share=0.002)


def _np(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _local_time_us(table: pa.Table) -> np.ndarray:
    utc_us = table.column("exchange_ts").cast(pa.int64()).to_numpy()
    return utc_us + KST_OFFSET_US


def _on_tick_grid(prices: np.ndarray) -> np.ndarray:
    cents = np.round(prices * 100.0)
    exact = np.abs(prices * 100.0 - cents) < 1e-6
    return exact & ((cents < 1000) | (cents % 5 == 0))


# ---------------------------------------------------------------------------------------------
# Determinism and shape
# ---------------------------------------------------------------------------------------------
def test_same_arguments_give_identical_tables(dirty):
    again = g.generate_ticks(DAY, N, seed=7, bad_share=0.002)
    assert again.equals(dirty)


def test_seed_and_date_change_the_data(dirty):
    other_seed = g.generate_ticks(DAY, N, seed=8, bad_share=0.002)
    other_day = g.generate_ticks(date(2026, 11, 25), N, seed=7, bad_share=0.002)
    assert not other_seed.equals(dirty)
    assert not other_day.equals(dirty)
    assert not np.array_equal(_np(other_seed, "underlying_price"), _np(dirty, "underlying_price"))


@pytest.mark.parametrize("n,bad_share", [(1, 0.0), (7, 0.002), (N, 0.0), (N, 0.002), (10_001, 0.05)])
def test_exact_row_count(n, bad_share):
    assert g.generate_ticks(DAY, n, bad_share=bad_share).num_rows == n


def test_zero_ticks_gives_empty_table_with_schema():
    table = g.generate_ticks(DAY, 0)
    assert table.num_rows == 0
    assert table.schema.equals(g.SCHEMA)


@pytest.mark.parametrize(
    "kwargs", [dict(n_ticks=-1), dict(n_ticks=10, seed=-1), dict(n_ticks=10, bad_share=0.9)]
)
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        g.generate_ticks(DAY, **kwargs)


def test_schema_columns_and_types(dirty):
    expected = [
        ("exchange_ts", pa.timestamp("us", tz="Asia/Seoul")),
        ("seq_no", pa.int64()),
        ("contract_id", pa.string()),
        ("underlying", pa.string()),
        ("option_type", pa.string()),
        ("strike", pa.float64()),
        ("expiry", pa.date32()),
        ("underlying_price", pa.float64()),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("last", pa.float64()),
        ("bid_size", pa.int32()),
        ("ask_size", pa.int32()),
        ("last_size", pa.int32()),
    ]
    assert [(f.name, f.type) for f in dirty.schema] == expected


def test_timestamps_in_session_sorted_and_on_trade_date(dirty):
    assert dirty.schema.field("exchange_ts").type.tz == "Asia/Seoul"
    local = _local_time_us(dirty)
    day_start = (DAY - date(1970, 1, 1)).days * US_PER_DAY
    assert np.all(local // US_PER_DAY * US_PER_DAY == day_start)
    tod = local - day_start
    assert tod.min() >= 9 * 3600 * 1_000_000
    assert tod.max() <= (15 * 3600 + 45 * 60) * 1_000_000
    assert np.all(np.diff(local) >= 0)
    # The Arrow timezone really is Seoul local time, not a relabelled UTC.
    first = dirty.column("exchange_ts")[0].as_py()
    assert first.utcoffset().total_seconds() == 9 * 3600 and 9 <= first.hour <= 15


def test_intraday_intensity_is_u_shaped(clean):
    minute = (_local_time_us(clean) % US_PER_DAY) // 60_000_000 - 9 * 60
    per_minute = np.bincount(minute, minlength=406)
    open_rate = per_minute[:30].mean()
    close_rate = per_minute[-31:-1].mean()
    midday_rate = per_minute[150:270].mean()
    assert open_rate > 1.3 * midday_rate
    assert close_rate > 1.3 * midday_rate


# ---------------------------------------------------------------------------------------------
# Clean data realism
# ---------------------------------------------------------------------------------------------
def test_clean_rows_satisfy_all_quote_invariants(clean):
    bid, ask, last = _np(clean, "bid"), _np(clean, "ask"), _np(clean, "last")
    assert all(col.null_count == 0 for col in clean.columns)
    assert np.all(bid < ask)
    assert np.all(bid >= 0.01)
    assert np.all((last >= bid) & (last <= ask))
    for prices in (bid, ask, last):
        assert np.all(_on_tick_grid(prices))
    seq = _np(clean, "seq_no")
    assert np.array_equal(seq, np.arange(1, N + 1))
    for name in ("bid_size", "ask_size", "last_size"):
        sizes = _np(clean, name)
        assert sizes.min() >= 1
        # Heavy tail: the largest lots dwarf the typical one.
        assert sizes.max() > 20 * np.median(sizes)


def test_contracts_are_consistent_and_on_the_grid(clean):
    expiries = g.next_expiries(DAY)
    assert expiries == [date(2026, 12, 10), date(2027, 1, 14)]
    assert set(clean.column("expiry").to_pylist()) == set(expiries)
    assert set(clean.column("underlying").to_pylist()) == {"KOSPI200"}
    assert set(clean.column("option_type").to_pylist()) == {"C", "P"}
    strikes = _np(clean, "strike")
    assert np.all(np.isclose(strikes / 2.5, np.round(strikes / 2.5)))
    assert 30 <= len(set(clean.column("contract_id").to_pylist())) <= 40
    rows = clean.select(["contract_id", "option_type", "strike", "expiry"]).slice(0, 500).to_pylist()
    for row in rows:
        assert row["contract_id"] == (
            f"KOSPI200-{row['expiry']:%Y%m%d}-{row['option_type']}-{row['strike']:.1f}"
        )
    spot = _np(clean, "underlying_price")
    assert 250 < spot.min() and spot.max() < 450
    assert np.all(np.abs(strikes - spot[0]) < 20)


def test_activity_concentrates_near_the_money_and_near_expiry(clean):
    df = clean.to_pandas()
    near = df["expiry"] == date(2026, 12, 10)
    assert near.mean() > 0.6
    distance = (df["strike"] - df["underlying_price"].iloc[0]).abs()
    assert (distance <= 5).mean() > (distance >= 10).mean()


def test_mid_prices_are_monotone_in_strike(clean):
    df = clean.to_pandas()
    df["mid"] = (df["bid"] + df["ask"]) / 2
    # Compare at (nearly) the same underlying level, otherwise the intraday move blurs the order.
    spot = df["underlying_price"]
    df = df[(spot - spot.median()).abs() <= 0.5]
    med = df.groupby(["expiry", "option_type", "strike"])["mid"].median()
    for expiry in med.index.get_level_values(0).unique():
        calls = med.loc[(expiry, "C")].sort_index().to_numpy()
        puts = med.loc[(expiry, "P")].sort_index().to_numpy()
        assert len(calls) >= 5 and len(puts) >= 5
        assert np.all(np.diff(calls) < 0)
        assert np.all(np.diff(puts) > 0)
    # Longer-dated options are worth more at the same strike.
    near, far = sorted(med.index.get_level_values(0).unique())
    calendar_spread = (med.loc[(far, "C")] - med.loc[(near, "C")]).dropna()
    assert len(calendar_spread) >= 5 and np.all(calendar_spread > 0)


# ---------------------------------------------------------------------------------------------
# Deliberate bad rows
# ---------------------------------------------------------------------------------------------
def test_bad_row_counts_split_exactly():
    assert g.bad_row_counts(N, 0.002) == dict.fromkeys(g.BAD_KINDS, 10)
    counts = g.bad_row_counts(10_001, 0.003)  # round(30.003) = 30 -> 8, 8, 7, 7
    assert list(counts.values()) == [8, 8, 7, 7]
    assert sum(g.bad_row_counts(N, 0.0).values()) == 0


@pytest.mark.parametrize("n,bad_share", [(N, 0.002), (10_001, 0.003)])
def test_each_bad_kind_is_present_in_the_expected_number(n, bad_share):
    table = g.generate_ticks(DAY, n, seed=3, bad_share=bad_share)
    expected = g.bad_row_counts(n, bad_share)
    seq = _np(table, "seq_no")
    bid, ask, last = _np(table, "bid"), _np(table, "ask"), _np(table, "last")

    unique_seq, seq_counts = np.unique(seq, return_counts=True)
    assert len(seq) - len(unique_seq) == expected["duplicate"]
    assert seq_counts.max() <= 2
    assert np.array_equal(unique_seq, np.arange(1, n - expected["duplicate"] + 1))
    assert int(np.sum(bid > ask)) == expected["crossed_quote"]
    assert int(np.sum(last <= 0)) == expected["non_positive_price"]
    assert np.any(last == 0) and np.any(last < 0)
    assert table.column("contract_id").null_count == expected["null_contract"]
    # Only contract_id is ever null.
    assert sum(c.null_count for c in table.columns) == expected["null_contract"]

    # Duplicates are exact copies, adjacent after the (exchange_ts, seq_no) sort.
    dup_seq = unique_seq[seq_counts == 2]
    rows = table.filter(pc.is_in(table.column("seq_no"), pa.array(dup_seq))).to_pylist()
    assert len(rows) == 2 * len(dup_seq)
    assert all(a == b for a, b in zip(rows[0::2], rows[1::2], strict=False))
    assert np.all(np.diff(seq) >= 0)
    assert np.all(np.diff(_local_time_us(table)) >= 0)


def test_bad_rows_are_disjoint_and_everything_else_is_clean(dirty):
    bid, ask, last = _np(dirty, "bid"), _np(dirty, "ask"), _np(dirty, "last")
    null_contract = dirty.column("contract_id").is_null().to_numpy(zero_copy_only=False)
    crossed = bid > ask
    non_positive = last <= 0
    assert not np.any(crossed & non_positive)
    assert not np.any(crossed & null_contract)
    assert not np.any(non_positive & null_contract)
    ok = ~(crossed | non_positive | null_contract)
    assert np.all(bid[ok] < ask[ok]) and np.all(bid[ok] >= 0.01)
    assert np.all((last[ok] >= bid[ok]) & (last[ok] <= ask[ok]))


# ---------------------------------------------------------------------------------------------
# Pricing helpers and calendar
# ---------------------------------------------------------------------------------------------
def test_black_scholes_reference_values_and_parity():
    call = g.bs_price(100.0, 100.0, 1.0, 0.05, 0.2, True)
    put = g.bs_price(100.0, 100.0, 1.0, 0.05, 0.2, False)
    assert call == pytest.approx(10.4506, abs=1e-4)
    assert put == pytest.approx(5.5735, abs=1e-4)

    strikes = np.arange(300.0, 400.0, 2.5)
    calls = g.bs_price(350.0, strikes, 0.05, 0.035, 0.18, True)
    puts = g.bs_price(350.0, strikes, 0.05, 0.035, 0.18, False)
    assert np.all(np.diff(calls) < 0)
    assert np.all(np.diff(puts) > 0)
    parity = calls - puts - (350.0 - strikes * np.exp(-0.035 * 0.05))
    assert np.max(np.abs(parity)) < 1e-9


def test_black_scholes_at_expiry_is_intrinsic():
    prices = g.bs_price(350.0, [340.0, 360.0, 340.0, 360.0], 0.0, 0.035, 0.18, [True, True, False, False])
    assert np.allclose(prices, [10.0, 0.0, 0.0, 10.0])


def test_tick_size():
    assert np.array_equal(g.tick_size([0.5, 9.99, 10.0, 25.0]), [0.01, 0.01, 0.05, 0.05])


@pytest.mark.parametrize(
    "trade_date,expected",
    [
        (date(2026, 11, 24), [date(2026, 12, 10), date(2027, 1, 14)]),
        (date(2026, 12, 10), [date(2027, 1, 14), date(2027, 2, 11)]),  # expiry day itself
        (date(2026, 11, 11), [date(2026, 11, 12), date(2026, 12, 10)]),
    ],
)
def test_next_expiries_are_second_thursdays_strictly_after(trade_date, expected):
    assert g.next_expiries(trade_date) == expected
    assert all(d.weekday() == 3 and 8 <= d.day <= 14 for d in expected)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def test_write_raw_path_roundtrip_and_idempotent_rewrite(tmp_path, dirty):
    path = g.write_raw(dirty, str(tmp_path), DAY)
    expected = tmp_path / "trade_date=2026-11-24" / "ticks-20261124.parquet"
    assert Path(path) == expected
    assert pq.read_table(path).equals(dirty)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    first_bytes = expected.read_bytes()

    # Same table again: byte-identical file; a different table replaces it, no leftovers.
    g.write_raw(dirty, str(tmp_path), DAY)
    assert expected.read_bytes() == first_bytes
    smaller = dirty.slice(0, 100)
    assert g.write_raw(smaller, str(tmp_path), DAY) == path
    assert sorted(os.listdir(expected.parent)) == ["_SUCCESS", expected.name]  # + the delivery marker
    assert pq.read_table(path).equals(smaller)


def test_the_delivery_marker_follows_the_data_and_follows_raw_delivery_marker(tmp_path, dirty, monkeypatch):
    """ml_pipeline's wait_for_raw starts Bronze once the marker is there (plugins/lakehouse_mlops/delivery.py)."""
    path = Path(g.write_raw(dirty, str(tmp_path / "a"), DAY))
    marker = path.parent / "_SUCCESS"
    assert marker.stat().st_size == 0 and marker.stat().st_mtime_ns >= path.stat().st_mtime_ns
    monkeypatch.setenv("RAW_DELIVERY_MARKER", "DELIVERED.done")
    assert sorted(os.listdir(Path(g.write_raw(dirty, str(tmp_path / "b"), DAY)).parent))[0] == "DELIVERED.done"
    monkeypatch.setenv("RAW_DELIVERY_MARKER", "none")  # the quiet-period convention: no marker
    assert os.listdir(Path(g.write_raw(dirty, str(tmp_path / "c"), DAY)).parent) == [path.name]


@pytest.mark.parametrize(
    "root,key",
    [
        ("s3://lakehouse/raw/ticks", "lakehouse/raw/ticks/trade_date=2026-11-24/ticks-20261124.parquet"),
        ("s3a://lakehouse/raw/ticks/", "lakehouse/raw/ticks/trade_date=2026-11-24/ticks-20261124.parquet"),
        ("s3a://lakehouse", "lakehouse/trade_date=2026-11-24/ticks-20261124.parquet"),
    ],
)
def test_resolve_target_for_s3(root, key):
    assert g.resolve_target(root, DAY) == ("s3", key)


def test_resolve_target_rejects_unknown_scheme():
    with pytest.raises(ValueError):
        g.resolve_target("gs://bucket/raw", DAY)


def test_s3_filesystem_from_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    expected = pafs.S3FileSystem(
        endpoint_override="127.0.0.1:8333",
        scheme="http",
        access_key="key",
        secret_key="secret",
        region="us-east-1",
    )
    assert g._s3_filesystem().equals(expected)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.synthetic.raw_ticks", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_each_date_and_splits_ticks(tmp_path):
    result = _cli("--dates", "2026-11-24,2026-11-25,2026-11-26", "--ticks", "1001", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [line[0] for line in lines] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    assert [int(line[1]) for line in lines] == [334, 334, 333]
    for day, rows, path in lines:
        assert Path(path) == tmp_path / f"trade_date={day}" / f"ticks-{day.replace('-', '')}.parquet"
        assert pq.read_metadata(path).num_rows == int(rows)


def test_cli_rejects_a_bad_date(tmp_path):
    result = _cli("--dates", "2026-11-24,2026-13-01", "--ticks", "100", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "invalid trade date '2026-13-01'" in result.stderr
    assert not any(tmp_path.iterdir())


def test_cli_rejects_a_weekend(tmp_path):
    result = _cli("--dates", "2026-11-28", "--ticks", "100", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "Saturday" in result.stderr and "KRX is closed" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("ticks", ["0", "-5"])
def test_cli_rejects_non_positive_ticks(tmp_path, capsys, ticks):
    with pytest.raises(SystemExit) as exc:
        g.main(["--dates", "2026-11-24", "--ticks", ticks, "--out", str(tmp_path)])
    assert exc.value.code != 0
    assert "--ticks must be > 0" in capsys.readouterr().err
