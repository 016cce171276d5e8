"""The tune stage's validation plan (CV or holdout), search space, samplers, time budget, and the train stage's
final refit on train+valid: real Optuna and LightGBM on a few hundred rows."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from driftloop.config import ConfigError, Params, TuneParams, load_params
from driftloop.runner import TrialProgress, trial_line
from driftloop.tune import (
    LGBM_DEFAULTS,
    LOW_COST_STARTS,
    auto_timeout,
    clip_to_space,
    describe_space,
    lgb_params,
    resolve_timeout,
    tune,
    validation_plan,
)


def _params(**tune_overrides) -> Params:
    tp = {
        "n_trials": 4,
        "max_rounds": 40,
        "early_stopping_rounds": 5,
        "num_threads": 1,
        "n_startup_trials": 2,
        "pruner_warmup_rounds": 5,
        **tune_overrides,
    }
    return Params.model_validate({"tune": tp, "base": {"target": "y"}})


def _data(n: int = 600, seed: int = 0, task: str = "binary"):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(5)})
    signal = X["x0"] + 0.5 * X["x1"] ** 2 + rng.normal(scale=0.7, size=n)
    y = (signal > 0.5).astype(int).to_numpy() if task == "binary" else signal.to_numpy()
    cut = int(n * 0.75)
    return X.iloc[:cut].reset_index(drop=True), y[:cut], X.iloc[cut:].reset_index(drop=True), y[cut:]


# ------------------------------------------------------------------ validation plan
def test_auto_cross_validates_small_data_and_holds_out_above_the_threshold():
    tp = TuneParams(cv_folds="auto", cv_auto_max_rows=1000, cv_auto_folds=5)
    y = np.r_[np.zeros(400, int), np.ones(200, int)]
    plan = validation_plan(tp, "binary", y, 450, seed=1)
    assert plan.kind == "stratified" and plan.n_folds == 5
    for tr, va in plan.folds:  # stratified: every fold keeps the class shares
        assert abs(y[va].mean() - 1 / 3) < 0.02 and len(np.intersect1d(tr, va)) == 0
    assert plan.refit_rounds(100) == 125  # trials fitted on 4/5 of the rows: rounds scaled by 5/4
    big = validation_plan(tp, "binary", np.r_[y, y], 900, seed=1)
    assert big.folds is None and big.describe() == "the validation split"
    assert big.refit_rounds(90) == round(90 * 1200 / 900)
    assert validation_plan(TuneParams(cv_folds=0), "binary", y, 450, seed=1).folds is None
    assert validation_plan(TuneParams(cv_folds=3), "regression", y.astype(float), 450, seed=1).kind == "kfold"


def test_folds_shrink_to_the_smallest_class_and_fall_back_to_holdout():
    y = np.r_[np.zeros(50, int), np.ones(3, int)]
    assert validation_plan(TuneParams(cv_folds=5), "binary", y, 40, seed=0).n_folds == 3
    assert validation_plan(TuneParams(cv_folds=5), "binary", np.r_[np.zeros(50, int), 1], 40, seed=0).folds is None


def test_grouped_and_time_ordered_folds():
    y = np.tile([0, 1], 150)
    groups = np.repeat(np.arange(30), 10)
    plan = validation_plan(TuneParams(cv_folds=4), "binary", y, 200, seed=0, groups=groups)
    assert plan.kind == "group" and plan.n_folds == 4
    for tr, va in plan.folds:
        assert not set(groups[tr]) & set(groups[va])  # a group never straddles folds
    times = pd.date_range("2024-01-01", periods=300, freq="D").to_numpy()[np.random.default_rng(0).permutation(300)]
    plan = validation_plan(TuneParams(cv_folds=3), "binary", y, 200, seed=0, times=times)
    assert plan.kind == "time"
    for tr, va in plan.folds:
        assert times[tr].max() < times[va].min()  # validated on later rows only


# ------------------------------------------------------------------ search space, samplers, budget
def test_space_bounds_fixed_values_and_clipping_of_enqueued_points():
    tp = TuneParams(space={"num_leaves": [8, 8], "learning_rate": [0.05, 0.2], "max_bin": [63]})
    desc = describe_space(tp)
    assert desc["fixed"] == {"num_leaves": 8}
    assert desc["space"]["learning_rate"] == {"low": 0.05, "high": 0.2, "log": True}
    assert clip_to_space(LOW_COST_STARTS[0], tp.space)["learning_rate"] == 0.2
    assert clip_to_space(LGBM_DEFAULTS, tp.space)["max_bin"] == 63
    assert set(LOW_COST_STARTS[0]) == set(LGBM_DEFAULTS)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"sampler": "grid"}, "needs tune.grid"),
        ({"sampler": "grid", "grid": {"leaves": [3]}}, "unknown parameters"),
        ({"space": {"num_leaves": [64, 8]}}, "tune.space.num_leaves"),
        ({"space": {"feature_fraction": [0.5, 1.5]}}, "feature_fraction"),
        ({"cv_folds": 1}, "tune.cv_folds"),
        ({"sampler": "bayes"}, "sampler"),
    ],
)
def test_bad_tune_params_name_the_key(tmp_path, bad, match):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tune": bad}))
    with pytest.raises(ConfigError, match=match):
        load_params(path)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc"])
def test_each_sampler_searches_the_space_and_is_seeded(sampler):
    p = _params(sampler=sampler, n_trials=5, low_cost_start=False, warm_start=False, cv_folds=0)
    data = _data()
    runs = [tune(*data, "binary", 2, p, study_name=f"s-{sampler}") for _ in range(2)]
    first, again = ([t.params for t in r.study.trials] for r in runs)
    assert first == again  # seeded from base.seed
    assert len({tuple(sorted(t.items())) for t in first}) == 5  # distinct configurations
    space = p.tune.space
    for t in first:
        assert space.learning_rate[0] <= t["learning_rate"] <= space.learning_rate[1]
        assert t["max_bin"] in space.max_bin
    assert runs[0].best_params.keys() == LGBM_DEFAULTS.keys()
    reseeded = p.model_copy(update={"base": p.base.model_copy(update={"seed": 7})})
    other = tune(*data, "binary", 2, reseeded, study_name="o")
    assert [t.params for t in other.study.trials] != first


def test_grid_sampler_tries_exactly_the_grid_and_stops():
    p = _params(sampler="grid", grid={"num_leaves": [4, 15], "learning_rate": [0.1, 0.3]}, n_trials=30)
    result = tune(*_data(), "binary", 2, p, study_name="grid")
    tried = sorted((t.params["num_leaves"], t.params["learning_rate"]) for t in result.study.trials)
    assert tried == [(4, 0.1), (4, 0.3), (15, 0.1), (15, 0.3)]
    assert result.best_params["min_child_samples"] == LGBM_DEFAULTS["min_child_samples"]  # not in the grid
    assert isinstance(result.best_params["num_leaves"], int)


def test_low_cost_points_then_defaults_come_first_and_cv_trials_are_not_pruned():
    p = _params(n_trials=4, cv_folds=3)
    result = tune(*_data(), "binary", 2, p, study_name="order")
    trials = result.study.trials
    for trial, expected in zip(trials[:3], [*LOW_COST_STARTS, LGBM_DEFAULTS], strict=True):
        assert {k: trial.params.get(k, v) for k, v in expected.items()} == expected
    assert result.validation == "3-fold CV (stratified) on train+valid"
    assert result.n_pruned == 0 and result.n_complete == 4  # pruning auto: off for cross-validated trials
    assert result.refit_rounds == round(result.best_iteration * 3 / 2)


def test_time_budget_stops_the_study_and_auto_scales_with_the_data():
    assert auto_timeout(100_000, 30) == 180.0
    assert auto_timeout(1_000, 10) == pytest.approx(30.5)
    assert auto_timeout(10_000_000, 30) == 600.0
    assert resolve_timeout(TuneParams(timeout_seconds=12), 10**6, 30) == 12
    assert resolve_timeout(TuneParams(timeout_seconds=None), 10**6, 30) is None
    p = _params(n_trials=500, timeout_seconds=1.0, cv_folds=0)
    result = tune(*_data(), "binary", 2, p, study_name="budget")
    assert 1 <= result.n_complete + result.n_pruned < 500 and result.timeout_seconds == 1.0
    assert result.seconds < 10  # nothing new starts after the deadline
    # a slow trial running at the deadline is stopped there (as pruned), once a trial has completed: LightGBM's
    # defaults (fast), then learning rate 0.001 on a 12,000-row regression (its RMSE improves for
    # thousands of rounds: ~10 s on a quiet machine, the defaults ~0.5 s)
    slow = _params(
        n_trials=2,
        timeout_seconds=3.0,
        cv_folds=0,
        max_rounds=200_000,
        early_stopping_rounds=200,
        low_cost_start=False,
        space={"learning_rate": [0.001, 0.3]},
    )
    t0 = time.perf_counter()
    result = tune(
        *_data(12_000, task="regression"),
        "regression",
        1,
        slow,
        study_name="slow",
        warm_start=[{**LGBM_DEFAULTS, "learning_rate": 0.001}],
    )
    assert time.perf_counter() - t0 < 60  # 200,000 rounds would take many minutes
    states = [t.state.name for t in result.study.trials]
    assert states == ["COMPLETE", "PRUNED"] and result.study.trials[1].params["learning_rate"] == 0.001


def test_progress_shows_the_time_budget():
    line = trial_line(3, 30, 2, 1, 0.8, 65, 500, budget=180)
    assert "1:05 elapsed of a 3:00 budget" in line and "ETA 8:20" in line
    lines = []
    progress = TrialProgress(30, echo=lines.append)
    progress.set_budget(120)
    p = _params(n_trials=2, cv_folds=0)
    tune(*_data(), "binary", 2, p, study_name="progress", callbacks=[progress])
    assert "budget" in lines[0]


# ------------------------------------------------------------------ final refit
def _frames(task: str = "binary"):
    X_tr, y_tr, X_va, y_va = _data(task=task)
    return X_tr.assign(y=y_tr), X_va.assign(y=y_va)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_train_refits_on_train_and_valid_with_scaled_rounds(task):
    from driftloop.train import train

    p = _params(cv_folds=0)
    train_df, valid_df = _frames(task)
    hp = lgb_params(task, 2, p.tune, p.base.seed, dict(LGBM_DEFAULTS))
    refit = train(train_df, valid_df, p, task, hp)
    assert refit.fit_rows == len(train_df) + len(valid_df)
    assert refit.refit_rounds == round(refit.best_iteration * 600 / 450)
    assert refit.model.booster.num_trees() == refit.refit_rounds * (1 if task != "multiclass" else 2)
    assert set(refit.baselines) == {"dummy", "ridge" if task == "regression" else "logistic"}

    p_off = p.model_copy(update={"train": p.train.model_copy(update={"refit": False})})
    holdout = train(train_df, valid_df, p_off, task, hp)
    assert holdout.refit_rounds is None and holdout.fit_rows == len(train_df)
    assert holdout.model.booster.num_trees() == holdout.best_iteration
    # validation metrics and threshold come from the train-only fit in both cases (out of sample)
    assert refit.valid_metrics["lightgbm"] == holdout.valid_metrics["lightgbm"]
    assert refit.model.threshold == holdout.model.threshold
    # the tune stage's rounds (e.g. from CV folds) win over the train-only fit's
    assert train(train_df, valid_df, p, task, hp, refit_rounds=7).model.booster.num_trees() == 7


def test_train_accepts_sample_weights():
    from driftloop.train import train

    p = _params(cv_folds=0)
    train_df, valid_df = _frames()
    hp = lgb_params("binary", 2, p.tune, p.base.seed, dict(LGBM_DEFAULTS))
    w = np.linspace(0.1, 2.0, len(train_df))
    plain = train(train_df, valid_df, p, "binary", hp)
    weighted = train(train_df, valid_df, p, "binary", hp, weight=w)
    X = valid_df.drop(columns="y")
    assert not np.allclose(plain.model.predict_scores(X), weighted.model.predict_scores(X))


# ------------------------------------------------------------------ class weights
def test_class_weighting_by_params():
    from driftloop.tune import class_weighting, row_weights

    y = np.r_[np.zeros(95, int), np.ones(5, int)]
    assert class_weighting("binary", y, "balanced", 0.2) == {"fixed": {"scale_pos_weight": 19.0}}
    assert class_weighting("binary", y, "auto", 0.2) == {"choose": [1.0, pytest.approx(19.0**0.5), 19.0]}
    assert class_weighting("binary", np.tile([0, 1], 50), "auto", 0.2) == {}  # balanced data: nothing
    assert class_weighting("binary", y, "none", 0.2) == {} and class_weighting("regression", y, "balanced", 0.2) == {}
    multi = class_weighting("multiclass", np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)], "balanced", 0.2)
    np.testing.assert_allclose(multi["class_weights"], [100 / 180, 100 / 90, 100 / 30])
    np.testing.assert_allclose(row_weights(multi, np.array([2, 0]), np.array([2.0, 1.0])), [200 / 30, 100 / 180])


def test_auto_class_weight_tunes_unweighted_and_chooses_the_weight_on_held_out_pr_auc(monkeypatch, tmp_path):
    """auto: the study is the unweighted one; the train stage scores scale_pos_weight 1, sqrt(neg/pos) and neg/pos
    by held-out PR AUC and keeps the best, the unweighted model on a tie (issue 14: searching the weight in the
    study gave a lower test PR AUC than none)."""
    from driftloop import train as train_module
    from driftloop.train import train

    X_tr, y_tr, X_va, y_va = _data(800)
    rare = lambda y, X: (y & (X["x2"].to_numpy() > 0.8)).astype(int)  # noqa: E731 - ~10 % positives
    y_tr, y_va = rare(y_tr, X_tr), rare(y_va, X_va)
    p = _params(n_trials=4, cv_folds=0).model_copy(
        update={"train": Params().train.model_copy(update={"class_weight": "auto", "candidates": []})}
    )
    p_none = p.model_copy(update={"train": p.train.model_copy(update={"class_weight": "none"})})
    auto = tune(X_tr, y_tr, X_va, y_va, "binary", 2, p, study_name="cw")
    none = tune(X_tr, y_tr, X_va, y_va, "binary", 2, p_none, study_name="cw0")
    assert auto.lgb_params == none.lgb_params and "scale_pos_weight" not in auto.lgb_params  # the same study
    from driftloop.pipeline import study_name

    f = tmp_path / "train.parquet"
    f.write_bytes(b"rows")
    balanced = p.model_copy(update={"train": p.train.model_copy(update={"class_weight": "balanced"})})
    assert study_name(p, f) == study_name(p_none, f) != study_name(balanced, f)  # auto resumes the unweighted study
    train_df, valid_df = X_tr.assign(y=y_tr), X_va.assign(y=y_va)
    result = train(train_df, valid_df, p, "binary", auto.lgb_params)
    table = result.class_weight["candidates"]
    ratio = (y_tr == 0).sum() / (y_tr == 1).sum()
    assert [r["scale_pos_weight"] for r in table] == pytest.approx([1.0, ratio**0.5, ratio])
    chosen = result.class_weight["chosen"]
    sure = [r for r in table[1:] if r["pr_auc"] > table[0]["pr_auc"] and r["gain_low"] > 0]
    assert chosen == (max(sure, key=lambda r: r["pr_auc"])["scale_pos_weight"] if sure else 1.0)
    assert result.lgb_params.get("scale_pos_weight", 1.0) == chosen
    assert "class_weight" not in train(train_df, valid_df, p_none, "binary", none.lgb_params).class_weight
    # after a cross-validated study: scored out of fold on the tune folds, with rounds for train + valid
    p_cv = p.model_copy(update={"tune": p.tune.model_copy(update={"cv_folds": 3})})
    cv = train(train_df, valid_df, p_cv, "binary", auto.lgb_params, tuned_cv=("auc", auto.best_value))
    assert cv.class_weight["validation"].startswith("3-fold CV")
    assert all(r["rounds"] >= 1 for r in cv.class_weight["candidates"])
    # the noise guard: a clear gain's low bound is above 0; the same scores' is 0; a noisy copy's below 0
    from driftloop.train import _pr_auc_gain_low

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.05).astype(int)
    weak = y * 0.5 + rng.random(2000)
    assert _pr_auc_gain_low(y, weak, y * 2.0 + rng.random(2000), 0) > 0.1
    assert _pr_auc_gain_low(y, weak, weak, 0) == 0.0
    assert _pr_auc_gain_low(y, weak, weak + rng.normal(scale=0.05, size=2000), 0) < 0
    # a weight that measures better is taken (and refit); one that measures worse never is
    scores = {1.0: 0.30, ratio**0.5: 0.35, ratio: 0.20}
    real = train_module._choose_scale_pos_weight

    def rigged(candidates, *args):
        out = real(candidates, *args)
        for row in out["candidates"]:
            row["pr_auc"] = min(scores.items(), key=lambda kv: abs(kv[0] - row["scale_pos_weight"]))[1]
        out["chosen"] = max(out["candidates"], key=lambda r: (r["pr_auc"], -r["scale_pos_weight"]))["scale_pos_weight"]
        return out

    monkeypatch.setattr(train_module, "_choose_scale_pos_weight", rigged)
    weighted = train(train_df, valid_df, p, "binary", auto.lgb_params)
    assert weighted.lgb_params["scale_pos_weight"] == pytest.approx(ratio**0.5)
    X = valid_df.drop(columns="y")
    assert not np.allclose(weighted.model.predict_scores(X), result.model.predict_scores(X))


# ------------------------------------------------------------------ algorithm selection
def _linear_frames(n: int = 500, seed: int = 3):
    """A target linear in the features (a logistic model's home ground), with a categorical and missing values."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(4)})
    df["city"] = rng.choice(["a", "b", "c"], size=n)
    margin = df["x0"] - df["x1"] + 0.5 * df["x2"] + (df["city"] == "b") * 0.8
    df["y"] = (margin + rng.logistic(scale=0.3, size=n) > 0).astype(int)
    df.loc[rng.choice(n, 40, replace=False), "x3"] = np.nan
    cut = int(n * 0.7)
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)


def test_linear_model_wins_on_linear_data_and_is_stored_as_json(tmp_path):
    from driftloop import artifacts
    from driftloop.linear import LinearModel
    from driftloop.train import train

    p = _params(cv_folds=0)
    train_df, valid_df = _linear_frames()
    result = train(train_df, valid_df, p, "binary", lgb_params("binary", 2, p.tune, 0, dict(LGBM_DEFAULTS)))
    table = {r["model"]: r for r in result.selection}
    assert set(table) == {"lightgbm", "logistic", "hist_gradient_boosting"}
    assert not table["hist_gradient_boosting"]["selectable"]
    assert table["logistic"]["selected"] and table["logistic"]["valid"] > table["lightgbm"]["valid"]
    model = result.model
    assert model.algorithm == "linear" and isinstance(model.booster, LinearModel)
    assert 0 < model.threshold < 1 and model.calibration is not None
    paths = artifacts.write_model_files(model, tmp_path)  # model.json + JSON coefficients: no pickle
    assert '"format": "driftloop.linear/1"' in (tmp_path / "booster.txt").read_text()
    again = artifacts.read_model_files(paths["model_json"], paths["booster"])
    raw = valid_df.drop(columns="y")
    pd.testing.assert_frame_equal(again.predict_frame(raw), model.predict_frame(raw))
    contrib = model.booster.predict(model.features(raw), pred_contrib=True)  # SHAP plot: exact for a linear model
    np.testing.assert_allclose(contrib.sum(axis=1), model.booster.predict(model.features(raw), raw_score=True))
    assert list(model.feature_importance().index[:2]) != ["x3", "x3"]


def test_a_selected_linear_model_is_named_by_its_algorithm_in_the_test_table(tmp_path):
    """evaluate's ``model`` row (metrics.json, the CLI table, MLflow's algorithm_selection.json) names the
    registered model's algorithm: not "lightgbm (tuned)" when the linear candidate won (issue 14)."""
    from driftloop import cli
    from driftloop.evaluate import evaluate, model_label
    from driftloop.train import train

    p = _params(cv_folds=0)
    train_df, valid_df = _linear_frames()
    result = train(train_df, valid_df, p, "binary", lgb_params("binary", 2, p.tune, 0, dict(LGBM_DEFAULTS)))
    assert result.model.algorithm == "linear"
    metrics = evaluate(
        result.model,
        result.baselines,
        valid_df,
        plots_dir=tmp_path,
        shap_rows=50,
        curve_points=20,
        calibration_bins=5,
        seed=0,
    )
    assert metrics["model"] == "logistic (selected)" and metrics["algorithm"] == "linear"
    # the selected model is the logistic baseline's estimator (refit on train+valid): the same test scores
    assert metrics["test"]["roc_auc"] == pytest.approx(metrics["baselines"]["logistic"]["roc_auc"])
    with cli.out.capture() as cap:
        cli._print_metrics(metrics)
    assert "logistic (selected)" in cap.get() and "lightgbm" not in cap.get()
    # a regression target: the linear model is Ridge
    encoder = type(result.model.encoder).fit(pd.Series([0.5, 1.5]), "regression")
    assert model_label(dataclasses.replace(result.model, encoder=encoder)) == "ridge (selected)"
    lgbm = train(
        train_df,
        valid_df,
        p.model_copy(update={"train": p.train.model_copy(update={"candidates": []})}),
        "binary",
        lgb_params("binary", 2, p.tune, 0, dict(LGBM_DEFAULTS)),
    ).model
    assert model_label(lgbm) == "lightgbm (tuned)"


def test_the_linear_grid_is_log_spaced_and_its_warm_started_path_matches_single_fits():
    from driftloop.linear import C_GRID, LinearModel, selection_key, strength_grid

    assert len(C_GRID) == 13 and min(C_GRID) == 1e-3 and max(C_GRID) == 1e3
    np.testing.assert_allclose(np.diff(np.log10(sorted(C_GRID))), 0.5, atol=1e-3)
    assert strength_grid("binary")[0] == 1e-3 and strength_grid("regression")[0] == 1e3  # strongest first
    train_df, valid_df = _linear_frames()
    X, y, Xv = train_df.drop(columns="y"), train_df["y"].to_numpy(), valid_df.drop(columns="y")
    X["city"], Xv["city"] = X["city"].astype("category"), Xv["city"].astype("category")
    path = LinearModel("binary").path_scores(X, y, Xv)
    assert list(path) == list(strength_grid("binary"))
    for c in (1e-3, 0.1, 10.0):
        np.testing.assert_allclose(path[c], LinearModel("binary", strength=c).fit(X, y).scores(Xv), atol=1e-3)
    assert np.ptp(path[1e-3]) < np.ptp(path[1e3])  # the regularization does act
    Xr, yr = X[["x0", "x1"]], train_df["x0"].to_numpy() * 3 + 1
    ridge = LinearModel("regression").path_scores(Xr, yr, Xv[["x0", "x1"]])
    assert np.abs(ridge[1e-3] - (Xv["x0"].to_numpy() * 3 + 1)).max() < 1e-3  # alpha 1e-3: (nearly) least squares
    # the strength: the primary metric, ties broken by the log loss; a NaN metric never wins
    assert selection_key("binary", {"roc_auc": 0.9, "log_loss": 0.3}) > selection_key(
        "binary", {"roc_auc": 0.9, "log_loss": 0.4}
    )
    assert selection_key("binary", {"roc_auc": float("nan"), "log_loss": 0.1}) < selection_key(
        "binary", {"roc_auc": 0.5, "log_loss": 0.7}
    )
    assert selection_key("regression", {"rmse": 1.0}) > selection_key("regression", {"rmse": 2.0})


def test_lightgbm_stays_on_a_tie_and_without_linear_candidate():
    from driftloop.train import select, train

    tie = {"lightgbm": {"roc_auc": 0.8}, "logistic": {"roc_auc": 0.8}, "dummy": {"roc_auc": 0.5}}
    assert [r["model"] for r in select("binary", tie, True) if r["selected"]] == ["lightgbm"]
    rmse = {"lightgbm": {"rmse": 2.0}, "ridge": {"rmse": 1.5}}
    assert [r["model"] for r in select("regression", rmse, True) if r["selected"]] == ["ridge"]
    assert [r["model"] for r in select("regression", rmse, False) if r["selected"]] == ["lightgbm"]
    p = _params(cv_folds=0)
    p = p.model_copy(update={"train": p.train.model_copy(update={"candidates": []})})
    train_df, valid_df = _linear_frames()
    result = train(train_df, valid_df, p, "binary", lgb_params("binary", 2, p.tune, 0, dict(LGBM_DEFAULTS)))
    assert result.model.algorithm == "lightgbm" and "logistic" in result.baselines  # still a baseline


def test_fold_keys_come_from_the_split_columns_and_the_grid_is_described():
    from driftloop.pipeline import fold_keys

    p = Params.model_validate({"split": {"group_column": "customer", "time_column": "day"}})
    splits = {
        "train": pd.DataFrame({"customer": [1, 2], "day": pd.to_datetime(["2024-01-01", "2024-01-03"])}),
        "valid": pd.DataFrame({"customer": [3], "day": pd.to_datetime(["2024-01-02"])}),
    }
    keys = fold_keys(p, splits)
    assert list(keys["groups"]) == [1, 2, 3] and len(keys["times"]) == 3
    assert fold_keys(Params(), splits) == {}
    grid = describe_space(TuneParams(sampler="grid", grid={"num_leaves": [15, 31]}))
    assert grid["space"] == {"num_leaves": {"grid": [15, 31]}} and grid["fixed"]["learning_rate"] == 0.1


def test_multiclass_balanced_class_weights_train():
    from driftloop.train import train

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=600), "z": rng.normal(size=600)})
    df["y"] = np.select([df["x"] > 1.2, df["x"] > 0], ["rare", "mid"], "low")
    p = _params(cv_folds=0).model_copy(
        update={"train": Params().train.model_copy(update={"class_weight": "balanced", "candidates": []})}
    )
    hp = lgb_params("multiclass", 3, p.tune, 0, dict(LGBM_DEFAULTS))
    weighted = train(df.iloc[:450], df.iloc[450:], p, "multiclass", hp).model
    p_none = p.model_copy(update={"train": p.train.model_copy(update={"class_weight": "none"})})
    plain = train(df.iloc[:450], df.iloc[450:], p_none, "multiclass", hp).model
    rare = weighted.encoder.classes.index("rare")
    X = df.iloc[450:]
    assert weighted.predict_scores(X)[:, rare].mean() > plain.predict_scores(X)[:, rare].mean()


def test_after_a_cross_validated_study_the_selection_compares_cv_means_on_the_same_folds():
    from driftloop.train import train

    p = _params(cv_folds=3, n_trials=3)
    train_df, valid_df = _linear_frames()
    from driftloop.pipeline import _prepared

    _, enc, X_tr, y_tr, X_va, y_va = _prepared(p, {"train": train_df, "valid": valid_df})
    res = tune(X_tr, y_tr, X_va, y_va, "binary", 2, p, study_name="cvsel")
    result = train(train_df, valid_df, p, "binary", res.lgb_params, tuned_cv=(res.metric, res.best_value))
    table = {r["model"]: r for r in result.selection}
    assert table["lightgbm"]["cv_tune"] == pytest.approx(res.best_value)  # the tune folds' (optimistic) value
    assert 0.5 < table["logistic"]["cv"] <= 1 and table["hist_gradient_boosting"]["cv"] is None
    winner = max(("lightgbm", "logistic"), key=lambda m: (table[m]["cv"], m == "lightgbm"))
    assert table[winner]["selected"]
    assert result.model.algorithm == ("linear" if winner == "logistic" else "lightgbm")
    # the comparison: both chosen configurations scored once on the same fresh folds (base.seed + 1)
    from driftloop.evaluate import compute_metrics
    from driftloop.linear import LinearModel

    X_all, y_all = pd.concat([X_tr, X_va], ignore_index=True), np.concatenate([y_tr, y_va])
    fresh = validation_plan(p.tune, "binary", y_all, len(y_tr), p.base.seed + 1)
    tune_folds = validation_plan(p.tune, "binary", y_all, len(y_tr), p.base.seed)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(fresh.folds, tune_folds.folds, strict=True))
    strength = result.baselines["logistic"]["estimator"].strength
    by_hand = [
        compute_metrics(
            "binary",
            y_all[va],
            LinearModel("binary", seed=p.base.seed, strength=strength)
            .fit(X_all.iloc[tr], y_all[tr])
            .scores(X_all.iloc[va]),
        )["roc_auc"]
        for tr, va in fresh.folds
    ]
    assert table["logistic"]["cv"] == pytest.approx(np.mean(by_hand))
    # an optimistic tune value (the best of many trials on its folds) does not win by itself: the fresh folds decide
    lucky = train(train_df, valid_df, p, "binary", res.lgb_params, tuned_cv=("auc", 0.9999))
    assert {r["model"]: r["cv"] for r in lucky.selection} == {r["model"]: r["cv"] for r in result.selection}
    assert lucky.model.algorithm == result.model.algorithm == "linear"  # LightGBM had the tune value 0.9999
    # a metric that is not the primary one (log loss tuned, ROC AUC gated): the validation split decides
    other = train(train_df, valid_df, p, "binary", res.lgb_params, tuned_cv=("binary_logloss", 0.3))
    assert all("cv" not in r for r in other.selection)


def test_a_selected_linear_model_registers_and_loads_verified_through_mlflow(tmp_path, monkeypatch):
    """The linear model behind the same raw-rows interface: logged (JSON, no pickle), registered, loaded verified
    as driftloop's model and as MLflow's pyfunc (models from code), same predictions."""
    from conftest import register_model

    from driftloop import artifacts, tracking
    from driftloop.train import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = Params.model_validate(
        {
            "base": {
                "target": "y",
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "mlartifacts"),
            },
            "tune": {"num_threads": 1, "cv_folds": 0},
        }
    )
    train_df, valid_df = _linear_frames()
    model = train(train_df, valid_df, p, "binary", lgb_params("binary", 2, p.tune, 0, dict(LGBM_DEFAULTS))).model
    assert model.algorithm == "linear"
    client = tracking.connect(p)
    raw = valid_df.drop(columns="y")
    register_model(client, p, model, raw.head(20), "lin")
    loaded = artifacts.load_model("lin", "champion", client)
    assert loaded.algorithm == "linear"
    pd.testing.assert_frame_equal(loaded.predict_frame(raw), model.predict_frame(raw))
    pyfunc = artifacts.load_model("lin", "champion", client, as_pyfunc=True)
    pd.testing.assert_frame_equal(pyfunc.predict(raw).reset_index(drop=True), model.predict_frame(raw))
