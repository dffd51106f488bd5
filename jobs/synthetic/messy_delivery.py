"""A messy second vendor delivery for one trade date: every kind of bad input the pipeline handles.

Real tick feeds arrive late, truncated, in three formats and with their own column names. This
writes such a delivery next to the clean Parquet file of ``jobs.synthetic.raw_ticks`` and returns
exactly what the pipeline must make of it, so tests and the demo can check the outcome:

- ``vendor-b-<date>.csv``: renamed and extra columns, contract attributes missing (derived from
  the contract id), plus one row of each bad kind (malformed line, bad type, unknown contract,
  missing price, future timestamp, outside session, duplicate);
- ``vendor-c-<date>.jsonl``: a feed in UTC without offsets (wrong time zone), a truncated last line;
- ``vendor-d-<date>.parquet``: a Parquet file cut off mid-transfer (unreadable);
- ``vendor-e-<date>.csv``: no bid column (missing columns);
- ``vendor-f-<date>.xlsx``: a spreadsheet (unsupported format).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys

import pyarrow.parquet as pq

from jobs.synthetic.raw_ticks import KST, generate_ticks, parse_trade_dates, resolve_target, write_delivery_marker

SEQ_OFFSET = 10_000_000  # vendor B numbers its messages apart from the main feed


def _rows(trade_date: dt.date, n: int, seed: int) -> list[dict]:
    table = generate_ticks(trade_date, n, seed=seed, bad_share=0.0)
    return table.to_pylist()


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(KST).isoformat()


def build(trade_date: dt.date, clean_rows: int = 40, seed: int = 7,
          now: dt.datetime | None = None) -> tuple[dict[str, bytes], dict]:
    """(file name -> content, expected outcome). Pure: same arguments, same bytes."""
    now = now or dt.datetime.now(dt.UTC)
    ticks = _rows(trade_date, clean_rows + 8, seed)
    files: dict[str, bytes] = {}

    # Vendor B, CSV: its own column names, an extra column, no underlying/type/strike/expiry.
    header = ["ts", "seq", "symbol", "spot", "bid_price", "ask_price", "last_price", "bid_qty", "ask_qty",
              "last_qty", "venue"]

    def line(t: dict, **over) -> str:
        values = {"ts": _iso(t["exchange_ts"]), "seq": t["seq_no"] + SEQ_OFFSET, "symbol": t["contract_id"],
                  "spot": t["underlying_price"], "bid_price": t["bid"], "ask_price": t["ask"],
                  "last_price": t["last"], "bid_qty": t["bid_size"], "ask_qty": t["ask_size"],
                  "last_qty": t["last_size"], "venue": "KRX", **over}
        return ",".join(str(values[h]) for h in header)

    good = [line(t) for t in ticks[:clean_rows]]
    extra = ticks[clean_rows:]
    session_day = dt.datetime.combine(trade_date, dt.time(7, 0), KST)
    bad = {
        # Three fields where the header has eleven: a line cut short.
        "malformed_record": (f"{_iso(extra[0]['exchange_ts'])},{extra[0]['seq_no'] + SEQ_OFFSET},"
                             f"{extra[0]['contract_id']}"),
        "bad_type": line(extra[1], bid_price="n/a"),
        "unknown_contract": line(extra[2], symbol="KOSDAQ150-20991231-C-100.0"),
        "missing_price": line(extra[3], last_price=""),
        "future_timestamp": line(extra[4], ts=_iso(now + dt.timedelta(days=2))),
        "outside_session": line(extra[5], ts=_iso(session_day)),
        "duplicate": good[0],
    }
    files[f"vendor-b-{trade_date:%Y%m%d}.csv"] = ("\n".join([",".join(header), *good, *bad.values()]) + "\n").encode()

    # Vendor C, JSON lines in UTC wall-clock time without an offset; the last line cut off.
    utc_rows = _rows(trade_date, 5, seed + 1)
    lines = []
    for t in utc_rows:
        record = {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in t.items()}
        record["exchange_ts"] = t["exchange_ts"].astimezone(dt.UTC).replace(tzinfo=None).isoformat()
        record["seq_no"] = t["seq_no"] + 2 * SEQ_OFFSET
        lines.append(json.dumps(record))
    lines.append(lines[-1][: len(lines[-1]) // 2])
    files[f"vendor-c-{trade_date:%Y%m%d}.jsonl"] = ("\n".join(lines) + "\n").encode()

    # Vendor D, Parquet cut off mid-transfer.
    buf = io.BytesIO()
    pq.write_table(generate_ticks(trade_date, 200, seed=seed + 2, bad_share=0.0), buf)
    files[f"vendor-d-{trade_date:%Y%m%d}.parquet"] = buf.getvalue()[: len(buf.getvalue()) // 2]

    # Vendor E, CSV without the bid column; vendor F, a spreadsheet.
    files[f"vendor-e-{trade_date:%Y%m%d}.csv"] = (
        "exchange_ts,seq_no,contract_id,ask,last\n"
        f"{_iso(ticks[0]['exchange_ts'])},1,{ticks[0]['contract_id']},1.0,1.0\n").encode()
    files[f"vendor-f-{trade_date:%Y%m%d}.xlsx"] = b"PK\x03\x04 not really a workbook"

    expected = {
        "rows_loaded": len(good) + len(bad) + len(lines),   # rows of the files that load
        "rejected": {**{k: 1 for k in bad}, "malformed_record": 2, "wrong_timezone": len(utc_rows)},
        "files": {f"vendor-d-{trade_date:%Y%m%d}.parquet": "unreadable",
                  f"vendor-e-{trade_date:%Y%m%d}.csv": "missing_columns",
                  f"vendor-f-{trade_date:%Y%m%d}.xlsx": "unsupported_format"},
        "renamed": {"ts": "exchange_ts", "seq": "seq_no", "symbol": "contract_id", "spot": "underlying_price",
                    "bid_price": "bid", "ask_price": "ask", "last_price": "last", "bid_qty": "bid_size",
                    "ask_qty": "ask_size", "last_qty": "last_size"},
        "extra_columns": ["venue"],
    }
    return files, expected


def write(root: str, trade_date: dt.date, **kwargs) -> dict:
    """Write the delivery into the date folder of the RAW root (local or S3); returns ``expected``."""
    files, expected = build(trade_date, **kwargs)
    kind, target = resolve_target(root, trade_date)
    folder = target.rsplit("/", 1)[0]
    if kind == "s3":
        from jobs.synthetic.raw_ticks import _s3_filesystem

        fs = _s3_filesystem()
        for name, content in files.items():
            with fs.open_output_stream(f"{folder}/{name}") as out:
                out.write(content)
    else:
        os.makedirs(folder, exist_ok=True)
        for name, content in files.items():
            tmp = os.path.join(folder, f".{name}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(content)
            os.replace(tmp, os.path.join(folder, name))
    write_delivery_marker(root, trade_date)  # after the last file: the delivery is complete
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.synthetic.messy_delivery",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dates", required=True, help="comma-separated YYYY-MM-DD trade dates")
    parser.add_argument("--out", required=True, help="RAW root: local directory, s3://bucket/prefix or s3a://...")
    args = parser.parse_args(argv)
    for d in parse_trade_dates(args.dates):
        expected = write(args.out, d)
        print(json.dumps({"trade_date": d.isoformat(), **expected}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
