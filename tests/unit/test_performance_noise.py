"""A drop that is real: the performance rule counts the noise of the batch's metric and the reference's.

Small drift-free batches scatter around the reference AUC by several points; the old rule (drop >= 0.03)
retrained on a good share of them. With the interval, a retrain needs a drop the noise cannot explain.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from driftloop.config import MonitorParams
from driftloop.monitor import auc_se_delong, auc_se_hanley_mcneil, decide, performance

SCHEMA = SimpleNamespace(ok=True, notes=[], messages=[], n_rows=10_000, new_categories={})
P = MonitorParams(performance_drop_retrain=0.03, min_rows=10)
OLD_RULE = MonitorParams(performance_drop_retrain=0.03, min_rows=10, performance_drop_significant=False)


def scored(n: int, rng, shift: float = 1.2, rate: float = 0.14):
    y = (rng.random(n) < rate).astype(int)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + shift * y - 2)))


def test_auc_standard_errors_agree_with_the_bootstrap():
    rng = np.random.default_rng(0)
    y, p = scored(3000, rng)
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc_score(y[i], p[i]))
    se = float(np.std(boot, ddof=1))
    assert auc_se_delong(y, p) == pytest.approx(se, rel=0.15)
    auc = roc_auc_score(y, p)
    assert auc_se_hanley_mcneil(auc, int(y.sum()), int((1 - y).sum())) == pytest.approx(se, rel=0.25)
    assert auc_se_delong(np.array([1, 0]), np.array([0.4, 0.3])) is None  # too few rows of a class
    assert auc_se_hanley_mcneil(0.8, 0, 10) is None


def test_small_drift_free_batches_do_not_retrain_on_noise():
    rng = np.random.default_rng(1)
    y_ref, p_ref = scored(4000, rng)
    ref = roc_auc_score(y_ref, p_ref)
    ref_se = auc_se_hanley_mcneil(ref, int(y_ref.sum()), int((1 - y_ref).sum()))
    new, old = 0, 0
    n_batches = 200
    for _ in range(n_batches):
        y, p = scored(300, rng)  # the same model, the same population: any drop is noise
        perf = performance(y, p, "binary", ref, reference_se=ref_se)
        assert perf["drop_low"] < perf["drop"] < perf["drop_high"]
        new += decide(SCHEMA, None, None, perf, P, None).status == "retrain"
        old += decide(SCHEMA, None, None, perf, OLD_RULE, None).status == "retrain"
    assert old / n_batches > 0.15  # the size-only rule fires on noise
    assert new / n_batches <= 0.05  # <= 5 % false retrains


def test_a_real_drop_retrains_and_a_noisy_one_warns():
    rng = np.random.default_rng(2)
    y_ref, p_ref = scored(4000, rng)
    ref = roc_auc_score(y_ref, p_ref)
    ref_se = auc_se_hanley_mcneil(ref, int(y_ref.sum()), int((1 - y_ref).sum()))
    y, p = scored(3000, rng, shift=0.6)  # the model got clearly worse
    perf = performance(y, p, "binary", ref, reference_se=ref_se)
    d = decide(SCHEMA, None, None, perf, P, None)
    assert perf["drop"] > 0.05 and perf["drop_low"] > 0
    assert d.status == "retrain" and "interval" in d.reasons[0]
    y, p = scored(120, rng, shift=0.9)  # a drop of a few points on 120 rows: within the noise
    perf = performance(y, p, "binary", ref, reference_se=ref_se)
    if perf["drop"] >= 0.03:
        d = decide(SCHEMA, None, None, perf, P, None)
        assert d.status == "warn" and "within the noise" in d.reasons[0]
        assert d.signals["performance_drop_low"] <= 0


def test_error_metrics_get_a_bootstrap_interval_in_relative_units():
    rng = np.random.default_rng(3)
    y = rng.normal(size=500)
    perf = performance(y, y + rng.normal(0, 1.0, 500), "regression", 0.5, n_bootstrap=100, seed=0)
    assert perf["drop_kind"] == "relative" and perf["drop"] > 0.5  # rmse ~1.0 vs 0.5
    assert perf["value_se"] > 0 and perf["drop_low"] > 0
    assert any("reference metric's noise is unknown" in n for n in perf["notes"])
    d = decide(SCHEMA, None, None, perf, MonitorParams(min_rows=10), None)
    assert d.status == "retrain"
