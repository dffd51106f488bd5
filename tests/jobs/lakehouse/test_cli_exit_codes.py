"""The stage's exit code tells Airflow whether a retry can help (plugins/lakehouse_mlops/spark_stage.py).

In-process, no Spark and no MLflow (LAKEHOUSE_TRACKING=off, preflight off): only the mapping of
what the body raised to the code the operator reads.
"""
from __future__ import annotations

import pytest

from jobs import contract
from jobs.lakehouse.cli import stage_cli
from jobs.quality.rules import QualityGateFailed

ARGV = ["--trade-date", "2026-11-27"]


@pytest.fixture(autouse=True)
def no_services(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_TRACKING", "off")
    monkeypatch.setenv("DEPENDENCY_PREFLIGHT", "off")


def failing(error: BaseException):
    def body(spark, settings, ctx, tracker):
        raise error
    return body


@pytest.mark.parametrize("error", [QualityGateFailed("quality gate 'bronze' failed for 2026-11-27"),
                                   FileNotFoundError("no RAW ticks for 2026-11-27 at /raw/trade_date=2026-11-27")])
def test_deterministic_failures_exit_65_with_the_cause_in_the_output(error, capsys):
    assert stage_cli("raw_to_bronze", failing(error), argv=ARGV, needs_spark=False) == contract.EXIT_DETERMINISTIC
    assert f"{type(error).__name__}: {error}" in capsys.readouterr().err


def test_bad_settings_exit_65(monkeypatch):
    monkeypatch.setenv("QUALITY_GATES", "sometimes")
    assert stage_cli("raw_to_bronze", failing(AssertionError("not reached")), argv=ARGV,
                     needs_spark=False) == contract.EXIT_DETERMINISTIC


def test_other_failures_still_raise_and_a_success_is_0():
    with pytest.raises(RuntimeError, match="py4j"):
        stage_cli("raw_to_bronze", failing(RuntimeError("py4j gateway lost")), argv=ARGV, needs_spark=False)
    assert stage_cli("raw_to_bronze", lambda *a: None, argv=ARGV, needs_spark=False) == 0
    assert contract.EXIT_DEPENDENCY_UNAVAILABLE == 75 != contract.EXIT_DETERMINISTIC
