"""The binary decision threshold: chosen on validation rows for the objective in params (F1, a recall floor, a cost
matrix), stored with the model (model.json) and used by predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import fit_model
from pydantic import ValidationError

from driftloop.config import Params
from driftloop.data.simulate import DATE_COLUMN, ID_COLUMN, simulate
from driftloop.model import DriftloopModel
from driftloop.train import choose_threshold


def scores(n: int = 2000, seed: int = 0, rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.8 * y - 2.5)))
    return y, p


def confusion(y, p, t):
    pred = p >= t
    return int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum()), int((pred & (y == 1)).sum())


@pytest.mark.parametrize("floor", [0.5, 0.8, 0.95])
def test_recall_floor_is_the_best_precision_with_enough_recall(floor):
    y, p = scores()
    t = choose_threshold(y, p, "recall_floor", min_recall=floor)
    fp, fn, tp = confusion(y, p, t)
    assert tp / (tp + fn) >= floor
    best = 0.0  # brute force over every candidate threshold
    for c in np.unique(p):
        cfp, cfn, ctp = confusion(y, p, c)
        if ctp / (ctp + cfn) >= floor:
            best = max(best, ctp / (ctp + cfp))
    assert tp / (tp + fp) == pytest.approx(best)


@pytest.mark.parametrize(("cost_fp", "cost_fn"), [(1, 1), (1, 10), (10, 1), (1, 1000)])
def test_cost_threshold_minimizes_the_cost_on_these_rows(cost_fp, cost_fn):
    y, p = scores()
    t = choose_threshold(y, p, "cost", cost_fp=cost_fp, cost_fn=cost_fn)
    fp, fn, _ = confusion(y, p, t)
    brute = min(cost_fp * a + cost_fn * b for a, b, _ in (confusion(y, p, c) for c in [*np.unique(p), 1.1]))
    assert cost_fp * fp + cost_fn * fn == pytest.approx(brute)


def test_expensive_misses_lower_the_threshold_expensive_alarms_raise_it():
    y, p = scores()
    cheap_alarm = choose_threshold(y, p, "cost", cost_fp=1, cost_fn=20)
    dear_alarm = choose_threshold(y, p, "cost", cost_fp=20, cost_fn=1)
    assert cheap_alarm < choose_threshold(y, p, "cost") < dear_alarm
    assert cheap_alarm > 0 and dear_alarm <= 1


def test_f1_and_youden_unchanged_and_a_single_class_gives_one_half():
    y, p = scores()
    t = choose_threshold(y, p, "f1")
    f1 = {c: 2 * tp / (2 * tp + fp + fn) for c in np.unique(p) for fp, fn, tp in [confusion(y, p, c)]}
    assert 2 * confusion(y, p, t)[2] / (2 * confusion(y, p, t)[2] + sum(confusion(y, p, t)[:2])) == pytest.approx(
        max(f1.values())
    )
    assert 0 < choose_threshold(y, p, "youden") < 1
    assert choose_threshold(np.zeros(10), np.linspace(0, 1, 10), "cost") == 0.5


def test_unknown_objective_is_refused_naming_the_key():
    with pytest.raises(ValidationError, match="threshold_metric"):
        Params.model_validate({"train": {"threshold_metric": "precision"}})
    with pytest.raises(ValidationError, match="threshold_cost_fn"):
        Params.model_validate({"train": {"threshold_cost_fn": 0}})


def test_the_threshold_is_stored_with_the_model_and_used_by_predictions():
    df = simulate(3000, 3)
    df = df.drop(columns=[ID_COLUMN, DATE_COLUMN])
    base = {"base": {"target": "default", "seed": 1}, "tune": {"max_rounds": 40, "num_threads": 1}}
    floor = Params.model_validate({**base, "train": {"threshold_metric": "recall_floor", "threshold_min_recall": 0.9}})
    f1 = Params.model_validate(base)
    m_floor, parts = fit_model(floor, df, "binary")
    m_f1, _ = fit_model(f1, df, "binary")
    assert m_floor.threshold < m_f1.threshold  # a high recall floor needs a lower threshold
    y_valid = m_floor.encoder.encode(parts["valid"]["default"])
    _, _, tp = confusion(y_valid, m_floor.predict_scores(parts["valid"]), m_floor.threshold)
    assert tp / (y_valid == 1).sum() >= 0.9
    d = json.loads(json.dumps(m_floor.to_dict()))
    assert d["threshold"] == m_floor.threshold and "recall >= 0.9" in d["threshold_objective"]
    again = DriftloopModel.from_parts(d, m_floor.booster_text())
    assert again.threshold == m_floor.threshold and again.threshold_objective == m_floor.threshold_objective
    test = parts["test"]
    out = again.predict_frame(test)
    expected = np.where(again.predict_scores(test) >= again.threshold, 1, 0)
    assert (out["prediction"].astype(int).to_numpy() == expected).all()
    assert (
        isinstance(out, pd.DataFrame)
        and (out["prediction"] == 1).mean() > (m_f1.predict_frame(test)["prediction"] == 1).mean()
    )
