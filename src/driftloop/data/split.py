"""Split stage: train / validation / test.

Stratified random by default (classification), time-based when ``split.time_column`` is set
(test = the latest period, validation = the period before it; with ``split.time_test_share`` below 1, test is a
stratified random share of the latest period's rows and the rest of that period joins validation, so a retrain
after drift validates, tunes and refits on the newest regime while its gate still scores rows no model saw),
grouped when ``split.group_column`` is set (no group in two splits). Tuning never sees the test set.

Exact copies of a row always land in the same split: the random split divides the distinct rows and
sends every copy where its first occurrence went (a time or group split does so by construction, as
copies share the time and the group). ``train_test_overlap`` then checks that no test row is identical
to a training row; the split stage reports the count and refuses a non-zero one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError
from driftloop.faults import register_point

BEFORE_WRITE = register_point(
    "split.before_write", "driftloop split: before each of train/valid/test.parquet replaces the old (@1, @2, @3)"
)

SPLITS = ("train", "valid", "test")


def _time_split(df: pd.DataFrame, sp, seed: int, target: str, strat_on: bool) -> dict[str, pd.DataFrame]:
    column = sp.time_column
    t = pd.to_datetime(df[column], errors="coerce") if not pd.api.types.is_numeric_dtype(df[column]) else df[column]
    if t.isna().any():
        raise DataError(f"split.time_column '{column}': {int(t.isna().sum())} rows have no parsable time")
    test_start = t.quantile(1 - sp.test_size, interpolation="higher")
    valid_start = t.quantile(1 - sp.test_size - sp.valid_size, interpolation="higher")
    newest = df[t >= test_start]
    valid = df[(t >= valid_start) & (t < test_start)]
    if sp.time_test_share < 1.0:
        held = _share_of(newest, sp.time_test_share, seed, target, strat_on)
        newest, valid = newest[held], pd.concat([valid, newest[~held]])
    return {"train": df[t < valid_start], "valid": valid, "test": newest}


def _share_of(df: pd.DataFrame, share: float, seed: int, target: str, strat_on: bool) -> np.ndarray:
    """A seeded random ``share`` of ``df``'s distinct rows (stratified by ``target`` when asked), as a row mask;
    copies of a row follow it, so no row is on both sides."""
    keys = row_keys(df)
    distinct = pd.Series(keys).drop_duplicates()
    strata = df[target].to_numpy()[distinct.index] if strat_on else np.zeros(len(distinct))
    rng = np.random.default_rng(seed)
    chosen = []
    for value in pd.unique(strata):
        members = distinct.to_numpy()[strata == value]
        chosen.append(rng.permutation(members)[: int(round(share * len(members)))])
    return np.isin(keys, np.concatenate(chosen))


def _group_split(df, groups, test_size, valid_size, seed):
    from sklearn.model_selection import GroupShuffleSplit

    outer = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    rest_idx, test_idx = next(outer.split(df, groups=groups))
    rest = df.iloc[rest_idx]
    inner = GroupShuffleSplit(n_splits=1, test_size=valid_size / (1 - test_size), random_state=seed)
    train_idx, valid_idx = next(inner.split(rest, groups=groups.iloc[rest_idx]))
    return {"train": rest.iloc[train_idx], "valid": rest.iloc[valid_idx], "test": df.iloc[test_idx]}


def row_keys(df: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's values (all columns, not the index): equal rows, equal keys."""
    return pd.util.hash_pandas_object(df, index=False).to_numpy()


def train_test_overlap(train: pd.DataFrame, test: pd.DataFrame) -> int:
    """How many test rows are identical to a training row (all columns)."""
    if train.empty or test.empty:
        return 0
    return int(np.isin(row_keys(test[list(train.columns)]), row_keys(train)).sum())


def _random_split(df, sp, seed, target, strat_on):
    from sklearn.model_selection import train_test_split

    strat = df[target] if strat_on else None
    rest, test = train_test_split(df, test_size=sp.test_size, random_state=seed, stratify=strat)
    strat_rest = rest[target] if strat is not None else None
    train, valid = train_test_split(
        rest, test_size=sp.valid_size / (1 - sp.test_size), random_state=seed, stratify=strat_rest
    )
    return {"train": train, "valid": valid, "test": test}


def _grouped_copies(df: pd.DataFrame, sp, seed, target, strat_on) -> dict[str, pd.DataFrame]:
    """The random split of the distinct rows; each copy follows its first occurrence (``df``: a RangeIndex)."""
    keys = row_keys(df)
    first = ~pd.Series(keys).duplicated().to_numpy()
    out = {}
    for name, part in _random_split(df[first], sp, seed, target, strat_on).items():
        rank = pd.Series(np.arange(len(part)), index=keys[part.index])  # the order the split gave
        member = df[np.isin(keys, keys[part.index])]
        out[name] = member.iloc[np.argsort(rank.reindex(keys[member.index]).to_numpy(), kind="stable")]
    return out


def split(df: pd.DataFrame, params: Params, task: str) -> dict[str, pd.DataFrame]:
    """Return ``{"train": ..., "valid": ..., "test": ...}``; deterministic for a given seed."""
    sp, seed, target = params.split, params.base.seed, params.base.target
    if sp.test_size + sp.valid_size >= 0.9:
        raise DataError(
            f"split.test_size + split.valid_size = {sp.test_size + sp.valid_size:.2f} leaves too little for training"
        )
    if sp.time_column:
        parts = _time_split(df, sp, seed, target, task != "regression" and sp.stratify)
    elif sp.group_column:
        parts = _group_split(df, df[sp.group_column], sp.test_size, sp.valid_size, seed)
    else:
        df = df.reset_index(drop=True)
        strat_on = task != "regression" and sp.stratify
        try:
            if df.duplicated().any():
                parts = _grouped_copies(df, sp, seed, target, strat_on)
            else:  # no copies: exactly the split of earlier versions (same data, same hashes)
                parts = _random_split(df, sp, seed, target, strat_on)
        except ValueError as exc:
            raise DataError(f"split: cannot split {len(df)} rows on target '{target}': {exc}") from None
    for name, part in parts.items():
        if len(part) == 0:
            raise DataError(f"split: the {name} split is empty (rows={len(df)}, split params {sp.model_dump()})")
        if task != "regression" and part[target].nunique() < 2 and name != "test":
            raise DataError(f"split: the {name} split has a single class of '{target}'; more rows are needed")
    return {k: v.reset_index(drop=True) for k, v in parts.items()}
