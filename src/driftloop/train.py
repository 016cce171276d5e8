"""Train stage: fit LightGBM with the tuned parameters on the train split (trees from early stopping on
the validation split), pick the binary decision threshold and the calibration on its validation scores,
then (``train.refit``) refit the same configuration on train + valid with the tuned rounds scaled to the
larger data: that refit is the model evaluated, gated and registered. The baselines (dummy; logistic
regression or Ridge) are fitted the same way, validated on the split and refit on train + valid.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.features import Preprocessor
from driftloop.model import DriftloopModel, TargetEncoder


@dataclass
class TrainResult:
    model: DriftloopModel
    baselines: dict[str, dict[str, Any]]  # name -> {estimator (on preprocessed features), threshold}
    valid_metrics: dict[str, dict[str, float]]  # model name -> metrics on the validation split
    # the trees of the model fitted on train (early stopping) and of the final model (refit: rounds scaled)
    best_iteration: int = 0
    refit_rounds: int | None = None  # None: no refit (train.refit false)
    fit_rows: int = 0  # rows the final model was fitted on
    selection: list[dict[str, Any]] = field(default_factory=list)  # algorithm selection table (validation split)
    # train.class_weight auto: the scale_pos_weight candidates' validation PR AUC and the one chosen
    class_weight: dict[str, Any] = field(default_factory=dict)
    lgb_params: dict[str, Any] = field(default_factory=dict)  # LightGBM's parameters as fitted
    # retrain.adapt: the model revision's evidence on the newest period's rows and whether it was adopted
    adaptation: dict[str, Any] = field(default_factory=dict)


def feature_frame(df: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Raw feature columns: everything but the target and the split-only columns."""
    drop = {params.base.target}
    if params.split.group_column:
        drop.add(params.split.group_column)
    return df.drop(columns=[c for c in drop if c in df.columns])


def choose_threshold(
    y: np.ndarray,
    p: np.ndarray,
    how: str,
    *,
    min_recall: float = 0.8,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
) -> float:
    """The binary decision threshold (predict positive when ``p >= threshold``) chosen on held-out rows for ``how``:

    - ``f1``: the best F1;
    - ``youden``: the best TPR - FPR;
    - ``recall_floor``: the best precision among thresholds whose recall is at least ``min_recall`` (ties: the
      highest threshold);
    - ``cost``: the least ``cost_fp * false positives + cost_fn * false negatives`` (ties: the highest threshold;
      predicting no positive at all is a candidate: threshold just above the highest score, capped at 1).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    if how == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        return float(np.clip(thr[np.argmax(tpr - fpr)], 0, 1))
    if how == "cost":
        fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)  # thr decreasing; thr[0] = inf: no positive
        n_pos, n_neg = int((y == 1).sum()), int((y != 1).sum())
        cost = cost_fp * fpr * n_neg + cost_fn * (1 - tpr) * n_pos
        best = int(np.flatnonzero(cost <= cost.min() + 1e-9 * max(1.0, cost.min()))[0])  # the highest threshold
        return float(min(thr[best], 1.0)) if np.isfinite(thr[best]) else float(min(np.nextafter(p.max(), 2), 1.0))
    precision, recall, thr = precision_recall_curve(y, p)  # thr increasing; precision/recall have one more point
    precision, recall = precision[:-1], recall[:-1]
    if how == "recall_floor":
        ok = np.flatnonzero(recall >= min_recall - 1e-12)
        best = ok[np.flatnonzero(precision[ok] >= precision[ok].max() - 1e-12)[-1]]
        return float(thr[best])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thr[np.argmax(f1)]) if len(thr) else 0.5


def threshold_objective(tp) -> str:
    """The objective of ``train`` params in words (stored with the model as ``threshold_objective``)."""
    return {
        "f1": "f1: the best F1 on validation rows",
        "youden": "youden: the best TPR - FPR on validation rows",
        "recall_floor": f"recall_floor: the best precision with recall >= {tp.threshold_min_recall} on validation rows",
        "cost": f"cost: the least {tp.threshold_cost_fp} x FP + {tp.threshold_cost_fn} x FN on validation rows",
    }[tp.threshold_metric]


def threshold_for(y: np.ndarray, p: np.ndarray, tp) -> float:
    """``choose_threshold`` for the objective of ``train`` params (``train.threshold_*``)."""
    return choose_threshold(
        y,
        p,
        tp.threshold_metric,
        min_recall=tp.threshold_min_recall,
        cost_fp=tp.threshold_cost_fp,
        cost_fn=tp.threshold_cost_fn,
    )


def baseline_name(task: str, name: str) -> str:
    """The name a configured baseline is reported under: what is fitted (logistic regression or Ridge)."""
    if name in ("linear", "logistic", "ridge"):
        return "ridge" if task == "regression" else "logistic"
    return name


def baseline_estimators(task: str, names: list[str], pre: Preprocessor, seed: int) -> dict[str, Any]:
    """The configured baselines: a prior/mean dummy, and the regularized linear model of ``driftloop.linear``
    (median imputation + missing indicators, standardised, one-hot on the 30 most frequent categories)."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    from driftloop.linear import LinearModel

    out: dict[str, Any] = {}
    for configured in names:
        name = baseline_name(task, configured)
        if name == "dummy":
            out[name] = DummyRegressor() if task == "regression" else DummyClassifier(strategy="prior")
        else:
            out[name] = LinearModel(task, seed=seed)
    return out


def baseline_scores(estimator, X: pd.DataFrame, task: str) -> np.ndarray:
    if task == "regression":
        return estimator.predict(_for_sklearn(X))
    proba = estimator.predict_proba(_for_sklearn(X))
    return proba[:, 1] if task == "binary" else proba


def _for_sklearn(X: pd.DataFrame) -> pd.DataFrame:
    # sklearn's imputers want object columns, not pandas categoricals with NaN
    return X.apply(
        lambda s: s.astype(object).where(s.notna(), np.nan) if isinstance(s.dtype, pd.CategoricalDtype) else s
    )


def train(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    params: Params,
    task: str,
    lgb_params: dict[str, Any],
    *,
    refit_rounds: int | None = None,
    weight: np.ndarray | None = None,
    valid_weight: np.ndarray | None = None,
    tuned_cv: tuple[str, float] | None = None,
    recent: np.ndarray | None = None,
) -> TrainResult:
    """Fit, validate and (``train.refit``) refit on train + valid; see the module docstring.

    ``refit_rounds``: the tune stage's rounds for train + valid (cross-validated: the folds' best iteration
    scaled from the fold size); None: this fit's early-stopped rounds scaled by (train + valid) / train rows.
    ``weight`` / ``valid_weight``: optional per-row sample weights of the train / valid rows.
    ``tuned_cv``: (LightGBM metric, value) of the tune stage's best trial when it cross-validated: the linear
    candidate's strength is then chosen on the same folds and the selection compares the two chosen configurations'
    CV means on fresh folds (``_linear_cv``; a single small validation split is too noisy to choose by).
    ``recent``: a mask of the valid rows from the newest period (time split, ``split.time_test_share`` < 1), where
    ``retrain.adapt`` revises the model fitted on train alone (``driftloop.adapt``).
    """
    from driftloop.evaluate import compute_metrics
    from driftloop.tune import (
        class_weighting,
        effective_threads,
        fit_booster,
        full_dataset,
        make_datasets,
        row_weights,
    )

    target = params.base.target
    vp = params.validate_params
    encoder = TargetEncoder.fit(train_df[target], task, params.base.positive_class)
    y_train, y_valid = encoder.encode(train_df[target]), encoder.encode(valid_df[target])
    pre = Preprocessor(
        params.features,
        categorical_columns=tuple(vp.categorical_columns),
        date_columns=tuple(vp.date_columns),
    )
    X_train = pre.fit_transform(feature_frame(train_df, params))
    X_valid = pre.transform(feature_frame(valid_df, params))
    # train.class_weight: binary weights are in lgb_params (balanced: scale_pos_weight fixed by the tune stage;
    # auto: chosen below); multiclass "balanced" weights rows, as the tune stage did
    tp = params.train
    weighting = class_weighting(task, y_train, tp.class_weight, tp.minority_share_auto)
    weight, valid_weight = row_weights(weighting, y_train, weight), row_weights(weighting, y_valid, valid_weight)
    if weight is not None and valid_weight is None:
        valid_weight = np.ones(len(y_valid))
    max_bin = lgb_params.get("max_bin")
    dtrain, dvalid = make_datasets(X_train, y_train, X_valid, y_valid, params.tune, max_bin, weight, valid_weight)
    booster = fit_booster(lgb_params, dtrain, dvalid, params.tune)
    class_weight: dict[str, Any] = {}
    if "choose" in weighting:  # train.class_weight auto on imbalanced binary data
        fit = (X_train, y_train, X_valid, y_valid, weight, valid_weight)
        class_weight = _choose_scale_pos_weight(
            weighting["choose"], booster, lgb_params, tuned_cv is not None, params, train_df, valid_df, fit
        )
        if class_weight["chosen"] != 1.0:
            lgb_params = {**lgb_params, "scale_pos_weight": class_weight["chosen"]}
            booster, refit_rounds = fit_booster(lgb_params, dtrain, dvalid, params.tune), class_weight["refit_rounds"]
    best_iteration = booster.best_iteration or booster.current_iteration()
    booster = booster.__class__(model_str=booster.model_to_string(num_iteration=best_iteration))
    model = DriftloopModel(pre, booster, encoder, target, best_iteration=None)
    # the threshold, the calibration and the validation metrics come from this train-only model's scores on
    # rows it never saw; the refit below sees them, so its own validation scores would be in-sample
    valid_scores = model.predict_scores(valid_df)
    if task == "binary":
        model.threshold = threshold_for(y_valid, valid_scores, params.train)
        model.threshold_objective = threshold_objective(params.train)
        if len(np.unique(y_valid)) == 2:  # for label-free performance estimates (driftloop.calibration)
            from driftloop.calibration import Calibration

            model.calibration = Calibration.fit(y_valid, valid_scores).to_dict()
    valid_metrics = {"lightgbm": compute_metrics(task, y_valid, valid_scores, model.threshold)}
    rounds, fit_rows = None, len(X_train)
    X_all = y_all = w_all = None
    if params.train.refit:
        X_all = pd.concat([X_train, X_valid])
        y_all = np.concatenate([y_train, y_valid])
        w_all = None if weight is None else np.concatenate([weight, _ones_if_none(valid_weight, len(y_valid))])
        rounds = refit_rounds or max(1, round(best_iteration * len(X_all) / max(len(X_train), 1)))
        model.booster = refit_booster(lgb_params, full_dataset(X_all, y_all, params.tune, max_bin, w_all), rounds)
        fit_rows = len(X_all)
        if model.calibration is not None:  # the refit model's own calibration (its scores differ from this fit's)
            model.calibration = refit_calibration(lgb_params, X_all, y_all, w_all, rounds, params).to_dict()
    baselines, linear = {}, None
    cv = None
    # scikit-learn's BLAS/OpenMP threads as LightGBM's (one below 20,000 rows): on the shared 2 cores, HistGradient-
    # Boosting's 100 iterations on 455 rows took 14 s on both cores and the linear path 2.7x its one-thread time
    with sklearn_threads(effective_threads(params.tune, len(X_train) + len(X_valid))):
        names = list(params.train.baselines) + (["linear"] if "linear" in params.train.candidates else [])
        if tuned_cv is not None and "linear" in params.train.candidates:
            # LightGBM's rounds for train + valid (as the refit), scaled to each fold's rows in the comparison
            all_rounds = refit_rounds or max(1, round(best_iteration * (len(X_train) + len(X_valid)) / len(X_train)))
            fit = (X_train, y_train, X_valid, y_valid, weight, valid_weight)
            cv = _linear_cv(task, params, train_df, valid_df, fit, tuned_cv, lgb_params, all_rounds)
        for name, est in baseline_estimators(task, names, pre, params.base.seed).items():
            if cv is not None and name != "dummy":
                est.strength = cv["strength"]  # chosen on the folds: fitted as is
                _fit_sample(est, X_train, y_train, params, weight)
            else:
                _fit_sample(est, X_train, y_train, params, weight, (X_valid, y_valid))
            scores = baseline_scores(est, X_valid, task)
            threshold = threshold_for(y_valid, scores, params.train) if task == "binary" else None
            valid_metrics[name] = compute_metrics(task, y_valid, scores, threshold)
            if name != "dummy":
                linear = (name, est, scores, threshold)
            if params.train.refit:  # refit on train + valid like the model it is compared with
                _fit_sample(est, X_all, y_all, params, w_all)
            baselines[name] = {"estimator": est, "threshold": threshold}
        if "hist_gradient_boosting" in params.train.candidates:
            valid_metrics["hist_gradient_boosting"] = _hist_gradient_boosting(
                task, X_train, y_train, X_valid, y_valid, weight, params
            )
    cv_values = None if cv is None else {"lightgbm": cv["lightgbm"], linear[0]: cv["linear"]}
    selection = select(task, valid_metrics, linear is not None and "linear" in params.train.candidates, cv_values)
    if cv is not None:  # the values on the folds that chose each configuration (optimistic), for the record
        for row in selection:
            row["cv_tune"] = {"lightgbm": cv["lightgbm_tune"], linear[0]: cv["linear_tune"]}.get(row["model"])
    if linear is not None and next(r for r in selection if r["selected"])["model"] == linear[0]:
        name, est, scores, threshold = linear
        model = DriftloopModel(pre, est, encoder, target, threshold=threshold, algorithm="linear")
        if task == "binary":
            model.threshold_objective = threshold_objective(params.train)
        if task == "binary" and len(np.unique(y_valid)) == 2:
            from driftloop.calibration import Calibration

            model.calibration = Calibration.fit(y_valid, scores).to_dict()
    adaptation: dict[str, Any] = {}
    if model.algorithm == "lightgbm" and task == "binary" and recent is not None and params.retrain.adapt == "revise":
        adaptation = _adapt(model, booster, X_valid[recent], y_valid[recent], params)
    return TrainResult(
        model,
        baselines,
        valid_metrics,
        int(best_iteration),
        rounds,
        fit_rows,
        selection,
        class_weight,
        lgb_params,
        adaptation,
    )


def _adapt(model: DriftloopModel, base, X_recent: pd.DataFrame, y_recent: np.ndarray, params: Params) -> dict:
    """``retrain.adapt`` revise: ``model``'s booster becomes the mean of itself and ``base`` (fitted on train alone:
    it never saw the newest period) revised on the newest period's rows, when the revision is adopted there
    (``driftloop.adapt``: one merged LightGBM model)."""
    from driftloop.adapt import revise

    n, positives = len(y_recent), int(np.sum(y_recent))
    if n < params.retrain.adapt_min_rows or positives == 0 or positives == n:
        return {"rows": n, "positives": positives, "adopted": False, "reason": "too few newest-period rows"}
    merged, evidence = revise(model.booster, base, X_recent, y_recent, params.base.seed)
    names = model.preprocessor.original_name
    evidence["delta"] = {names.get(k, k): v for k, v in evidence["delta"].items()}
    if merged is not None:
        model.booster = merged
        model.adaptation = evidence
    return evidence


CLASS_WEIGHT_BOOTSTRAP = 200  # class_weight auto: stratified resamples of the held-out rows
CLASS_WEIGHT_QUANTILE = 0.05  # a weight is taken when this quantile of its PR AUC gain over unweighted is > 0


def _pr_auc_gain_low(y: np.ndarray, base: np.ndarray, other: np.ndarray, seed: int) -> float:
    """The ``CLASS_WEIGHT_QUANTILE`` quantile of PR AUC(other) - PR AUC(base) over stratified bootstrap resamples
    of the held-out rows (positives and negatives resampled apart, so every resample has as many events)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y != 1)
    gains = []
    for _ in range(CLASS_WEIGHT_BOOTSTRAP):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        gains.append(average_precision_score(y[idx], other[idx]) - average_precision_score(y[idx], base[idx]))
    return float(np.quantile(gains, CLASS_WEIGHT_QUANTILE))


def _choose_scale_pos_weight(candidates, booster, lgb_params, cross_validated, params, train_df, valid_df, fit):
    """``train.class_weight: auto``: the tuned (unweighted) configuration with each ``scale_pos_weight`` of
    ``candidates`` (1 first), scored by PR AUC (the minority class's metric) on held-out rows the way the tune stage
    validated: out of fold on its CV folds (each fold early-stopped), else the validation split (``booster``: the
    unweighted fit). A weight is kept only when it beats the unweighted model on those rows beyond resampling
    noise (``_pr_auc_gain_low`` > 0; then the best such, the least weight on a tie), so auto is the unweighted
    model unless weighting measured better. Searching the weight inside the study (an earlier version) gave a
    lower test PR AUC than no weighting (issue 14). Returns the table, ``chosen`` and its rounds for train + valid
    (None: from the fit)."""
    import lightgbm as lgb
    from sklearn.metrics import average_precision_score

    from driftloop.tune import fit_booster, fold_keys, full_dataset, make_datasets, validation_plan

    X_train, y_train, X_valid, y_valid, weight, valid_weight = fit
    tp, seed = params.tune, params.base.seed
    y_all = np.concatenate([y_train, y_valid])
    plan = None
    if cross_validated:
        plan = validation_plan(tp, "binary", y_all, len(y_train), seed, **fold_keys(params, train_df, valid_df))
    rows, held = [], {}  # held: the held-out labels and scores of each candidate (pooled out of fold under CV)
    for spw in candidates:
        p = {**lgb_params, "scale_pos_weight": spw}
        if plan is None or plan.folds is None:
            if spw == 1.0 and lgb_params.get("scale_pos_weight", 1.0) == 1.0:
                b = booster
            else:
                data = make_datasets(X_train, y_train, X_valid, y_valid, tp, p.get("max_bin"), weight, valid_weight)
                b = fit_booster(p, *data, tp)
            best = b.best_iteration or b.current_iteration()
            held[spw] = (y_valid, b.predict(X_valid, num_iteration=best))
            value, rounds = average_precision_score(*held[spw]), None
        else:
            X_all = pd.concat([X_train, X_valid], ignore_index=True)
            w_all = None if weight is None else np.concatenate([weight, _ones_if_none(valid_weight, len(y_valid))])
            res = lgb.cv(
                p,
                full_dataset(X_all, y_all, tp, p.get("max_bin"), w_all),
                num_boost_round=tp.max_rounds,
                folds=plan.folds,
                seed=seed,
                callbacks=[lgb.early_stopping(tp.early_stopping_rounds, verbose=False)],
                return_cvbooster=True,
            )
            cvb = res["cvbooster"]
            best = cvb.best_iteration
            oof = np.empty(len(y_all))
            values = []
            for b, (_, va) in zip(cvb.boosters, plan.folds, strict=True):
                oof[va] = b.predict(X_all.iloc[va], num_iteration=best)
                values.append(average_precision_score(y_all[va], oof[va]))
            held[spw] = (y_all, oof)
            value, rounds = float(np.mean(values)), plan.refit_rounds(best)
        rows.append({"scale_pos_weight": float(spw), "pr_auc": float(value), "rounds": rounds})
    # a weight is taken only when its held-out PR AUC beats the unweighted model's beyond resampling noise: with
    # a few dozen held-out positives, the best of three noisy values alone picked a weight that lost 0.04 test PR
    # AUC (simulator, 1 % positives, seed 42)
    unweighted = rows[0]
    for row in rows[1:]:
        row["gain_low"] = _pr_auc_gain_low(
            *held[unweighted["scale_pos_weight"]], held[row["scale_pos_weight"]][1], seed
        )
    sure = [r for r in rows[1:] if r["pr_auc"] > unweighted["pr_auc"] and r["gain_low"] > 0]
    chosen = max(sure, key=lambda r: (round(r["pr_auc"], 12), -r["scale_pos_weight"])) if sure else unweighted
    return {
        "candidates": rows,
        "chosen": chosen["scale_pos_weight"],
        "refit_rounds": chosen["rounds"],
        "validation": "the validation split" if plan is None or plan.folds is None else plan.describe(),
    }


# the tune stage's LightGBM metric -> the primary metric it equals (for the cross-validated selection)
CV_METRIC = {"auc": "roc_auc", "rmse": "rmse", "multi_logloss": "log_loss", "binary_logloss": "log_loss"}


def _linear_cv(task, params, train_df, valid_df, fit, tuned_cv, lgb_params, rounds):
    """The cross-validated comparison of the linear candidate with the tuned LightGBM (None when the tune stage did
    not cross-validate or its metric is not the primary one):

    1. the linear model's strength: its grid (``driftloop.linear.strength_grid``, a warm-started path per fold)
       on the tune stage's folds (``tune.validation_plan`` again: the same seeded folds LightGBM was tuned on);
    2. the comparison: both chosen configurations scored once on fresh folds (``base.seed + 1``; time-ordered
       folds have no seed and stay the same), LightGBM with ``rounds`` (its train + valid rounds) scaled to
       each fold's rows. The tune stage's value is the best of its trials on its folds and the linear value the
       best of the grid on the same folds: each is optimistic by how many candidates it was the best of (30
       trials against 13 strengths), which favoured LightGBM on small tables (issue 14); fresh folds score each
       configuration once.

    Both on the same folds, with the same metric function (``compute_metrics``). Returns the two fresh-fold means
    (``lightgbm``, ``linear``), the strength, and the tune folds' values (``lightgbm_tune``, ``linear_tune``)."""
    from driftloop.evaluate import compute_metrics
    from driftloop.linear import LinearModel, selection_key, selection_metrics, strength_grid
    from driftloop.model import PRIMARY_METRIC
    from driftloop.tune import fold_keys, full_dataset, validation_plan

    X_train, y_train, X_valid, y_valid, weight, valid_weight = fit
    metric = PRIMARY_METRIC[task]
    if CV_METRIC.get(tuned_cv[0]) != metric:
        return None
    seed = params.base.seed
    y_all = np.concatenate([y_train, y_valid])
    keys = fold_keys(params, train_df, valid_df)
    plan = validation_plan(params.tune, task, y_all, len(y_train), seed, **keys)
    if plan.folds is None:
        return None
    X_all = pd.concat([X_train, X_valid], ignore_index=True)
    w_all = None if weight is None else np.concatenate([weight, _ones_if_none(valid_weight, len(y_valid))])

    def w(idx):
        return None if w_all is None else w_all[idx]

    per_strength: dict[float, list[dict[str, float]]] = {s: [] for s in strength_grid(task)}
    for tr, va in plan.folds:
        path = LinearModel(task, seed=seed).path_scores(X_all.iloc[tr], y_all[tr], X_all.iloc[va], w(tr))
        for strength, scores in path.items():
            per_strength[strength].append(selection_metrics(task, y_all[va], scores))
    means = {s: {k: float(np.mean([m[k] for m in ms])) for k in ms[0]} for s, ms in per_strength.items()}
    strength = max(means, key=lambda s: selection_key(task, means[s]))  # the first best: the strongest

    fresh = validation_plan(params.tune, task, y_all, len(y_train), seed + 1, **keys)
    linear_values, lgb_values = [], []
    for tr, va in fresh.folds:
        m = LinearModel(task, seed=seed, strength=strength).fit(X_all.iloc[tr], y_all[tr], w(tr))
        linear_values.append(compute_metrics(task, y_all[va], m.scores(X_all.iloc[va]), None)[metric])
        data = full_dataset(X_all.iloc[tr], y_all[tr], params.tune, lgb_params.get("max_bin"), w(tr))
        booster = refit_booster(lgb_params, data, max(1, round(rounds * len(tr) / len(y_all))))
        lgb_values.append(compute_metrics(task, y_all[va], booster.predict(X_all.iloc[va]), None)[metric])
    return {
        "lightgbm": float(np.mean(lgb_values)),
        "linear": float(np.mean(linear_values)),
        "strength": strength,
        "lightgbm_tune": float(tuned_cv[1]),
        "linear_tune": means[strength][metric],
    }


def select(
    task: str,
    valid_metrics: dict[str, dict[str, float]],
    linear_selectable: bool,
    cv: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The algorithm selection table: each candidate's validation metrics, whether it can be the registered model
    (stored without pickle), and the selected one: the best primary metric among the selectable (LightGBM on a tie),
    by the cross-validated means ``cv`` when given (LightGBM's and the linear model's on the same fresh folds,
    ``_linear_cv``), else on the validation split.
    """
    from driftloop.model import HIGHER_IS_BETTER, PRIMARY_METRIC

    metric = PRIMARY_METRIC[task]
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    rows = []
    for name, metrics in valid_metrics.items():
        if name == "dummy":
            continue
        selectable = name == "lightgbm" or (linear_selectable and name in ("logistic", "ridge"))
        row = {"model": name, "metric": metric, "valid": metrics.get(metric), "selectable": selectable}
        if cv is not None:
            row["cv"] = cv.get(name)
        rows.append(row)
    by = "cv" if cv is not None else "valid"
    best = max(
        (r for r in rows if r["selectable"] and r.get(by) is not None),
        key=lambda r: (sign * r[by], r["model"] == "lightgbm"),
    )
    for r in rows:
        r["selected"] = r is best
    return rows


def _hist_gradient_boosting(task, X_train, y_train, X_valid, y_valid, weight, params: Params) -> dict[str, float]:
    """scikit-learn's HistGradientBoosting (defaults, its own early stopping, native categoricals) on train (a
    seeded sample of at most ``train.baseline_max_rows`` rows, as the baselines), scored on valid: compared in the
    selection table."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from driftloop.evaluate import compute_metrics

    if len(X_train) > params.train.baseline_max_rows:
        n_max = params.train.baseline_max_rows
        idx = np.sort(np.random.default_rng(params.base.seed).choice(len(X_train), n_max, replace=False))
        X_train, y_train = X_train.iloc[idx], y_train[idx]
        weight = None if weight is None else weight[idx]

    kind = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    est = kind(categorical_features="from_dtype", random_state=params.base.seed)
    est.fit(X_train, y_train, sample_weight=weight)
    scores = baseline_scores(est, X_valid, task) if task == "regression" else est.predict_proba(X_valid)
    if task == "binary":
        scores = scores[:, 1]
    threshold = threshold_for(y_valid, scores, params.train) if task == "binary" else None
    return compute_metrics(task, y_valid, scores, threshold)


@contextmanager
def sklearn_threads(threads: int):
    """scikit-learn's native thread pools (OpenMP, BLAS) limited to ``threads`` (0: left as they are)."""
    if not threads:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def refit_booster(lgb_params: dict[str, Any], data, rounds: int):
    """LightGBM fitted on ``data`` for exactly ``rounds`` rounds (no validation set, no early stopping)."""
    import lightgbm as lgb

    return lgb.train(lgb_params, data, num_boost_round=int(rounds))


CALIBRATION_FOLDS = 3  # the refit's calibration: out-of-fold scores of models fitted on 2/3 of the rows


def refit_calibration(lgb_params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, weight, rounds: int, params: Params):
    """The calibration of a refit model, fitted on out-of-fold scores of the same procedure: the configuration fitted
    on two thirds of train + valid (stratified, seeded folds) for ``rounds`` scaled to those rows, scoring the rest.
    The train-only model's validation scores do not describe the refit model (more rounds, more rows): measured
    off by 0.06 ROC AUC in the label-free estimate (tests/integration/test_monitoring.py)."""
    from driftloop.calibration import Calibration
    from driftloop.tune import full_dataset

    rng = np.random.default_rng(params.base.seed)
    fold = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):  # stratified folds
        idx = np.flatnonzero(y == cls)
        fold[idx] = rng.permutation(len(idx)) % CALIBRATION_FOLDS
    oof = np.empty(len(y))
    for k in range(CALIBRATION_FOLDS):
        held, fit = fold == k, fold != k
        w = None if weight is None else weight[fit]
        data = full_dataset(X.iloc[fit], y[fit], params.tune, lgb_params.get("max_bin"), w)
        booster = refit_booster(lgb_params, data, max(1, round(rounds * fit.mean())))
        oof[held] = booster.predict(X.iloc[held])
    return Calibration.fit(y, oof)


def _ones_if_none(w: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if w is None else w


def _fit_sample(est, X: pd.DataFrame, y: np.ndarray, params: Params, weight: np.ndarray | None, valid=None) -> None:
    """Fit a baseline on at most ``train.baseline_max_rows`` rows (a seeded sample): baselines are reference
    points, and that keeps a 10M-row training under the memory budget (one-hot logistic regression on all rows
    needs ~12 GiB)."""
    if len(X) > params.train.baseline_max_rows:
        idx = np.random.default_rng(params.base.seed).choice(len(X), params.train.baseline_max_rows, replace=False)
        idx.sort()
        X, y = X.iloc[idx], y[idx]
        weight = None if weight is None else weight[idx]
    from driftloop.linear import LinearModel

    if isinstance(est, LinearModel):
        if valid is not None:  # the regularization strength is chosen on the validation split
            est.fit_select(X, y, valid[0], valid[1], weight)
        else:
            est.fit(X, y, weight)
        return
    est.fit(_for_sklearn(X), y, sample_weight=weight)
