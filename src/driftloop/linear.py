"""A regularized linear model on the preprocessed features, stored as JSON coefficients (no pickle).

``LinearModel`` is both the train stage's linear baseline (logistic regression for classification, Ridge for
regression) and a candidate of the algorithm selection: when it beats the tuned LightGBM on the validation
split it becomes the registered model, behind the same raw-rows interface (``DriftloopModel`` holds it where it
holds a LightGBM booster: ``predict``, ``model_to_string``, ``feature_name``, ``feature_importance``,
``num_trees``, ``pred_contrib``).

Its design matrix is built from plain numbers kept in the JSON: numeric features imputed with the training
median, a missing-value indicator where training had missing values, both standardised; categorical features
one-hot on their ``max_categories`` most frequent training categories (others, unseen and missing: all zeros).
The regularization strength is chosen on the validation split from a small grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LINEAR_FORMAT = "driftloop.linear/1"
C_GRID = (0.01, 0.1, 1.0, 10.0)  # logistic regression: inverse regularization strengths tried
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)  # Ridge: regularization strengths tried


@dataclass
class LinearModel:
    task: str
    seed: int = 0
    max_categories: int = 30
    strength: float | None = None  # C (logistic) or alpha (Ridge); None: chosen by ``fit_select``
    columns: list[dict] = field(default_factory=list)  # per feature: name, kind, median/mean/scale or categories
    coef: list[list[float]] = field(default_factory=list)  # outputs x design columns
    intercept: list[float] = field(default_factory=list)

    # ------------------------------------------------------------------ design matrix
    def _learn_columns(self, X: pd.DataFrame) -> None:
        self.columns = []
        for name in X.columns:
            s = X[name]
            if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object:
                top = s.astype(object).dropna().astype(str).value_counts().head(self.max_categories)
                self.columns.append({"name": name, "kind": "categorical", "categories": sorted(top.index.tolist())})
                continue
            v = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            finite = v[np.isfinite(v)]
            median = float(np.median(finite)) if len(finite) else 0.0
            filled = np.where(np.isfinite(v), v, median)
            col = {"name": name, "kind": "numeric", "median": median, "mean": float(filled.mean())}
            col["scale"] = float(filled.std()) or 1.0
            missing = ~np.isfinite(v)
            if missing.any():
                col["missing_mean"] = float(missing.mean())
                col["missing_scale"] = float(missing.std()) or 1.0
            self.columns.append(col)

    def design(self, X: pd.DataFrame) -> np.ndarray:
        """The standardised design matrix of ``X`` (preprocessed features, the columns seen at fit)."""
        blocks = []
        for col in self.columns:
            s = X[col["name"]]
            if col["kind"] == "categorical":
                values = s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v))
                blocks.append(np.column_stack([(values == c).to_numpy(dtype="float64") for c in col["categories"]]))
                continue
            v = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            missing = ~np.isfinite(v)
            blocks.append(((np.where(missing, col["median"], v) - col["mean"]) / col["scale"])[:, None])
            if "missing_mean" in col:
                blocks.append(((missing - col["missing_mean"]) / col["missing_scale"])[:, None])
        blocks = [b for b in blocks if b.shape[1]]
        return np.hstack(blocks) if blocks else np.zeros((len(X), 0))

    def _widths(self) -> list[int]:
        return [len(c["categories"]) if c["kind"] == "categorical" else 1 + ("missing_mean" in c) for c in self.columns]

    # ------------------------------------------------------------------ fitting
    def _estimator(self, strength: float):
        from sklearn.linear_model import LogisticRegression, Ridge

        if self.task == "regression":
            return Ridge(alpha=strength)
        return LogisticRegression(C=strength, max_iter=1000, random_state=self.seed)

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LinearModel:
        self._learn_columns(X)
        est = self._estimator(self.strength if self.strength is not None else 1.0)
        est.fit(self.design(X), y, sample_weight=sample_weight)
        self.coef = np.atleast_2d(est.coef_).tolist()
        self.intercept = np.atleast_1d(est.intercept_).astype(float).tolist()
        return self

    def fit_select(
        self, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray, sample_weight=None
    ) -> LinearModel:
        """Fit each strength of the grid on ``X``; keep the one with the best validation score."""
        from driftloop.evaluate import compute_metrics
        from driftloop.model import HIGHER_IS_BETTER, PRIMARY_METRIC

        metric = PRIMARY_METRIC[self.task]
        best = None
        for strength in ALPHA_GRID if self.task == "regression" else C_GRID:
            self.strength = strength
            self.fit(X, y, sample_weight)
            value = compute_metrics(self.task, y_valid, self.scores(X_valid), None)[metric]
            better = best is None or (value > best[0] if HIGHER_IS_BETTER[metric] else value < best[0])
            if better:
                best = (value, strength)
        self.strength = best[1]
        return self.fit(X, y, sample_weight)

    # ------------------------------------------------------------------ scoring
    def margin(self, X: pd.DataFrame) -> np.ndarray:
        return self.design(X) @ np.asarray(self.coef).T + np.asarray(self.intercept)

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        """Binary: P(positive); multiclass: (n, k) probabilities; regression: the prediction."""
        m = self.margin(X)
        if self.task == "regression":
            return m[:, 0]
        if self.task == "binary":
            return 1.0 / (1.0 + np.exp(-m[:, 0]))
        e = np.exp(m - m.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    # scikit-learn's interface (the baseline's scoring code calls these)
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        s = self.scores(X)
        return np.column_stack([1 - s, s]) if self.task == "binary" else s

    # LightGBM booster's interface (DriftloopModel, evaluate's SHAP plot)
    def predict(
        self, X: pd.DataFrame, num_iteration=None, pred_contrib: bool = False, raw_score: bool = False, **_: Any
    ) -> np.ndarray:
        if raw_score and not pred_contrib:
            m = self.margin(X)
            return m[:, 0] if m.shape[1] == 1 else m
        if not pred_contrib:
            return self.scores(X)
        # exact contributions of a linear model in margin space: coef x (column - its training mean), per feature
        # (design columns are centred, so the bias is the intercept); LightGBM's layout: k blocks of features + 1
        D = self.design(X)
        coef = np.asarray(self.coef)
        bounds = np.cumsum([0, *self._widths()])
        out = []
        for k in range(coef.shape[0]):
            parts = D * coef[k]
            per = np.column_stack([parts[:, a:b].sum(axis=1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
            out.append(np.column_stack([per, np.full(len(X), self.intercept[k])]))
        return np.hstack(out)

    def feature_name(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def feature_importance(self, importance_type: str = "gain") -> np.ndarray:
        """|coefficient| summed over each feature's design columns and outputs."""
        coef = np.abs(np.asarray(self.coef)).sum(axis=0)
        bounds = np.cumsum([0, *self._widths()])
        return np.array([coef[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])

    def num_trees(self) -> int:
        return 0

    # ------------------------------------------------------------------ JSON (no pickle)
    def model_to_string(self, num_iteration: int | None = None) -> str:
        data = {"format": LINEAR_FORMAT, **{k: getattr(self, k) for k in self.__dataclass_fields__}}
        return json.dumps(data, allow_nan=False)

    @classmethod
    def from_string(cls, text: str) -> LinearModel:
        data = json.loads(text)
        if data.pop("format", None) != LINEAR_FORMAT:
            from driftloop.errors import RegistryError

            raise RegistryError(f"linear model: format is not {LINEAR_FORMAT!r}")
        return cls(**data)
