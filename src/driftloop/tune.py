"""Tune stage: Optuna (multivariate TPE, seeded) over LightGBM, with pruning on LightGBM's
per-iteration validation scores (``driftloop.pruners``: a trial clearly behind the best one stops).

The LightGBM datasets are built (binned) once and shared by every trial. Storage comes from
``tune.storage``: ``memory``; a journal file (``*.journal`` / ``file:PATH``) so a rerun resumes the
study; or a database URL (e.g. PostgreSQL) shared by several worker processes. LightGBM's
defaults and the current champion's parameters are enqueued as the first trials.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import Params, TuneParams

# Search space; LightGBM's defaults (inside the space) are enqueued as the first trial.
LGBM_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "lambda_l1": 1e-8,
    "lambda_l2": 1e-8,
    "cat_smooth": 10.0,
}
METRIC_FOR_TASK = {"binary": "auc", "multiclass": "multi_logloss", "regression": "rmse"}
HIGHER_BETTER = {"auc": True, "binary_logloss": False, "multi_logloss": False, "rmse": False, "l2": False, "l1": False}


def can_yield_cpu() -> bool:
    """Whether ``yield_cpu`` works here: Linux gives each thread its own nice value."""
    return sys.platform.startswith("linux")


def yield_cpu() -> bool:
    """Lower the calling thread (only it) to nice 19: it then runs on what the other threads leave idle.

    For side work beside LightGBM's fits on every core: at normal priority a busy extra thread takes a
    core from one of LightGBM's OpenMP threads, and its partners wait for it at every barrier (measured
    +25 % on the trial fits); at nice 19 the scheduler gives it the gaps. Linux only (there, unlike
    POSIX says, ``setpriority(PRIO_PROCESS, tid)`` applies to one thread); False where it does not apply.
    """
    import threading

    if not can_yield_cpu():
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        return False
    return True


class BackgroundCallback:
    """An Optuna callback run on a worker thread, trial after trial in order, so the next trial's fit
    does not wait for it (MLflow logging: a few store transactions per trial). LightGBM releases the
    GIL while it boosts, so the logging overlaps the fits. ``close()`` waits until every queued trial
    is handled and re-raises the first error the callback raised.
    """

    _STOP = object()

    def __init__(self, callback: Callable, yield_cpu: bool = False) -> None:
        import queue
        import threading

        self.callback = callback
        self.yield_cpu = yield_cpu  # run the worker at the lowest CPU priority (``yield_cpu()``)
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="driftloop-trial-logger", daemon=True)
        self._thread.start()

    def __call__(self, study, trial) -> None:
        if self.error is not None:  # fail the study early rather than log nothing silently
            raise self.error
        self._queue.put((study, trial))  # a FrozenTrial: an immutable snapshot, safe to hand over

    def _work(self) -> None:
        if self.yield_cpu:
            yield_cpu()
        while (item := self._queue.get()) is not self._STOP:
            if self.error is None:
                try:
                    self.callback(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised by close()
                    self.error = exc

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        if self.error is not None:
            raise self.error


def search_space(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 300, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.4, 1.0),
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 100.0, log=True),
    }


def tune_metric(task: str, tp: TuneParams) -> str:
    return METRIC_FOR_TASK[task] if tp.metric == "auto" else tp.metric


def fixed_params(task: str, n_classes: int, tp: TuneParams, seed: int) -> dict[str, Any]:
    """LightGBM parameters that are not tuned."""
    objective = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}[task]
    p = {
        "objective": objective,
        "metric": tune_metric(task, tp),
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": tp.num_threads,
        "max_bin": tp.max_bin,
        "feature_pre_filter": False,
        "bagging_freq": 1,
    }
    if task == "multiclass":
        p["num_class"] = n_classes
    return p


def lgb_params(task: str, n_classes: int, tp: TuneParams, seed: int, tuned: dict[str, Any]) -> dict[str, Any]:
    return {**fixed_params(task, n_classes, tp, seed), **tuned}


def make_pruner(tp: TuneParams):
    """``tune.pruning`` / ``tune.pruner``: the best-curve pruner (default), Optuna's median pruner, or none."""
    import optuna

    if not tp.pruning:
        return optuna.pruners.NopPruner()
    if tp.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tp.pruner_startup_trials, n_warmup_steps=tp.pruner_warmup_rounds, interval_steps=1
        )
    from driftloop.pruners import BestCurvePruner

    return BestCurvePruner(
        margin=tp.pruner_margin, n_startup_trials=tp.pruner_startup_trials, n_warmup_steps=tp.pruner_warmup_rounds
    )


def make_storage(spec: str):
    """``memory`` -> None; ``*.journal`` or ``file:PATH`` -> journal file; ``dialect://...`` -> RDB."""
    import optuna

    if spec == "memory":
        return None
    if "://" in spec:
        return optuna.storages.RDBStorage(spec, engine_kwargs={"pool_pre_ping": True})
    path = Path(spec.removeprefix("file:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _metric_callback(trial, metric: str, every: int):
    import optuna

    def callback(env) -> None:
        if (env.iteration + 1) % every:
            return
        for item in env.evaluation_result_list:
            data_name, eval_name, value = item[0], item[1], item[2]
            if data_name == "valid" and eval_name == metric or data_name == "cv_agg" and eval_name == f"valid {metric}":
                trial.report(float(value), step=env.iteration + 1)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", env.iteration + 1)
                    raise optuna.TrialPruned(f"pruned at iteration {env.iteration + 1}")
                return

    callback.order = 25
    return callback


@dataclass
class TuneResult:
    best_params: dict[str, Any]  # tuned keys only
    lgb_params: dict[str, Any]  # fixed + tuned
    best_value: float
    best_iteration: int
    metric: str
    direction: str
    study_name: str
    n_complete: int
    n_pruned: int
    n_failed: int
    seconds: float
    study: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "study"}


def make_datasets(
    X_train: pd.DataFrame, y_train: np.ndarray, X_valid: pd.DataFrame, y_valid: np.ndarray, tp: TuneParams
):
    import lightgbm as lgb

    ds_params = {"max_bin": tp.max_bin, "feature_pre_filter": False, "verbosity": -1}
    train = lgb.Dataset(X_train, y_train, params=ds_params, free_raw_data=False, categorical_feature="auto")
    valid = lgb.Dataset(X_valid, y_valid, reference=train, free_raw_data=False)
    return train, valid


def fit_booster(params: dict, train, valid, tp: TuneParams, callbacks: Sequence = ()):
    import lightgbm as lgb

    return lgb.train(
        params,
        train,
        num_boost_round=tp.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(tp.early_stopping_rounds, verbose=False), *callbacks],
    )


def tune(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    params: Params,
    *,
    study_name: str,
    warm_start: Sequence[dict[str, Any]] | Callable[[], Sequence[dict[str, Any]]] = (),
    callbacks: Sequence[Callable] = (),
) -> TuneResult:
    """Run (or resume) the study and return the best parameters. ``callbacks`` are Optuna callbacks.

    ``warm_start``: parameter sets enqueued after LightGBM's defaults (the current champion's). A
    callable is called once the first trial has finished and its result enqueued then, so it is
    still the next trial (deterministic): the caller can look the champion up in MLflow while the
    first trial fits.
    """
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tp, seed = params.tune, params.base.seed
    metric = tune_metric(task, tp)
    direction = "maximize" if HIGHER_BETTER[metric] else "minimize"
    fixed = fixed_params(task, n_classes, tp, seed)
    train, valid = make_datasets(X_train, y_train, X_valid, y_valid, tp)

    sampler = optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=tp.n_startup_trials, constant_liar=True
    )
    pruner = make_pruner(tp)
    for attempt in range(5):  # workers starting together race to create the schema and the study
        try:
            study = optuna.create_study(
                study_name=study_name,
                storage=make_storage(tp.storage),
                sampler=sampler,
                pruner=pruner,
                direction=direction,
                load_if_exists=True,
            )
            break
        except Exception as exc:
            if (
                "://" not in tp.storage
                or attempt == 4
                or "IntegrityError" not in repr(exc)
                and "exists" not in str(exc)
            ):
                raise
            time.sleep(0.5 + attempt)

    def enqueue(candidates) -> None:
        for candidate in candidates:
            known = {k: candidate[k] for k in LGBM_DEFAULTS if k in candidate}
            if len(known) == len(LGBM_DEFAULTS):
                study.enqueue_trial(known, skip_if_exists=True)

    deferred: list[Callable] = []
    if tp.warm_start:
        enqueue([LGBM_DEFAULTS, *([] if callable(warm_start) else warm_start)])
        if callable(warm_start):
            deferred.append(warm_start)

    def enqueue_deferred(study, trial) -> None:  # an Optuna callback: after the first trial, once
        while deferred:
            enqueue(deferred.pop()())

    def objective(trial) -> float:
        tuned = search_space(trial)
        cb = [_metric_callback(trial, metric, tp.report_every)] if tp.pruning else []
        start = time.perf_counter()
        if tp.cv_folds:
            res = lgb.cv(
                {**fixed, **tuned},
                train,
                num_boost_round=tp.max_rounds,
                nfold=tp.cv_folds,
                stratified=task != "regression",
                seed=seed,
                callbacks=[lgb.early_stopping(tp.early_stopping_rounds, verbose=False), *cb],
            )
            scores = res[f"valid {metric}-mean"]
            best_iter, value = len(scores), float(scores[-1])
        else:
            booster = fit_booster({**fixed, **tuned}, train, valid, tp, cb)
            best_iter = booster.best_iteration or booster.current_iteration()
            value = float(booster.best_score["valid"][metric])
        trial.set_user_attr("best_iteration", int(best_iter))
        trial.set_user_attr("fit_seconds", time.perf_counter() - start)
        return value

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=states))
    remaining = max(tp.n_trials - done, 0)
    start = time.perf_counter()
    if remaining:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=tp.timeout_seconds,
            callbacks=[optuna.study.MaxTrialsCallback(tp.n_trials, states=states), enqueue_deferred, *callbacks],
            catch=(lgb.basic.LightGBMError,),
        )
    seconds = time.perf_counter() - start
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        from driftloop.errors import DataError

        raise DataError(f"tune: no trial of study '{study_name}' completed (all pruned or failed)")
    best = study.best_trial
    return TuneResult(
        best_params=dict(best.params),
        lgb_params=lgb_params(task, n_classes, tp, seed, dict(best.params)),
        best_value=float(best.value),
        best_iteration=int(best.user_attrs.get("best_iteration", tp.max_rounds)),
        metric=metric,
        direction=direction,
        study_name=study_name,
        n_complete=len(complete),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        seconds=seconds,
        study=study,
    )
