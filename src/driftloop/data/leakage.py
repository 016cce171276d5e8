"""The leakage check: features that predict the target almost perfectly, alone or as a numeric pair.

Every score is cross-validated on a seeded sample of rows (``validate.leakage_sample_rows``; 3 folds,
stratified by class): ROC AUC (binary), accuracy (multiclass) or R^2 (regression) of held-out predictions.

- **One column** (``single_feature_scores``): numeric and boolean features go through one LightGBM tree (depth 6,
  at least 5 rows a leaf, 1023 bins; missing values go to whichever side fits them); categorical ones through
  each category's training statistic (rare categories pooled), so a code that maps to the target is caught
  whatever the order of its labels.
- **A pair of numeric columns** (``combination_scores``): the same one-tree check on the pair together with its
  difference, sum, product and ratio, so a target defined as ``arr_time - sched_arr_time > 15`` (each column
  weak alone) is caught. The pairs are those of the ``validate.leakage_pair_columns`` numeric columns that
  predict the target best alone; a pair is a suspect only when it reaches ``validate.leakage_threshold`` and
  beats the better of its two columns alone by ``PAIR_MIN_GAIN`` (two strong columns are not a leak). For a
  regression target the pair's score is also the squared rank correlation of its best derived column (a tree's
  steps cannot follow a heavy-tailed ``qty * unit_price``). Pairs are screened on ``SCREEN_ROWS`` rows first.
- **A pair and one more column**: the few best pairs that score ``TRIPLE_FROM`` without being suspects are tried
  with each other column (numeric, or category codes), so a grade that ``installment / amount`` gives once
  ``term`` is known is caught; named with its three columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.config import Params

# cross-validation folds, tree depth, rows a leaf (and a category) needs, histogram bins
LEAKAGE_FOLDS = 3
LEAKAGE_TREE_DEPTH = 6
LEAKAGE_MIN_LEAF = 5
LEAKAGE_MAX_BIN = 1023  # fine bins: a narrow gap between classes keeps a bin boundary of its own
LEAKAGE_MAX_CATEGORIES = 1000
# a pair must beat the better of its columns alone by this much (AUC / accuracy / R^2 points)
PAIR_MIN_GAIN = 0.02
PAIR_FEATURES = ("a", "b", "a - b", "a + b", "a * b", "a / b")
# pairs are screened on this many of the sample's rows; those within SCREEN_MARGIN of the threshold are then
# scored on the whole sample (a fifth of the time on 20,000 rows)
SCREEN_ROWS = 4000
SCREEN_MARGIN = 0.03
# pairs that reach TRIPLE_FROM (screened) without being suspects: the TRIPLE_PAIRS best are tried with one more column
TRIPLE_FROM = 0.85
TRIPLE_PAIRS = 3


@dataclass
class Folds:
    """The seeded sample the leakage scores are computed on, its encoded target and fold of every row."""

    sample: pd.DataFrame
    y: np.ndarray
    k: int  # classes (1 for regression)
    fold: np.ndarray


def make_folds(df: pd.DataFrame, y: pd.Series, task: str, params: Params) -> Folds | None:
    """A seeded sample of at most ``validate.leakage_sample_rows`` rows and its stratified folds (None: a class
    has fewer rows than folds)."""
    n = min(len(df), params.validate_params.leakage_sample_rows)
    sample = df.sample(n=n, random_state=params.base.seed) if n < len(df) else df
    ys = y.loc[sample.index]
    rng = np.random.default_rng(params.base.seed)
    if task == "regression":
        yv, k = ys.to_numpy(dtype="float64"), 1
        order = rng.permutation(n)
    else:
        yv, classes = pd.factorize(ys.astype(str), sort=True)
        k = len(classes)
        if np.bincount(yv, minlength=k).min() < LEAKAGE_FOLDS:
            return None
        order = np.lexsort((rng.random(n), yv))  # by class, shuffled within: stratified folds
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % LEAKAGE_FOLDS
    return Folds(sample, yv, k, fold)


def held_out_score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The score of held-out predictions: ROC AUC / accuracy / R^2 (NaN when ``y`` is constant).

    binary: ``pred`` is a score, AUC by the rank formula (ties count half; sklearn's ``roc_auc_score``
    is ten times slower on these sizes); multiclass: ``pred`` is a class index.
    """
    if task == "binary":
        rank, pos = pd.Series(pred).rank().to_numpy(), y == 1
        n_pos = pos.sum()
        return float((rank[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))
    if task == "multiclass":
        return float((pred == y).mean())
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def _group_prediction(task: str, g_tr: np.ndarray, y_tr: np.ndarray, g_te: np.ndarray, m: int, k: int) -> np.ndarray:
    """Predict each held-out row's group (category) training statistic: the majority class, else the mean.

    Groups without training rows predict the prior.
    """
    count = np.bincount(g_tr, minlength=m)
    if task == "multiclass":
        table = np.bincount(g_tr * k + y_tr, minlength=m * k).reshape(m, k)
        pred = np.where(count > 0, table.argmax(axis=1), np.bincount(y_tr, minlength=k).argmax())
    else:
        pred = np.where(count > 0, np.bincount(g_tr, weights=y_tr, minlength=m) / np.maximum(count, 1), y_tr.mean())
    return pred[g_te]


def _tree_params(task: str, k: int, seed: int) -> dict:
    # one tree at learning rate 1: each leaf predicts its rows' positive rate / class shares / mean
    return {
        "objective": task,  # binary | multiclass | regression
        "num_class": k if task == "multiclass" else 1,
        "learning_rate": 1.0,
        "num_leaves": 2**LEAKAGE_TREE_DEPTH,
        "max_depth": LEAKAGE_TREE_DEPTH,
        "min_data_in_leaf": LEAKAGE_MIN_LEAF,
        "max_bin": LEAKAGE_MAX_BIN,
        "num_threads": 1,
        "deterministic": True,
        "seed": seed,
        "verbosity": -1,
    }


def tree_score(x: np.ndarray, f: Folds, task: str, seed: int) -> float:
    """The cross-validated score of one LightGBM tree on the numeric matrix ``x`` (rows of ``f.sample``)."""
    import lightgbm as lgb

    tree = _tree_params(task, f.k, seed)
    scores = []
    for i in range(LEAKAGE_FOLDS):
        test = f.fold == i
        # keep_training_booster skips a needless model-to-string round trip
        booster = lgb.train(tree, lgb.Dataset(x[~test], f.y[~test]), num_boost_round=1, keep_training_booster=True)
        pred = booster.predict(x[test], num_threads=1)
        scores.append(held_out_score(task, f.y[test], pred.argmax(axis=1) if task == "multiclass" else pred))
    return float(np.mean(scores)) if np.all(np.isfinite(scores)) else float("nan")


def is_numeric(s: pd.Series, categorical: set, col: str) -> bool:
    return (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) and col not in categorical


def single_feature_scores(df: pd.DataFrame, y: pd.Series, task: str, params: Params) -> dict[str, float]:
    """Cross-validated score of each feature alone (AUC / accuracy / R^2), on a seeded sample (module doc)."""
    f = make_folds(df, y, task, params)
    if f is None:
        return {}
    categorical = set(params.validate_params.categorical_columns)
    scores = {}
    for col in f.sample.columns:
        s = f.sample[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            continue
        if is_numeric(s, categorical, col):
            score = tree_score(s.to_numpy(dtype="float64", na_value=np.nan)[:, None], f, task, params.base.seed)
        else:
            codes, uniques = pd.factorize(s)
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            keep = np.argsort(-counts, kind="stable")[:LEAKAGE_MAX_CATEGORIES]
            keep = keep[counts[keep] >= LEAKAGE_MIN_LEAF]
            m = len(keep) + 2
            remap = np.full(len(uniques) + 1, m - 2)  # rare categories: one pooled group
            remap[keep] = np.arange(len(keep))
            remap[-1] = m - 1  # missing (code -1)
            groups = remap[codes]
            fold_scores = []
            for i in range(LEAKAGE_FOLDS):
                test = f.fold == i
                pred = _group_prediction(task, groups[~test], f.y[~test], groups[test], m, f.k)
                fold_scores.append(held_out_score(task, f.y[test], pred))
            score = float(np.mean(fold_scores)) if np.all(np.isfinite(fold_scores)) else float("nan")
        if np.isfinite(score):
            scores[col] = score
    return scores


def pair_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pair and its difference, sum, product and ratio (``PAIR_FEATURES``); non-finite results missing."""
    with np.errstate(all="ignore"):
        x = np.column_stack([a, b, a - b, a + b, a * b, a / b])
    x[~np.isfinite(x)] = np.nan
    return x


def rank_fit(x: np.ndarray, y: np.ndarray) -> float:
    """Regression: the best squared rank correlation (Spearman) of a column of ``x`` with ``y``.

    One tree's 64 steps cannot reach R^2 0.99 on a heavy-tailed target, even one computed exactly from the
    pair (``qty * unit_price``); a monotone exact relation has a rank correlation of 1 whatever the tails.
    """
    ry = pd.Series(y).rank().to_numpy()
    best = 0.0
    for j in range(x.shape[1]):
        ok = np.isfinite(x[:, j])
        if ok.sum() < 3:
            continue
        rx = pd.Series(x[ok, j]).rank().to_numpy()
        r = np.corrcoef(rx, ry[ok])[0, 1] if rx.std() > 0 else 0.0
        best = max(best, float(r * r) if np.isfinite(r) else 0.0)
    return best


def _as_float(s: pd.Series, categorical: set, col: str) -> np.ndarray:
    """A column as float64 for a tree: numeric values, or category codes (missing: NaN)."""
    if is_numeric(s, categorical, col):
        return s.to_numpy(dtype="float64", na_value=np.nan)
    codes = pd.factorize(s)[0].astype("float64")
    codes[codes < 0] = np.nan
    return codes


def combination_scores(
    df: pd.DataFrame, y: pd.Series, task: str, params: Params, single: dict[str, float]
) -> list[tuple[float, tuple[str, ...]]]:
    """(score, columns) of every numeric pair, or pair and one more column, that predicts the target together
    (module doc), best first; the columns in the data's order.

    ``single``: each column's score alone; the pairs are formed among the ``validate.leakage_pair_columns``
    numeric columns of ``df`` that score best alone (ties: the order of ``df``). The ``TRIPLE_PAIRS`` best pairs
    that reach ``TRIPLE_FROM`` without being suspects are tried with each other column of ``df`` (a loan's grade:
    ``installment / amount`` gives the rate once ``term`` is known).
    """
    vp = params.validate_params
    categorical = set(vp.categorical_columns)
    numeric = [c for c in df.columns if is_numeric(df[c], categorical, c) and not pd.api.types.is_bool_dtype(df[c])]
    if vp.leakage_pair_columns < 2 or len(numeric) < 2:
        return []
    f = make_folds(df, y, task, params)  # the rows single_feature_scores sampled (the same seed)
    if f is None:
        return []
    numeric = [c for c in numeric if f.sample[c].nunique() > 2]  # a two-valued column is a flag, not a quantity
    ranked = sorted(numeric, key=lambda c: -single.get(c, float("-inf")))[: vp.leakage_pair_columns]
    if len(ranked) < 2:
        return []
    order = list(df.columns).index
    values = {c: f.sample[c].to_numpy(dtype="float64", na_value=np.nan) for c in ranked}
    m = min(len(f.y), SCREEN_ROWS)
    rows = np.sort(np.random.default_rng(params.base.seed).permutation(len(f.y))[:m])  # seeded subsample
    screen = Folds(f.sample.iloc[rows], f.y[rows], f.k, f.fold[rows])

    def score_of(make, folds: Folds, idx) -> float:
        x = make(idx)
        score = tree_score(x, folds, task, params.base.seed)
        return max(score, rank_fit(x, folds.y)) if task == "regression" else score

    def check(make, baseline: float) -> float | None:
        """The confirmed score of the matrix ``make(rows)``, when it is a suspect (screened first)."""
        score = score_of(make, screen, rows)
        if not (np.isfinite(score) and score >= vp.leakage_threshold - SCREEN_MARGIN):
            return None
        if m < len(f.y):
            score = score_of(make, f, slice(None))
        ok = np.isfinite(score) and score >= vp.leakage_threshold and score >= baseline + PAIR_MIN_GAIN
        return float(score) if ok else None

    found, near = [], []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1 :]:
            pair = lambda idx, a=a, b=b: pair_matrix(values[a][idx], values[b][idx])  # noqa: E731
            alone = max(single.get(a, float("-inf")), single.get(b, float("-inf")))
            screened = score_of(pair, screen, rows)
            if np.isfinite(screened) and screened >= vp.leakage_threshold - SCREEN_MARGIN:
                score = check(pair, alone)
                if score is not None:
                    found.append((score, tuple(sorted((a, b), key=order))))
                    continue
            if np.isfinite(screened) and screened >= TRIPLE_FROM:
                near.append((screened, a, b))
    flagged = {c for _, cols in found for c in cols}
    for screened, a, b in sorted(near, key=lambda t: -t[0])[:TRIPLE_PAIRS]:
        for c in df.columns:
            if c in (a, b) or c in flagged or pd.api.types.is_datetime64_any_dtype(df[c]):
                continue
            extra = _as_float(f.sample[c], categorical, c)
            triple = lambda idx, a=a, b=b, e=extra: np.column_stack(  # noqa: E731
                [pair_matrix(values[a][idx], values[b][idx]), e[idx]]
            )
            score = check(triple, max(screened, single.get(c, float("-inf"))))
            if score is not None:
                found.append((score, tuple(sorted((a, b, c), key=order))))
                break  # this pair's leak is named; the next pair
    return sorted(found, key=lambda t: -t[0])
