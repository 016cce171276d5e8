"""Performance without labels: calibration fitted at training time, and a confidence-based estimate (CBPE).

At training time a map from the model's score to P(positive) is fitted on held-out rows (the validation split;
with ``train.refit``, out-of-fold scores of the refit procedure: ``train.refit_calibration``) -- Platt scaling of
the score's logit, stored as knots on the score's quantiles -- and kept as JSON with the model
(``DriftloopModel.calibration``: no pickle). An isotonic map (the earlier method; such models still load: the same
knot format) over-fitted its held-out rows: the estimate ran 0.014-0.036 ROC AUC high on drift-free months of the
refit model (mean |error| 0.021, new category 0.029); Platt: 0.012 and 0.019 (benchmarks/bench_judgment.py, 5
seeds). On an unlabeled
batch, every row then counts as a positive with weight ``q`` (its calibrated probability) and as a negative with
weight ``1 - q``: the expected ROC AUC is the weighted Mann-Whitney statistic over the model's own ranking, the
expected accuracy the mean probability of the predicted class (NannyML's CBPE does the same for a confusion
matrix at each threshold). The interval is the spread of the realized metric when the labels are drawn from
those probabilities (a seeded parametric bootstrap).

What it cannot see: it assumes P(label | score) did not change. Covariate shift moves the scores and the
estimate follows; pure concept drift (the same inputs, other labels) leaves the scores, and so the estimate,
where they were. ``benchmarks/bench_loop.py`` measures both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FORMAT = "isotonic-v1"  # the knot format (x -> y, linear in between); kept for the models stored before Platt
KNOTS = 401  # Platt's curve is stored at this many quantiles of the held-out scores


@dataclass(frozen=True)
class Calibration:
    """A monotone map score -> P(positive): linear interpolation between (``x``, ``y``) knots, clipped outside."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    rows: int = 0  # held-out rows it was fitted on

    @classmethod
    def fit(cls, y: np.ndarray, scores: np.ndarray) -> Calibration:
        """Platt scaling of logit(score) on held-out labels, stored as knots at quantiles of those scores."""
        from sklearn.linear_model import LogisticRegression

        y, s = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
        if len(y) != len(s) or len(y) < 2 or len(np.unique(y)) < 2:
            raise ValueError(f"calibration needs two classes in its held-out rows (got {len(y)} rows)")
        platt = LogisticRegression(C=1e6).fit(_logit(s)[:, None], y)
        x = np.unique(np.quantile(s, np.linspace(0.0, 1.0, KNOTS)))
        q = platt.predict_proba(_logit(x)[:, None])[:, 1]
        return cls(tuple(map(float, x)), tuple(map(float, q)), len(y))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=float), self.x, self.y)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "method": "platt", "x": list(self.x), "y": list(self.y), "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration | None:
        if not data:
            return None
        if data.get("format") != FORMAT or len(data.get("x", [])) != len(data.get("y", [])) or not data.get("x"):
            raise ValueError(f"model.json: calibration of unknown format {data.get('format')!r}")
        return cls(tuple(map(float, data["x"])), tuple(map(float, data["y"])), int(data.get("rows", 0)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _ranks(scores: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(scores)  # ties: the average rank


def expected_auc(scores: np.ndarray, q: np.ndarray) -> float:
    """The ROC AUC expected when row ``i`` is positive with probability ``q[i]`` (pairs of distinct rows, ties
    count one half), ranking by ``scores``."""
    s, q = np.asarray(scores, dtype=float), np.asarray(q, dtype=float)
    order = np.argsort(s, kind="mergesort")
    s, q = s[order], q[order]
    uniq, start = np.unique(s, return_index=True)
    neg_w = 1 - q
    group_neg = np.add.reduceat(neg_w, start)
    below = np.concatenate([[0.0], np.cumsum(group_neg)[:-1]])  # negative weight strictly below each group
    gid = np.repeat(np.arange(len(uniq)), np.diff(np.append(start, len(s))))
    # pairs (i positive, j negative), j != i: below + half of the same-score group without i itself
    pair = q * (below[gid] + 0.5 * (group_neg[gid] - neg_w))
    pos_total, neg_total = q.sum(), neg_w.sum()
    denom = pos_total * neg_total - float((q * neg_w).sum())  # minus the self-pairs
    return float(pair.sum() / denom) if denom > 0 else float("nan")


def estimate(
    calibration: Calibration,
    scores: np.ndarray,
    threshold: float | None,
    *,
    reference: float | None = None,
    reference_se: float | None = None,
    confidence: float = 0.95,
    n_sim: int = 200,
    seed: int = 0,
) -> dict:
    """The estimated ROC AUC and accuracy of an unlabeled batch, their intervals, and the estimated AUC drop
    against ``reference`` (with its interval, counting ``reference_se`` too)."""
    from statistics import NormalDist

    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    n = len(s)
    out: dict = {"method": "cbpe", "rows": n, "confidence": confidence}
    if n < 2:
        return {**out, "roc_auc": None, "accuracy": None, "notes": ["too few scored rows"]}
    q = np.clip(calibration(s), 0.0, 1.0)
    thr = 0.5 if threshold is None else float(threshold)
    called = s >= thr
    auc = expected_auc(s, q)
    acc = float(np.mean(np.where(called, q, 1 - q)))
    # the realized metric if the labels are drawn from the calibrated probabilities
    rng = np.random.default_rng(seed)
    ranks = _ranks(s)
    sims_auc, sims_acc = [], []
    for _ in range(max(n_sim, 0)):
        y = rng.random(n) < q
        m = int(y.sum())
        sims_acc.append(float(np.mean(y == called)))
        if 0 < m < n:
            sims_auc.append((ranks[y].sum() - m * (m + 1) / 2) / (m * (n - m)))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    auc_sd = float(np.std(sims_auc, ddof=1)) if len(sims_auc) > 1 else None
    acc_sd = float(np.std(sims_acc, ddof=1)) if len(sims_acc) > 1 else None
    out.update(
        roc_auc=auc,
        roc_auc_sd=auc_sd,
        roc_auc_low=None if auc_sd is None else auc - z * auc_sd,
        roc_auc_high=None if auc_sd is None else auc + z * auc_sd,
        accuracy=acc,
        accuracy_sd=acc_sd,
        expected_positive_rate=float(q.mean()),
        reference=reference,
        drop=None,
        drop_low=None,
        drop_high=None,
    )
    if reference is not None and math.isfinite(reference) and auc_sd is not None:
        drop = float(reference) - auc
        se = math.sqrt(auc_sd**2 + (reference_se or 0.0) ** 2)
        out.update(drop=drop, drop_se=se, drop_low=drop - z * se, drop_high=drop + z * se)
    return out
