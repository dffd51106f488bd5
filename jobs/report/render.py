"""The "morning view" of one pipeline run: one PNG and one self-contained HTML page.

Answers the four morning questions (did the run work, is the data healthy, did the model
change, is anything drifting) from a plain dict. Pure rendering on purpose: no MLflow and no
Spark here, so the caller collects the numbers and this module stays fast to test.

Every section tolerates missing or None values (a failed run has no model, maybe no drift)
and shows "n/a" instead of raising: a broken night is exactly when the report is needed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from jobs.contract import REPORT_HTML_ARTIFACT, REPORT_PNG_ARTIFACT
from jobs.report.format import (
    BAND_COLOURS,
    C_ALT,
    C_BAD,
    C_MAIN,
    C_OK,
    C_OTHER,
    C_WARN,
    LOWER_IS_BETTER,
    METRICS,
    MODERATE_PSI,
    NA,
    _compact,
    _decision_text,
    _drift_features,
    _funnel_rows,
    _is_drifted,
    _is_quarantine,
    _list,
    _mpl,
    _num,
    _section,
    _status_colour,
    _status_kind,
    _text,
    _title_line,
    fmt_float,
    fmt_int,
    fmt_pct,
)
from jobs.report.html import render_html

PNG_NAME = PurePosixPath(REPORT_PNG_ARTIFACT).name
HTML_NAME = PurePosixPath(REPORT_HTML_ARTIFACT).name


# --------------------------------------------------------------------------- PNG

def _no_data(ax, title: str, note: str = NA) -> None:
    ax.set_title(title, fontweight="bold")
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=16, color=C_OTHER,
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar_labels(ax, bars, labels, colours=None, bold=None) -> None:
    """Value labels just right of each horizontal bar; the axis keeps room for them."""
    for i, (bar, label) in enumerate(zip(bars, labels, strict=False)):
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
              for (_, v), q in zip(rows, quarantine, strict=False)]
    _bar_labels(ax, bars, labels, colours=[C_BAD if q else "#212121" for q in quarantine],
                bold=quarantine)
    ax.set_yticks(range(len(rows)), [_mpl(label, 24) for label, _ in rows])
    for tick, q in zip(ax.get_yticklabels(), quarantine, strict=False):
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
              for s, d in zip(stages, durations, strict=False)]
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
    for bar, p, d in zip(bars, psis, drifted, strict=False):
        ax.annotate(fmt_float(p) + ("  DRIFT" if d else ""),
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8,
                    color=C_BAD if d else "#424242", fontweight="bold" if d else "normal")
    ax.set_yticks(range(len(features)), [_mpl(f.get("feature"), 24) for f in features])
    for tick, d in zip(ax.get_yticklabels(), drifted, strict=False):
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
            (-width / 2, width / 2), (("challenger", challenger, C_MAIN), ("champion", champion, C_ALT)), strict=False):
        values = [_num(metrics.get(m)) for m in METRICS]
        xs = [i + offset for i in range(len(METRICS))]
        label = name if metrics else f"{name}: n/a"
        bars = ax.bar(xs, [v if v is not None and math.isfinite(v) else 0.0 for v in values],
                      width, color=colour, label=label)
        for bar, v in zip(bars, values, strict=False):
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
    points = [(x, y) for x, y in zip(map(_num, fpr), map(_num, tpr), strict=False) if x is not None and y is not None]
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


def write_report(report: Mapping, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = render_png(report, out_dir / PNG_NAME)
    page = out_dir / HTML_NAME
    page.write_text(render_html(report, png), encoding="utf-8")
    return {"png": png, "html": page}
