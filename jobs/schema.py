"""The data shapes every layer agrees on: column lists, reason codes, keys, features and label.

Standard library only, like ``jobs/contract.py``: the Spark transforms, the pandas/scikit-learn
modelling code, the report and the DuckDB reference of ``make bench`` all read these tuples,
so none of them has to import pyspark (or copy a list) to know a column name.
"""
from __future__ import annotations

# --------------------------------------------------------------------------------------------------
# RAW / Bronze: the vendor tick schema
# --------------------------------------------------------------------------------------------------

# The vendor tick schema, in delivery order. Bronze holds each as text.
RAW_COLUMNS = (
    "exchange_ts", "seq_no", "contract_id", "underlying", "option_type", "strike", "expiry",
    "underlying_price", "bid", "ask", "last", "bid_size", "ask_size", "last_size",
)
# Without these a row cannot be identified or priced: a file lacking one is quarantined whole.
# The rest may be absent (contract attributes are derived from contract_id; sizes become null).
REQUIRED_COLUMNS = ("exchange_ts", "seq_no", "contract_id", "bid", "ask", "last")
# The type Silver parses each RAW text column into.
RAW_TYPES = {
    "exchange_ts": "timestamp", "seq_no": "bigint", "contract_id": "string", "underlying": "string",
    "option_type": "string", "strike": "double", "expiry": "date", "underlying_price": "double",
    "bid": "double", "ask": "double", "last": "double", "bid_size": "int", "ask_size": "int",
    "last_size": "int",
}
# Reason codes of files set aside whole (the file quarantine table).
FILE_REASONS = ("unsupported_format", "empty_file", "unreadable", "missing_columns")

# --------------------------------------------------------------------------------------------------
# Silver: typed ticks and the reasons a row is set aside
# --------------------------------------------------------------------------------------------------

# Reason codes of rows set aside, in the order rules are checked (first match wins).
REASONS = (
    "malformed_record",    # a CSV/JSON line that does not parse (wrong field count, broken quoting)
    "bad_type",            # a value that is not a number / timestamp / date where one is expected
    "null_key",            # no contract_id, exchange_ts or seq_no
    "unknown_contract",    # contract id not of a listed underlying, inconsistent or already expired
    "missing_price",       # bid, ask or last absent
    "non_positive_price",  # bid, ask or last zero or negative
    "crossed_quote",       # bid above ask
    "future_timestamp",    # exchange time later than when the file was ingested
    "wrong_timezone",      # outside the session, inside it when read as UTC: vendor sent UTC without offset
    "outside_trade_date",  # exchange time on another date
    "outside_session",     # the right date, outside trading hours
    "duplicate",           # the same exchange message (contract_id, seq_no) delivered again
)

SILVER_COLUMNS = (
    "trade_date", "exchange_ts", "seq_no", "contract_id", "underlying", "option_type", "strike",
    "expiry", "underlying_price", "bid", "ask", "last", "bid_size", "ask_size", "last_size",
    "mid", "spread", "_source_file", "_ingested_at",
)
# KOSPI200-20261210-C-340.0: underlying, expiry, call/put, strike.
CONTRACT_ID_PATTERN = r"^([A-Z0-9]+)-(\d{8})-([CP])-(\d+(?:\.\d+)?)$"

# --------------------------------------------------------------------------------------------------
# Gold and features
# --------------------------------------------------------------------------------------------------

# One Gold bar per contract and minute.
BAR_KEYS = ("trade_date", "contract_id", "option_type", "strike", "expiry", "bar_ts")

FEATURE_COLUMNS = (
    "ret_1", "ret_5", "ret_15", "realized_vol_15", "spread_rel", "order_flow_imbalance",
    "moneyness", "time_to_expiry", "iv_proxy", "log_volume", "tick_count", "is_call",
)
# Features whose distribution moves by construction: their PSI is still computed, logged and kept in
# the drift table, but they are left out of the drift share, with the reason shown on the monitoring
# run, in the morning report and in the drift table's excluded_reason.
DRIFT_EXCLUDED = {
    "time_to_expiry": "moves by construction: it shrinks by a day every trade date, so any earlier "
                      "reference differs (PSI about 7 on a calm day)",
}
# Whether the next bar's mid is higher (1) or not (0); null on a contract's last bar of the day.
LABEL = "label_up"
