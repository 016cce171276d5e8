"""Tests of the built-in loan-application simulator (small frames; each test is fast)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from driftloop.config import DriftParams
from driftloop.data import simulate as sim
from driftloop.data.simulate import DATE_COLUMN, ID_COLUMN, TARGET, simulate, simulate_chunks

N = 4_000

INT_COLUMNS = {
    ID_COLUMN,
    TARGET,
    "age",
    "loan_term_months",
    "credit_score",
    "num_open_accounts",
    "num_delinquencies_2y",
    "num_inquiries_6m",
}


@pytest.fixture(scope="module")
def base() -> pd.DataFrame:
    return simulate(20_000, 7)


def _features(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[TARGET])


# --- schema ------------------------------------------------------------------------------


def test_columns_and_dtypes(base: pd.DataFrame) -> None:
    assert list(base.columns) == [ID_COLUMN, DATE_COLUMN, *sim.FEATURE_COLUMNS, TARGET]
    assert 18 <= len(sim.FEATURE_COLUMNS) <= 24
    assert base.index.equals(pd.RangeIndex(len(base)))
    for col in base.columns:
        dtype = base[col].dtype
        if col in sim.CATEGORICAL_COLUMNS:
            assert isinstance(dtype, pd.CategoricalDtype), col
            assert list(dtype.categories) == list(sim.categories()[col]), col
        elif col == DATE_COLUMN:
            assert dtype == np.dtype("datetime64[ns]")
        elif col == "has_cosigner":
            assert dtype == np.dtype(bool)
        elif col in INT_COLUMNS:
            assert dtype == np.dtype("int64"), col
        else:
            assert dtype == np.dtype("float64"), col
    assert set(base[TARGET].unique()) == {0, 1}
    assert len(sim.categories()["state"]) == 51
    assert base["state"].nunique() > 40


def test_value_ranges(base: pd.DataFrame) -> None:
    assert base["credit_score"].between(300, 850).all()
    assert set(base["loan_term_months"].unique()) == {36, 60}
    assert base["credit_utilization"].dropna().between(0, 1).all()
    assert base["age"].between(18, 85).all()
    assert (base["annual_income"].dropna() > 0).all()
    assert base["loan_amount"].between(1_000, 100_000).all()
    assert base["interest_rate"].between(3.5, 36).all()
    assert (base["debt_to_income"] >= 0).all()
    assert base["num_delinquencies_2y"].min() == 0
    # the state distribution is skewed: the most frequent state is far above uniform (1/51)
    assert base["state"].value_counts(normalize=True).iloc[0] > 0.08


def test_ids_and_dates(base: pd.DataFrame) -> None:
    assert base[ID_COLUMN].tolist() == list(range(len(base)))
    dates = base[DATE_COLUMN]
    assert dates.is_monotonic_increasing
    assert dates.min() >= pd.Timestamp("2024-01-01")
    assert dates.max() < pd.Timestamp("2025-01-01")
    per_month = dates.dt.month.value_counts()
    assert len(per_month) == 12
    assert per_month.min() > 0.8 * len(base) / 12

    other = simulate(500, 1, start_date="2023-03-15", months=2, id_offset=1_000)
    assert other[ID_COLUMN].iloc[0] == 1_000 and other[ID_COLUMN].is_unique
    assert other[DATE_COLUMN].min() >= pd.Timestamp("2023-03-15")
    assert other[DATE_COLUMN].max() < pd.Timestamp("2023-05-15")


# --- determinism and chunking --------------------------------------------------------------


def test_same_seed_is_identical_different_seed_differs() -> None:
    a = simulate(N, 11)
    b = simulate(N, 11)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert pd.util.hash_pandas_object(a).equals(pd.util.hash_pandas_object(b))
    c = simulate(N, 12)
    assert not a["annual_income"].equals(c["annual_income"])
    assert not a[TARGET].equals(c[TARGET])


def test_chunks_respect_size_and_concatenate_to_simulate() -> None:
    chunks = list(simulate_chunks(2_500, 3, chunk_rows=1_000, id_offset=10))
    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
    whole = pd.concat(chunks, ignore_index=True)
    assert whole[ID_COLUMN].tolist() == list(range(10, 2_510))
    pd.testing.assert_frame_equal(whole, simulate(2_500, 3, id_offset=10), check_exact=True)


def test_chunks_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim, "_BLOCK_ROWS", 700)  # several internal blocks with a small n
    reference = simulate(2_600, 5)
    for chunk_rows in (333, 700, 1_000, 5_000):
        chunks = list(simulate_chunks(2_600, 5, chunk_rows=chunk_rows))
        assert all(len(c) <= chunk_rows for c in chunks)
        assert sum(len(c) for c in chunks) == 2_600
        whole = pd.concat(chunks, ignore_index=True)
        assert whole[ID_COLUMN].is_unique
        assert whole[DATE_COLUMN].is_monotonic_increasing
        pd.testing.assert_frame_equal(whole, reference, check_exact=True)
    first = next(simulate_chunks(2_600, 5, chunk_rows=1))
    pd.testing.assert_frame_equal(first, reference.iloc[:1], check_exact=True)


@pytest.mark.parametrize("new_category", [0.0, 1.0])
def test_schema_identical_across_chunks(new_category: float) -> None:
    drift = DriftParams(new_category=new_category)
    chunks = list(simulate_chunks(3_000, 9, chunk_rows=700, drift=drift))
    assert len(chunks) == 5
    first = chunks[0]
    schema = pa.Schema.from_pandas(first, preserve_index=False)
    for chunk in chunks[1:]:
        assert chunk.dtypes.equals(first.dtypes)
        for col in sim.CATEGORICAL_COLUMNS:
            assert chunk[col].dtype == first[col].dtype
        assert pa.Schema.from_pandas(chunk, preserve_index=False).equals(schema)
        assert chunk.index[0] == 0  # each chunk has its own RangeIndex


# --- target -------------------------------------------------------------------------------


def test_default_rate_near_target(base: pd.DataFrame) -> None:
    assert abs(base[TARGET].mean() - 0.14) < 0.02
    high = simulate(10_000, 8, default_rate=0.3)
    assert abs(high[TARGET].mean() - 0.3) < 0.02


def test_intercept_does_not_depend_on_seed() -> None:
    assert sim._calibrated_intercept(0.14, 0.0) == sim._calibrated_intercept(0.14, 0.0)
    rates = [simulate(6_000, s)[TARGET].mean() for s in (1, 2, 3)]
    assert max(rates) - min(rates) < 0.03


def test_target_depends_on_features(base: pd.DataFrame) -> None:
    low = base.loc[base["credit_score"] < 600, TARGET].mean()
    high = base.loc[base["credit_score"] > 750, TARGET].mean()
    assert low > 2.5 * high
    # U-shape in age: both ends riskier than the middle
    young = base.loc[base["age"] < 26, TARGET].mean()
    middle = base.loc[base["age"].between(35, 50), TARGET].mean()
    old = base.loc[base["age"] > 65, TARGET].mean()
    assert young > middle and old > middle


# --- missingness ----------------------------------------------------------------------------


def test_missingness_where_documented(base: pd.DataFrame) -> None:
    na = base.isna().mean()
    assert 0.03 < na["annual_income"] < 0.07
    assert 0.015 < na["credit_utilization"] < 0.045
    assert 0.03 < na["employment_length_years"] < 0.2
    assert base.loc[base["employment_type"].isin(["unemployed", "retired"]), "employment_length_years"].isna().all()
    # informative missingness: missing exactly when there was no delinquency
    no_delinquency = base["num_delinquencies_2y"] == 0
    assert base["months_since_last_delinquency"].isna().equals(no_delinquency)
    assert base.loc[~no_delinquency, "months_since_last_delinquency"].between(0, 23).all()
    assert base["payment_to_income"].isna().equals(base["annual_income"].isna())
    never_missing = [c for c in base.columns if c not in na[na > 0].index]
    assert set(INT_COLUMNS) <= set(never_missing)


# --- drift scenarios --------------------------------------------------------------------------


def test_no_drift_equals_zero_drift(base: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(simulate(20_000, 7, drift=DriftParams()), base, check_exact=True)


def test_covariate_shift_moves_features(base: pd.DataFrame) -> None:
    shifted = simulate(20_000, 7, drift=DriftParams(covariate_shift=1.0))
    ratio = shifted["annual_income"].median() / base["annual_income"].median()
    assert 0.7 < ratio < 0.8
    assert 30 < base["credit_score"].mean() - shifted["credit_score"].mean() < 45
    assert shifted["credit_utilization"].mean() > base["credit_utilization"].mean() + 0.05
    assert (shifted["channel"] == "online").mean() > (base["channel"] == "online").mean() + 0.1
    assert shifted["loan_amount"].mean() > 1.1 * base["loan_amount"].mean()
    assert shifted["debt_to_income"].mean() > 1.2 * base["debt_to_income"].mean()
    assert shifted[TARGET].mean() > base[TARGET].mean() + 0.03
    # untouched columns stay put; the scale is linear in the magnitude
    assert shifted["age"].equals(base["age"])
    half = simulate(20_000, 7, drift=DriftParams(covariate_shift=0.5))
    assert shifted["credit_score"].mean() < half["credit_score"].mean() < base["credit_score"].mean()


def test_new_category_introduces_new_values(base: pd.DataFrame) -> None:
    assert sim.NEW_LOAN_PURPOSE not in base["loan_purpose"].cat.categories
    assert sim.NEW_CHANNEL not in base["channel"].cat.categories
    drifted = simulate(20_000, 7, drift=DriftParams(new_category=1.0))
    assert drifted["loan_purpose"].cat.categories[-1] == sim.NEW_LOAN_PURPOSE
    assert drifted["channel"].cat.categories[-1] == sim.NEW_CHANNEL
    assert 0.12 < (drifted["loan_purpose"] == sim.NEW_LOAN_PURPOSE).mean() < 0.18
    assert 0.12 < (drifted["channel"] == sim.NEW_CHANNEL).mean() < 0.18
    small = simulate(20_000, 7, drift=DriftParams(new_category=0.2))
    assert 0.01 < (small["loan_purpose"] == sim.NEW_LOAN_PURPOSE).mean() < 0.05
    # the other columns are those of the drift-free data
    assert drifted["credit_score"].equals(base["credit_score"])


def test_concept_drift_changes_relation_not_features(base: pd.DataFrame) -> None:
    drifted = simulate(20_000, 7, drift=DriftParams(concept_drift=1.0))
    pd.testing.assert_frame_equal(_features(drifted), _features(base), check_exact=True)
    assert not drifted[TARGET].equals(base[TARGET])
    assert abs(drifted[TARGET].mean() - 0.14) < 0.02

    def online_ratio(df: pd.DataFrame) -> float:
        online = df["channel"] == "online"
        return df.loc[online, TARGET].mean() / df.loc[~online, TARGET].mean()

    assert online_ratio(drifted) > 1.4 * online_ratio(base)
    # the debt-to-income effect doubles (the credit-score effect weakens, but the score is
    # correlated with utilization and delinquencies, so its marginal AUC barely moves)
    dti_auc = roc_auc_score(drifted[TARGET], drifted["debt_to_income"])
    assert dti_auc > roc_auc_score(base[TARGET], base["debt_to_income"]) + 0.015
    middle = drifted["age"].between(35, 50)
    assert drifted.loc[middle, TARGET].mean() > drifted.loc[drifted["age"] < 26, TARGET].mean()


def test_prior_shift_raises_rate_only(base: pd.DataFrame) -> None:
    drifted = simulate(20_000, 7, drift=DriftParams(prior_shift=1.0))
    pd.testing.assert_frame_equal(_features(drifted), _features(base), check_exact=True)
    ratio = drifted[TARGET].mean() / base[TARGET].mean()
    assert 1.7 < ratio < 2.3
    # same uniforms, higher probabilities: every base default stays a default
    assert (drifted[TARGET] >= base[TARGET]).all()
    half = simulate(20_000, 7, drift=DriftParams(prior_shift=0.5))
    assert base[TARGET].mean() < half[TARGET].mean() < drifted[TARGET].mean()


def test_drift_accepts_mapping() -> None:
    a = simulate(1_000, 4, drift={"prior_shift": 1.0})  # type: ignore[arg-type]
    b = simulate(1_000, 4, drift=DriftParams(prior_shift=1.0))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_rows": 0},
        {"n_rows": -5},
        {"months": 0},
        {"chunk_rows": 0},
        {"default_rate": 0.0},
        {"default_rate": 1.0},
        {"id_offset": -1},
        {"seed": -1},
        {"start_date": "not a date"},
        {"n_rows": 10.5},
        {"drift": {"prior_shift": -1.0}},
        {"drift": "strong"},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    args = {"n_rows": 100, "seed": 1, **kwargs}
    with pytest.raises(ValueError):
        simulate(**args)
    with pytest.raises(ValueError):
        simulate_chunks(**args)  # raised at the call, before iterating


def test_import_has_no_side_effects() -> None:
    code = (
        "import driftloop.data.simulate as s; "
        "assert s._pilot.cache_info().currsize == 0; "
        "assert s._state_tables.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
