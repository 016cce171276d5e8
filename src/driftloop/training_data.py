"""What a training fits on (``retrain.training_data``): all rows, a sliding window of the newest rows, or every row
with recency weights. A pure function of the train/valid frames and the params; the tune and train stages apply
it (``pipeline._prepared`` / ``pipeline.run_train``), so tuning optimizes the same objective the model is fitted on.

``recency``: weight ``0.5 ** (age_days / retrain.half_life_days)``, the age counted from the newest row of train and
valid together, passed to LightGBM as sample weights (early stopping and tuning read the weighted validation
metric). ``window``: the newest ``retrain.window_rows`` rows of train and, in the same proportion, of valid (so
early stopping and tuning judge on recent rows too). Both need the rows' time: ``retrain.time_column``, else
``split.time_column``, else the data's only datetime column; without one they fall back to all rows, equal weights,
and the result says so (``info["note"]``, logged with the tune and train runs).

``retrain.coreset_rows`` then shrinks a larger train split to a weighted coreset (``coreset``: target x pilot-score
strata, Neyman allocation, inverse-probability weights, multiplied into the recency weights) and the valid split to a
uniform sample of the same fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError

DAY = np.timedelta64(1, "D")


@dataclass
class TrainingData:
    train: pd.DataFrame
    valid: pd.DataFrame
    train_weight: np.ndarray | None = None  # None: equal weights
    valid_weight: np.ndarray | None = None
    info: dict = field(default_factory=dict)  # what was applied, for the run's params and the stage's report


def time_column(params: Params, df: pd.DataFrame) -> str | None:
    """``retrain.time_column``, else ``split.time_column``, else the data's one datetime column (None: not one)."""
    named = params.retrain.time_column or params.split.time_column
    if named:
        return named
    dates = [c for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c]) and c != params.base.target]
    return dates[0] if len(dates) == 1 else None


def _times(df: pd.DataFrame, column: str, split: str) -> np.ndarray:
    if column not in df.columns:
        raise DataError(
            f"retrain.time_column '{column}' is not a column of the {split} split "
            f"(retrain.training_data: window/recency need the rows' time; columns: {list(df.columns)[:12]}...)"
        )
    s = df[column]
    t = s if pd.api.types.is_numeric_dtype(s) else pd.to_datetime(s, errors="coerce")
    if t.isna().any():
        raise DataError(
            f"retrain.time_column '{column}': {int(t.isna().sum())} rows of the {split} split have no parsable time"
        )
    if pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_datetime64_any_dtype(t):
        return t.to_numpy(dtype=float)  # numeric time: already in days
    return (pd.DatetimeIndex(t).tz_localize(None) if getattr(t.dt, "tz", None) else pd.DatetimeIndex(t)).to_numpy()


def effective_rows(w: np.ndarray | None, n: int) -> float:
    """Kish's effective sample size: (sum w)^2 / sum w^2 (n for equal weights)."""
    if w is None:
        return float(n)
    return float(w.sum() ** 2 / max(float((w**2).sum()), 1e-300))


def select(train: pd.DataFrame, valid: pd.DataFrame, params: Params) -> TrainingData:
    """Apply ``retrain.training_data`` to the train and valid splits (the test split is never touched), then
    ``retrain.coreset_rows`` (the train split's coreset, the valid split's uniform sample of the same fraction)."""
    out = _select_rows(train, valid, params)
    n = params.retrain.coreset_rows
    if n is None or len(out.train) <= n:
        return out
    idx, w = coreset(out.train, params, n)
    if out.train_weight is not None:
        w = w * out.train_weight[idx]
        w = w / w.mean()
    # valid: a seeded uniform sample of the same fraction (early stopping, threshold and calibration read it; its
    # fixed cost per boosting round would otherwise bound the speed-up)
    n_valid = min(len(out.valid), max(1000, round(len(out.valid) * n / len(out.train))))
    vidx = np.sort(np.random.default_rng(params.base.seed + 1).choice(len(out.valid), n_valid, replace=False))
    valid = out.valid.iloc[vidx].reset_index(drop=True)
    w_valid = out.valid_weight[vidx] if out.valid_weight is not None else None
    out.info |= {"coreset_rows": len(idx), "rows_before_coreset": len(out.train), "rows_valid": len(valid)}
    out.info["effective_rows_train"] = round(effective_rows(w, len(idx)), 1)
    return TrainingData(out.train.iloc[idx].reset_index(drop=True), valid, w, w_valid, out.info)


def pilot_scores(train: pd.DataFrame, params: Params, n_rows: int) -> np.ndarray:
    """Scores of a quick LightGBM (50 rounds) fitted on a seeded uniform sample of ``n_rows`` training rows, for
    every training row: the positive-class probability (binary); zeros for other tasks (no score strata). A pilot
    rather than the champion: it exists for a first training too and needs no registry lookup in the stage."""
    import lightgbm as lgb

    from driftloop.data.validate import infer_task
    from driftloop.features import Preprocessor
    from driftloop.model import TargetEncoder
    from driftloop.train import feature_frame

    target = params.base.target
    if infer_task(train[target], params.base.task) != "binary":
        return np.zeros(len(train))
    rng = np.random.default_rng(params.base.seed)
    sample = train.iloc[np.sort(rng.choice(len(train), min(n_rows, len(train)), replace=False))]
    enc = TargetEncoder.fit(sample[target], "binary", params.base.positive_class)
    vp = params.validate_params
    pre = Preprocessor(params.features, tuple(vp.categorical_columns), tuple(vp.date_columns))
    X = pre.fit_transform(feature_frame(sample, params))
    lgb_params = {
        "objective": "binary",
        "verbose": -1,
        "seed": params.base.seed,
        "num_threads": params.tune.num_threads,
    }
    booster = lgb.train(lgb_params, lgb.Dataset(X, enc.encode(sample[target])), num_boost_round=50)
    return booster.predict(pre.transform(feature_frame(train, params)))


def coreset(train: pd.DataFrame, params: Params, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A weighted sample of ``n_rows`` training rows that keeps the model's solution: strata = target class (or
    target quantile bin for regression) x ``retrain.coreset_bins`` bins of a pilot model's score (binary); rows per
    stratum by Neyman allocation on the score's Bernoulli spread sqrt(p(1-p)) -- more rows where the model is
    uncertain, few where it is sure --, at least a quarter of an even share per stratum; inverse-probability weights
    (stratum rows / sampled rows), scaled to mean 1. Returns the sorted row positions and their weights."""
    rp, seed = params.retrain, params.base.seed
    y = train[params.base.target]
    scores = pilot_scores(train, params, n_rows)
    if pd.api.types.is_numeric_dtype(y) and y.nunique() > 20:  # regression: target quantile bins
        label = pd.qcut(y.rank(method="first"), min(rp.coreset_bins, 10), labels=False).to_numpy()
    else:
        label = pd.factorize(y)[0]
    ranks = pd.Series(scores).rank(method="first").to_numpy()
    score_bin = np.minimum((ranks - 1) * rp.coreset_bins // len(scores), rp.coreset_bins - 1).astype(int)
    strata = label.astype(np.int64) * rp.coreset_bins + score_bin
    keys, inverse, sizes = np.unique(strata, return_inverse=True, return_counts=True)
    spread = np.bincount(inverse, weights=np.sqrt(np.clip(scores * (1 - scores), 0, None)), minlength=len(keys))
    spread = np.where(spread > 0, spread, sizes * 1e-3)  # no score (not binary): proportional allocation
    alloc = n_rows * spread / spread.sum()
    alloc = np.maximum(alloc, n_rows / (4 * len(keys)))  # every stratum keeps some rows
    alloc = np.minimum(np.round(alloc * n_rows / alloc.sum()).astype(int), sizes)
    alloc = np.maximum(alloc, 1)
    rng = np.random.default_rng(seed)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    picked, weights = [], []
    for k in range(len(keys)):
        members = order[starts[k] : starts[k] + sizes[k]]
        take = rng.choice(members, alloc[k], replace=False)
        picked.append(take)
        weights.append(np.full(alloc[k], sizes[k] / alloc[k]))
    idx, w = np.concatenate(picked), np.concatenate(weights)
    o = np.argsort(idx)
    return idx[o], w[o] / w[o].mean()


def _select_rows(train: pd.DataFrame, valid: pd.DataFrame, params: Params) -> TrainingData:
    rp = params.retrain
    how = rp.training_data
    info: dict = {"training_data": how, "rows_train": len(train), "rows_valid": len(valid)}
    if how == "all":
        return TrainingData(train, valid, info=info)
    column = time_column(params, train)
    if column is None:
        info |= {
            "training_data": "all",
            "note": f"retrain.training_data: {how} needs the rows' time: retrain.time_column, split.time_column or "
            "a single datetime column; none found, so all rows were used with equal weights",
        }
        return TrainingData(train, valid, info=info)
    info["time_column"] = column
    t_train, t_valid = _times(train, column, "train"), _times(valid, column, "valid")
    if how == "window":
        n_keep = min(rp.window_rows, len(train))
        keep = np.sort(np.argsort(t_train, kind="stable")[len(train) - n_keep :])
        frac = n_keep / max(len(train), 1)
        n_valid = max(1, round(frac * len(valid))) if len(valid) else 0
        keep_v = np.sort(np.argsort(t_valid, kind="stable")[len(valid) - n_valid :])
        out_t, out_v = train.iloc[keep].reset_index(drop=True), valid.iloc[keep_v].reset_index(drop=True)
        info |= {"window_rows": rp.window_rows, "rows_train": len(out_t), "rows_valid": len(out_v)}
        return TrainingData(out_t, out_v, info=info)
    newest = max(t_train.max(), t_valid.max()) if len(valid) else t_train.max()

    def weights(t: np.ndarray) -> np.ndarray:
        age = (newest - t) / DAY if np.issubdtype(t.dtype, np.datetime64) else newest - t
        w = np.power(0.5, np.asarray(age, dtype=float) / rp.half_life_days)
        return w / w.mean() if len(w) else w  # mean 1: LightGBM's hessian-based limits keep their scale

    w_train, w_valid = weights(t_train), weights(t_valid)
    info |= {
        "half_life_days": rp.half_life_days,
        "effective_rows_train": round(effective_rows(w_train, len(train)), 1),
    }
    return TrainingData(train, valid, w_train, w_valid, info=info)
