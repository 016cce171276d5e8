"""Split stage: sizes, stratification, determinism, time and group splits, too-small data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.split import split
from driftloop.errors import DataError

N = 1000


def make_params(seed: int = 42, **split_opts) -> Params:
    return Params.model_validate({"base": {"target": "y", "seed": seed}, "split": split_opts})


def frame(n: int = N, rate: float = 0.1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[: int(n * rate)] = 1
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "x": rng.normal(size=n),
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(n) * 3600, unit="s"),
            "customer": rng.integers(0, 120, n),
            "y": rng.permutation(y),
        }
    )


def rows(part: pd.DataFrame) -> set[int]:
    return set(part["row"])


def test_sizes_and_partition():
    parts = split(frame(), make_params(), "binary")
    assert list(parts) == ["train", "valid", "test"]
    assert {k: len(v) for k, v in parts.items()} == {"train": 600, "valid": 200, "test": 200}
    all_rows = [rows(p) for p in parts.values()]
    assert set().union(*all_rows) == set(range(N))
    assert sum(len(r) for r in all_rows) == N  # disjoint
    for part in parts.values():
        assert part.index.equals(pd.RangeIndex(len(part)))
        assert list(part.columns) == ["row", "x", "when", "customer", "y"]


def test_custom_sizes():
    parts = split(frame(), make_params(test_size=0.1, valid_size=0.3), "binary")
    assert {k: len(v) for k, v in parts.items()} == {"train": 600, "valid": 300, "test": 100}


def test_stratification_keeps_class_rates():
    df = frame(rate=0.07)
    for seed in range(5):
        parts = split(df, make_params(seed=seed), "binary")
        for part in parts.values():
            assert part["y"].mean() == pytest.approx(0.07, abs=0.006), seed


def test_multiclass_stratified():
    df = frame()
    df["y"] = np.random.default_rng(1).choice(["a", "b", "c"], N, p=[0.7, 0.2, 0.1])
    overall = df["y"].value_counts(normalize=True)
    parts = split(df, make_params(), "multiclass")
    for part in parts.values():
        rates = part["y"].value_counts(normalize=True)
        for cls in "abc":
            assert rates[cls] == pytest.approx(overall[cls], abs=0.01)


def test_regression_is_not_stratified_and_works():
    df = frame()
    df["y"] = np.random.default_rng(2).normal(size=N)
    parts = split(df, make_params(), "regression")
    assert {k: len(v) for k, v in parts.items()} == {"train": 600, "valid": 200, "test": 200}


def test_deterministic_for_a_seed():
    df = frame()
    a = split(df, make_params(seed=7), "binary")
    b = split(df, make_params(seed=7), "binary")
    c = split(df, make_params(seed=8), "binary")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert rows(a["test"]) != rows(c["test"])


def test_time_split_puts_latest_rows_in_test():
    df = frame()
    parts = split(df, make_params(time_column="when"), "binary")
    train, valid, test = parts["train"]["when"], parts["valid"]["when"], parts["test"]["when"]
    assert train.max() < valid.min()
    assert valid.max() < test.min()
    assert test.max() == df["when"].max()
    assert train.min() == df["when"].min()
    assert len(test) == pytest.approx(200, abs=2)
    assert len(valid) == pytest.approx(200, abs=2)
    assert len(train) + len(valid) + len(test) == N


def test_time_test_share_holds_out_a_stratified_share_of_the_latest_period_and_validates_on_the_rest():
    df = frame()
    whole = split(df, make_params(time_column="when", test_size=0.2), "binary")
    half = split(df, make_params(time_column="when", test_size=0.2, time_test_share=0.5), "binary")
    latest = rows(whole["test"])
    assert rows(half["test"]) < latest  # test: rows of the latest period only ...
    assert len(half["test"]) == pytest.approx(100, abs=2)  # ... half of them,
    assert half["test"]["y"].mean() == pytest.approx(whole["test"]["y"].mean(), abs=0.02)  # stratified
    assert rows(half["valid"]) == rows(whole["valid"]) | (latest - rows(half["test"]))  # the rest validates
    assert rows(half["train"]) == rows(whole["train"])  # training rows unchanged: older than both
    again = split(df, make_params(time_column="when", test_size=0.2, time_test_share=0.5), "binary")
    assert rows(again["test"]) == rows(half["test"])  # seeded
    other = split(df, make_params(time_column="when", test_size=0.2, time_test_share=0.5, seed=1), "binary")
    assert rows(other["test"]) != rows(half["test"])


def test_time_test_share_never_splits_copies_of_a_row():
    df = frame().drop(columns="row")
    df["when"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(N) // 50, unit="D")  # 50 rows a day
    df.loc[df.index >= 800, ["x", "customer", "y"]] = [0.5, 3, 1]  # the latest period: 200 copies of one row ...
    df.loc[df.index >= 900, "x"] = 0.25  # ... and 100 copies of another
    parts = split(df, make_params(time_column="when", test_size=0.2, time_test_share=0.5), "binary")
    held = pd.util.hash_pandas_object(parts["test"], index=False)
    assert not np.isin(pd.util.hash_pandas_object(parts["valid"], index=False), held).any()
    assert len(parts["test"]) in (100, 200) and len(parts["test"]) + len(parts["valid"]) == 400


def test_time_test_share_out_of_range_names_the_key():
    with pytest.raises(ValueError, match="time_test_share"):
        make_params(time_column="when", time_test_share=0.0)


def test_time_split_with_ties_and_string_times():
    df = frame()
    # only 10 distinct days, given as text: ties must not straddle two splits
    df["when"] = (pd.Timestamp("2024-03-01") + pd.to_timedelta(df["row"] % 10, unit="D")).dt.strftime("%Y-%m-%d")
    parts = split(df, make_params(time_column="when"), "binary")
    t = {k: pd.to_datetime(v["when"]) for k, v in parts.items()}
    assert t["train"].max() < t["valid"].min()
    assert t["valid"].max() < t["test"].min()
    assert sum(len(v) for v in parts.values()) == N


def test_time_split_numeric_time():
    df = frame()
    df["t"] = df["row"][::-1].to_numpy()  # later rows have smaller t
    parts = split(df, make_params(time_column="t"), "binary")
    assert parts["test"]["t"].min() >= parts["valid"]["t"].max()
    assert parts["valid"]["t"].min() >= parts["train"]["t"].max()
    assert set(parts["test"]["t"]) == set(range(800, 1000))


def test_time_split_unparsable_times():
    df = frame()
    df["when"] = df["when"].astype(str)
    df.loc[3, "when"] = "not a date"
    with pytest.raises(DataError, match="split.time_column 'when'"):
        split(df, make_params(time_column="when"), "binary")


def test_group_split_keeps_groups_together():
    df = frame()
    parts = split(df, make_params(group_column="customer"), "binary")
    groups = {k: set(v["customer"]) for k, v in parts.items()}
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]
    assert set().union(*groups.values()) == set(df["customer"])
    assert sum(len(v) for v in parts.values()) == N
    for part in parts.values():
        assert len(part) > 0.1 * N


def test_group_split_deterministic():
    df = frame()
    a = split(df, make_params(group_column="customer"), "binary")
    b = split(df, make_params(group_column="customer"), "binary")
    assert rows(a["test"]) == rows(b["test"])


@pytest.mark.parametrize("n", [3, 6])
def test_too_small_data_errors(n):
    df = frame(n=n, rate=0.5)
    with pytest.raises(DataError, match="split"):
        split(df, make_params(), "binary")


def test_too_few_of_a_class_errors():
    df = frame(n=100)
    df["y"] = 0
    df.loc[:1, "y"] = 1  # 2 positives cannot be stratified into three splits
    with pytest.raises(DataError, match="'y'"):
        split(df, make_params(), "binary")


def test_single_class_in_train_after_time_split_errors():
    df = frame()
    df = df.sort_values("when", ignore_index=True)
    df["y"] = 0
    df.loc[df.index[-50:], "y"] = 1  # positives only in the latest period
    with pytest.raises(DataError, match="single class of 'y'"):
        split(df, make_params(time_column="when"), "binary")


def test_sizes_that_leave_nothing_for_training():
    # each size alone is valid config, together they leave < 10% for training
    with pytest.raises(DataError, match="too little for training"):
        split(frame(), make_params(test_size=0.5, valid_size=0.45), "binary")


# --------------------------------------------------------------------------- exact copies never span splits
def test_copies_of_a_row_share_a_split_and_nothing_of_test_is_in_train():
    from driftloop.data.split import train_test_overlap

    base = frame().drop(columns=["row"])
    df = pd.concat([base, base, base.iloc[:300]], ignore_index=True)  # every row at least twice
    parts = split(df, make_params(), "binary")
    assert sum(len(p) for p in parts.values()) == len(df)
    assert train_test_overlap(parts["train"], parts["test"]) == 0
    assert train_test_overlap(parts["train"], parts["valid"]) == 0
    # sizes and class rates close to the targets (the distinct rows were split, stratified)
    assert abs(len(parts["test"]) / len(df) - 0.2) < 0.05
    assert abs(parts["test"]["y"].mean() - 0.1) < 0.03
    # deterministic
    again = split(df, make_params(), "binary")
    for name in parts:
        pd.testing.assert_frame_equal(parts[name], again[name])


def test_without_copies_the_split_is_unchanged():
    # the distinct-row grouping only applies when copies exist: the same data keeps the same split (and hashes)
    from sklearn.model_selection import train_test_split

    df = frame()
    parts = split(df, make_params(), "binary")
    rest, test = train_test_split(df, test_size=0.2, random_state=42, stratify=df["y"])
    assert parts["test"]["row"].tolist() == test["row"].tolist()


def test_overlap_counts_identical_rows():
    from driftloop.data.split import train_test_overlap

    df = frame().drop(columns=["row"])
    assert train_test_overlap(df.iloc[:500], df.iloc[500:]) == 0
    assert train_test_overlap(df.iloc[:500], pd.concat([df.iloc[500:], df.iloc[:7]])) == 7
