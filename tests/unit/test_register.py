"""The registry gate's paired bootstrap: vectorized resample metrics against sklearn on the repeated rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from driftloop import register as reg
from driftloop.evaluate import metric_value
from driftloop.register import bootstrap_improvement


def binary_data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    # rounded scores: many ties, within and across the classes; a few at the clipping bounds
    new = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1).round(2)
    old = np.clip(0.3 + 0.1 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1).round(1)
    return y, new, old


def regression_data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y, y + rng.normal(0, 0.5, n), y + rng.normal(0, 0.8, n)


def multiclass_data(n: int = 300, seed: int = 0, k: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    new = rng.dirichlet(np.ones(k), n)
    new[np.arange(n), y] += 0.6
    new /= new.sum(axis=1, keepdims=True)
    old = rng.dirichlet(np.ones(k), n)
    old[:5] = np.eye(k)[y[:5]]  # certain (clipped) predictions
    return y, new, old


def integer_weights(n: int, seed: int) -> np.ndarray:
    """Bootstrap counts of one resample, plus a few larger integer weights."""
    rng = np.random.default_rng(seed)
    w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
    w[rng.integers(0, n, 5)] += rng.integers(2, 6, 5)
    return w


@pytest.mark.parametrize("seed", range(5))
def test_weighted_roc_auc_equals_sklearn_on_the_repeated_rows(seed):
    y, new, _ = binary_data(seed=seed)
    assert len(np.unique(new)) < len(new) / 2  # ties
    w = integer_weights(len(y), seed)
    assert (w == 0).any()  # rows left out of the resample
    fast = reg._weighted_metric("binary", "roc_auc", y, new)
    got = fast(w[None, :])[0]
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    assert got == pytest.approx(roc_auc_score(y[rep], new[rep]), rel=0, abs=1e-12)
    assert got == pytest.approx(metric_value("binary", "roc_auc", y[rep], new[rep]), rel=0, abs=1e-12)
    # all weights 1: the unweighted metric
    assert fast(np.ones((1, len(y))))[0] == pytest.approx(roc_auc_score(y, new), rel=0, abs=1e-12)


def test_weighted_roc_auc_ties_count_one_half():
    y = np.array([0, 1, 0, 1, 0])
    s = np.array([0.2, 0.2, 0.5, 0.5, 0.9])
    w = np.array([[1, 1, 1, 1, 1], [2, 1, 0, 3, 1], [0, 2, 1, 0, 0]], dtype=float)
    got = reg._weighted_metric("binary", "roc_auc", y, s)(w)
    for row, value in zip(w.astype(int), got, strict=True):
        rep = np.repeat(np.arange(5), row)
        assert value == pytest.approx(roc_auc_score(y[rep], s[rep]), rel=0, abs=1e-15)
    # 0 and 1e-16 tie after metric_value's clipping to [1e-15, 1 - 1e-15]
    s = np.array([0.0, 1e-16, 0.5, 0.7])
    y = np.array([1, 0, 0, 1])
    assert reg._weighted_metric("binary", "roc_auc", y, s)(np.ones((1, 4)))[0] == metric_value(
        "binary", "roc_auc", y, s
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_single_class_resample_is_nan_and_skipped_like_before():
    y, new, old = binary_data(60, seed=1)
    w = np.where(y == 0, 2.0, 0.0)[None, :]  # only negatives
    for metric in ("roc_auc", "pr_auc"):
        assert math.isnan(reg._weighted_metric("binary", metric, y, new)(w)[0])
    rep = np.repeat(np.arange(len(y)), w[0].astype(int))
    assert math.isnan(metric_value("binary", "roc_auc", y[rep], new[rep]))


METRICS = [
    ("binary", "roc_auc", binary_data),
    ("binary", "pr_auc", binary_data),
    ("binary", "log_loss", binary_data),
    ("binary", "brier", binary_data),
    ("regression", "rmse", regression_data),
    ("regression", "mae", regression_data),
    ("multiclass", "log_loss", multiclass_data),
    ("multiclass", "accuracy", multiclass_data),
]


@pytest.mark.parametrize(("task", "metric", "data"), METRICS)
def test_weighted_metric_equals_metric_value_on_the_repeated_rows(task, metric, data):
    y, new, old = data()
    W = np.stack([integer_weights(len(y), s) for s in range(4)])
    for scores in (new, old):
        got = reg._weighted_metric(task, metric, y, scores)(W)
        for row, value in zip(W.astype(int), got, strict=True):
            rep = np.repeat(np.arange(len(y)), row)
            assert value == pytest.approx(metric_value(task, metric, y[rep], scores[rep]), rel=1e-12, abs=1e-12)


def test_no_vectorized_form_falls_back():
    y, new, _ = multiclass_data()
    assert reg._weighted_metric("multiclass", "macro_f1", y, new) is None
    y, new, _ = regression_data()
    assert reg._weighted_metric("regression", "r2", y, new) is None
    y, new, _ = binary_data()
    assert reg._weighted_metric("binary", "roc_auc", y, np.where(y == 1, np.nan, new)) is None


def generic(monkeypatch, *args, **kwargs):
    """The resample-by-resample loop (what every metric used before), on the same random stream."""
    with monkeypatch.context() as m:
        m.setattr(reg, "_weighted_metric", lambda *a: None)
        return bootstrap_improvement(*args, **kwargs)


@pytest.mark.parametrize(("task", "metric", "data"), METRICS)
def test_vectorized_bootstrap_matches_the_generic_loop(monkeypatch, task, metric, data):
    y, new, old = data()
    kwargs = {"n": 30, "confidence": 0.9, "seed": 7}
    fast = bootstrap_improvement(task, metric, y, new, old, **kwargs)
    slow = generic(monkeypatch, task, metric, y, new, old, **kwargs)
    assert fast == pytest.approx(slow, rel=1e-10, abs=1e-12)
    # the point estimate is the unweighted metric, computed as before
    sign = 1.0 if reg.HIGHER_IS_BETTER[metric] else -1.0
    assert fast[0] == sign * (metric_value(task, metric, y, new) - metric_value(task, metric, y, old))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.filterwarnings("ignore:No positive class found:UserWarning")
def test_bootstrap_with_single_class_resamples_matches_the_generic_loop(monkeypatch):
    y = np.array([0, 0, 0, 0, 0, 1, 0, 1])  # ~1/3 of the resamples miss one class
    new = np.array([0.1, 0.2, 0.2, 0.4, 0.3, 0.9, 0.5, 0.4])
    old = np.array([0.5, 0.2, 0.6, 0.4, 0.1, 0.3, 0.5, 0.7])
    for metric in ("roc_auc", "pr_auc", "log_loss", "brier"):
        kwargs = {"n": 50, "confidence": 0.8, "seed": 3}
        fast = bootstrap_improvement("binary", metric, y, new, old, **kwargs)
        assert fast == pytest.approx(generic(monkeypatch, "binary", metric, y, new, old, **kwargs), rel=1e-10)
    # two rows: half the resamples have a single class
    args = ("binary", "roc_auc", np.array([0, 1]), new[:2], old[:2])
    fast = bootstrap_improvement(*args, **kwargs)
    assert fast == (1.0, 1.0, 1.0) == generic(monkeypatch, *args, **kwargs)
    # a single class everywhere: no estimate, no interval, as before
    point, lo, hi = bootstrap_improvement("binary", "roc_auc", np.zeros(8, dtype=int), new, old, **kwargs)
    assert math.isnan(point) and math.isnan(lo) and math.isnan(hi)


def test_chunking_does_not_change_the_result(monkeypatch):
    y, new, old = binary_data()
    kwargs = {"n": 50, "confidence": 0.95, "seed": 11}
    whole = bootstrap_improvement("binary", "roc_auc", y, new, old, **kwargs)
    monkeypatch.setattr(reg, "_BOOTSTRAP_BYTES", 7 * 8 * reg._BOOTSTRAP_TEMPS * len(y))  # chunks of 7
    assert bootstrap_improvement("binary", "roc_auc", y, new, old, **kwargs) == whole
    monkeypatch.setattr(reg, "_BOOTSTRAP_BYTES", 1)  # one resample at a time
    assert bootstrap_improvement("binary", "roc_auc", y, new, old, **kwargs) == whole


def test_interval_brackets_the_point_and_is_deterministic():
    y, new, old = binary_data(2000, seed=4)
    kwargs = {"n": 300, "confidence": 0.95}
    point, lo, hi = bootstrap_improvement("binary", "roc_auc", y, new, old, seed=42, **kwargs)
    assert point > 0
    assert lo < point < hi
    assert lo > 0  # a clear improvement
    assert bootstrap_improvement("binary", "roc_auc", y, new, old, seed=42, **kwargs) == (point, lo, hi)
    other = bootstrap_improvement("binary", "roc_auc", y, new, old, seed=43, **kwargs)
    assert other[0] == point and other[1:] != (lo, hi)
    # identical models: exactly no improvement on every resample
    assert bootstrap_improvement("binary", "roc_auc", y, new, new.copy(), seed=42, **kwargs) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- the problem a model solves
def test_problem_mismatch_names_every_difference():
    from driftloop.register import problem_mismatch

    credit = {"target": "default", "task": "binary", "classes": ["0", "1"]}
    assert problem_mismatch(credit, dict(credit)) is None
    assert problem_mismatch(credit, {**credit, "classes": ["1", "0"]}) == "positive class '1' vs '0'"
    churn = {"target": "churn", "task": "binary", "classes": ["no", "yes"]}
    assert problem_mismatch(credit, churn) == "target 'default' vs 'churn'; classes ['0', '1'] vs ['no', 'yes']"
    multi = {"target": "grade", "task": "multiclass", "classes": ["A", "B", "C"]}
    assert problem_mismatch(multi, {**multi, "classes": ["C", "B", "A"]}) is None  # order is no difference
    assert problem_mismatch(multi, {**multi, "classes": ["A", "B", "C", "D"]}).startswith("classes")
    assert problem_mismatch(multi, {**multi, "task": "regression", "classes": []}) == "task multiclass vs regression"


def test_check_same_problem_raises_a_registry_error_naming_the_way_out():
    from types import SimpleNamespace

    from driftloop.errors import RegistryError
    from driftloop.model import TargetEncoder
    from driftloop.register import check_same_problem

    new = SimpleNamespace(target="churn", task="binary", encoder=TargetEncoder("binary", ["no", "yes"]))
    mv = SimpleNamespace(version="3", tags={})
    check_same_problem("shop", None, None, new)  # no champion: nothing to compare
    check_same_problem("shop", mv, None, new)  # unknown problem: the gate's not_comparable path decides
    check_same_problem("shop", mv, {"target": "churn", "task": "binary", "classes": ["no", "yes"]}, new)
    with pytest.raises(RegistryError, match=r"version 3\): target 'default' vs 'churn'.*'shop-churn'"):
        check_same_problem("shop", mv, {"target": "default", "task": "binary", "classes": ["no", "yes"]}, new)
