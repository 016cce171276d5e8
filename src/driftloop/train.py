"""Train stage: refit LightGBM with the tuned parameters (trees from early stopping on the
validation split), pick the binary decision threshold on validation data, and fit the
baselines (dummy, logistic/linear regression) on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.features import Preprocessor
from driftloop.model import DriftloopModel, TargetEncoder


@dataclass
class TrainResult:
    model: DriftloopModel
    baselines: dict[str, dict[str, Any]]  # name -> {estimator (on preprocessed features), threshold}
    valid_metrics: dict[str, dict[str, float]]  # model name -> metrics on the validation split


def feature_frame(df: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Raw feature columns: everything but the target and the split-only columns."""
    drop = {params.base.target}
    if params.split.group_column:
        drop.add(params.split.group_column)
    return df.drop(columns=[c for c in drop if c in df.columns])


def choose_threshold(
    y: np.ndarray,
    p: np.ndarray,
    how: str,
    *,
    min_recall: float = 0.8,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
) -> float:
    """The binary decision threshold (predict positive when ``p >= threshold``) chosen on held-out rows for ``how``:

    - ``f1``: the best F1;
    - ``youden``: the best TPR - FPR;
    - ``recall_floor``: the best precision among thresholds whose recall is at least ``min_recall`` (ties: the
      highest threshold);
    - ``cost``: the least ``cost_fp * false positives + cost_fn * false negatives`` (ties: the highest threshold;
      predicting no positive at all is a candidate: threshold just above the highest score, capped at 1).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    if how == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        return float(np.clip(thr[np.argmax(tpr - fpr)], 0, 1))
    if how == "cost":
        fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)  # thr decreasing; thr[0] = inf: no positive
        n_pos, n_neg = int((y == 1).sum()), int((y != 1).sum())
        cost = cost_fp * fpr * n_neg + cost_fn * (1 - tpr) * n_pos
        best = int(np.flatnonzero(cost <= cost.min() + 1e-9 * max(1.0, cost.min()))[0])  # the highest threshold
        return float(min(thr[best], 1.0)) if np.isfinite(thr[best]) else float(min(np.nextafter(p.max(), 2), 1.0))
    precision, recall, thr = precision_recall_curve(y, p)  # thr increasing; precision/recall have one more point
    precision, recall = precision[:-1], recall[:-1]
    if how == "recall_floor":
        ok = np.flatnonzero(recall >= min_recall - 1e-12)
        best = ok[np.flatnonzero(precision[ok] >= precision[ok].max() - 1e-12)[-1]]
        return float(thr[best])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thr[np.argmax(f1)]) if len(thr) else 0.5


def threshold_objective(tp) -> str:
    """The objective of ``train`` params in words (stored with the model as ``threshold_objective``)."""
    return {
        "f1": "f1: the best F1 on validation rows",
        "youden": "youden: the best TPR - FPR on validation rows",
        "recall_floor": f"recall_floor: the best precision with recall >= {tp.threshold_min_recall} on validation rows",
        "cost": f"cost: the least {tp.threshold_cost_fp} x FP + {tp.threshold_cost_fn} x FN on validation rows",
    }[tp.threshold_metric]


def threshold_for(y: np.ndarray, p: np.ndarray, tp) -> float:
    """``choose_threshold`` for the objective of ``train`` params (``train.threshold_*``)."""
    return choose_threshold(
        y,
        p,
        tp.threshold_metric,
        min_recall=tp.threshold_min_recall,
        cost_fp=tp.threshold_cost_fp,
        cost_fn=tp.threshold_cost_fn,
    )


def baseline_estimators(task: str, names: list[str], pre: Preprocessor, seed: int) -> dict[str, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = pre.categorical_features
    nums = [f for f in pre.feature_names if f not in cats]
    linear_prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), nums),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="__missing__"),
                    OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=30, sparse_output=False),
                ),
                cats,
            ),
        ]
    )
    out: dict[str, Any] = {}
    for name in names:
        if name == "dummy":
            out[name] = DummyRegressor() if task == "regression" else DummyClassifier(strategy="prior")
        elif name in ("logistic", "linear"):
            if task == "regression":
                out[name] = make_pipeline(linear_prep, Ridge(alpha=1.0))
            else:
                out[name] = make_pipeline(linear_prep, LogisticRegression(max_iter=500, random_state=seed))
    return out


def baseline_scores(estimator, X: pd.DataFrame, task: str) -> np.ndarray:
    if task == "regression":
        return estimator.predict(_for_sklearn(X))
    proba = estimator.predict_proba(_for_sklearn(X))
    return proba[:, 1] if task == "binary" else proba


def _for_sklearn(X: pd.DataFrame) -> pd.DataFrame:
    # sklearn's imputers want object columns, not pandas categoricals with NaN
    return X.apply(
        lambda s: s.astype(object).where(s.notna(), np.nan) if isinstance(s.dtype, pd.CategoricalDtype) else s
    )


def train(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    params: Params,
    task: str,
    lgb_params: dict[str, Any],
    weights: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> TrainResult:
    """Fit the model and the baselines; ``weights``: optional (train, valid) LightGBM sample weights
    (``driftloop.training_data``: retrain.training_data recency). The baselines stay unweighted."""
    from driftloop.evaluate import compute_metrics
    from driftloop.tune import fit_booster, make_datasets

    target = params.base.target
    vp = params.validate_params
    encoder = TargetEncoder.fit(train_df[target], task, params.base.positive_class)
    y_train, y_valid = encoder.encode(train_df[target]), encoder.encode(valid_df[target])
    pre = Preprocessor(
        params.features,
        categorical_columns=tuple(vp.categorical_columns),
        date_columns=tuple(vp.date_columns),
    )
    X_train = pre.fit_transform(feature_frame(train_df, params))
    X_valid = pre.transform(feature_frame(valid_df, params))
    dtrain, dvalid = make_datasets(X_train, y_train, X_valid, y_valid, params.tune, weights)
    booster = fit_booster(lgb_params, dtrain, dvalid, params.tune)
    best_iteration = booster.best_iteration or booster.current_iteration()
    booster = booster.__class__(model_str=booster.model_to_string(num_iteration=best_iteration))
    model = DriftloopModel(pre, booster, encoder, target, best_iteration=None)
    valid_scores = model.predict_scores(valid_df)
    if task == "binary":
        model.threshold = threshold_for(y_valid, valid_scores, params.train)
        model.threshold_objective = threshold_objective(params.train)
        if len(np.unique(y_valid)) == 2:  # for label-free performance estimates (driftloop.calibration)
            from driftloop.calibration import Calibration

            model.calibration = Calibration.fit(y_valid, valid_scores).to_dict()
    valid_metrics = {"lightgbm": compute_metrics(task, y_valid, valid_scores, model.threshold)}
    baselines = {}
    # baselines are reference points: fit them on at most train.baseline_max_rows rows (seeded), which keeps a
    # 10M-row training under the memory budget (one-hot logistic regression on all rows needs ~12 GiB)
    Xb, yb = X_train, y_train
    if len(X_train) > params.train.baseline_max_rows:
        idx = np.random.default_rng(params.base.seed).choice(
            len(X_train), params.train.baseline_max_rows, replace=False
        )
        idx.sort()
        Xb, yb = X_train.iloc[idx], y_train[idx]
    for name, est in baseline_estimators(task, params.train.baselines, pre, params.base.seed).items():
        est.fit(_for_sklearn(Xb), yb)
        scores = baseline_scores(est, X_valid, task)
        threshold = threshold_for(y_valid, scores, params.train) if task == "binary" else None
        baselines[name] = {"estimator": est, "threshold": threshold}
        valid_metrics[name] = compute_metrics(task, y_valid, scores, threshold)
    return TrainResult(model, baselines, valid_metrics)
