"""The leakage check on pairs of numeric columns: a target computed from two columns (each weak alone) is
caught and named with both columns, obeying validate.on_leakage; honest tables and the simulator pass."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.leakage import combination_scores, single_feature_scores
from driftloop.data.validate import validate
from driftloop.errors import DataError


def params(**validate_opts) -> Params:
    return Params.model_validate({"base": {"target": "late", "seed": 7}, "validate": {"min_rows": 10, **validate_opts}})


def flights(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """``late`` is ``arr_time - sched_arr_time > 15``: neither column says much alone."""
    rng = np.random.default_rng(seed)
    sched = rng.integers(360, 1380, n).astype(float)  # minutes of the day
    delay = rng.exponential(14, n) - 5
    return pd.DataFrame(
        {
            "sched_arr_time": sched,
            "arr_time": sched + delay,
            "distance": rng.gamma(3, 300, n),
            "month": rng.integers(1, 13, n),
            "carrier": rng.choice(["AA", "DL", "UA", "B6"], n),
            "dep_delay": delay + rng.normal(0, 12, n),  # honest and strong: the delay at departure
            "late": np.where(delay > 15, "yes", "no"),
        }
    )


def test_a_planted_pair_leak_is_caught_naming_both_columns():
    df = flights()
    with pytest.raises(DataError) as exc:
        validate(df, params(), source="flights.csv")
    msg = str(exc.value)
    assert "1 leakage suspect(s)" in msg
    assert "columns 'sched_arr_time' and 'arr_time' together" in msg  # named in the data's column order
    assert "validate.ignore_columns" in msg and "validate.on_leakage" in msg
    for honest in ("distance", "month", "dep_delay", "carrier"):
        assert f"'{honest}'" not in msg


def test_each_column_alone_is_no_suspect():
    df = flights()
    single = single_feature_scores(df.drop(columns="late"), df["late"], "binary", params())
    assert single["arr_time"] < 0.9 and single["sched_arr_time"] < 0.9
    ((score, cols),) = combination_scores(df.drop(columns="late"), df["late"], "binary", params(), single)
    assert cols == ("sched_arr_time", "arr_time") and score >= 0.99


def test_pair_leak_warned_or_dropped_as_configured():
    df = flights()
    clean, report = validate(df, params(on_leakage="warn"), source="flights.csv")
    leaks = [w for w in report.warnings if w.check == "leakage"]
    assert {w.column for w in leaks} == {"arr_time", "sched_arr_time"} and all(w.action == "none" for w in leaks)
    assert all(w.score >= 0.99 and "together" in w.message for w in leaks)
    assert {"arr_time", "sched_arr_time"} <= set(clean.columns)
    clean, report = validate(df, params(on_leakage="drop"), source="flights.csv")
    assert not {"arr_time", "sched_arr_time"} & set(clean.columns)
    assert {"arr_time", "sched_arr_time"} <= set(report.dropped_columns)
    assert {"distance", "dep_delay", "month", "carrier"} <= set(clean.columns)


def test_single_and_pair_suspects_are_named_in_one_error():
    df = flights()
    df["outcome"] = df["late"].map({"no": 0, "yes": 1}) * 3 + np.random.default_rng(1).uniform(0, 1, len(df))
    with pytest.raises(DataError) as exc:
        validate(df, params(), source="flights.csv")
    msg = str(exc.value)
    assert "2 leakage suspect(s)" in msg and "'outcome' alone" in msg and "together" in msg


def test_pair_leak_in_a_regression_target_product_is_caught():
    rng = np.random.default_rng(3)
    n = 3000
    qty, price = rng.integers(1, 50, n).astype(float), rng.lognormal(3, 0.6, n)
    df = pd.DataFrame({"qty": qty, "unit_price": price, "weight": rng.normal(size=n), "late": qty * price})
    with pytest.raises(DataError, match="'qty' and 'unit_price' together"):
        validate(df, params(), source="orders.csv")


def test_two_strong_honest_columns_are_not_a_leak():
    # the target depends on two columns plus noise: strong together, far from deterministic
    rng = np.random.default_rng(4)
    n = 4000
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (a - b + rng.normal(0, 0.5, n) > 0).astype(int)
    df = pd.DataFrame({"a": a, "b": b, "c": rng.normal(size=n), "late": y})
    _, report = validate(df, params(), source="honest.csv")
    assert not [w for w in report.warnings if w.check == "leakage"]


def test_pairs_off_with_zero_columns():
    df = flights()
    _, report = validate(df, params(leakage_pair_columns=0), source="flights.csv")
    assert not [w for w in report.warnings if w.check == "leakage"]


def test_simulator_passes_the_pair_check_cheaply():
    from driftloop.data.simulate import DATE_COLUMN, ID_COLUMN, TARGET, simulate

    df = simulate(20_000, 42)
    p = Params.model_validate({"base": {"target": TARGET}})
    features = df.drop(columns=[TARGET, ID_COLUMN, DATE_COLUMN])
    single = single_feature_scores(features, df[TARGET], "binary", p)
    start = time.perf_counter()
    assert combination_scores(features, df[TARGET], "binary", p, single) == []
    assert time.perf_counter() - start < 20  # ~1.3 s on 2 loaded cores (66 pairs)
    clean, report = validate(df, p, source="simulated")  # on_leakage: error by default
    assert not [w for w in report.warnings if w.check == "leakage"]


def test_combination_scores_are_seeded():
    df = flights()
    single = single_feature_scores(df.drop(columns="late"), df["late"], "binary", params())
    a = combination_scores(df.drop(columns="late"), df["late"], "binary", params(), single)
    assert a == combination_scores(df.drop(columns="late"), df["late"], "binary", params(), single)


def test_a_multiclass_grade_defined_by_a_ratio_is_caught():
    # loans: the grade is a band of installment / amount (the rate), neither column alone
    rng = np.random.default_rng(5)
    n = 3000
    amount = rng.uniform(1000, 40000, n)
    rate = rng.uniform(0.05, 0.30, n)
    df = pd.DataFrame(
        {
            "amount": amount,
            "installment": amount * rate / 12,
            "income": rng.lognormal(11, 0.5, n),
            "late": np.digitize(rate, [0.10, 0.15, 0.20, 0.25]).astype(str),
        }
    )
    with pytest.raises(DataError, match="columns 'amount' and 'installment' together"):
        validate(df, params(), source="loans.csv")


def test_a_grade_from_a_pair_and_a_third_column_is_caught_with_all_three():
    # an amortized loan: installment / amount gives the rate only once the term is known
    rng = np.random.default_rng(6)
    n = 5000
    amount, rate, term = rng.uniform(1000, 40000, n).round(-2), rng.uniform(0.05, 0.30, n), rng.choice([36, 60], n)
    i = rate / 12
    df = pd.DataFrame(
        {
            "amount": amount,
            "term": term,
            "installment": (amount * i / (1 - (1 + i) ** -term)).round(2),
            "income": rng.lognormal(11, 0.5, n),
            "late": np.digitize(rate, [0.10, 0.15, 0.20, 0.25]).astype(str),
        }
    )
    X = df.drop(columns="late")
    single = single_feature_scores(X, df["late"], "multiclass", params())
    ((score, cols),) = combination_scores(X, df["late"], "multiclass", params(), single)
    assert cols == ("amount", "term", "installment") and score >= 0.99
    with pytest.raises(DataError, match="columns 'amount', 'term' and 'installment' together"):
        validate(df, params(), source="loans.csv")
    clean, _ = validate(df, params(on_leakage="drop"), source="loans.csv")
    assert list(clean.columns) == ["income", "late"]


@pytest.mark.parametrize("name", ["load_breast_cancer", "load_iris", "load_wine", "load_diabetes", "load_digits"])
def test_honest_bundled_tables_pass(name):
    from sklearn import datasets

    df = getattr(datasets, name)(as_frame=True).frame.rename(columns={"target": "late"})
    p = Params.model_validate({"base": {"target": "late"}, "validate": {"min_rows": 100}})
    _, report = validate(df, p, source=name)  # raises on a suspect (on_leakage: error)
    assert not [w for w in report.warnings if w.check == "leakage"]
