"""retrain.training_data: all / window / recency on real simulator rows, LightGBM fitted with the weights, the
retrain budget, and the errors that name the key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.config import ConfigError, Params, load_params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.errors import DataError
from driftloop.pipeline import retrain_budget, study_name
from driftloop.training_data import effective_rows, select, time_column


def _params(**retrain) -> Params:
    return Params.model_validate({"retrain": retrain, "tune": {"max_rounds": 60, "early_stopping_rounds": 10}})


@pytest.fixture(scope="module")
def parts():
    df = simulate(3000, 3, start_date="2024-01-01", months=6)
    return split(df, Params(), "binary")


def test_all_is_the_rows_unchanged(parts):
    out = select(parts["train"], parts["valid"], _params(training_data="all"))
    assert out.train is parts["train"] and out.valid is parts["valid"]
    assert out.train_weight is None and out.info["training_data"] == "all"


def test_window_keeps_the_newest_rows_of_train_and_valid(parts):
    out = select(parts["train"], parts["valid"], _params(training_data="window", window_rows=500))
    t = parts["train"]["application_date"]
    assert len(out.train) == 500
    assert out.train["application_date"].min() >= t.sort_values().iloc[-500]
    # valid keeps the same share (500 of ~1800 train rows), its newest rows
    share = round(500 / len(parts["train"]) * len(parts["valid"]))
    assert len(out.valid) == share
    assert out.valid["application_date"].min() >= parts["valid"]["application_date"].sort_values().iloc[-share]
    assert out.train_weight is None


def test_recency_halves_the_weight_every_half_life(parts):
    out = select(parts["train"], parts["valid"], _params(training_data="recency", half_life_days=30))
    t = pd.concat([parts["train"], parts["valid"]])["application_date"]
    age = (t.max() - parts["train"]["application_date"]).dt.total_seconds().to_numpy() / 86400
    w = out.train_weight
    assert w.mean() == pytest.approx(1.0)
    # ratio of two rows' weights = 0.5 ** (age difference / half-life)
    i, j = int(np.argmin(age)), int(np.argmax(age))
    assert w[j] / w[i] == pytest.approx(0.5 ** ((age[j] - age[i]) / 30), rel=1e-9)
    assert out.info["effective_rows_train"] < len(parts["train"]) / 2  # 6 months at a 30-day half-life
    assert len(out.valid_weight) == len(parts["valid"])


def test_time_column_falls_back_to_the_only_datetime_column_else_all(parts):
    assert time_column(_params(), parts["train"]) == "application_date"
    no_time = parts["train"].drop(columns=["application_date"])
    assert time_column(_params(), no_time) is None
    out = select(no_time, parts["valid"].drop(columns=["application_date"]), _params(training_data="recency"))
    assert out.train_weight is None and out.info["training_data"] == "all" and "none found" in out.info["note"]


def test_a_named_time_column_missing_from_the_data_is_an_error_naming_the_key(parts):
    with pytest.raises(DataError, match=r"retrain.time_column 'signup'.*train split"):
        select(parts["train"], parts["valid"], _params(training_data="window", time_column="signup"))


def test_unparsable_times_are_an_error(parts):
    bad = parts["train"].assign(when=["x"] * len(parts["train"]))
    with pytest.raises(DataError, match=r"retrain.time_column 'when'.*no parsable time"):
        select(bad, parts["valid"].assign(when="2024-01-01"), _params(training_data="recency", time_column="when"))


def test_invalid_params_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("retrain:\n  training_data: newest\n")
    with pytest.raises(ConfigError, match=r"retrain.training_data: must be one of"):
        load_params(path)
    path.write_text("retrain:\n  half_life_days: 0\n")
    with pytest.raises(ConfigError, match=r"retrain.half_life_days"):
        load_params(path)


def test_recency_weights_reach_lightgbm(parts):
    """The same rows, recency weights vs none: the weighted fit follows the newest rule (labels flipped in the oldest
    three months; no id or date part lets the model tell the periods apart, so only the weights can)."""
    from driftloop.train import train

    def flip_old(df):
        old = df["application_date"] < pd.Timestamp("2024-04-01")
        return df.assign(default=np.where(old, 1 - df["default"], df["default"])).drop(columns=["application_id"])

    tr, va = flip_old(parts["train"]), flip_old(parts["valid"])
    lgb = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0}
    p = _params(training_data="recency", half_life_days=30).model_copy(
        update={"features": Params().features.model_copy(update={"date_parts": []})}
    )
    out = select(tr, va, p)
    plain = train(tr, va, p, "binary", lgb).model
    weighted = train(
        out.train, out.valid, p, "binary", lgb, weight=out.train_weight, valid_weight=out.valid_weight
    ).model
    assert plain.booster.model_to_string() != weighted.booster.model_to_string()
    from sklearn.metrics import roc_auc_score

    newest = simulate(1500, 9, start_date="2024-06-01", months=1)
    y = newest["default"].to_numpy()
    assert roc_auc_score(y, plain.predict_scores(newest)) < 0.6  # the two rules cancel out
    assert roc_auc_score(y, weighted.predict_scores(newest)) > 0.7


def test_retrain_budget_applies_only_with_a_champion():
    p = Params.model_validate({"tune": {"n_trials": 30}, "retrain": {"n_trials": 8}})
    assert retrain_budget(p, has_champion=False).tune.n_trials == 30
    assert retrain_budget(p, has_champion=True).tune.n_trials == 8
    assert retrain_budget(Params(), has_champion=True).tune.n_trials == 10  # the default: 10 of 30
    few = Params.model_validate({"tune": {"n_trials": 4}})  # never more than tune.n_trials
    assert retrain_budget(few, has_champion=True).tune.n_trials == 4
    unset = Params.model_validate({"retrain": {"n_trials": None}})
    assert retrain_budget(unset, has_champion=True).tune.n_trials == 30


def test_study_name_changes_with_the_training_data_but_not_with_the_budget(tmp_path):
    f = tmp_path / "train.parquet"
    f.write_bytes(b"x")
    base = study_name(_params(), f)
    assert study_name(_params(n_trials=3), f) == base  # a budget, not an objective
    assert study_name(_params(training_data="recency"), f) != base


def test_effective_rows():
    assert effective_rows(None, 10) == 10
    assert effective_rows(np.ones(10), 10) == pytest.approx(10)
    assert effective_rows(np.array([1.0, 0.0]), 2) == pytest.approx(1)


# --------------------------------------------------------------------------- coreset (retrain.coreset_rows)
@pytest.fixture(scope="module")
def big():
    df = simulate(12000, 5, start_date="2024-01-01", months=6).drop(columns=["application_id"])
    return split(df, Params(), "binary")


def test_coreset_is_a_weighted_stratified_sample_that_represents_every_stratum(big):
    from driftloop.training_data import coreset, pilot_scores

    p = _params(coreset_rows=1500, coreset_bins=8)
    idx, w = coreset(big["train"], p, 1500)
    assert abs(len(idx) - 1500) <= 20 and len(np.unique(idx)) == len(idx) and (np.diff(idx) > 0).all()
    assert w.mean() == pytest.approx(1.0) and (w > 0).all()
    # inverse-probability weights: each class keeps its share of the data (weighted), whatever was oversampled
    y = big["train"]["default"].to_numpy()
    assert np.sum(w * y[idx]) / w.sum() == pytest.approx(y.mean(), abs=0.01)
    # more rows where the pilot is unsure: the sample's mean sqrt(p(1-p)) is above the data's
    s = pilot_scores(big["train"], p, 1500)
    spread = np.sqrt(s * (1 - s))
    assert spread[idx].mean() > spread.mean() * 1.1
    # the same seed, the same coreset
    idx2, w2 = coreset(big["train"], p, 1500)
    assert (idx == idx2).all() and np.allclose(w, w2)


def test_select_applies_the_coreset_and_lightgbm_fits_it(big):
    from driftloop.evaluate import metric_value
    from driftloop.train import train

    p = _params(coreset_rows=2000)
    out = select(big["train"], big["valid"], p)
    assert len(out.train) == pytest.approx(2000, abs=20)
    # valid: the same fraction, uniform, at least 1000 rows
    assert len(out.valid) == max(1000, round(len(big["valid"]) * 2000 / len(big["train"]))) < len(big["valid"])
    assert out.info["rows_before_coreset"] == len(big["train"]) and out.valid_weight is None
    lgb = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0}
    model = train(out.train, out.valid, p, "binary", lgb, weight=out.train_weight).model
    y = model.encoder.encode(big["test"]["default"])
    assert metric_value("binary", "roc_auc", y, model.predict_scores(big["test"])) > 0.7
    # below the size, nothing changes
    small = select(big["train"], big["valid"], _params(coreset_rows=len(big["train"])))
    assert small.train is big["train"] and "coreset_rows" not in small.info


def test_coreset_multiplies_recency_weights(big):
    p = _params(coreset_rows=2000, training_data="recency", half_life_days=30)
    out = select(big["train"], big["valid"], p)
    assert out.train_weight.mean() == pytest.approx(1.0) and len(out.train_weight) == len(out.train)
    t = out.train["application_date"]
    new, old = out.train_weight[(t >= "2024-06-01").to_numpy()], out.train_weight[(t < "2024-02-01").to_numpy()]
    assert new.mean() > 5 * old.mean()
