"""Performance without labels: calibration stored with the model as JSON, and the CBPE estimate of ROC AUC
and accuracy with its interval -- close to the realized metric under covariate shift, blind to pure concept
drift (the honest limit), and a retrain signal when its drop is real."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from driftloop import artifacts
from driftloop.calibration import Calibration, estimate, expected_auc
from driftloop.config import DriftParams, MonitorParams, Params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.model import DriftloopModel
from driftloop.monitor import decide
from driftloop.train import train

LGB = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1, "seed": 0, "num_threads": 1}


@pytest.fixture(scope="module")
def model():
    p = Params.model_validate({"tune": {"max_rounds": 200, "early_stopping_rounds": 20, "num_threads": 1}})
    s = split(simulate(8000, 1, start_date="2024-01-01", months=6), p, "binary")
    return train(s["train"], s["valid"], p, "binary", LGB).model


def _realized(m, df) -> float:
    return roc_auc_score(m.encoder.encode(df["default"]), m.predict_scores(df))


def test_expected_auc_is_the_mean_realized_auc_when_probabilities_are_true():
    rng = np.random.default_rng(0)
    s = rng.random(3000)
    q = 0.05 + 0.6 * s**2
    draws = [roc_auc_score(y, s) for y in (rng.random((300, 3000)) < q)]
    assert expected_auc(s, q) == pytest.approx(np.mean(draws), abs=0.003)
    # ties in the score count one half, as roc_auc_score does
    s_tied = np.round(s, 1)
    draws = [roc_auc_score(y, s_tied) for y in (rng.random((300, 3000)) < q)]
    assert expected_auc(s_tied, q) == pytest.approx(np.mean(draws), abs=0.003)


def test_calibration_is_fitted_at_training_and_stored_as_json(model, tmp_path):
    cal = Calibration.from_dict(model.calibration)
    assert cal is not None and cal.rows > 1000  # the validation split
    assert np.all(np.diff(cal(np.linspace(0, 1, 50))) >= 0)  # monotone
    paths = artifacts.write_model_files(model, tmp_path)  # model.json + booster text, no pickle
    again = artifacts.read_model_files(paths["model_json"], paths["booster"])
    assert isinstance(again, DriftloopModel) and again.calibration == model.calibration
    with pytest.raises(ValueError, match="model.json: calibration of unknown format"):
        Calibration.from_dict({"format": "pickle", "x": [0], "y": [0]})
    with pytest.raises(ValueError, match="two classes"):
        Calibration.fit(np.zeros(10), np.linspace(0, 1, 10))


def test_estimate_tracks_covariate_shift_and_is_blind_to_pure_concept_drift(model):
    cal = Calibration.from_dict(model.calibration)
    errors, base = [], None
    for seed, drift in ((2, None), (3, DriftParams(covariate_shift=1.0)), (4, DriftParams(covariate_shift=2.0))):
        df = simulate(5000, seed, start_date="2024-07-01", months=1, drift=drift, id_offset=seed * 100_000)
        e = estimate(cal, model.predict_scores(df), model.threshold, seed=0)
        real = _realized(model, df)
        base = base or (e["roc_auc"], real)
        errors.append(abs(e["roc_auc"] - real))
        assert e["roc_auc_low"] < e["roc_auc"] < e["roc_auc_high"]
        acc = np.mean(model.encoder.encode(df["default"]) == (model.predict_scores(df) >= model.threshold))
        assert e["accuracy"] == pytest.approx(acc, abs=0.02)
    assert max(errors) <= 0.02
    # pure concept drift: the inputs (and so the scores) do not move, the labels do: the estimate cannot see it
    df = simulate(5000, 2, start_date="2024-07-01", months=1, drift=DriftParams(concept_drift=3.0), id_offset=200_000)
    e = estimate(cal, model.predict_scores(df), model.threshold, seed=0)
    real = _realized(model, df)
    assert base[1] - real > 0.03  # the realized AUC fell
    assert abs(e["roc_auc"] - base[0]) < 0.01  # the estimate did not move
    assert e["roc_auc"] - real > 0.03


def test_a_significant_estimated_drop_retrains_and_a_noisy_one_warns():
    schema = SimpleNamespace(ok=True, notes=[], messages=[], n_rows=5000, new_categories={})
    mp = MonitorParams(min_rows=10)
    est = {"roc_auc": 0.74, "reference": 0.80, "drop": 0.06, "drop_low": 0.03, "drop_high": 0.09, "confidence": 0.95}
    d = decide(schema, None, None, None, mp, None, estimate=est)
    assert d.status == "retrain" and "CBPE" in d.reasons[0] and d.signals["estimated_drop"] == 0.06
    d = decide(schema, None, None, None, mp, None, estimate={**est, "drop_low": -0.01})
    assert d.status == "warn" and "within the noise" in d.reasons[0]
    off = MonitorParams(min_rows=10, estimated_drop_retrain=None)
    assert decide(schema, None, None, None, off, None, estimate=est).status == "ok"
