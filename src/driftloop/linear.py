"""A regularized linear model on the preprocessed features, stored as JSON coefficients (no pickle).

``LinearModel`` is both the train stage's linear baseline (logistic regression for classification, Ridge for
regression) and a candidate of the algorithm selection: when it beats the tuned LightGBM on the validation
split it becomes the registered model, behind the same raw-rows interface (``DriftloopModel`` holds it where it
holds a LightGBM booster: ``predict``, ``model_to_string``, ``feature_name``, ``feature_importance``,
``num_trees``, ``pred_contrib``).

Its design matrix is built from plain numbers kept in the JSON: numeric features imputed with the training
median, a missing-value indicator where training had missing values, both standardised; categorical features
one-hot on their ``max_categories`` most frequent training categories (others, unseen and missing: all zeros).
The regularization strength is chosen from a log-spaced grid (``STRENGTH_GRID``: 13 values over 1e-3..1e3) on the
validation split, or on the tune stage's CV folds (``driftloop.train``): one design matrix per fit set, the grid fitted
as a regularization path (strongest regularization first, each fit warm-started from the previous coefficients).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LINEAR_FORMAT = "driftloop.linear/1"
STRENGTH_GRID = tuple(float(f"{10**e:.4g}") for e in np.arange(-3.0, 3.01, 0.5))  # 1e-3, 3.162e-3, ..., 1e3
C_GRID = STRENGTH_GRID  # logistic regression: inverse regularization strengths tried (C)
ALPHA_GRID = STRENGTH_GRID  # Ridge: regularization strengths tried (alpha, on the standardised design)


def strength_grid(task: str) -> tuple[float, ...]:
    """The strengths tried, the strongest regularization first (the order of the warm-started path)."""
    return tuple(sorted(ALPHA_GRID, reverse=True)) if task == "regression" else tuple(sorted(C_GRID))


def selection_key(task: str, metrics: dict[str, float]) -> tuple[float, ...]:
    """Larger is better: the primary metric, ties broken by log loss (classification; the probabilities feed
    the threshold and the calibration). Used for the strength on validation rows or on CV fold means."""
    from driftloop.model import HIGHER_IS_BETTER, PRIMARY_METRIC

    metric = PRIMARY_METRIC[task]
    primary = metrics[metric] if HIGHER_IS_BETTER[metric] else -metrics[metric]
    tie = -metrics["log_loss"] if task != "regression" and metric != "log_loss" else 0.0
    return tuple(round(v, 12) if np.isfinite(v) else -np.inf for v in (primary, tie))


def selection_metrics(task: str, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The metrics ``selection_key`` reads (the primary one and the log loss), without the rest of
    ``compute_metrics`` (the grid is scored 13 times per fold)."""
    from driftloop.evaluate import metric_value
    from driftloop.model import PRIMARY_METRIC

    names = {PRIMARY_METRIC[task]} | ({"log_loss"} if task != "regression" else set())
    return {name: metric_value(task, name, y, scores) for name in names}


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
    def _estimator(self, strength: float, warm_start: bool = False):
        from sklearn.linear_model import LogisticRegression, Ridge

        if self.task == "regression":
            return Ridge(alpha=strength)
        return LogisticRegression(C=strength, max_iter=1000, random_state=self.seed, warm_start=warm_start)

    def fit(self, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LinearModel:
        self._learn_columns(X)
        est = self._estimator(self.strength if self.strength is not None else 1.0)
        with _quiet():
            est.fit(self.design(X), y, sample_weight=sample_weight)
        self.coef = np.atleast_2d(est.coef_).tolist()
        self.intercept = np.atleast_1d(est.intercept_).astype(float).tolist()
        return self

    def path_scores(
        self, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame, sample_weight: np.ndarray | None = None
    ) -> dict[float, np.ndarray]:
        """``scores`` of ``X_valid`` for every strength of the grid fitted on ``X``: one design matrix, the
        strongest regularization first, each fit warm-started from the previous one's coefficients (LBFGS;
        Ridge is solved directly). Leaves this model's columns learnt on ``X`` (not its coefficients)."""
        self._learn_columns(X)
        D, Dv = self.design(X), self.design(X_valid)
        grid = strength_grid(self.task)
        est = self._estimator(grid[0], warm_start=True)
        out = {}
        for strength in grid:
            est.set_params(**({"alpha": strength} if self.task == "regression" else {"C": strength}))
            with _quiet():
                est.fit(D, y, sample_weight=sample_weight)
            margin = Dv @ np.atleast_2d(est.coef_).T + np.atleast_1d(est.intercept_)
            out[strength] = self._link(margin)
        return out

    def fit_select(
        self, X: pd.DataFrame, y: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray, sample_weight=None
    ) -> LinearModel:
        """Fit the grid's path on ``X``; keep the strength with the best validation score (``selection_key``)."""
        path = self.path_scores(X, y, X_valid, sample_weight)
        keys = {s: selection_key(self.task, selection_metrics(self.task, y_valid, p)) for s, p in path.items()}
        self.strength = max(path, key=lambda s: keys[s])  # the first best in path order: the strongest regularization
        return self.fit(X, y, sample_weight)

    # ------------------------------------------------------------------ scoring
    def margin(self, X: pd.DataFrame) -> np.ndarray:
        return self.design(X) @ np.asarray(self.coef).T + np.asarray(self.intercept)

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        """Binary: P(positive); multiclass: (n, k) probabilities; regression: the prediction."""
        return self._link(self.margin(X))

    def _link(self, m: np.ndarray) -> np.ndarray:
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


@contextmanager
def _quiet():
    """Silence scikit-learn's convergence warnings: the weakest regularizations of the grid on separable data do
    not converge in ``max_iter``; they are candidates like the others, judged on held-out rows."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield
