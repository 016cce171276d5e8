"""Adapting a retrain to the newest regime: model revision on the base model's per-feature contributions.

After a drift, a retrain has plenty of old rows and few of the new regime. Trained on all of them, the trees follow
the old rows (``benchmarks/bench_adaptation.py``: one drifted month closes about half of the gap to a model trained
on plenty of post-drift data). Clinical prediction models face the same problem when moved to a new hospital, and the
standard answer is *model updating* (Steyerberg, *Clinical Prediction Models*, ch. 20; Janssen et al. 2008):
keep the old model's structure and re-estimate a few parameters on the new data, with shrinkage — recalibration in
the large (the intercept), logistic recalibration (the slope), model revision (each predictor's coefficient).

For a gradient-boosted model the predictors' coefficients are its per-feature contributions (LightGBM
``pred_contrib``, exact TreeSHAP, which add up to the raw score): the revised model's log-odds is

    base_raw(x) + shift + sum_j delta_j * phi_j(x)

i.e. each feature's learned effect scaled by ``1 + delta_j`` (a sign flip when it is -2), with an L2 penalty on
``delta`` that shrinks toward the base model. ``delta`` and ``shift`` are fitted on the newest period's rows that the
base model never saw (the training rows of the time split's newest period, ``split.time_test_share`` < 1), the
penalty chosen by K-fold cross-validated log loss among ``STRENGTHS``. The revision is adopted only when its
out-of-fold log loss beats the unrevised base's on those rows by a one-sided paired z of ``ADOPT_Z`` or more, so a
retrain without a change in ``P(y | x)`` keeps the plain model.

The adopted model is the mean, in log-odds, of the retrained model (all rows) and the revised base: the first
carries what the new rows show that the old structure cannot, the second what the old rows know, re-weighted to the
new regime. Its contributions are the same mean of the two models' contributions, so explanations stay exact.
``RevisedEnsemble`` has the booster interface ``DriftloopModel`` calls (``predict`` with ``raw_score`` /
``pred_contrib``, ``feature_name``, ``feature_importance``, ``num_trees``) and is stored as JSON holding both
LightGBM text models (no pickle). Binary classification only: the revision is a logistic model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "revision-v1"
STRENGTHS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # L2 penalty on delta, per the rows' summed log loss
FOLDS = 5
ADOPT_Z = 1.645  # one-sided 5 %: the revision's out-of-fold log loss gain over the base, paired per row


@dataclass
class Revision:
    """The base model's contributions re-weighted: ``delta`` per feature (in ``feature_name`` order) and ``shift``."""

    delta: np.ndarray
    shift: float
    strength: float

    def raw(self, contrib: np.ndarray) -> np.ndarray:
        """Revised log-odds from the base model's ``pred_contrib`` (features..., bias)."""
        return contrib.sum(axis=1) + contrib[:, :-1] @ self.delta + self.shift

    def contrib(self, contrib: np.ndarray) -> np.ndarray:
        """The revised model's contributions: each feature's scaled, the shift in the bias column."""
        out = contrib.copy()
        out[:, :-1] *= 1.0 + self.delta
        out[:, -1] += self.shift
        return out


def _log_loss(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z) - y * z


def _fit(phi: np.ndarray, y: np.ndarray, offset: np.ndarray, strength: float) -> tuple[np.ndarray, float]:
    """Penalized logistic regression with an offset: min sum log loss(offset + phi @ d + s) + strength/2 |d|^2."""
    from scipy.optimize import minimize
    from scipy.special import expit

    p = phi.shape[1]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = offset + phi @ w[:p] + w[p]
        g = expit(z) - y
        value = _log_loss(z, y).sum() + 0.5 * strength * float(w[:p] @ w[:p])
        return value, np.append(phi.T @ g + strength * w[:p], g.sum())

    w = minimize(objective, np.zeros(p + 1), jac=True, method="L-BFGS-B").x
    return w[:p], float(w[p])


def fit_revision(contrib: np.ndarray, y: np.ndarray, seed: int) -> tuple[Revision, dict[str, Any]]:
    """The revision of a base model on rows it never saw (``contrib``: its ``pred_contrib`` there, ``y``: 0/1), and
    the evidence: per-row out-of-fold log loss of the revision (penalty chosen by CV) vs the unrevised base."""
    y = np.asarray(y, dtype="float64")
    phi, offset = contrib[:, :-1], contrib.sum(axis=1)
    folds = np.random.default_rng(seed).permutation(len(y)) % FOLDS
    oof = {s: np.empty(len(y)) for s in STRENGTHS}
    for k in range(FOLDS):
        fit, held = folds != k, folds == k
        for s in STRENGTHS:
            d, shift = _fit(phi[fit], y[fit], offset[fit], s)
            oof[s][held] = offset[held] + phi[held] @ d + shift
    losses = {s: _log_loss(z, y) for s, z in oof.items()}
    best = min(STRENGTHS, key=lambda s: losses[s].sum())
    gain = _log_loss(offset, y) - losses[best]  # per row: > 0 where the revision predicts better
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
    z = float(gain.mean() / se) if se > 0 else 0.0
    delta, shift = _fit(phi, y, offset, best)
    evidence = {
        "rows": len(y),
        "positives": int(y.sum()),
        "strength": best,
        "log_loss_base": float(_log_loss(offset, y).mean()),
        "log_loss_revised_oof": float(losses[best].mean()),
        "z": z,
        "adopted": bool(z >= ADOPT_Z),
    }
    return Revision(delta, shift, best), evidence


@dataclass
class RevisedEnsemble:
    """The retrained booster and the revised base booster, averaged in log-odds (LightGBM booster interface)."""

    main: Any  # lightgbm.Booster: the retrain on all rows
    base: Any  # lightgbm.Booster: the model the revision re-weights (never saw the revision's rows)
    revision: Revision
    evidence: dict = field(default_factory=dict)

    def _base_contrib(self, X, **kw) -> np.ndarray:
        kw.pop("num_iteration", None)
        return self.base.predict(X, pred_contrib=True, **kw)

    def predict(self, X, num_iteration=None, raw_score: bool = False, pred_contrib: bool = False, **kw) -> np.ndarray:
        kw = {k: v for k, v in kw.items() if k == "num_threads"}
        base = self._base_contrib(X, **kw)
        if pred_contrib:
            main = self.main.predict(X, num_iteration=num_iteration, pred_contrib=True, **kw)
            return 0.5 * (main + self.revision.contrib(base))
        main = self.main.predict(X, num_iteration=num_iteration, raw_score=True, **kw)
        z = 0.5 * (main + self.revision.raw(base))
        return z if raw_score else 1.0 / (1.0 + np.exp(-z))

    def feature_name(self) -> list[str]:
        return self.main.feature_name()

    def feature_importance(self, importance_type: str = "gain") -> np.ndarray:
        return 0.5 * (
            np.asarray(self.main.feature_importance(importance_type=importance_type), dtype="float64")
            + np.asarray(self.base.feature_importance(importance_type=importance_type), dtype="float64")
        )

    def num_trees(self) -> int:
        return int(self.main.num_trees() + self.base.num_trees())

    def model_to_string(self, num_iteration: int | None = -1) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "main": self.main.model_to_string(num_iteration=num_iteration),
                "base": self.base.model_to_string(num_iteration=-1),
                "delta": [float(v) for v in self.revision.delta],
                "shift": self.revision.shift,
                "strength": self.revision.strength,
                "evidence": self.evidence,
            }
        )

    @classmethod
    def from_string(cls, text: str) -> RevisedEnsemble:
        import lightgbm as lgb

        data = json.loads(text)
        if data.get("format") != FORMAT:
            from driftloop.errors import RegistryError

            raise RegistryError(f"revised model format {data.get('format')!r} is not supported (reads {FORMAT!r})")
        main, base = lgb.Booster(model_str=data["main"]), lgb.Booster(model_str=data["base"])
        if main.feature_name() != base.feature_name():
            from driftloop.errors import RegistryError

            raise RegistryError("revised model: its two boosters do not read the same features")
        revision = Revision(np.asarray(data["delta"], dtype="float64"), float(data["shift"]), float(data["strength"]))
        return cls(main, base, revision, data.get("evidence") or {})


def revise(main, base, X_recent, y_recent: np.ndarray, seed: int) -> tuple[RevisedEnsemble | None, dict[str, Any]]:
    """The ensemble when the revision of ``base`` on the recent rows is adopted (else None), and the evidence."""
    revision, evidence = fit_revision(base.predict(X_recent, pred_contrib=True), y_recent, seed)
    if not evidence["adopted"]:
        return None, evidence
    return RevisedEnsemble(main, base, revision, evidence), evidence
