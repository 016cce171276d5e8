"""What a training fits on (``retrain.training_data``): all rows, a sliding window of the newest rows, or every row
with recency weights. A pure function of the train/valid frames and the params; the tune and train stages apply
it (``pipeline._prepared`` / ``pipeline.run_train``), so tuning optimizes the same objective the model is fitted on.

``recency``: weight ``0.5 ** (age_days / retrain.half_life_days)``, the age counted from the newest row of train and
valid together, passed to LightGBM as sample weights (early stopping and tuning read the weighted validation
metric). ``window``: the newest ``retrain.window_rows`` rows of train and, in the same proportion, of valid (so
early stopping and tuning judge on recent rows too). Both need the rows' time: ``retrain.time_column``, else
``split.time_column``, else the data's only datetime column; without one they fall back to all rows, equal weights,
and the result says so (``info["note"]``, logged with the tune and train runs).
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
    """Apply ``retrain.training_data`` to the train and valid splits (the test split is never touched)."""
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
