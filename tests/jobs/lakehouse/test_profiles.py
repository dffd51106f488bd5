"""Column profiles (issue 16, item 1): one row per table, date and column in column_profiles.

Real local Spark and Iceberg (the unit catalog); the figures are checked against values worked
out by hand for a small frame, and a rerun must replace its (date, table) profile only.
"""
from __future__ import annotations

import datetime as dt

from jobs import contract
from jobs.lakehouse.profiles import PROFILE_COLUMNS, profile_and_publish

DAY = dt.date(2026, 10, 15)


class Tracker:
    def __init__(self):
        self.logged = {}

    def metrics(self, values):
        self.logged.update(values)


def frame(spark, day, prices):
    rows = [(day, f"C{i % 3}", p, None if i == 0 else i) for i, p in enumerate(prices)]
    return spark.createDataFrame(rows, "trade_date DATE, contract STRING, price DOUBLE, size BIGINT")


def profiles(spark, settings, day, table):
    return {r["column_name"]: r.asDict() for r in spark.table(settings.table(contract.COLUMN_PROFILES))
            .where(f"trade_date = DATE'{day}' AND table_name = '{table}'").collect()}


def test_every_column_gets_counts_and_numeric_ones_their_distribution(spark, settings):
    prices = [float(x) for x in range(1, 101)]  # 1..100
    assert profile_and_publish(spark, settings, frame(spark, DAY, prices), "unit_silver", DAY) == 4
    got = profiles(spark, settings, DAY, "unit_silver")
    assert set(got) == {"trade_date", "contract", "price", "size"}
    price, size, name = got["price"], got["size"], got["contract"]
    assert (price["rows"], price["nulls"]) == (100, 0)
    assert abs(price["distinct_estimate"] - 100) <= 5  # HyperLogLog++, 5 % relative standard deviation
    assert (price["min_value"], price["max_value"], price["mean"]) == ("1.0", "100.0", 50.5)
    assert [price[q] for q in ("p05", "p25", "p50", "p75", "p95")] == [5.0, 25.0, 50.0, 75.0, 95.0]
    assert (size["nulls"], size["min_value"], size["max_value"], size["data_type"]) == (1, "1", "99", "bigint")
    assert (name["distinct_estimate"], name["mean"], name["p50"], name["min_value"]) == (3, None, None, "C0")
    assert [n for n, _ in PROFILE_COLUMNS] == spark.table(settings.table(contract.COLUMN_PROFILES)).columns


def test_a_rerun_replaces_its_own_profile_and_keeps_the_others(spark, settings):
    other = DAY + dt.timedelta(days=1)
    profile_and_publish(spark, settings, frame(spark, DAY, [1.0, 2.0]), "unit_gold", DAY)
    profile_and_publish(spark, settings, frame(spark, DAY, [1.0, 2.0, 3.0]), "unit_features", DAY)
    profile_and_publish(spark, settings, frame(spark, other, [7.0]), "unit_gold", other)
    profile_and_publish(spark, settings, frame(spark, DAY, [4.0, 5.0, 6.0, 7.0]), "unit_gold", DAY)  # the rerun
    assert profiles(spark, settings, DAY, "unit_gold")["price"]["rows"] == 4
    assert len(profiles(spark, settings, DAY, "unit_gold")) == 4  # no duplicate columns
    assert profiles(spark, settings, DAY, "unit_features")["price"]["rows"] == 3
    assert profiles(spark, settings, other, "unit_gold")["price"]["max_value"] == "7.0"


def test_switched_off_with_the_facts(spark, settings, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_FACTS", "off")
    day = DAY + dt.timedelta(days=5)
    assert profile_and_publish(spark, settings, frame(spark, day, [1.0]), "unit_off", day) == 0
    assert profiles(spark, settings, day, "unit_off") == {}
