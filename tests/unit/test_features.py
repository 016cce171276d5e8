"""Preprocessor: raw rows -> LightGBM frame, robust to what production sends."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from driftloop.config import FeaturesParams
from driftloop.features import Preprocessor, column_kind


def train_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    counts = pd.array(rng.integers(0, 10, n), dtype="Int64")
    counts[0] = pd.NA
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 10, n),
            "grade": rng.choice(["A", "B", "C"], n),
            "flag": rng.random(n) > 0.5,
            "count": counts,
            "opened": pd.date_range("2023-12-30", periods=n, freq="37h"),
        }
    )


@pytest.fixture
def pre() -> Preprocessor:
    return Preprocessor(FeaturesParams(date_parts=["year", "month", "day", "dayofweek"])).fit(train_frame())


def test_fit_kinds_and_features(pre):
    assert pre.kinds == {
        "amount": "numeric",
        "grade": "categorical",
        "flag": "boolean",
        "count": "numeric",
        "opened": "datetime",
    }
    assert pre.categories["grade"] == ["A", "B", "C"]
    assert pre.input_columns == ["amount", "grade", "flag", "count", "opened"]
    assert len(pre.feature_names) == 4 + 4
    assert pre.categorical_features == ["f1_grade"]
    X = pre.transform(train_frame())
    assert list(X.columns) == pre.feature_names
    assert isinstance(X["f1_grade"].dtype, pd.CategoricalDtype)
    assert list(X["f1_grade"].cat.categories) == ["A", "B", "C"]
    for col in X.columns:
        if col != "f1_grade":
            assert X[col].dtype == np.float64, col


def test_unseen_category_becomes_nan(pre):
    raw = train_frame().head(4).copy()
    raw["grade"] = ["A", "Z", None, "new grade"]
    X = pre.transform(raw)
    assert X["f1_grade"].iloc[0] == "A"
    assert X["f1_grade"].isna().tolist() == [False, True, True, True]
    assert list(X["f1_grade"].cat.categories) == ["A", "B", "C"]  # fixed, not extended


def test_unseen_category_in_pandas_categorical(pre):
    raw = train_frame().head(3).copy()
    raw["grade"] = pd.Categorical(["B", "Q", "C"])
    X = pre.transform(raw)
    assert X["f1_grade"].astype(object).where(X["f1_grade"].notna(), None).tolist() == ["B", None, "C"]
    assert list(X["f1_grade"].cat.categories) == ["A", "B", "C"]


def test_categories_are_fixed_by_max_and_min_count():
    df = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 5 + ["c"] * 3 + ["d"]})
    pre = Preprocessor(FeaturesParams(max_categories=2)).fit(df)
    assert pre.categories["c"] == ["a", "b"]
    assert pre.transform(pd.DataFrame({"c": ["c", "a"]}))["f0_c"].isna().tolist() == [True, False]
    pre = Preprocessor(FeaturesParams(min_category_count=4)).fit(df)
    assert pre.categories["c"] == ["a", "b"]


def test_integer_categories_match_as_text():
    pre = Preprocessor(categorical_columns=("zip",)).fit(pd.DataFrame({"zip": [1001, 1002, 1001]}))
    assert pre.kinds["zip"] == "categorical"
    assert pre.categories["zip"] == ["1001", "1002"]
    X = pre.transform(pd.DataFrame({"zip": ["1002", 1001, 9999]}))
    assert X["f0_zip"].astype(object).where(X["f0_zip"].notna(), None).tolist() == ["1002", "1001", None]


def test_missing_column_raises_keyerror_naming_it(pre):
    raw = train_frame().drop(columns=["grade", "opened"])
    with pytest.raises(KeyError) as exc:
        pre.transform(raw)
    assert "grade" in str(exc.value)
    assert "opened" in str(exc.value)
    assert "amount" not in str(exc.value)


def test_extra_columns_ignored_and_order_free(pre):
    raw = train_frame()
    expected = pre.transform(raw)
    shuffled = raw[list(reversed(raw.columns))].assign(extra=1, another="x")
    pd.testing.assert_frame_equal(pre.transform(shuffled), expected)


def test_index_is_kept(pre):
    raw = train_frame().head(5).set_index(pd.Index([10, 20, 30, 40, 50]))
    assert pre.transform(raw).index.tolist() == [10, 20, 30, 40, 50]


def test_date_parts(pre):
    raw = train_frame().head(2).copy()
    raw["opened"] = pd.to_datetime(["2024-02-29 13:00", "2025-12-31 00:00"])
    X = pre.transform(raw)
    names = {pre.original_name[f]: f for f in pre.feature_names}
    assert X[names["opened.year"]].tolist() == [2024.0, 2025.0]
    assert X[names["opened.month"]].tolist() == [2.0, 12.0]
    assert X[names["opened.day"]].tolist() == [29.0, 31.0]
    assert X[names["opened.dayofweek"]].tolist() == [3.0, 2.0]  # Thursday, Wednesday


def test_date_given_as_text_and_unparsable(pre):
    raw = train_frame().head(3).copy()
    raw["opened"] = ["2024-05-06", "not a date", None]
    X = pre.transform(raw)
    year = X[[f for f in pre.feature_names if pre.original_name[f] == "opened.year"][0]]
    assert year.iloc[0] == 2024.0
    assert year.iloc[1:].isna().all()


def test_timezone_aware_dates():
    df = pd.DataFrame({"t": pd.to_datetime(["2024-03-10 23:30"]).tz_localize("UTC")})
    pre = Preprocessor(FeaturesParams(date_parts=["year", "hour"])).fit(df)
    assert pre.transform(df).iloc[0].tolist() == [2024.0, 23.0]


def test_declared_date_column_from_text():
    df = pd.DataFrame({"d": ["2024-01-15", "2024-07-01"]})
    pre = Preprocessor(FeaturesParams(date_parts=["month"]), date_columns=("d",)).fit(df)
    assert pre.kinds["d"] == "datetime"
    assert pre.transform(df)["f0_d_month"].tolist() == [1.0, 7.0]


HOSTILE = ['a"b', "x[0]", "{k}:v", "naïve col", "a b", "a_b", ",", "日本"]


def test_hostile_names_are_safe_and_map_back():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({name: rng.normal(size=30) for name in HOSTILE})
    pre = Preprocessor().fit(df)
    assert len(set(pre.feature_names)) == len(HOSTILE)
    for name in pre.feature_names:
        assert all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name), name
    assert [pre.original_name[f] for f in pre.feature_names] == HOSTILE
    X = pre.transform(df)
    for f in pre.feature_names:
        np.testing.assert_array_equal(X[f].to_numpy(), df[pre.original_name[f]].to_numpy())


def test_hostile_names_accepted_by_lightgbm():
    import lightgbm as lgb

    rng = np.random.default_rng(2)
    df = pd.DataFrame({name: rng.normal(size=200) for name in HOSTILE})
    df["{cat}"] = rng.choice(["p", "q"], 200)
    pre = Preprocessor().fit(df)
    X = pre.transform(df)
    y = (df['a"b'] > 0).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 3)
    assert booster.feature_name() == pre.feature_names
    assert {pre.original_name[n] for n in booster.feature_name()} == set(df.columns)


def test_coercion_of_bool_int64_and_text(pre):
    raw = train_frame().head(4).copy()
    raw["flag"] = pd.array([True, None, False, True], dtype="boolean")
    raw["count"] = pd.array([1, None, 3, 4], dtype="Int64")
    raw["amount"] = ["1.5", "oops", None, 7]  # text in a numeric column
    X = pre.transform(raw)
    np.testing.assert_array_equal(X["f2_flag"].to_numpy(), [1.0, np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(X["f3_count"].to_numpy(), [1.0, np.nan, 3.0, 4.0])
    np.testing.assert_array_equal(X["f0_amount"].to_numpy(), [1.5, np.nan, np.nan, 7.0])


def test_bool_column_given_as_text(pre):
    raw = train_frame().head(5).copy()
    raw["flag"] = ["True", "false", "yes?", None, "1"]
    X = pre.transform(raw)
    np.testing.assert_array_equal(X["f2_flag"].to_numpy(), [1.0, 0.0, np.nan, np.nan, 1.0])


def test_numeric_column_given_as_int64_or_object(pre):
    raw = train_frame().head(3).copy()
    raw["amount"] = pd.array([1, None, 3], dtype="Int64")
    raw["count"] = np.array([1, 2, 3], dtype=object)
    X = pre.transform(raw)
    np.testing.assert_array_equal(X["f0_amount"].to_numpy(), [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(X["f3_count"].to_numpy(), [1.0, 2.0, 3.0])


def test_column_kind():
    assert column_kind(pd.Series([True, False])) == "boolean"
    assert column_kind(pd.Series(pd.array([True, None], dtype="boolean"))) == "boolean"
    assert column_kind(pd.Series(pd.array([1, None], dtype="Int64"))) == "numeric"
    assert column_kind(pd.Series([1.0])) == "numeric"
    assert column_kind(pd.Series(["a"])) == "categorical"
    assert column_kind(pd.Series([1]), categorical=True) == "categorical"
    assert column_kind(pd.Series(pd.to_datetime(["2024-01-01"]))) == "datetime"
    assert column_kind(pd.Series(["2024-01-01"]), date=True) == "datetime"


def test_pickle_round_trip_gives_identical_transform(pre):
    clone = pickle.loads(pickle.dumps(pre))
    raw = train_frame()
    raw.loc[3, "grade"] = "unseen"
    pd.testing.assert_frame_equal(clone.transform(raw), pre.transform(raw))
    assert clone.feature_names == pre.feature_names
    assert clone.original_name == pre.original_name
    assert clone.categorical_features == pre.categorical_features


def test_contract(pre):
    c = pre.contract("y", "binary", ignored=["id"])
    assert c["target"] == "y" and c["task"] == "binary" and c["ignored"] == ["id"]
    assert c["columns"]["grade"] == {"kind": "categorical", "dtype": "object", "categories": ["A", "B", "C"]}
    assert c["columns"]["count"] == {"kind": "numeric", "dtype": "Int64"}


def test_matrix_of_plain_values_equals_transform(pre):
    """The request fast path: plain Python values straight into the float matrix, the same numbers as ``transform``
    (categories as LightGBM's codes), or ``None`` when pandas' inference decides the reading."""
    pre = Preprocessor(FeaturesParams(date_parts=["year", "month", "day", "dayofweek", "dayofyear", "hour"])).fit(
        train_frame()
    )
    data = {
        "amount": [1.5, None, 3, float("nan")],
        "grade": ["B", "Z", None, "A"],
        "flag": [True, None, "false", 1],
        "count": [2, 3, None, 4],
        "opened": ["2024-02-29T13:45:00", None, "2023-12-31", "2024-01-01 00:00:00.5"],
    }
    X = pre.matrix(data, 4)
    want = pre.transform(pd.DataFrame(data))
    for j, name in enumerate(want.columns):
        col = want[name]
        expected = col.cat.codes.replace(-1, np.nan).to_numpy(dtype=float) if col.dtype == "category" else col
        np.testing.assert_array_equal(X[:, j], np.asarray(expected, dtype=float), err_msg=name)
    for odd in ({"amount": ["1.5"] * 4}, {"grade": [1, 2, 3, 4]}, {"amount": [True] * 4}):
        assert pre.matrix({**data, **odd}, 4) is None, odd
    # dates pandas reads its own way (zones, other formats) are read by pandas, still without a DataFrame
    tz = {**data, "opened": ["2024-02-29T13:45:00+05:00", None, "March 3, 2024", "2024-01-01"]}
    np.testing.assert_array_equal(pre.matrix(tz, 4)[:, -6:], pre.transform(pd.DataFrame(tz)).iloc[:, -6:].to_numpy())
