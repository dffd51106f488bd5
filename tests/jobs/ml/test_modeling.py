"""Model training, evaluation and drift on small pandas frames (no Spark)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.ml.drift import feature_drift, psi
from jobs.ml.modeling import evaluate, time_split, train_classifier
from jobs.schema import FEATURE_COLUMNS, LABEL


def test_time_split_holds_out_the_latest_bars():
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame({c: rng.normal(size=n) for c in FEATURE_COLUMNS})
    frame["bar_ts"] = pd.date_range("2026-11-24 09:00", periods=n, freq="min")
    frame["contract_id"] = "C1"
    frame[LABEL] = (frame["ret_1"] > 0).astype(int)
    split = time_split(frame, 0.2)
    assert split.train["bar_ts"].max() < split.holdout["bar_ts"].min()
    assert len(split.holdout) == pytest.approx(1000, abs=2)
    model = train_classifier(split.train, {"max_iter": 50})
    metrics = evaluate(model, split.holdout)
    assert metrics["auc"] > 0.9  # the label is a function of ret_1: the model must find it
    assert set(metrics) >= {"auc", "accuracy", "f1", "log_loss"}


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=20_000)
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    assert psi(ref, rng.normal(loc=1.0, size=20_000)) > 0.25
    report = feature_drift(pd.DataFrame({"a": ref, "b": ref}),
                           pd.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(2, 1, 5000)}),
                           ["a", "b"], threshold=0.25)
    assert report["drifted"] == ["b"] and report["drift_share"] == 0.5
    assert report["bands"] == {"a": "stable", "b": "major"}
    # The distance tests agree: b moved two standard deviations, a did not move.
    assert report["tests"]["b"]["wasserstein_norm"] == pytest.approx(2.0, abs=0.1)
    assert report["tests"]["b"]["ks_pvalue"] < 1e-6 < report["tests"]["a"]["ks_pvalue"]


def test_a_feature_that_moves_by_construction_is_scored_but_left_out_of_the_share():
    """Issue 16, item 2: time to expiry shrinks every day; on a calm day it "drifted" alone."""
    from jobs.schema import DRIFT_EXCLUDED, FEATURE_COLUMNS

    rng = np.random.default_rng(2)
    ref = pd.DataFrame({c: rng.normal(size=5000) for c in FEATURE_COLUMNS})
    cur = pd.DataFrame({c: rng.normal(size=5000) for c in FEATURE_COLUMNS})
    cur["time_to_expiry"] = ref["time_to_expiry"] - 3.0  # every contract three units closer to expiry
    judged_all = feature_drift(ref, cur, FEATURE_COLUMNS, 0.25)
    assert judged_all["drifted"] == ["time_to_expiry"]
    report = feature_drift(ref, cur, FEATURE_COLUMNS, 0.25, DRIFT_EXCLUDED)
    assert report["drifted"] == [] and report["drift_share"] == 0.0
    assert report["psi"]["time_to_expiry"] > 1 and report["bands"]["time_to_expiry"] == "major"  # still shown
    assert report["excluded"] == {"time_to_expiry": DRIFT_EXCLUDED["time_to_expiry"]}
    cur["spread_rel"] += 3.0  # a real shift still counts, out of the eleven judged features
    assert feature_drift(ref, cur, FEATURE_COLUMNS, 0.25, DRIFT_EXCLUDED)["drift_share"] == pytest.approx(1 / 11)


def test_sweep_picks_the_best_validation_setting_without_touching_the_holdout():
    from jobs.ml.modeling import best_candidate, sweep

    rng = np.random.default_rng(3)
    n = 6000
    frame = pd.DataFrame({c: rng.normal(size=n) for c in FEATURE_COLUMNS})
    frame["bar_ts"] = pd.date_range("2026-11-24 09:00", periods=n, freq="min")
    frame["contract_id"] = "C1"
    frame[LABEL] = ((frame["ret_1"] + 0.5 * rng.normal(size=n)) > 0).astype(int)
    split = time_split(frame, 0.2)
    candidates = sweep(split.train)
    assert len(candidates) >= 3
    best = best_candidate(candidates)
    assert best.validation["auc"] == max(c.validation["auc"] for c in candidates)
    assert best.validation["auc"] > 0.7
