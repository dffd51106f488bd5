"""Helpers of the registry and maintenance tests: per-module settings and synthetic features."""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from jobs.schema import FEATURE_COLUMNS, LABEL


def scoped_settings(settings, spark, namespace: str, model_name: str):
    """Settings of one test module: its own Iceberg namespace and registered model."""
    scoped = dataclasses.replace(settings, namespace=namespace, model_name=model_name,
                                 experiment="unit-tests", training_lookback_days=20)
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {scoped.catalog}.{namespace}")
    return scoped


def feature_rows(day: dt.date, contracts: int = 12, bars: int = 60, seed: int = 0) -> pd.DataFrame:
    """Synthetic feature rows of one trade date with a learnable next-bar label (fixed seed per date)."""
    rng = np.random.default_rng(seed + day.toordinal())
    n = contracts * bars
    frame = pd.DataFrame({name: rng.normal(size=n) for name in FEATURE_COLUMNS})
    frame[LABEL] = (frame["ret_1"] + 0.5 * frame["order_flow_imbalance"] + rng.normal(scale=0.8, size=n) > 0)
    frame[LABEL] = frame[LABEL].astype("int32")
    start = pd.Timestamp(dt.datetime.combine(day, dt.time(9, 0)))
    frame["bar_ts"] = [start + pd.Timedelta(minutes=i % bars) for i in range(n)]
    frame["contract_id"] = [f"C{i // bars:03d}" for i in range(n)]
    frame["trade_date"] = day
    return frame[["trade_date", "contract_id", "bar_ts", *FEATURE_COLUMNS, LABEL]]


def write_features(spark, settings, day: dt.date, seed: int = 0):
    """Replace one date of the features table (one Iceberg commit), like feature_engineering does."""
    from jobs.contract import FEATURES
    from jobs.lakehouse.tables import replace_date_partition

    return replace_date_partition(spark.createDataFrame(feature_rows(day, seed=seed)), settings.table(FEATURES), day)
