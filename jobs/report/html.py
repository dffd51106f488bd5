"""The report as one self-contained HTML page (the PNG inlined), safe to mail or attach anywhere."""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.report.format import (
    LOWER_IS_BETTER,
    METRICS,
    NA,
    _drift_features,
    _funnel_rows,
    _is_drifted,
    _is_quarantine,
    _list,
    _num,
    _section,
    _status_kind,
    _text,
    fmt_float,
    fmt_int,
    fmt_pct,
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212121;max-width:1680px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:4px 0} .meta a{margin-right:14px}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:4px 10px}
th{background:#f5f5f5;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2e7d32;font-weight:600} .bad{color:#c62828;font-weight:700} .other{color:#757575;font-weight:600}
.warn{color:#ef6c00;font-weight:600} tr.quarantine td{background:#fdecea;color:#c62828}
tr.drifted td{background:#fdecea} .badge{padding:2px 8px;border-radius:4px;color:#fff}
.badge.ok{background:#2e7d32} .badge.bad{background:#c62828} .badge.other{background:#757575}
.na{color:#9e9e9e} img{max-width:100%;border:1px solid #eee;margin-top:12px}
.health{margin:10px 0;font-size:15px} .health ul{margin:4px 0 0 18px;padding:0;font-size:13px}
.strip{display:flex;gap:2px;margin:8px 0 2px} .strip span{width:18px;height:18px;border-radius:3px;display:inline-block}
.h-healthy{background:#2e7d32} .h-warning{background:#f9a825} .h-degraded{background:#ef6c00}
.h-failed{background:#c62828} .h-none{background:#e0e0e0}
.badge.h-healthy,.badge.h-warning,.badge.h-degraded,.badge.h-failed{color:#fff}
"""

_BAND_CLASS = {"stable": "ok", "moderate": "warn", "major": "bad"}


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _cell(text: str, cls: str = "") -> str:
    classes = " ".join(c for c in (cls, "na" if text == NA else "") if c)
    return f'<td class="{classes}">{html.escape(text)}</td>' if classes else f"<td>{html.escape(text)}</td>"


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _na_block() -> str:
    return f'<p class="na">{NA}</p>'


def _link(label: str, url: Any) -> str:
    """Only http(s) becomes a link: an escaped javascript: URL would still run when clicked."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return ""
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'


def _html_funnel(report: Mapping) -> str:
    rows = _funnel_rows(report)
    if not rows:
        return _na_block()
    first = next((v for _, v in rows if v), None)
    body = []
    previous = None
    for label, value in rows:
        quarantine = _is_quarantine(label)
        share = fmt_pct(value / first) if value is not None and first else NA
        if quarantine or value is None or previous is None:
            delta = NA if not quarantine else "—"
        else:
            delta = fmt_int(value - previous)
        body.append(f'<tr{" class=quarantine" if quarantine else ""}>{_cell(label)}'
                    f'{_cell(fmt_int(value), "num")}{_cell(share, "num")}{_cell(delta, "num")}</tr>')
        if not quarantine and value is not None:
            previous = value
    return _table(["step", "rows", f"% of {rows[0][0]}", "change vs previous"], body)


def _html_stages(report: Mapping) -> str:
    stages = [s for s in _list(report, "stages") if isinstance(s, Mapping)]
    if not stages:
        return _na_block()
    body = [f"<tr>{_cell(_text(s.get('stage')))}{_cell(_text(s.get('status')), _status_kind(s.get('status')))}"
            f"{_cell(fmt_float(s.get('duration_seconds'), 1), 'num')}"
            f"{_cell(fmt_int(s.get('rows_in')), 'num')}{_cell(fmt_int(s.get('rows_out')), 'num')}"
            f"{_cell(fmt_int(s.get('rows_rejected')), 'num')}</tr>" for s in stages]
    return _table(["stage", "status", "duration (s)", "rows in", "rows out", "rows rejected"], body)


def _html_quality(report: Mapping) -> str:
    quality = _section(report, "quality")
    if not quality:
        return _na_block()
    reasons = quality.get("rejected_by_reason")
    parts = [f"<p>Rejected share: <b>{html.escape(fmt_pct(quality.get('rejected_share')))}</b></p>"]
    if isinstance(reasons, Mapping) and reasons:
        total = sum(v for v in map(_num, reasons.values()) if v is not None and math.isfinite(v))
        body = [f"<tr>{_cell(_text(name))}{_cell(fmt_int(count), 'num')}"
                f"{_cell(fmt_pct(_num(count) / total) if total and _num(count) is not None else NA, 'num')}</tr>"
                for name, count in reasons.items()]
        body.append(f"<tr><th>total</th>{_cell(fmt_int(total), 'num')}{_cell('', 'num')}</tr>")
        parts.append(_table(["reason", "rows", "share of rejects"], body))
    else:
        parts.append(_na_block())
    found = [x for x in _list(report, "anomalies") if isinstance(x, Mapping)]
    if found:
        body = [f"<tr>{_cell(_text(x.get('stage')))}"
                f"{_cell(_text(x.get('level')), 'bad' if x.get('level') == 'fail' else 'warn')}"
                f"{_cell(_text(x.get('explanation')))}</tr>" for x in found]
        parts.append("<p>Anomalies against history</p>" + _table(["stage", "level", "what"], body))
    return "".join(parts)


def _html_drift(report: Mapping) -> str:
    drift = _section(report, "drift")
    if not drift:
        return _na_block()
    threshold = _num(drift.get("threshold"))
    parts = [f"<p>PSI threshold <b>{html.escape(fmt_float(drift.get('threshold'), 2))}</b> · "
             f"drift share <b>{html.escape(fmt_pct(drift.get('drift_share'), 1))}</b> · "
             f"prediction PSI <b>{html.escape(fmt_float(drift.get('prediction_psi')))}</b></p>"]
    features = _drift_features(drift)
    if not features:
        return "".join(parts) + _na_block()
    body = []
    for f in features:
        drifted = _is_drifted(f, threshold)
        band = _text(f.get("band"))
        body.append(f'<tr{" class=drifted" if drifted else ""}>{_cell(_text(f.get("feature")))}'
                    f'{_cell(fmt_float(f.get("psi")), "num")}'
                    f'{_cell(band, _BAND_CLASS.get(band.lower(), "other"))}'
                    f'{_cell(fmt_float(f.get("ks_pvalue"), 4), "num")}'
                    f'{_cell(fmt_float(f.get("wasserstein_norm")), "num")}'
                    f'{_cell("yes" if drifted else "no", "bad" if drifted else "")}</tr>')
    parts.append(_table(["feature", "PSI", "band", "KS p-value", "Wasserstein (σ)", "drifted"], body))
    excluded = [f for f in features if f.get("excluded")]
    if excluded:
        parts.append("<p class=\"meta\">Not in the drift share: "
                     + "; ".join(f"<b>{_e(f.get('feature'))}</b> {_e(f.get('excluded'))}" for f in excluded) + "</p>")
    return "".join(parts)


def _better(metric: str, challenger: float | None, champion: float | None) -> str:
    if challenger is None or champion is None:
        return NA
    if challenger == champion:
        return "="
    challenger_wins = (challenger < champion) if metric in LOWER_IS_BETTER else (challenger > champion)
    return "challenger" if challenger_wins else "champion"


def _html_model(report: Mapping) -> str:
    model = _section(report, "model")
    if not model:
        return _na_block()
    decision = str(model.get("decision") or "")
    cls = "ok" if decision == "promoted" else "other"
    parts = [f'<p>Decision: <b class="{cls}">{html.escape(_text(model.get("decision")))}</b> · '
             f"challenger v{_e(model.get('challenger_version'))} vs "
             f"champion v{_e(model.get('champion_version'))}</p>"]
    challenger = model.get("challenger") if isinstance(model.get("challenger"), Mapping) else {}
    champion = model.get("champion") if isinstance(model.get("champion"), Mapping) else {}
    body = []
    for m in METRICS:
        a, b = _num(challenger.get(m)), _num(champion.get(m))
        delta = fmt_float(a - b) if a is not None and b is not None else NA
        if delta not in (NA,) and not delta.startswith("-"):
            delta = "+" + delta
        arrow = "lower is better" if m in LOWER_IS_BETTER else "higher is better"
        body.append(f"<tr>{_cell(f'{m} ({arrow})')}{_cell(fmt_float(challenger.get(m)), 'num')}"
                    f"{_cell(fmt_float(champion.get(m)), 'num')}{_cell(delta, 'num')}"
                    f"{_cell(_better(m, a, b))}</tr>")
    parts.append(_table(["metric", "challenger", "champion", "Δ challenger − champion", "better"], body))
    return "".join(parts)


def _html_roc(report: Mapping) -> str:
    model = _section(report, "model")
    roc = model.get("roc") if isinstance(model.get("roc"), Mapping) else {}
    if not roc:
        return _na_block()
    return f"<p>Challenger ROC AUC: <b>{html.escape(fmt_float(roc.get('auc')))}</b></p>"


def _html_health(report: Mapping) -> str:
    """The date's verdict and reasons, then one square per day of the last 30 (grey: nothing ran)."""
    health = _section(report, "health")
    verdict = health.get("verdict")
    if not verdict:
        return ""
    reasons = "".join(f"<li>{_e(r)}</li>" for r in _list(health, "reasons"))
    strip = ""
    days = _list(health, "history")
    if days:
        cells = "".join(
            f'<span class="h-{_e(d.get("verdict") or "none")}" '
            f'title="{_e(d.get("trade_date"))}: {_e(d.get("verdict") or "no run")}"></span>'
            for d in days if isinstance(d, Mapping))
        strip = (f'<div class="strip" aria-label="health, last {len(days)} days">{cells}</div>'
                 f'<p class="meta">last {len(days)} days, {_e(days[0].get("trade_date"))} to '
                 f'{_e(days[-1].get("trade_date"))}, from the stage_runs table</p>')
    elif health.get("history_error"):
        strip = f'<p class="meta na">history unavailable: {_e(health.get("history_error"))}</p>'
    return (f'<div class="health">Health <span class="badge h-{_e(verdict)}">{_e(verdict)}</span>'
            + (f"<ul>{reasons}</ul>" if reasons else "") + f"</div>{strip}")


def render_html(report: Mapping, png_path: str | Path | None = None) -> str:
    """One page with no external assets, so it survives being mailed or attached anywhere."""
    report = report or {}
    run = _section(report, "dag_run")
    state = run.get("state")
    links = " ".join(x for x in (_link("Airflow run", run.get("airflow_url")),
                                 _link("MLflow run", run.get("mlflow_url"))) if x)
    image = ""
    if png_path is not None:
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        image = f'<img alt="Morning report figure" src="data:image/png;base64,{data}">'
    sections = [("Row funnel", _html_funnel(report)), ("Stage durations", _html_stages(report)),
                ("Data quality", _html_quality(report)), ("Feature drift", _html_drift(report)),
                ("Model: challenger vs champion", _html_model(report)), ("ROC", _html_roc(report))]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Morning report {_e(run.get('trade_date'))}</title><style>{_CSS}</style></head><body>"
        f"<h1>Morning report · trade date {_e(run.get('trade_date'))} "
        f'<span class="badge {_status_kind(state)}">{_e(state)}</span></h1>'
        f"<p class=\"meta\">DAG <code>{_e(run.get('dag_id'))}</code> · run <code>{_e(run.get('run_id'))}</code></p>"
        + (f'<p class="meta">{links}</p>' if links else "")
        + _html_health(report) + image + body + "</body></html>\n"
    )
