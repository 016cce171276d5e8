"""Adapting a retrain to the newest regime: model revision on the older model's per-feature contributions.

After a drift, a retrain has plenty of old rows and few of the new regime. Trained on all of them, the trees follow
the old rows (``benchmarks/bench_adaptation.py``: one drifted month closes about half of the gap to a model trained
on plenty of post-drift data). Clinical prediction models face the same problem when moved to a new hospital, and the
standard answer is *model updating* (Steyerberg, *Clinical Prediction Models*, ch. 20; Janssen et al. 2008):
keep the old model's structure and re-estimate a few parameters on the new data, with shrinkage -- recalibration in
the large (the intercept), logistic recalibration (the slope), model revision (each predictor's coefficient).

For a gradient-boosted model the predictors' terms are its per-feature contributions. Here they are the path
contributions (Saabas): along each row's path through a tree, the change of the node value at a split is credited to
the split's feature, so the contributions add up to the raw score exactly and each tree leaf carries a fixed vector
of them. The revised model's log-odds is

    base_raw(x) + shift + sum_j delta_j * phi_j(x)

i.e. each feature's learned effect scaled by ``1 + delta_j`` (a sign flip at -2), with an L2 penalty on ``delta``
that shrinks toward the base model. Because ``phi`` is fixed per leaf, the revision folds into new leaf values: the
revised base is an ordinary LightGBM model, as fast to score as the base. (TreeSHAP contributions, which depend on
more than the leaf, revised about as well in ``bench_adaptation.py``'s setting -- 82 % vs 78 % of the gap, 5 seeds --
but would have to be computed at every prediction: 11x the scoring time of 1,000 rows.)

``delta`` and ``shift`` are fitted on the newest period's rows that the base model never saw (the training rows of
the time split's newest period, ``split.time_test_share`` < 1), the penalty chosen by K-fold cross-validated log loss
among ``STRENGTHS``. The revision is adopted only when its out-of-fold log loss beats the unrevised base's on those
rows by a one-sided paired z of ``ADOPT_Z`` or more, so a retrain without a change in ``P(y | x)`` keeps the plain
model.

The adopted model is the mean, in log-odds, of the retrained model (all rows) and the revised base: the first carries
what the new rows show that the old structure cannot, the second what the old rows know, re-weighted to the new
regime. Both are folded into one LightGBM text model (every leaf value halved, the two tree lists concatenated), so
the registered model, its files, scoring, serving and explanations are those of any LightGBM model. Binary
classification only: the revision is a logistic model.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# --------------------------------------------------------------------------- path contributions, per leaf
@dataclass
class PathTables:
    """Per tree: the path contribution of every feature at every leaf (``leaves`` x ``features``), and the root value
    (the tree's share of the bias); a row's contributions are the sum over trees of its leaves' rows."""

    tables: list[np.ndarray]
    roots: np.ndarray

    @classmethod
    def of(cls, booster) -> PathTables:
        dump = booster.dump_model()
        p = len(dump["feature_names"])
        tables, roots = [], []
        for tree in dump["tree_info"]:
            table = np.zeros((tree["num_leaves"], p))
            root = tree["tree_structure"]
            if "split_feature" not in root:  # a single leaf: all bias
                tables.append(table)
                roots.append(float(root["leaf_value"]))
                continue
            stack = [(root, np.zeros(p))]
            while stack:
                node, acc = stack.pop()
                value, feature = node["internal_value"], node["split_feature"]
                for child in (node["left_child"], node["right_child"]):
                    path = acc.copy()
                    if "split_feature" in child:
                        path[feature] += child["internal_value"] - value
                        stack.append((child, path))
                    else:
                        path[feature] += child["leaf_value"] - value
                        table[child["leaf_index"]] = path
            tables.append(table)
            roots.append(float(root["internal_value"]))
        return cls(tables, np.asarray(roots))

    def contributions(self, booster, X) -> np.ndarray:
        """(rows, features + 1): the rows' path contributions and the bias column (``pred_contrib``'s layout)."""
        leaves = np.asarray(booster.predict(X, pred_leaf=True)).reshape(len(X), -1)
        out = np.zeros((len(X), self.tables[0].shape[1] if self.tables else 0))
        for t, table in enumerate(self.tables):
            out += table[leaves[:, t]]
        return np.column_stack([out, np.full(len(X), self.roots.sum())])


# --------------------------------------------------------------------------- LightGBM's text model, rewritten
def _parts(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """A LightGBM text model as header lines, one line list per tree, and the lines from "end of trees" on."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("Tree=")]
    end = lines.index("end of trees")
    bounds = [*starts, end]
    trees = [lines[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return lines[: starts[0]] if starts else lines[:end], trees, lines[end:]


def _with_leaves(tree: list[str], index: int, values: np.ndarray) -> list[str]:
    out = [f"Tree={index}"]
    for line in tree[1:]:
        if line.startswith("leaf_value="):
            line = "leaf_value=" + " ".join(repr(float(v)) for v in values)
        out.append(line)
    return out


def _leaf_values(tree: list[str]) -> np.ndarray:
    line = next(x for x in tree if x.startswith("leaf_value="))
    return np.array([float(v) for v in line.split("=", 1)[1].split()])


def merged_model(main, base, paths: PathTables, revision: Revision):
    """One LightGBM booster whose raw score is the mean of ``main``'s and the revised ``base``'s."""
    import lightgbm as lgb

    head, main_trees, tail = _parts(main.model_to_string(num_iteration=-1))
    base_head, base_trees, base_tail = _parts(base.model_to_string(num_iteration=-1))
    if [x for x in head if x.startswith("feature_names=")] != [x for x in base_head if x.startswith("feature_names=")]:
        raise ValueError("the retrained and the base model do not read the same features")
    if [x for x in tail if x.startswith("pandas_categorical")] != [
        x for x in base_tail if x.startswith("pandas_categorical")
    ]:
        raise ValueError("the retrained and the base model code categories differently")
    trees = [_with_leaves(t, i, 0.5 * _leaf_values(t)) for i, t in enumerate(main_trees)]
    for k, (tree, table) in enumerate(zip(base_trees, paths.tables, strict=True)):
        leaves = _leaf_values(tree) + table @ revision.delta + (revision.shift if k == 0 else 0.0)
        trees.append(_with_leaves(tree, len(trees), 0.5 * leaves))
    header = [x for x in head if not x.startswith("tree_sizes=")]  # sizes are optional; these trees are new
    text = "\n".join(header + [line for tree in trees for line in tree] + tail)
    return lgb.Booster(model_str=text)


def revise(main, base, X_recent, y_recent: np.ndarray, seed: int) -> tuple[Any | None, dict[str, Any]]:
    """The merged booster when the revision of ``base`` on the recent rows is adopted (else None), and the evidence
    (with the revision's ``delta`` per feature and ``shift``, for the record)."""
    paths = PathTables.of(base)
    revision, evidence = fit_revision(paths.contributions(base, X_recent), y_recent, seed)
    names = base.feature_name()
    evidence["delta"] = {n: round(float(d), 6) for n, d in zip(names, revision.delta, strict=True)}
    evidence["shift"] = revision.shift
    if not evidence["adopted"]:
        return None, evidence
    return merged_model(main, base, paths, revision), evidence
