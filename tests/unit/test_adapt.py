"""retrain.adapt (driftloop.adapt): a retrain after concept drift revises the older model's feature effects on the
newest period's rows and averages it with the retrain -- adopted only on out-of-fold evidence, folded exactly into one
ordinary LightGBM model, and better than the plain retrain on the month after."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from driftloop import artifacts
from driftloop.adapt import PathTables, Revision, fit_revision, merged_model
from driftloop.config import DriftParams, Params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.model import DriftloopModel
from driftloop.pipeline import newest_period_rows
from driftloop.train import train

LGB = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1, "seed": 0, "num_threads": 1}
TIME = "application_date"


def _contrib(rng, n: int, p: int = 4) -> np.ndarray:
    phi = rng.normal(0.0, 1.0, (n, p))
    return np.column_stack([phi, np.full(n, -1.0)])  # the bias column


def test_a_flipped_and_a_doubled_effect_are_recovered_and_adopted():
    rng = np.random.default_rng(0)
    c = _contrib(rng, 4000)
    truth = c[:, -1] + c[:, 0] - c[:, 1] + 2.0 * c[:, 2] + c[:, 3]  # feature 1 flipped, feature 2 doubled
    y = (rng.random(len(c)) < 1 / (1 + np.exp(-truth))).astype(int)
    revision, evidence = fit_revision(c, y, seed=0)
    assert evidence["adopted"] and evidence["z"] > 5
    assert evidence["log_loss_revised_oof"] < evidence["log_loss_base"]
    np.testing.assert_allclose(revision.delta, [0.0, -2.0, 1.0, 0.0], atol=0.25)


def test_no_change_in_the_effects_is_not_adopted():
    rng = np.random.default_rng(1)
    c = _contrib(rng, 3000)
    y = (rng.random(len(c)) < 1 / (1 + np.exp(-c.sum(axis=1)))).astype(int)
    revision, evidence = fit_revision(c, y, seed=0)
    assert not evidence["adopted"], evidence
    assert np.abs(revision.delta).max() < 0.3


def _drifted_history(seed: int = 3) -> pd.DataFrame:
    """Six months of 2024 without drift, then a month of concept drift (the newest period)."""
    old = simulate(8000, seed, start_date="2024-01-01", months=6)
    new = simulate(
        4000, seed + 1, start_date="2024-07-01", months=1, drift=DriftParams(concept_drift=1.0), id_offset=10**6
    )
    return pd.concat([old, new], ignore_index=True)


def _params(adapt: str) -> Params:
    return Params.model_validate(
        {
            "tune": {"max_rounds": 300, "early_stopping_rounds": 20, "num_threads": 1},
            "split": {"time_column": TIME, "test_size": 0.33, "valid_size": 0.1, "time_test_share": 0.5},
            "retrain": {"adapt": adapt},
        }
    )


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """The time split of the drifted history, the test file, and the month after (drifted too)."""
    p = _params("revise")
    s = split(_drifted_history(), p, "binary")
    test_path = tmp_path_factory.mktemp("split") / "test.parquet"
    s["test"].to_parquet(test_path)
    after = simulate(4000, 99, start_date="2024-08-01", months=1, drift=DriftParams(concept_drift=1.0))
    return s, test_path, after


def _fit(drifted, adapt: str):
    s, test_path, _ = drifted
    p = _params(adapt)
    recent = newest_period_rows(p, s["valid"], test_path)
    return train(s["train"], s["valid"], p, "binary", LGB, recent=recent)


def _auc(model: DriftloopModel, df: pd.DataFrame) -> float:
    return roc_auc_score(model.encoder.encode(df["default"]), model.predict_scores(df))


def test_the_newest_period_rows_are_the_valid_rows_of_the_test_period(drifted):
    s, test_path, _ = drifted
    recent = newest_period_rows(_params("revise"), s["valid"], test_path)
    times = pd.to_datetime(s["valid"][TIME])
    assert recent.sum() > 1000 and (~recent).sum() > 0  # the test period's other half, and the period before it
    test_start = pd.to_datetime(s["test"][TIME]).min()
    assert times[recent].min() >= test_start > times[~recent].max()
    assert times[recent].min() >= pd.Timestamp("2024-07-01")  # the drifted month
    assert newest_period_rows(Params(), s["valid"], test_path) is None  # no time split: nothing to adapt to
    shared = Params.model_validate({"split": {"time_column": TIME, "time_test_share": 1.0}})
    assert newest_period_rows(shared, s["valid"], test_path) is None  # the whole period is test: none is fitted


def test_a_retrain_after_concept_drift_is_revised_and_beats_the_plain_retrain_the_month_after(drifted, tmp_path):
    plain, adapted = _fit(drifted, "none"), _fit(drifted, "revise")
    assert not plain.model.revised and plain.adaptation == {}
    assert adapted.model.revised and adapted.adaptation["adopted"], adapted.adaptation
    after = drifted[2]
    assert _auc(adapted.model, after) > _auc(plain.model, after) + 0.01

    # stored as model.json + booster.txt, an ordinary LightGBM text model, with the revision's evidence for the record
    files = artifacts.write_model_files(adapted.model, tmp_path / "m")
    loaded = artifacts.read_model_files(files["model_json"], files["booster"])
    assert loaded.revised and loaded.to_dict()["adaptation"]["adopted"]
    assert set(loaded.adaptation["delta"]) <= set(loaded.preprocessor.original_name.values())
    np.testing.assert_allclose(loaded.predict_scores(after), adapted.model.predict_scores(after), rtol=1e-9)


def _booster(X: pd.DataFrame, y: np.ndarray, seed: int, rounds: int):
    import lightgbm as lgb

    return lgb.train({**LGB, "seed": seed}, lgb.Dataset(X, y), rounds)


def test_path_contributions_add_up_and_the_merged_model_is_the_mean_of_the_retrain_and_the_revised_base():
    rng = np.random.default_rng(2)
    X = pd.DataFrame(rng.normal(size=(1500, 4)), columns=["a", "b", "c", "d"])
    X["e"] = pd.Categorical(rng.choice(["x", "y", "z"], len(X)))
    y = (X["a"] - X["b"] + (X["e"] == "x") + rng.normal(size=len(X)) > 0).astype(int).to_numpy()
    main, base = _booster(X, y, 0, 40), _booster(X.iloc[:800], y[:800], 1, 25)
    paths = PathTables.of(base)
    contrib = paths.contributions(base, X)
    np.testing.assert_allclose(contrib.sum(axis=1), base.predict(X, raw_score=True), atol=1e-9)
    revision = Revision(np.array([0.5, -2.0, 0.0, 0.3, 1.0]), -0.2, 1.0)
    merged = merged_model(main, base, paths, revision)
    expected = 0.5 * (main.predict(X, raw_score=True) + revision.raw(contrib))
    np.testing.assert_allclose(merged.predict(X, raw_score=True), expected, atol=1e-9)
    assert merged.num_trees() == main.num_trees() + base.num_trees()

    other = _booster(X.drop(columns="d"), y, 0, 5)  # another feature set: not merged
    with pytest.raises(ValueError, match="same features"):
        merged_model(main, other, PathTables.of(other), revision)
