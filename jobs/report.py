"""The "morning view" of one pipeline run: one PNG and one self-contained HTML page.

Answers the four morning questions (did the run work, is the data healthy, did the model
change, is anything drifting) from a plain dict. Pure rendering on purpose: no MLflow and no
Spark here, so the caller collects the numbers and this module stays fast to test.

Every section tolerates missing or None values (a failed run has no model, maybe no drift)
and shows "n/a" instead of raising: a broken night is exactly when the report is needed.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Mapping, TypedDict

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

NA = "n/a"
PNG_NAME = "morning_report.png"
HTML_NAME = "morning_report.html"
METRICS = ("auc", "accuracy", "f1", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
MODERATE_PSI = 0.1  # the usual "moderate shift" line, drawn next to the configured threshold
QUARANTINE = "quarantine"

# Status vocabulary of Airflow task/DAG states and MLflow run statuses, mapped to three looks.
_OK = {"success", "finished", "promoted", "kept_champion"}
_BAD = {"failed", "upstream_failed", "killed", "error"}

C_OK, C_BAD, C_WARN, C_OTHER = "#2e7d32", "#c62828", "#ef6c00", "#9e9e9e"
C_MAIN, C_ALT = "#1565c0", "#90a4ae"
BAND_COLOURS = {"stable": C_OK, "moderate": C_WARN, "major": C_BAD}


class DagRun(TypedDict, total=False):
    dag_id: str
    run_id: str
    trade_date: str
    state: str
    mlflow_url: str
    airflow_url: str


class Report(TypedDict, total=False):
    """Documentation of the input; every key (and most values) may be missing or None.

    funnel: [[label, rows], ...] from RAW to predictions (a "Quarantine" row is drawn apart).
    stages: [{stage, status, duration_seconds, rows_in, rows_out, rows_rejected}, ...].
    quality: {rejected_share, rejected_by_reason: {reason: rows}}.
    drift: {threshold, drift_share, prediction_psi,
            features: [{feature, psi, band, ks_pvalue, wasserstein_norm, drifted}, ...]}.
    model: {challenger_version, champion_version, decision, challenger: {metric: value},
            champion: {metric: value} | None, roc: {fpr, tpr, auc} | None}.
    """
    dag_run: DagRun
    funnel: list
    stages: list
    quality: dict
    drift: dict | None
    model: dict | None


# --------------------------------------------------------------------------- small helpers

def _section(report: Mapping | None, key: str) -> dict:
    value = (report or {}).get(key)
    return value if isinstance(value, Mapping) else {}


def _list(report: Mapping | None, key: str) -> list:
    value = (report or {}).get(key)
    return list(value) if isinstance(value, (list, tuple)) else []


def _num(value: Any) -> float | None:
    """A finite-or-infinite float, or None for anything that cannot be plotted."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def fmt_int(value: Any) -> str:
    number = _num(value)
    if number is None:
        return NA if value is None or _blank(value) else str(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{int(round(number)):,}"


def fmt_float(value: Any, digits: int = 3) -> str:
    number = _num(value)
    if number is None:
        return NA if value is None or _blank(value) else str(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def fmt_pct(value: Any, digits: int = 2) -> str:
    number = _num(value)
    if number is None or math.isinf(number):
        return fmt_float(value)
    return f"{number * 100:.{digits}f}%"


def _blank(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value) or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return NA if value is None or _blank(value) else str(value)


def _mpl(value: Any, limit: int = 80) -> str:
    """Dict text for matplotlib: '$' would switch on mathtext (and can fail to parse)."""
    text = _text(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _compact(x: float) -> str:
    """Axis ticks only; exact counts are in the bar labels."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:g}{suffix}"
    return f"{x:g}"


def _status_kind(status: Any) -> str:
    key = str(status or "").strip().lower()
    return "ok" if key in _OK else "bad" if key in _BAD else "other"


def _status_colour(status: Any) -> str:
    return {"ok": C_OK, "bad": C_BAD}.get(_status_kind(status), C_OTHER)


def _is_quarantine(label: Any) -> bool:
    return QUARANTINE in str(label).lower()


def _funnel_rows(report: Mapping) -> list[tuple[str, float | None]]:
    rows = []
    for item in _list(report, "funnel"):
        if isinstance(item, Mapping):
            label, count = item.get("label", item.get("stage")), item.get("rows", item.get("count"))
        elif isinstance(item, (list, tuple)) and item:
            label, count = item[0], item[1] if len(item) > 1 else None
        else:
            continue
        rows.append((_text(label), _num(count)))
    return rows


def _drift_features(drift: Mapping) -> list[dict]:
    """Highest PSI first; unknown PSI last, so the eye lands on what moved."""
    features = [f for f in drift.get("features") or [] if isinstance(f, Mapping)]
    return sorted(features, key=lambda f: (_num(f.get("psi")) is None, -(_num(f.get("psi")) or 0.0)))


def _is_drifted(feature: Mapping, threshold: float | None) -> bool:
    if feature.get("drifted") is not None:
        return bool(feature.get("drifted"))
    psi = _num(feature.get("psi"))
    return psi is not None and threshold is not None and psi >= threshold


def _decision_text(model: Mapping) -> str:
    return _text(model.get("decision")).replace("_", " ")


def _title_line(report: Mapping) -> str:
    run = _section(report, "dag_run")
    return (f"Morning report · trade date {_text(run.get('trade_date'))} · "
            f"run state {_text(run.get('state')).upper()} · "
            f"{_text(run.get('dag_id'))} / {_text(run.get('run_id'))}")


# --------------------------------------------------------------------------- PNG

def _no_data(ax, title: str, note: str = NA) -> None:
    ax.set_title(title, fontweight="bold")
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=16, color=C_OTHER,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar_labels(ax, bars, labels, colours=None, bold=None) -> None:
    """Value labels just right of each horizontal bar; the axis keeps room for them."""
    for i, (bar, label) in enumerate(zip(bars, labels)):
        ax.annotate(label, (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(4, 0), textcoords="offset points", va="center", fontsize=9,
                    color=(colours[i] if colours else "#212121"),
                    fontweight=("bold" if bold and bold[i] else "normal"))
    ax.set_xlim(0, max([b.get_width() for b in bars] + [1e-9]) * 1.22)


def _panel_funnel(ax, report: Mapping) -> None:
    title = "Row funnel\nRAW → Gold → predictions"
    rows = _funnel_rows(report)
    if not rows:
        return _no_data(ax, title)
    quarantine = [_is_quarantine(label) for label, _ in rows]
    values = [v if v is not None and math.isfinite(v) else 0.0 for _, v in rows]
    colours = [C_BAD if q else C_MAIN for q in quarantine]
    bars = ax.barh(range(len(rows)), values, color=colours,
                   hatch=["///" if q else "" for q in quarantine], edgecolor="white")
    first = values[0] or None  # the share is of the funnel's first row (RAW), when it is known
    labels = [fmt_int(v) + (f"  ({fmt_pct(v / first)} of {rows[0][0]})" if q and first and v is not None else "")
              for (_, v), q in zip(rows, quarantine)]
    _bar_labels(ax, bars, labels, colours=[C_BAD if q else "#212121" for q in quarantine],
                bold=quarantine)
    ax.set_yticks(range(len(rows)), [_mpl(label, 24) for label, _ in rows])
    for tick, q in zip(ax.get_yticklabels(), quarantine):
        if q:
            tick.set_color(C_BAD)
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlabel("rows")
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.xaxis.set_major_formatter(lambda x, _: _compact(x))
    ax.set_title(title, fontweight="bold")


def _panel_stages(ax, report: Mapping) -> None:
    title = "Stage durations"
    stages = [s for s in _list(report, "stages") if isinstance(s, Mapping)]
    if not stages:
        return _no_data(ax, title)
    durations = [_num(s.get("duration_seconds")) for s in stages]
    values = [d if d is not None and math.isfinite(d) else 0.0 for d in durations]
    colours = [_status_colour(s.get("status")) for s in stages]
    bars = ax.barh(range(len(stages)), values, color=colours)
    labels = [(f"{d:,.1f} s" if d is not None and math.isfinite(d) else NA)
              + ("" if _status_kind(s.get("status")) == "ok"
                 else f"  {_mpl(s.get('status'), 16)}" if s.get("status") else "  no status")
              for s, d in zip(stages, durations)]
    _bar_labels(ax, bars, labels, colours=[c if c != C_OK else "#212121" for c in colours],
                bold=[_status_kind(s.get("status")) == "bad" for s in stages])
    ax.set_yticks(range(len(stages)), [_mpl(s.get("stage"), 24) for s in stages])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    total = sum(values)
    failed = sum(_status_kind(s.get("status")) == "bad" for s in stages)
    ax.set_title(f"{title}\ntotal {total:,.0f} s" + (f" · {failed} failed" if failed else ""),
                 fontweight="bold", color=C_BAD if failed else "black")
    ax.legend(handles=[Patch(color=C_OK, label="finished"), Patch(color=C_BAD, label="failed"),
                       Patch(color=C_OTHER, label="other / n/a")],
              loc="lower right", fontsize=8, frameon=False)


def _panel_quality(ax, report: Mapping) -> None:
    quality = _section(report, "quality")
    title = f"Data quality\nrejected share {fmt_pct(quality.get('rejected_share'))}"
    reasons = quality.get("rejected_by_reason")
    if not isinstance(reasons, Mapping) or not reasons:
        return _no_data(ax, title)
    names = list(reasons)
    counts = [_num(reasons[n]) for n in names]
    values = [c if c is not None and math.isfinite(c) else 0.0 for c in counts]
    bars = ax.barh(range(len(names)), values, color=[C_WARN if v else C_ALT for v in values])
    _bar_labels(ax, bars, [fmt_int(c) for c in counts])
    ax.set_yticks(range(len(names)), [_mpl(n, 24) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("rejected rows (quarantine)")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:,.0f}")
    ax.set_title(title, fontweight="bold")


def _panel_drift(ax, report: Mapping) -> None:
    drift = _section(report, "drift")
    title = (f"Feature drift (PSI)\ndrift share {fmt_pct(drift.get('drift_share'), 1)} · "
             f"prediction PSI {fmt_float(drift.get('prediction_psi'))}")
    features = _drift_features(drift)
    if not features:
        return _no_data(ax, title)
    threshold = _num(drift.get("threshold"))
    psis = [_num(f.get("psi")) for f in features]
    finite = [p for p in psis if p is not None and math.isfinite(p)]
    top = max(finite + [threshold or 0.0, MODERATE_PSI]) * 1.25
    values = [min(p, top) if p is not None else 0.0 for p in psis]  # inf is drawn to the edge
    drifted = [_is_drifted(f, threshold) for f in features]
    colours = [BAND_COLOURS.get(str(f.get("band")).lower(), C_OTHER) for f in features]
    bars = ax.barh(range(len(features)), values, color=colours,
                   edgecolor=["black" if d else "none" for d in drifted],
                   linewidth=[1.8 if d else 0 for d in drifted])
    for bar, p, d in zip(bars, psis, drifted):
        ax.annotate(fmt_float(p) + ("  DRIFT" if d else ""),
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8,
                    color=C_BAD if d else "#424242", fontweight="bold" if d else "normal")
    ax.set_yticks(range(len(features)), [_mpl(f.get("feature"), 24) for f in features])
    for tick, d in zip(ax.get_yticklabels(), drifted):
        if d:
            tick.set_color(C_BAD)
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.2)
    ax.axvline(MODERATE_PSI, color=C_WARN, linestyle="--", linewidth=1)
    handles = [Patch(color=c, label=b) for b, c in BAND_COLOURS.items()]
    handles.append(Line2D([], [], color=C_WARN, linestyle="--", linewidth=1, label="0.1 moderate"))
    if threshold is not None:
        ax.axvline(threshold, color=C_BAD, linewidth=1.5)
        handles.append(Line2D([], [], color=C_BAD, linewidth=1.5,
                              label=f"threshold {fmt_float(threshold, 2)}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    ax.set_xlabel("PSI vs champion's training data")
    ax.set_title(title, fontweight="bold",
                 color=C_BAD if any(drifted) else "black")


def _panel_model(ax, report: Mapping) -> None:
    model = _section(report, "model")
    decision = _decision_text(model)
    title = (f"Model · {decision}\nchallenger v{_text(model.get('challenger_version'))} "
             f"vs champion v{_text(model.get('champion_version'))}")
    challenger = model.get("challenger") if isinstance(model.get("challenger"), Mapping) else {}
    champion = model.get("champion") if isinstance(model.get("champion"), Mapping) else {}
    if not model or not (challenger or champion):
        return _no_data(ax, "Model" if not model else title)
    width = 0.38
    for offset, (name, metrics, colour) in zip(
            (-width / 2, width / 2), (("challenger", challenger, C_MAIN), ("champion", champion, C_ALT))):
        values = [_num(metrics.get(m)) for m in METRICS]
        xs = [i + offset for i in range(len(METRICS))]
        label = name if metrics else f"{name}: n/a"
        bars = ax.bar(xs, [v if v is not None and math.isfinite(v) else 0.0 for v in values],
                      width, color=colour, label=label)
        for bar, v in zip(bars, values):
            ax.annotate(fmt_float(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(METRICS)),
                  [m + (" ↓" if m in LOWER_IS_BETTER else " ↑") for m in METRICS])
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]) * 1.12)
    ax.legend(loc="upper right", fontsize=8, frameon=False, ncols=2)
    colour = C_OK if str(model.get("decision")) == "promoted" else "black"
    ax.set_title(title, fontweight="bold", color=colour)


def _panel_roc(ax, report: Mapping) -> None:
    model = _section(report, "model")
    roc = model.get("roc") if isinstance(model.get("roc"), Mapping) else {}
    challenger = model.get("challenger") if isinstance(model.get("challenger"), Mapping) else {}
    auc = roc.get("auc") if roc.get("auc") is not None else challenger.get("auc")
    title = f"ROC\nchallenger AUC {fmt_float(auc)}"
    fpr, tpr = roc.get("fpr") or [], roc.get("tpr") or []
    points = [(x, y) for x, y in zip(map(_num, fpr), map(_num, tpr)) if x is not None and y is not None]
    if len(points) < 2:
        return _no_data(ax, title if roc else "ROC")
    ax.plot([p[0] for p in points], [p[1] for p in points], color=C_MAIN, linewidth=2,
            label="challenger")
    ax.plot([0, 1], [0, 1], color=C_OTHER, linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_title(title, fontweight="bold")


def build_figure(report: Mapping) -> Figure:
    """The figure without saving it, so tests can read the panel titles.

    A bare Figure on an Agg canvas rather than pyplot: no global figure registry, so a
    long-lived worker cannot leak figures and nothing depends on the process's backend.
    """
    report = report or {}
    fig = Figure(figsize=(16, 10), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    state = _section(report, "dag_run").get("state")
    fig.suptitle(_mpl(_title_line(report), 160), fontsize=15, fontweight="bold",
                 color=C_BAD if _status_kind(state) == "bad" else "black")
    rows = GridSpec(2, 1, figure=fig, height_ratios=[1, 1.15])
    top = rows[0].subgridspec(1, 3)
    bottom = rows[1].subgridspec(1, 3, width_ratios=[1.3, 1.1, 0.75])
    _panel_funnel(fig.add_subplot(top[0]), report)
    _panel_stages(fig.add_subplot(top[1]), report)
    _panel_quality(fig.add_subplot(top[2]), report)
    _panel_drift(fig.add_subplot(bottom[0]), report)
    _panel_model(fig.add_subplot(bottom[1]), report)
    _panel_roc(fig.add_subplot(bottom[2]), report)
    return fig


def render_png(report: Mapping, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = build_figure(report)
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        fig.clear()  # not registered with pyplot, so this is all the closing there is
    return path


# --------------------------------------------------------------------------- HTML

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
        + image + body + "</body></html>\n"
    )


def write_report(report: Mapping, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_png(report, out_dir / PNG_NAME)
    page = out_dir / HTML_NAME
    page.write_text(render_html(report, png), encoding="utf-8")
    return {"png": png, "html": page}
