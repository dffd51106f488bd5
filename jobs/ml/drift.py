"""Population Stability Index per feature between a reference sample and a current one."""
from __future__ import annotations

import numpy as np
import pandas as pd

PSI_BINS = 10
_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI on quantile bins of the reference; NaN-free inputs only. 0.1 = moderate, 0.25 = major."""
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:  # constant reference: any change in value is a shift
        return 0.0 if np.all(current == reference[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    ref_share = np.histogram(reference, edges)[0] / reference.size
    cur_share = np.histogram(current, edges)[0] / current.size
    ref_share = np.clip(ref_share, _EPS, None)
    cur_share = np.clip(cur_share, _EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def psi_band(value: float) -> str:
    """The usual reading of PSI: < 0.1 stable, 0.1-0.25 moderate shift, >= 0.25 major shift."""
    if not np.isfinite(value) and value != float("inf"):
        return "unknown"
    return "stable" if value < 0.1 else "moderate" if value < 0.25 else "major"


def distance_tests(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    """Evidently's default numeric tests: two-sample K-S p-value and Wasserstein distance in
    reference standard deviations (Evidently flags drift at p < 0.05, resp. distance >= 0.1)."""
    from scipy import stats

    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if reference.size < 2 or current.size < 2:
        return {"ks_pvalue": float("nan"), "wasserstein_norm": float("nan")}
    scale = float(np.std(reference)) or 1.0
    return {
        "ks_pvalue": float(stats.ks_2samp(reference, current).pvalue),
        "wasserstein_norm": float(stats.wasserstein_distance(reference, current) / scale),
    }


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, columns, threshold: float,
                  excluded: dict[str, str] | None = None) -> dict:
    """PSI (the decision), its band and the distance tests per column; drifted columns and share.

    ``excluded`` columns (name: reason) are scored like the rest but never count as drifted, and
    the share is over the judged columns only.
    """
    excluded = {c: why for c, why in (excluded or {}).items() if c in columns}
    scores, tests = {}, {}
    for c in columns:
        ref, cur = reference[c].to_numpy(dtype=float), current[c].to_numpy(dtype=float)
        scores[c] = psi(ref, cur)
        tests[c] = distance_tests(ref, cur)
    judged = [c for c in scores if c not in excluded]
    drifted = sorted(c for c in judged if np.isfinite(scores[c]) and scores[c] >= threshold
                     or scores[c] == float("inf"))
    return {"psi": scores, "bands": {c: psi_band(v) for c, v in scores.items()}, "tests": tests,
            "drifted": drifted, "drift_share": len(drifted) / max(len(judged), 1), "excluded": excluded}
