"""Validate stage: columns dropped with a warning (constant, all-missing, ID-like, leakage),
duplicated rows, config errors naming the column, and task inference."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.leakage import single_feature_scores as _single_feature_scores
from driftloop.data.validate import check_contract, infer_task, validate
from driftloop.errors import DataError

N = 300


def make_params(**validate_opts) -> Params:
    split = validate_opts.pop("split", {})
    return Params.model_validate(
        {"base": {"target": "y"}, "validate": {"min_rows": 10, **validate_opts}, "split": split}
    )


def base_frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Features unrelated to the target (nothing leaks), a balanced binary target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 20, n),  # float, unique per row: a feature, not an ID
            "grade": rng.choice(["A", "B", "C", "D"], n),
            "count": rng.integers(0, 5, n),
            "y": rng.permutation(np.tile([0, 1], n // 2)),
        }
    )


def warnings_by_check(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for w in report.warnings:
        out.setdefault(w.check, []).append(w)
    return out


def test_clean_data_passes_unchanged():
    df = base_frame()
    clean, report = validate(df, make_params(), source="data.parquet")
    pd.testing.assert_frame_equal(clean, df)
    assert report.task == "binary"
    assert report.rows == N and report.columns == 4
    assert report.warnings == []
    assert report.dropped_columns == []
    assert report.to_dict()["n_warnings"] == 0


def test_constant_and_all_missing_columns_dropped():
    df = base_frame()
    df["const"] = "same"
    df["empty"] = np.nan
    df["empty_text"] = pd.Series([None] * N, dtype=object)
    clean, report = validate(df, make_params(), source="data.parquet")
    assert set(report.dropped_columns) == {"const", "empty", "empty_text"}
    assert not {"const", "empty", "empty_text"} & set(clean.columns)
    assert list(clean.columns) == ["amount", "grade", "count", "y"]
    by = warnings_by_check(report)
    assert [w.column for w in by["constant"]] == ["const"]
    assert {w.column for w in by["all_missing"]} == {"empty", "empty_text"}
    assert all(w.action == "dropped" for w in report.warnings)
    assert "'const'" in by["constant"][0].message


def test_constant_with_missing_values_is_not_constant():
    df = base_frame()
    df["mostly_one"] = 1.0
    df.loc[::7, "mostly_one"] = np.nan  # missingness may carry information
    clean, report = validate(df, make_params(), source="data.parquet")
    assert "mostly_one" in clean.columns


@pytest.mark.parametrize(
    "ids",
    [
        np.arange(N) + 1000,
        np.random.default_rng(3).permutation(N * 10)[:N],
        [f"cust-{i:05d}" for i in range(N)],
        pd.array([f"u{i}" for i in range(N)], dtype="string"),
    ],
    ids=["int_sequence", "int_random", "object_str", "string_dtype"],
)
def test_id_column_dropped(ids):
    df = base_frame()
    df.insert(0, "customer_id", ids)
    clean, report = validate(df, make_params(), source="data.parquet")
    assert "customer_id" not in clean.columns
    assert report.dropped_columns == ["customer_id"]
    (w,) = report.warnings
    assert (w.check, w.column, w.action) == ("id_like", "customer_id", "dropped")


def test_unique_float_feature_is_kept():
    df = base_frame()
    assert df["amount"].nunique() == N
    clean, report = validate(df, make_params(), source="data.parquet")
    assert "amount" in clean.columns
    assert "amount" not in report.dropped_columns


def test_unique_column_declared_categorical_or_time_is_kept():
    df = base_frame()
    df["code"] = [f"c{i}" for i in range(N)]
    df["ts"] = np.arange(N)
    params = make_params(categorical_columns=["code"], split={"time_column": "ts"})
    clean, report = validate(df, params, source="data.parquet")
    assert {"code", "ts"} <= set(clean.columns)
    assert report.dropped_columns == []


def test_declared_id_column_dropped_even_if_not_unique():
    df = base_frame()
    df["branch"] = np.arange(N) % 10
    clean, report = validate(df, make_params(id_columns=["branch"]), source="data.parquet")
    assert "branch" not in clean.columns
    assert report.warnings[0].check == "id_column"


def test_ignore_columns_dropped_without_warning():
    df = base_frame()
    df["note"] = np.random.default_rng(1).choice(["x", "y"], N)
    clean, report = validate(df, make_params(ignore_columns=["note"]), source="data.parquet")
    assert "note" not in clean.columns
    assert report.dropped_columns == ["note"]
    assert report.warnings == []


def test_small_data_no_id_detection():
    # fewer than 50 rows: a unique integer column is not called an ID
    df = base_frame(n=40)
    df["k"] = np.arange(40)
    clean, _ = validate(df, make_params(), source="data.parquet")
    assert "k" in clean.columns


def dup_frame() -> pd.DataFrame:
    df = base_frame()
    return pd.concat([df, df.iloc[:15]], ignore_index=True)


def test_duplicate_rows_warned_and_kept_by_default():
    df = dup_frame()
    clean, report = validate(df, make_params(), source="data.parquet")
    assert len(clean) == len(df)
    (w,) = [w for w in report.warnings if w.check == "duplicate_rows"]
    assert w.message.startswith("15 duplicated rows")
    assert w.action == "none"


def test_duplicate_rows_dropped_when_configured():
    df = dup_frame()
    clean, report = validate(df, make_params(on_duplicate_rows="drop"), source="data.parquet")
    assert len(clean) == N
    assert not clean.duplicated().any()
    (w,) = [w for w in report.warnings if w.check == "duplicate_rows"]
    assert w.action == "rows_dropped"
    assert clean.index.equals(pd.RangeIndex(N))


def leaky_frame() -> pd.DataFrame:
    df = base_frame()
    df["outcome_code"] = df["y"].map({0: "closed_ok", 1: "charged_off"})
    return df


def test_leakage_is_an_error_by_default():
    with pytest.raises(DataError) as exc:
        validate(leaky_frame(), make_params(), source="data.parquet")
    msg = str(exc.value)
    assert "'outcome_code'" in msg
    assert "data.parquet" in msg
    assert "leakage" in msg
    for innocent in ("amount", "grade", "count"):
        assert f"'{innocent}'" not in msg


def test_leakage_dropped_when_configured():
    clean, report = validate(leaky_frame(), make_params(on_leakage="drop"), source="data.parquet")
    assert "outcome_code" not in clean.columns
    assert report.dropped_columns == ["outcome_code"]
    (w,) = report.warnings
    assert (w.check, w.column, w.action) == ("leakage", "outcome_code", "dropped")


def test_leakage_warned_when_configured():
    clean, report = validate(leaky_frame(), make_params(on_leakage="warn"), source="data.parquet")
    assert "outcome_code" in clean.columns
    (w,) = report.warnings
    assert (w.check, w.column, w.action) == ("leakage", "outcome_code", "none")


def test_numeric_leak_in_regression():
    # a depth-6 tree needs a few thousand rows to reach R^2 >= 0.99 on a linear copy
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n) * 10})
    df["y_copy"] = df["y"] * 2 + 1
    with pytest.raises(DataError, match="'y_copy'"):
        validate(df, make_params(), source="d.parquet")
    clean, report = validate(df, make_params(on_leakage="drop"), source="d.parquet")
    assert report.task == "regression"
    assert list(clean.columns) == ["x", "y"]


def test_non_monotonic_numeric_leak_in_binary():
    # the target is 1 inside a band of x and 0 on both sides: no single threshold, a tree (two cuts) finds it
    rng = np.random.default_rng(7)
    n = 3000
    x = rng.random(n)
    df = pd.DataFrame({"noise": rng.normal(size=n), "band": x, "y": (np.abs(x - 0.5) < 0.2).astype(int)})
    _, report = validate(df, make_params(on_leakage="warn"), source="d.parquet")
    assert [w.column for w in report.warnings if w.check == "leakage"] == ["band"]


def test_non_monotonic_numeric_leak_in_regression():
    rng = np.random.default_rng(8)
    n = 3000
    x = rng.random(n)
    df = pd.DataFrame({"noise": rng.normal(size=n), "x": x, "y": np.abs(x - 0.5) * 10})
    with pytest.raises(DataError, match="'x'"):
        validate(df, make_params(), source="d.parquet")


def test_noisy_numeric_copy_of_a_multiclass_target():
    rng = np.random.default_rng(9)
    n = 3000
    y = rng.integers(0, 4, n)
    df = pd.DataFrame(
        {
            "code": y + rng.normal(0, 0.05, n),  # separable: the classes never overlap
            "folded": np.abs(y - 1.5) + rng.normal(0, 0.05, n),  # two classes per value: half the information
            "y": np.array(["a", "b", "c", "d"])[y],
        }
    )
    scores = _single_feature_scores(df[["code", "folded"]], df["y"], "multiclass", make_params())
    assert scores["code"] >= 0.99
    assert 0.4 < scores["folded"] < 0.6
    _, report = validate(df, make_params(on_leakage="warn"), source="d.parquet")
    assert [w.column for w in report.warnings if w.check == "leakage"] == ["code"]


def test_high_cardinality_categorical_honest_and_leaky():
    rng = np.random.default_rng(10)
    n = 6000
    codes = rng.integers(0, 400, n)
    df = pd.DataFrame(
        {
            "branch": [f"b{c:03d}" for c in codes],  # 400 values, unrelated to the target
            "agent": pd.Categorical([f"a{c:03d}" for c in rng.permutation(codes)]),
            "y": rng.integers(0, 2, n),
        }
    )
    # a 400-value code whose every value belongs to one class, the labels in no useful order
    df["reason"] = [f"r{(c * 7919) % 1000:03d}" for c in (codes * 2 + df["y"].to_numpy())]
    scores = _single_feature_scores(df.drop(columns="y"), df["y"], "binary", make_params())
    assert scores["branch"] < 0.6 and scores["agent"] < 0.6
    assert scores["reason"] >= 0.99
    _, report = validate(df, make_params(on_leakage="warn"), source="d.parquet")
    assert [w.column for w in report.warnings if w.check == "leakage"] == ["reason"]


def test_leakage_scores_are_seeded_and_sampled():
    rng = np.random.default_rng(11)
    n = 5000
    df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    df["leak"] = df["y"] + rng.normal(0, 0.1, n)
    df.loc[::10, "leak"] = np.nan  # missing values, which carry no information here
    params = make_params(leakage_sample_rows=1000)
    a = _single_feature_scores(df[["x", "leak"]], df["y"], "binary", params)
    assert a == _single_feature_scores(df[["x", "leak"]], df["y"], "binary", params)
    assert a["leak"] >= 0.99 and abs(a["x"] - 0.5) < 0.1


def test_missingness_that_encodes_the_target_is_a_leak():
    rng = np.random.default_rng(12)
    n = 3000
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"x": np.where(y == 1, np.nan, rng.normal(size=n)), "y": y})
    scores = _single_feature_scores(df[["x"]], df["y"], "binary", make_params())
    assert scores["x"] >= 0.99


def test_simulator_features_are_not_leaks():
    from driftloop.data.simulate import DATE_COLUMN, ID_COLUMN, TARGET, simulate

    df = simulate(20_000, 42)
    params = Params.model_validate({"base": {"target": TARGET}})
    features = [c for c in df.columns if c not in (TARGET, ID_COLUMN, DATE_COLUMN)]
    scores = _single_feature_scores(df[features], df[TARGET], "binary", params)
    assert set(scores) == set(features)
    assert max(scores.values()) < 0.8  # the strongest (interest_rate, credit_score) are near 0.68


def test_regression_target_passes_the_contract():
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"x": rng.normal(size=N), "y": rng.normal(size=N)})
    clean, report = validate(df, make_params(), source="d.parquet")
    assert report.task == "regression"
    assert report.warnings == []
    assert len(clean) == N


def test_ignored_leaky_column_is_fine():
    clean, report = validate(leaky_frame(), make_params(ignore_columns=["outcome_code"]), source="data.parquet")
    assert "outcome_code" not in clean.columns
    assert report.warnings == []


@pytest.mark.parametrize("key", ["ignore_columns", "categorical_columns", "date_columns", "id_columns"])
def test_config_naming_unknown_column_errors(key):
    with pytest.raises(DataError) as exc:
        validate(base_frame(), make_params(**{key: ["no_such_col"]}), source="data.parquet")
    assert f"validate.{key}" in str(exc.value)
    assert "'no_such_col'" in str(exc.value)


@pytest.mark.parametrize("key", ["time_column", "group_column"])
def test_split_column_must_exist(key):
    with pytest.raises(DataError, match=f"split.{key} 'nope'"):
        validate(base_frame(), make_params(split={key: "nope"}), source="data.parquet")


def test_contract_runs_first():
    df = base_frame().drop(columns="y")
    with pytest.raises(DataError, match="target column 'y'"):
        validate(df, make_params(), source="data.parquet")


def test_check_contract_returns_task():
    df = base_frame()
    assert check_contract(df, make_params(), source="s") == "binary"
    df["y"] = np.tile(["a", "b", "c"], N // 3)
    assert check_contract(df, make_params(), source="s") == "multiclass"
    df["y"] = np.linspace(0, 1, N)
    assert check_contract(df, make_params(), source="s") == "regression"


def test_too_many_classes_names_column():
    df = base_frame()
    df["y"] = [f"c{i % 60}" for i in range(N)]
    with pytest.raises(DataError, match="'y'") as exc:
        check_contract(df, make_params(), source="s")
    assert "more than 50 classes" in str(exc.value)


# --------------------------------------------------------------------------- infer_task
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([True, False, True, True], "binary"),
        (pd.array([True, False, None, True], dtype="boolean"), "binary"),
        (["yes", "no", "yes", "no"], "binary"),
        (["good", "bad", None, "good"], "binary"),
        (["low", "mid", "high", "mid"], "multiclass"),
        ([0, 1, 1, 0], "binary"),
        ([0.0, 1.0, np.nan, 1.0], "binary"),
        ([1, 2, 3, 4, 5, 1, 2], "multiclass"),
        (pd.array([0, 1, 2, None], dtype="Int64"), "multiclass"),
        (list(range(100)), "regression"),
        ([1.0, 2.0, 3.0, 2.0], "multiclass"),
        ([0.1, 2.5, 3.7, 10.2], "regression"),
        ([1.0, 2.5, np.nan, 3.0], "regression"),
        (pd.Categorical(["x", "y", "z"]), "multiclass"),
    ],
)
def test_infer_task(values, expected):
    assert infer_task(pd.Series(values)) == expected


def test_infer_task_explicit_wins():
    assert infer_task(pd.Series([0, 1, 0]), "regression") == "regression"
    assert infer_task(pd.Series([0.1, 0.7, 0.3]), "multiclass") == "multiclass"


# --------------------------------------------------------------------------- issue 10 findings 5 and 9
def test_infinite_and_huge_values_become_missing_naming_columns_and_counts():
    df = base_frame()
    df.loc[[1, 2], "amount"] = [np.inf, -np.inf]
    df.loc[3, "amount"] = 1e308
    df["ratio"] = np.random.default_rng(3).normal(size=N)
    df.loc[5, "ratio"] = -1e300
    clean, report = validate(df, make_params(), source="data.parquet")
    issues = {w.column: w for w in warnings_by_check(report)["non_finite"]}
    assert set(issues) == {"amount", "ratio"}
    assert issues["amount"].count == 3 and "2 infinite and 1 huge" in issues["amount"].message
    assert issues["ratio"].count == 1 and issues["ratio"].action == "values_missing"
    assert clean["amount"].isna().sum() == 3 and clean["ratio"].isna().sum() == 1
    assert np.isfinite(clean[["amount", "ratio"]].dropna()).all().all()
    assert df["amount"].isna().sum() == 0  # the caller's frame is untouched


def test_duplicates_counted_once_id_columns_are_set_aside():
    df = dup_frame()
    df["row_id"] = np.arange(len(df))  # unique per row: hides the 15 copies from a plain duplicated()
    clean, report = validate(df, make_params(), source="data.parquet")
    assert "row_id" not in clean.columns
    (w,) = warnings_by_check(report)["duplicate_rows"]
    assert w.count == 15 and "row_id" in w.message
    clean, report = validate(df, make_params(on_duplicate_rows="drop"), source="data.parquet")
    assert len(clean) == N and not clean.duplicated().any()


def test_every_leakage_suspect_named_at_once_with_its_score():
    df = leaky_frame()
    df["sub_grade"] = df["y"].map({0: "A1", 1: "E5"})
    df["interest_rate"] = df["y"] * 10.0 + np.random.default_rng(1).uniform(0, 1, N)
    with pytest.raises(DataError) as exc:
        validate(df, make_params(), source="loans.csv")
    msg = str(exc.value)
    assert "3 leakage suspect(s)" in msg
    for col in ("outcome_code", "sub_grade", "interest_rate"):
        assert re.search(rf"'{col}' alone predicts the target \(cross-validated score (0\.99\d\d|1\.0000)", msg), col
    _, report = validate(df, make_params(on_leakage="warn"), source="loans.csv")
    leaks = warnings_by_check(report)["leakage"]
    assert {w.column for w in leaks} == {"outcome_code", "sub_grade", "interest_rate"}
    assert all(w.score >= 0.99 for w in leaks)


def dated(values) -> pd.DataFrame:
    df = base_frame(n=len(values) if len(values) % 2 == 0 else len(values) - 1)
    df["when"] = list(values)[: len(df)]
    return df


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (["2024-04-03", "03/04/2024"] * 50, "mixes date formats"),
        (["13/04/2024", "04/13/2024"] * 50, "day-first ('13/04/2024') and month-first ('04/13/2024')"),
        (["13/04/2024", "03/04/2024"] * 50, "'03/04/2024' would be read month-first"),
    ],
)
def test_unsafe_date_formats_are_refused_naming_the_column(values, needle):
    params = make_params(date_columns=["when"])
    with pytest.raises(DataError) as exc:
        validate(dated(values), params, source="data.csv")
    assert "column 'when'" in str(exc.value) and needle in str(exc.value)
    _, report = validate(dated(values), make_params(date_columns=["when"], on_ambiguous_dates="warn"), source="x")
    assert {w.column for w in warnings_by_check(report)["ambiguous_dates"]} == {"when"}


def test_time_column_checked_too_and_safe_dates_pass():
    with pytest.raises(DataError, match="column 'when'"):
        validate(dated(["2024-04-03", "03/04/2024"] * 50), make_params(split={"time_column": "when"}), source="x")
    for ok in (["2024-04-03", "2024-12-31"] * 50, ["04/13/2024", "12/31/2024", "01/02/2024"] * 34):
        _, report = validate(dated(ok), make_params(date_columns=["when"]), source="x")
        assert "ambiguous_dates" not in warnings_by_check(report)


def test_all_ambiguous_day_month_dates_warn():
    _, report = validate(dated(["03/04/2024", "05/06/2024"] * 50), make_params(date_columns=["when"]), source="x")
    (w,) = warnings_by_check(report)["ambiguous_dates"]
    assert w.column == "when" and "month-first" in w.message
