"""Model training and evaluation on pandas frames of features (bars are small; ticks are not)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.schema import FEATURE_COLUMNS, LABEL

DEFAULT_PARAMS = {"max_iter": 150, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 200,
                  "l2_regularization": 1.0, "random_state": 7}


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_start: pd.Timestamp


def time_split(features: pd.DataFrame, holdout_fraction: float = 0.2) -> Split:
    """Hold out the latest bars in time (never a random split: that leaks the future)."""
    labelled = features.dropna(subset=[LABEL]).sort_values(["bar_ts", "contract_id"])
    if labelled.empty:
        raise ValueError("no labelled feature rows to train on")
    cut = labelled["bar_ts"].quantile(1 - holdout_fraction, interpolation="nearest")
    train = labelled[labelled["bar_ts"] < cut]
    holdout = labelled[labelled["bar_ts"] >= cut]
    if train.empty or holdout.empty or train[LABEL].nunique() < 2:
        raise ValueError(f"time split at {cut} leaves too little data: "
                         f"train={len(train)} holdout={len(holdout)}")
    return Split(train=train, holdout=holdout, holdout_start=pd.Timestamp(cut))


# A small sweep: a few well-spread settings beat a large grid on a weak signal.
PARAM_GRID = (
    {"learning_rate": 0.05, "max_leaf_nodes": 15},
    {"learning_rate": 0.1, "max_leaf_nodes": 15},
    {"learning_rate": 0.05, "max_leaf_nodes": 31},
    {"learning_rate": 0.03, "max_leaf_nodes": 7},
)


@dataclass(frozen=True)
class Candidate:
    params: dict
    validation: dict[str, float]


def sweep(train: pd.DataFrame, grid=PARAM_GRID, validation_fraction: float = 0.2) -> list[Candidate]:
    """Score each setting on the latest part of the training period (never on the holdout)."""
    inner = time_split(train, validation_fraction)
    return [Candidate(params=dict(p), validation=evaluate(train_classifier(inner.train, p), inner.holdout))
            for p in grid]


def best_candidate(candidates: list[Candidate], metric: str = "auc") -> Candidate:
    scored = [c for c in candidates if np.isfinite(c.validation[metric])]
    if not scored:
        raise ValueError(f"no candidate has a finite validation {metric}")
    return max(scored, key=lambda c: c.validation[metric])


def feature_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's input: the feature columns, in order, as float64."""
    return frame.loc[:, list(FEATURE_COLUMNS)].astype("float64")


def train_classifier(train: pd.DataFrame, params: dict | None = None):
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(**{**DEFAULT_PARAMS, **(params or {})})
    model.fit(feature_matrix(train), train[LABEL].astype(int))
    return model


def evaluate(model, frame: pd.DataFrame) -> dict[str, float]:
    from sklearn import metrics

    y = frame[LABEL].astype(int).to_numpy()
    proba = model.predict_proba(feature_matrix(frame))[:, 1]
    pred = (proba >= 0.5).astype(int)
    return {
        "auc": float(metrics.roc_auc_score(y, proba)) if len(np.unique(y)) > 1 else float("nan"),
        "accuracy": float(metrics.accuracy_score(y, pred)),
        "f1": float(metrics.f1_score(y, pred, zero_division=0)),
        "log_loss": float(metrics.log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "positive_rate": float(y.mean()),
    }


def roc_points(model, frame: pd.DataFrame, max_points: int = 200) -> dict:
    """The holdout ROC curve, thinned to at most ``max_points`` points for a small artifact."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = frame[LABEL].astype(int)
    proba = model.predict_proba(feature_matrix(frame))[:, 1]
    fpr, tpr, _ = roc_curve(y, proba)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).astype(int))
    return {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist(),
            "auc": float(roc_auc_score(y, proba))}


def evaluation_figures(model, frame: pd.DataFrame):
    """Confusion matrix and ROC curve as matplotlib figures (Agg backend; no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    y = frame[LABEL].astype(int)
    proba = model.predict_proba(feature_matrix(frame))[:, 1]
    cm_fig, cm_ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_predictions(y, (proba >= 0.5).astype(int), ax=cm_ax, colorbar=False)
    cm_ax.set_title("Holdout confusion matrix")
    roc_fig, roc_ax = plt.subplots(figsize=(4, 4))
    RocCurveDisplay.from_predictions(y, proba, ax=roc_ax)
    roc_ax.set_title("Holdout ROC")
    return {"confusion_matrix.png": cm_fig, "roc_curve.png": roc_fig}


@dataclass(frozen=True)
class TrainingResult:
    """Everything one training produces before anything is logged: the model and how it scored."""

    model: object
    split: Split
    candidates: list[Candidate]
    best: Candidate
    holdout_metrics: dict[str, float]
    train_metrics: dict[str, float]

    @property
    def params(self) -> dict:
        """The final model's hyperparameters (defaults overridden by the chosen candidate)."""
        return {**DEFAULT_PARAMS, **self.best.params}


def fit(frame: pd.DataFrame, holdout_fraction: float) -> TrainingResult:
    """Time split, sweep on the training period, final fit with the best setting, both evaluations."""
    split = time_split(frame, holdout_fraction)
    candidates = sweep(split.train)
    best = best_candidate(candidates)
    model = train_classifier(split.train, best.params)
    return TrainingResult(model=model, split=split, candidates=candidates, best=best,
                          holdout_metrics=evaluate(model, split.holdout), train_metrics=evaluate(model, split.train))
