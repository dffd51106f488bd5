"""Prometheus metrics of one stage run, pushed to a Pushgateway.

A stage is a batch job: it lives for a minute and is gone before Prometheus could scrape it. The
Prometheus documentation's answer for service-level batch jobs is the Pushgateway
(https://prometheus.io/docs/practices/pushing/): the job pushes its figures when it ends, the
Pushgateway keeps the last push per group, and Prometheus scrapes the Pushgateway (with
``honor_labels: true``). Each stage is its own group: grouping key ``job`` (``lakehouse_pipeline``)
and ``stage``, so one stage's push never replaces another's.

Names and labels follow the Prometheus conventions: base units in the names (``_seconds``,
``_ratio``), no ``_total`` (nothing here is a counter: every value is the figure of the stage's
last run), and no unbounded label values (no run ids, no trade dates; the trade date is a value,
``..._trade_date_timestamp_seconds`` = that date's midnight UTC). The only labels are the grouping
key's ``job`` and ``stage`` (added by the Pushgateway) and ``reason`` (the fixed reject codes).

Pushes use POST (``pushadd_to_gateway``): only the families in this push are replaced. A failed
run therefore pushes its state, duration and time, and keeps the figures and the
``lakehouse_stage_last_success_*`` times of the last successful run next to them.

``PUSHGATEWAY_URL`` (for example ``http://127.0.0.1:9091``) switches pushing on; empty or unset is
off, silently. A push that fails only logs a warning: metrics never fail a stage.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobs.contract import env
from jobs.trade_calendar import next_trading_day

log = logging.getLogger(__name__)

JOB = "lakehouse_pipeline"
PUSH_TIMEOUT_SECONDS = 5.0
SUCCESS = "success"
FAILED = "failed"

# name -> help; every family is a gauge (the value of the stage's last run).
RUN_FAMILIES = {
    "lakehouse_stage_last_run_success": "1 if the stage's last run succeeded, 0 if it failed",
    "lakehouse_stage_last_run_timestamp_seconds": "When the stage's last run ended (Unix time)",
    "lakehouse_stage_last_run_trade_date_timestamp_seconds": "Trade date of the stage's last run (midnight UTC)",
    "lakehouse_stage_duration_seconds": "Wall time of the stage's last run",
}
SUCCESS_FAMILIES = {
    "lakehouse_stage_last_success_timestamp_seconds": "When the stage last succeeded (Unix time)",
    "lakehouse_last_success_trade_date_timestamp_seconds": "Trade date of the stage's last success (midnight UTC)",
    # What the deadline alert compares with: KRX holidays and weekends are known here, not in Prometheus.
    "lakehouse_next_trade_date_timestamp_seconds":
        "First KRX trading day after the stage's last successful trade date (midnight UTC)",
    "lakehouse_stage_rows_in": "Rows read by the stage's last successful run",
    "lakehouse_stage_rows_out": "Rows written by the stage's last successful run",
    "lakehouse_stage_rows_rejected": "Rows set aside (quarantined) by the stage's last successful run",
    "lakehouse_stage_rejected_rows": "Rows set aside by the stage's last successful run, per reason code",
    "lakehouse_stage_rejected_ratio": "Rejected rows / rows in, of the stage's last successful run",
    "lakehouse_feature_drift_ratio": "Share of features that drifted (monitoring's last successful run)",
    "lakehouse_champion_model_version": "Registered version of the @champion model (deployment's last success)",
    "lakehouse_champion_trained_through_timestamp_seconds":
        "Last trade date in the champion's training data (midnight UTC)",
    "lakehouse_challenger_holdout_auc": "Holdout ROC AUC of the challenger (deployment's last success)",
    "lakehouse_deployment_promoted": "1 if deployment's last successful run promoted the challenger, else 0",
}


@dataclass(frozen=True)
class StageFigures:
    """What one stage run reports; ``None`` = the stage has no such figure."""

    stage: str
    trade_date: dt.date
    state: str  # SUCCESS or FAILED
    duration_seconds: float | None = None
    rows_in: float | None = None
    rows_out: float | None = None
    rows_rejected: float | None = None
    rejected_by_reason: Mapping[str, float] = field(default_factory=dict)
    drift_share: float | None = None
    champion_version: int | None = None
    champion_trained_through: dt.date | None = None
    challenger_auc: float | None = None
    promoted: float | None = None
    ended_at: float | None = None  # Unix time; default: now

    def __post_init__(self) -> None:
        if self.state not in (SUCCESS, FAILED):
            raise ValueError(f"state must be {SUCCESS!r} or {FAILED!r}, not {self.state!r}")


def date_timestamp(day: dt.date) -> float:
    """Midnight UTC of a date, in Unix seconds (how a date travels as a gauge value)."""
    return float(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def families(fig: StageFigures):
    """The metric families of one stage run (prometheus_client ``GaugeMetricFamily`` objects)."""
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, value: float | None, helps: dict[str, str]) -> GaugeMetricFamily | None:
        return None if value is None else GaugeMetricFamily(name, helps[name], value=float(value))

    ended = time.time() if fig.ended_at is None else fig.ended_at
    out = [
        gauge("lakehouse_stage_last_run_success", 1.0 if fig.state == SUCCESS else 0.0, RUN_FAMILIES),
        gauge("lakehouse_stage_last_run_timestamp_seconds", ended, RUN_FAMILIES),
        gauge("lakehouse_stage_last_run_trade_date_timestamp_seconds", date_timestamp(fig.trade_date), RUN_FAMILIES),
        gauge("lakehouse_stage_duration_seconds", fig.duration_seconds, RUN_FAMILIES),
    ]
    if fig.state == SUCCESS:
        share = None
        if fig.rows_rejected is not None and fig.rows_in:
            share = fig.rows_rejected / fig.rows_in
        out += [
            gauge("lakehouse_stage_last_success_timestamp_seconds", ended, SUCCESS_FAMILIES),
            gauge("lakehouse_last_success_trade_date_timestamp_seconds", date_timestamp(fig.trade_date),
                  SUCCESS_FAMILIES),
            gauge("lakehouse_next_trade_date_timestamp_seconds", date_timestamp(next_trading_day(fig.trade_date)),
                  SUCCESS_FAMILIES),
            gauge("lakehouse_stage_rows_in", fig.rows_in, SUCCESS_FAMILIES),
            gauge("lakehouse_stage_rows_out", fig.rows_out, SUCCESS_FAMILIES),
            gauge("lakehouse_stage_rows_rejected", fig.rows_rejected, SUCCESS_FAMILIES),
            gauge("lakehouse_stage_rejected_ratio", share, SUCCESS_FAMILIES),
            gauge("lakehouse_feature_drift_ratio", fig.drift_share, SUCCESS_FAMILIES),
            gauge("lakehouse_champion_model_version", fig.champion_version, SUCCESS_FAMILIES),
            gauge("lakehouse_champion_trained_through_timestamp_seconds",
                  date_timestamp(fig.champion_trained_through) if fig.champion_trained_through else None,
                  SUCCESS_FAMILIES),
            gauge("lakehouse_challenger_holdout_auc", fig.challenger_auc, SUCCESS_FAMILIES),
            gauge("lakehouse_deployment_promoted", fig.promoted, SUCCESS_FAMILIES),
        ]
        if fig.rejected_by_reason:
            name = "lakehouse_stage_rejected_rows"
            per_reason = GaugeMetricFamily(name, SUCCESS_FAMILIES[name], labels=["reason"])
            for reason, count in sorted(fig.rejected_by_reason.items()):
                per_reason.add_metric([reason], float(count))
            out.append(per_reason)
    return [f for f in out if f is not None]


class _Collected:
    """A one-shot collector: a registry that holds exactly the families of one stage run."""

    def __init__(self, fams):
        self._fams = fams

    def collect(self):
        return iter(self._fams)


def registry_for(fig: StageFigures):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families(fig)))
    return registry


def pushgateway_url() -> str:
    """The Pushgateway's base URL from PUSHGATEWAY_URL; empty = metrics off."""
    return env("PUSHGATEWAY_URL").strip()


def push_stage(fig: StageFigures, url: str | None = None, timeout: float = PUSH_TIMEOUT_SECONDS) -> bool:
    """Push one stage run's figures; True if pushed, False if off or the push failed (a warning).

    ``url`` defaults to ``PUSHGATEWAY_URL``; empty = off. Never raises for the push itself.
    """
    url = pushgateway_url() if url is None else url.strip()
    if not url:
        return False
    try:
        from prometheus_client import pushadd_to_gateway

        pushadd_to_gateway(url, job=JOB, registry=registry_for(fig), grouping_key={"stage": fig.stage},
                           timeout=timeout)
    except Exception as exc:  # metrics must never fail a stage
        log.warning("metrics of %s %s not pushed to %s: %s: %s", fig.stage, fig.trade_date, url,
                    type(exc).__name__, exc)
        return False
    return True


def _number(values: Mapping[str, object], key: str) -> float | None:
    value = values.get(key)
    try:
        return None if value is None else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def figures_from_logged(stage: str, trade_date: dt.date, state: str, duration_seconds: float | None,
                        metrics: Mapping[str, float], tags: Mapping[str, str]) -> StageFigures:
    """A stage's figures from what it logged to MLflow (the tracker's metric and tag keys)."""
    from jobs.schema import FILE_REASONS, REASONS

    known = set(REASONS) | set(FILE_REASONS)  # a bounded label: only the fixed reason codes
    rejected = {k.removeprefix("rejected."): float(v) for k, v in metrics.items()
                if k.startswith("rejected.") and k.removeprefix("rejected.") in known and v is not None}
    version = _number(metrics, "champion_version")
    through = tags.get("model.champion_data_through")
    try:
        through_date = dt.date.fromisoformat(through) if through else None
    except ValueError:
        through_date = None
    return StageFigures(
        stage=stage, trade_date=trade_date, state=state, duration_seconds=duration_seconds,
        rows_in=_number(metrics, "rows_in"), rows_out=_number(metrics, "rows_out"),
        rows_rejected=_number(metrics, "rows_rejected"), rejected_by_reason=rejected,
        drift_share=_number(metrics, "drift_share"),
        champion_version=int(version) if version is not None else None,
        champion_trained_through=through_date,
        challenger_auc=_number(metrics, "challenger_auc"), promoted=_number(metrics, "promoted"),
    )
