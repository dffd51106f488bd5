"""Deterministic synthetic KOSPI200 option ticks for the RAW zone.

The pipeline needs realistic input without a market-data licence, and its tests need the
same input on every run, so everything here is derived from (seed, trade date) alone.
A small, exactly known share of rows is deliberately broken so that the downstream
validation step has something to reject.

Pure numpy + pyarrow on purpose: it runs outside Spark (Airflow task, CI, laptop).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.contract import raw_delivery_marker

UNDERLYING = "KOSPI200"
TIMEZONE = "Asia/Seoul"
# Korea has had no DST since 1988; a fixed offset avoids depending on a tz database here.
KST = timezone(timedelta(hours=9), "KST")
SESSION_OPEN = time(9, 0)
SESSION_CLOSE = time(15, 45)
SESSION_SECONDS = 6 * 3600 + 45 * 60

OPEN_LEVEL = 350.0
ANNUAL_VOL = 0.18
RISK_FREE = 0.035
STRIKE_STEP = 2.5
STRIKE_OFFSETS = np.arange(-5, 5)  # 10 strikes around the at-the-money one
N_EXPIRIES = 2
TRADING_DAYS = 252
CALENDAR_DAYS = 365.0
PRESSURE_MEMORY_SECONDS = 300.0  # order-flow pressure decays over about five minutes
PRESSURE_DRIFT = 0.08            # drift per second, in one-second volatilities per unit of pressure
PRESSURE_SIZE_SKEW = 0.6         # bid/ask size ratio leans exp(±0.6) per unit of pressure

BAD_KINDS = ("duplicate", "crossed_quote", "non_positive_price", "null_contract")

SCHEMA = pa.schema(
    [
        pa.field("exchange_ts", pa.timestamp("us", tz=TIMEZONE)),
        pa.field("seq_no", pa.int64()),
        pa.field("contract_id", pa.string()),
        pa.field("underlying", pa.string()),
        pa.field("option_type", pa.string()),
        pa.field("strike", pa.float64()),
        pa.field("expiry", pa.date32()),
        pa.field("underlying_price", pa.float64()),
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
        pa.field("last", pa.float64()),
        pa.field("bid_size", pa.int32()),
        pa.field("ask_size", pa.int32()),
        pa.field("last_size", pa.int32()),
    ]
)

_US = 1_000_000
_EPOCH = date(1970, 1, 1)


# --------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------
def second_thursday(year: int, month: int) -> date:
    """KRX monthly options expire on the second Thursday (holiday shifts are ignored)."""
    first = date(year, month, 1)
    first_thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return first_thursday + timedelta(days=7)


def next_expiries(trade_date: date, count: int = N_EXPIRIES) -> list[date]:
    """Expiries strictly after the trade date: an expiring series stops trading that day."""
    out: list[date] = []
    year, month = trade_date.year, trade_date.month
    while len(out) < count:
        exp = second_thursday(year, month)
        if exp > trade_date:
            out.append(exp)
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return out


def _epoch_us(d: date, t: time) -> int:
    return int(datetime.combine(d, t, tzinfo=KST).timestamp()) * _US


# --------------------------------------------------------------------------------------------
# Pricing
# --------------------------------------------------------------------------------------------
def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF without scipy (Numerical Recipes erfc, relative error < 1.2e-7).

    The erfc reflection makes N(x) + N(-x) == 1, so put-call parity holds to rounding.
    """
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (
        1.00002368
        + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))
    )
    erfc_abs = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - 0.5 * erfc_abs, 0.5 * erfc_abs)


def bs_price(spot, strike, t_years, rate, vol, is_call):
    """Vectorised Black-Scholes (no dividends); expired options are worth their intrinsic value."""
    spot, strike, t_years, vol, is_call = np.broadcast_arrays(
        np.asarray(spot, dtype=float),
        np.asarray(strike, dtype=float),
        np.asarray(t_years, dtype=float),
        np.asarray(vol, dtype=float),
        np.asarray(is_call, dtype=bool),
    )
    t = np.maximum(t_years, 1e-12)
    sqrt_t = np.sqrt(t)
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    disc = strike * np.exp(-rate * t)
    call = spot * _norm_cdf(d1) - disc * _norm_cdf(d2)
    put = disc * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
    price = np.where(is_call, call, put)
    intrinsic = np.where(is_call, np.maximum(spot - strike, 0.0), np.maximum(strike - spot, 0.0))
    return np.where(t_years > 0, price, intrinsic)


def implied_vol(spot, strike, t_years, base_vol: float = ANNUAL_VOL):
    """Mild equity-style smile: higher vol for low strikes, a little convexity, term slope."""
    m = np.log(np.asarray(strike, dtype=float) / np.asarray(spot, dtype=float))
    term = 0.01 * np.exp(-np.asarray(t_years, dtype=float) * 12.0)  # short dated a bit richer
    return base_vol + term - 0.25 * m + 1.5 * m * m


# --------------------------------------------------------------------------------------------
# KRX tick grid, in integer hundredths of a point to stay exact
# --------------------------------------------------------------------------------------------
_TEN_POINTS = 1000  # 10.00 in hundredths; the tick is 0.05 from here up, 0.01 below


def _floor_grid(c: np.ndarray) -> np.ndarray:
    big = np.floor(c / 5.0) * 5.0
    return np.where(c >= _TEN_POINTS, big, np.floor(c)).astype(np.int64)


def _ceil_grid(c: np.ndarray) -> np.ndarray:
    up = np.ceil(c)
    return np.where(up > _TEN_POINTS, np.ceil(c / 5.0) * 5.0, up).astype(np.int64)


def _next_grid(c: np.ndarray) -> np.ndarray:
    return c + np.where(c >= _TEN_POINTS, 5, 1)


def tick_size(price):
    """KRX KOSPI200 option tick: 0.01 below 10 points, 0.05 at or above."""
    return np.where(np.asarray(price) >= 10.0, 0.05, 0.01)


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------
def _bad_counts(n_bad: int) -> dict[str, int]:
    base, rest = divmod(n_bad, len(BAD_KINDS))
    return {kind: base + (1 if i < rest else 0) for i, kind in enumerate(BAD_KINDS)}


def bad_row_counts(n_ticks: int, bad_share: float) -> dict[str, int]:
    """How many rows of each bad kind generate_ticks produces, so checks need not re-derive it."""
    return _bad_counts(int(round(n_ticks * bad_share)))


def _sizes(rng: np.random.Generator, n: int, shape: float, scale: float, cap: int) -> np.ndarray:
    """Pareto-tailed lot sizes: mostly small orders, occasional block trades."""
    return np.minimum(1 + np.floor(rng.pareto(shape, n) * scale), cap).astype(np.int32)


def generate_ticks(
    trade_date: date, n_ticks: int, seed: int = 42, bad_share: float = 0.002, regime: float = 1.0
) -> pa.Table:
    """One trading day of option ticks; a pure function of its arguments.

    ``regime`` > 1 makes a stressed day (volatility, spreads and trade sizes scaled up): the
    market-regime change that drift monitoring exists to catch.
    """
    if regime <= 0:
        raise ValueError(f"regime must be > 0, got {regime}")
    if n_ticks < 0:
        raise ValueError(f"n_ticks must be >= 0, got {n_ticks}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= bad_share <= 0.5:
        raise ValueError(f"bad_share must be within [0, 0.5], got {bad_share}")

    counts = bad_row_counts(n_ticks, bad_share)
    n_dup = counts["duplicate"]
    n_clean = n_ticks - n_dup
    n_corrupt = sum(counts.values())  # rows picked from the clean set (dup sources included)
    if n_corrupt > n_clean:
        raise ValueError(f"bad_share={bad_share} is too large for n_ticks={n_ticks}")

    # Independent streams, so e.g. the contract mix does not shift when the path changes.
    streams = np.random.SeedSequence([seed, trade_date.toordinal()]).spawn(6)
    rng_path, rng_time, rng_contract, rng_quote, rng_size, rng_bad = (
        np.random.default_rng(s) for s in streams
    )

    # Underlying: GBM on a one-second grid over the session, trading-time variance.
    s0 = round(OPEN_LEVEL * math.exp(rng_path.normal(0.0, 0.02)), 2)
    dt = 1.0 / (TRADING_DAYS * SESSION_SECONDS)
    step_sd = ANNUAL_VOL * regime * math.sqrt(dt)
    steps = rng_path.normal(-0.5 * step_sd * step_sd, step_sd, SESSION_SECONDS)
    # Order-flow pressure: a mean-reverting latent (AR(1), ~5 minute memory) that leans on the
    # underlying's next moves and shows up as bid/ask size imbalance in the quotes. It gives the
    # next-bar model a real but weak microstructure signal, as in live markets.
    phi = math.exp(-1.0 / PRESSURE_MEMORY_SECONDS)
    shocks = rng_path.normal(0.0, math.sqrt(1 - phi * phi), SESSION_SECONDS + 1)
    pressure = np.empty(SESSION_SECONDS + 1)
    pressure[0] = shocks[0] / math.sqrt(1 - phi * phi)
    for i in range(1, SESSION_SECONDS + 1):
        pressure[i] = phi * pressure[i - 1] + shocks[i]
    steps = steps + PRESSURE_DRIFT * step_sd * pressure[:-1]
    path = s0 * np.exp(np.concatenate(([0.0], np.cumsum(steps))))

    # Arrival times: U-shaped intraday intensity (uniform + arcsine mixture), sorted.
    u = np.where(
        rng_time.random(n_clean) < 0.55,
        rng_time.random(n_clean),
        rng_time.beta(0.5, 0.5, n_clean),
    )
    session_us = SESSION_SECONDS * _US
    offset_us = np.sort(np.minimum((u * session_us).astype(np.int64), session_us))
    open_us = _epoch_us(trade_date, SESSION_OPEN)
    ts_us = open_us + offset_us
    seconds = offset_us / _US
    spot = np.round(np.interp(seconds, np.arange(SESSION_SECONDS + 1, dtype=float), path), 2)

    # Contract universe: 2 expiries x 10 strikes x C/P, activity near the money and near expiry.
    expiries = next_expiries(trade_date)
    atm = round(s0 / STRIKE_STEP) * STRIKE_STEP
    strikes = atm + STRIKE_STEP * STRIKE_OFFSETS
    c_exp = np.repeat(np.arange(N_EXPIRIES), len(strikes) * 2)
    c_strike = np.tile(np.repeat(strikes, 2), N_EXPIRIES)
    c_call = np.tile(np.array([True, False]), N_EXPIRIES * len(strikes))
    weight = np.exp(-0.5 * ((c_strike - s0) / (3 * STRIKE_STEP)) ** 2) * np.where(c_exp == 0, 3.0, 1.0)
    contract = rng_contract.choice(len(c_exp), size=n_clean, p=weight / weight.sum())
    contract_ids = [
        f"{UNDERLYING}-{expiries[e]:%Y%m%d}-{'C' if c else 'P'}-{k:.1f}"
        for e, k, c in zip(c_exp, c_strike, c_call, strict=False)
    ]

    strike = c_strike[contract]
    is_call = c_call[contract]
    exp_idx = c_exp[contract]
    expiry_close_us = np.array([_epoch_us(e, SESSION_CLOSE) for e in expiries], dtype=np.int64)
    t_years = (expiry_close_us[exp_idx] - ts_us) / (_US * 86400 * CALENDAR_DAYS)
    theo = bs_price(spot, strike, t_years, RISK_FREE, implied_vol(spot, strike, t_years), is_call)

    # Quotes: noisy mid, spread of a few ticks, snapped outwards to the KRX grid.
    mid_c = theo * np.exp(rng_quote.normal(0.0, 0.004, n_clean)) * 100.0
    spread_ticks = np.minimum(np.ceil(rng_quote.geometric(0.55, n_clean) * regime), 6 * math.ceil(regime))
    half_c = spread_ticks * np.where(mid_c >= _TEN_POINTS, 5, 1) / 2.0
    bid_c = np.maximum(_floor_grid(mid_c - half_c), 1)
    ask_c = _ceil_grid(mid_c + half_c)
    ask_c = np.where(ask_c <= bid_c, _next_grid(bid_c), ask_c)
    side = rng_quote.random(n_clean)
    last_c = np.where(
        side < 0.45, bid_c, np.where(side < 0.9, ask_c, _floor_grid((bid_c + ask_c) / 2.0))
    )

    lean = np.exp(PRESSURE_SIZE_SKEW * pressure[np.minimum(seconds.astype(np.int64), SESSION_SECONDS)])
    bid_size = np.clip(np.round(_sizes(rng_size, n_clean, 1.5, 20.0, 50_000) * lean), 1, 50_000).astype(np.int32)
    ask_size = np.clip(np.round(_sizes(rng_size, n_clean, 1.5, 20.0, 50_000) / lean), 1, 50_000).astype(np.int32)
    last_size = _sizes(rng_size, n_clean, 1.3, 3.0 * regime, 20_000)

    bid = bid_c / 100.0
    ask = ask_c / 100.0
    last = last_c / 100.0
    contract_valid = np.ones(n_clean, dtype=bool)

    # Deliberate bad rows, on disjoint clean rows so each kind is counted exactly.
    picked = rng_bad.choice(n_clean, size=n_corrupt, replace=False).astype(np.int64)
    bounds = np.cumsum([counts[k] for k in BAD_KINDS])[:-1]
    dup_src, crossed, non_pos, null_contract = np.split(picked, bounds)
    bid[crossed], ask[crossed] = ask[crossed], bid[crossed].copy()
    half = len(non_pos) // 2
    last[non_pos[:half]] = 0.0
    last[non_pos[half:]] = -last[non_pos[half:]]
    contract_valid[null_contract] = False

    # Duplicates are extra copies; sorting row positions keeps (exchange_ts, seq_no) order.
    order = np.sort(np.concatenate((np.arange(n_clean), dup_src)))
    seq_no = np.arange(1, n_clean + 1, dtype=np.int64)[order]
    contract_idx = pa.array(contract.astype(np.int32)[order], mask=~contract_valid[order])
    type_idx = pa.array((~is_call[order]).astype(np.int8))
    expiry_days = np.array([(e - _EPOCH).days for e in expiries], dtype=np.int32)

    columns = [
        pa.array(ts_us[order]).cast(pa.timestamp("us", tz=TIMEZONE)),
        pa.array(seq_no),
        pa.array(contract_ids, pa.string()).take(contract_idx),
        pa.repeat(pa.scalar(UNDERLYING, pa.string()), n_ticks),
        pa.array(["C", "P"], pa.string()).take(type_idx),
        pa.array(strike[order]),
        pa.array(expiry_days[exp_idx[order]]).cast(pa.date32()),
        pa.array(spot[order]),
        pa.array(bid[order]),
        pa.array(ask[order]),
        pa.array(last[order]),
        pa.array(bid_size[order]),
        pa.array(ask_size[order]),
        pa.array(last_size[order]),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def raw_file_name(trade_date: date) -> str:
    return f"trade_date={trade_date:%Y-%m-%d}/ticks-{trade_date:%Y%m%d}.parquet"


def _s3_filesystem():
    """SeaweedFS/MinIO-style endpoint from the same variables MLflow and boto3 use."""
    from pyarrow import fs as pafs

    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL", "")
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    if not parsed.netloc:
        raise ValueError("MLFLOW_S3_ENDPOINT_URL must be set to write RAW ticks to S3")
    return pafs.S3FileSystem(
        endpoint_override=parsed.netloc,
        scheme=parsed.scheme or "https",
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def resolve_target(root: str, trade_date: date) -> tuple[str, str]:
    """("s3", "bucket/key") or ("local", absolute path) for the day's RAW file."""
    parsed = urlparse(root)
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ValueError(f"no bucket in {root!r}")
        prefix = parsed.path.strip("/")
        key = "/".join(p for p in (parsed.netloc, prefix, raw_file_name(trade_date)) if p)
        return "s3", key
    if parsed.scheme == "file":
        root = parsed.path
    elif parsed.scheme and len(parsed.scheme) > 1:  # len 1: a Windows drive letter
        raise ValueError(f"unsupported RAW location {root!r} (local path, s3:// or s3a://)")
    return "local", os.path.join(os.path.abspath(root), raw_file_name(trade_date))


def write_delivery_marker(root: str, trade_date: date) -> str | None:
    """Declare the date's delivery complete: the empty marker file (``RAW_DELIVERY_MARKER``, default
    ``_SUCCESS``) in its folder, written after the data files (plugins/lakehouse_mlops/delivery.py)."""
    marker = raw_delivery_marker()
    if marker is None:
        return None
    kind, target = resolve_target(root, trade_date)
    path = f"{target.rsplit('/', 1)[0] if kind == 's3' else os.path.dirname(target)}/{marker}"
    if kind == "s3":
        with _s3_filesystem().open_output_stream(path) as out:
            out.write(b"")
        return "s3://" + path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb"):
        pass
    return path


def write_raw(table: pa.Table, root: str, trade_date: date) -> str:
    """Write the day's single Parquet file, replacing any previous one so reruns are idempotent,
    then the delivery's completion marker."""
    kind, target = resolve_target(root, trade_date)
    if kind == "s3":
        # An S3 object only becomes visible when the upload completes: no partial reads.
        fs = _s3_filesystem()
        pq.write_table(table, target, filesystem=fs, compression="zstd")
        write_delivery_marker(root, trade_date)
        return "s3://" + target

    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    # Dot-prefixed temp name: Spark and pyarrow datasets skip hidden files while it is written.
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    write_delivery_marker(root, trade_date)
    return target


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_trade_dates(text: str) -> list[date]:
    """Comma-separated YYYY-MM-DD trading days; weekends are refused because KRX is closed."""
    out: list[date] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        try:
            if not _DATE_RE.match(raw):
                raise ValueError
            d = date.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"invalid trade date {raw!r}: expected YYYY-MM-DD") from None
        if d.weekday() >= 5:
            raise ValueError(f"{raw} is a {d:%A}: KRX is closed on weekends, no ticks to generate")
        if d in out:
            raise ValueError(f"trade date {raw} given twice")
        out.append(d)
    if not out:
        raise ValueError("no trade dates given")
    return out


def split_evenly(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.synthetic.raw_ticks",
        description="Generate deterministic synthetic KOSPI200 option ticks into the RAW zone.",
    )
    parser.add_argument("--dates", required=True, help="comma-separated YYYY-MM-DD trade dates")
    parser.add_argument("--ticks", required=True, type=int, help="total ticks, split evenly over the dates")
    parser.add_argument(
        "--out", required=True, help="RAW root: local directory, s3://bucket/prefix or s3a://..."
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bad-share", type=float, default=0.002, help="share of deliberately bad rows")
    parser.add_argument("--regime", type=float, default=1.0,
                        help="market stress factor (>1: higher volatility, wider spreads, bigger trades)")
    args = parser.parse_args(argv)

    try:
        dates = parse_trade_dates(args.dates)
    except ValueError as exc:
        parser.error(str(exc))
    if args.ticks <= 0:
        parser.error(f"--ticks must be > 0, got {args.ticks}")
    if args.ticks < len(dates):
        parser.error(f"--ticks ({args.ticks}) must be at least the number of dates ({len(dates)})")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if not 0.0 <= args.bad_share <= 0.5:
        parser.error(f"--bad-share must be within [0, 0.5], got {args.bad_share}")

    for d, n in zip(dates, split_evenly(args.ticks, len(dates)), strict=False):
        table = generate_ticks(d, n, seed=args.seed, bad_share=args.bad_share, regime=args.regime)
        path = write_raw(table, args.out, d)
        print(f"{d.isoformat()}\t{table.num_rows}\t{path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
