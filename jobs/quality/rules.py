"""Quality gates: batch-level rules a layer must pass before it is published.

Row rules (``silver.REASONS``) set single bad rows aside; gates judge the batch as a whole
(too many rejects, a column suddenly empty, prices out of range, half a day missing) and stop
the layer from being published. Rules live in ``jobs/quality/quality_gates.toml`` (``QUALITY_GATES_FILE``
points at your own); every figure is logged to MLflow whether the gate passes or not.

Rule grammar per layer table: ``max_<figure> = x`` / ``min_<figure> = x`` bound a figure;
``<figure> = [lo, hi]`` bounds it on both sides; ``[layer.max_null_share]`` bounds the share of
nulls per column; ``[layer.ranges]`` gives each column's allowed ``[lo, hi]``, and
``max_out_of_range_share`` (default 0) bounds the share of rows outside it.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_RULES_FILE = Path(__file__).resolve().parent / "quality_gates.toml"
MODES = ("enforce", "warn", "off")


class QualityGateFailed(RuntimeError):
    """A layer's batch broke a quality gate: it was not published."""


@dataclass(frozen=True)
class GateResult:
    rule: str
    figure: str
    value: float | None
    bound: str
    passed: bool
    skipped: bool = False   # the figure is not available (e.g. too little history for volume)

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{self.figure} = {shown}, allowed {self.bound} ({self.rule})"


def load_rules(path: str | Path | None = None) -> dict:
    """The rules file, parsed once per process (stages ask for it more than once)."""
    return _load_rules(Path(path) if path else DEFAULT_RULES_FILE)


@lru_cache(maxsize=8)
def _load_rules(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"quality gate rules not found: {path} (QUALITY_GATES_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"quality gate rules in {path} are not valid TOML: {exc}") from None


def columns_to_profile(layer_rules: dict) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """(columns whose null share is bounded, {column: (lo, hi)} of the value ranges)."""
    nulls = sorted(layer_rules.get("max_null_share", {}))
    ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in layer_rules.get("ranges", {}).items()}
    return nulls, ranges


def profile_columns(df, layer_rules: dict) -> dict[str, float]:
    """``rows`` plus the null and out-of-range shares the rules ask for, in one Spark aggregation."""
    from pyspark.sql import functions as F

    nulls, ranges = columns_to_profile(layer_rules)
    aggs = [F.count(F.lit(1)).alias("rows")]
    aggs += [F.sum(F.col(c).isNull().cast("long")).alias(f"null.{c}") for c in nulls]
    aggs += [F.sum(((F.col(c) < lo) | (F.col(c) > hi)).cast("long")).alias(f"range.{c}")
             for c, (lo, hi) in ranges.items()]
    row = df.agg(*aggs).first().asDict()
    return shares(row, nulls, ranges)


def shares(counts: dict, nulls: list[str], ranges: dict) -> dict[str, float]:
    rows = int(counts.get("rows") or 0)
    out: dict[str, float] = {"rows": float(rows)}
    for c in nulls:
        out[f"null_share.{c}"] = (counts.get(f"null.{c}") or 0) / rows if rows else 0.0
    for c in ranges:
        out[f"out_of_range_share.{c}"] = (counts.get(f"range.{c}") or 0) / rows if rows else 0.0
    return out


def evaluate(layer_rules: dict, figures: dict[str, float | None]) -> list[GateResult]:
    """Check every rule of one layer against the figures; a missing figure is a skipped check."""
    results: list[GateResult] = []

    def check(rule: str, figure: str, ok, bound: str) -> None:
        value = figures.get(figure)
        if value is None:
            results.append(GateResult(rule, figure, None, bound, True, skipped=True))
        else:
            results.append(GateResult(rule, figure, float(value), bound, bool(ok(float(value)))))

    for key, limit in layer_rules.items():
        if key == "max_null_share":
            for col, lim in limit.items():
                check(f"max_null_share.{col}", f"null_share.{col}", lambda v, lim=lim: v <= lim, f"<= {lim}")
        elif key == "ranges":
            lim = float(layer_rules.get("max_out_of_range_share", 0.0))
            for col, (lo, hi) in limit.items():
                check(f"ranges.{col}", f"out_of_range_share.{col}", lambda v, lim=lim: v <= lim,
                      f"<= {lim} outside [{lo}, {hi}]")
        elif key == "max_out_of_range_share" or not isinstance(limit, (int, float, list)):
            continue
        elif isinstance(limit, list):
            lo, hi = (float(x) for x in limit)
            check(key, key, lambda v, lo=lo, hi=hi: lo <= v <= hi, f"within [{lo}, {hi}]")
        elif key.startswith("max_"):
            check(key, key[4:], lambda v, lim=limit: v <= lim, f"<= {limit}")
        elif key.startswith("min_"):
            check(key, key[4:], lambda v, lim=limit: v >= lim, f">= {limit}")
    return results


def failure_message(layer: str, trade_date, failed: list[GateResult]) -> str:
    lines = "; ".join(r.describe() for r in failed)
    return f"quality gate '{layer}' failed for {trade_date}, nothing published: {lines}"
