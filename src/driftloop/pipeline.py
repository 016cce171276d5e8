"""Stage edges: read the declared inputs, call the stage function, write the declared outputs,
log to MLflow. ``dvc.yaml`` passes every path; nothing here hardcodes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError

SPLITS = ("train", "valid", "test")


def _read(path: str | Path) -> pd.DataFrame:
    """A Parquet file a stage wrote (as written: user files go through ``driftloop.io.read_table``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (run the stage that produces it first, e.g. `dvc repro`)")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); rerun the stage that produces it (`dvc repro -f`)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc}); rerun the stage that produces it"
        ) from None


def _write_json(obj: Any, path: str | Path) -> None:
    from driftloop.evaluate import write_json

    write_json(obj, path)


def _atomic_pickle(obj: Any, path: str | Path) -> None:
    from driftloop.data.ingest import write_bytes_atomic

    write_bytes_atomic(pickle.dumps(obj, protocol=5), path)


def load_pickle(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (run the train stage first)")
    with open(path, "rb") as f:
        return pickle.load(f)


def split_paths(split_dir: str | Path) -> dict[str, Path]:
    return {name: Path(split_dir) / f"{name}.parquet" for name in SPLITS}


def read_splits(split_dir: str | Path, names: tuple[str, ...] = SPLITS) -> dict[str, pd.DataFrame]:
    """The split frames ``names`` (default all three): stages read only what they use."""
    paths = split_paths(split_dir)
    return {name: _read(paths[name]) for name in names}


def count_rows(path: str | Path) -> int:
    """Rows of a Parquet file from its footer, without reading the data."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found (run the stage that produces it first, e.g. `dvc repro`)")
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # 0-byte, truncated, not Parquet
        raise DataError(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- ingest / validate / split
def run_ingest(params: Params, out: str, progress=None) -> dict:
    from driftloop.data.ingest import ingest

    return ingest(params, out, progress)


def run_validate(params: Params, data: str, out: str, report: str) -> dict:
    from driftloop.data import validate as v
    from driftloop.faults import fault_point
    from driftloop.io import redact_url, write_parquet_atomic

    df = _read(data)
    source = redact_url(params.ingest.path) if params.ingest.source in ("csv", "parquet") else data
    clean, rep = v.validate(df, params, source=source)
    result = rep.to_dict()
    write_parquet_atomic(clean, out, before_commit=lambda: fault_point(v.BEFORE_WRITE))
    fault_point(v.BEFORE_REPORT)
    _write_json(result, report)
    return result


def run_split(params: Params, data: str, out_dir: str) -> dict:
    """Write train/valid/test; returns their sizes, the rows that repeat another and the test rows found in
    train (always 0: copies of a row share a split; a non-zero count is refused before anything is written)."""
    from driftloop.data import split as s
    from driftloop.data.validate import infer_task
    from driftloop.faults import fault_point
    from driftloop.io import write_parquet_atomic

    df = _read(data)
    task = infer_task(df[params.base.target], params.base.task)
    parts = s.split(df, params, task)
    overlap = s.train_test_overlap(parts["train"], parts["test"])
    if overlap:
        raise DataError(f"split: {overlap} test rows are identical to training rows; nothing was written")
    for name, path in split_paths(out_dir).items():
        write_parquet_atomic(parts[name], path, before_commit=lambda: fault_point(s.BEFORE_WRITE))
    sizes = {name: len(part) for name, part in parts.items()}
    return {**sizes, "duplicate_rows": int(df.duplicated().sum()), "test_rows_in_train": overlap}


# --------------------------------------------------------------------------- tune
def _prepared(params: Params, splits: dict[str, pd.DataFrame]):
    """Preprocess train/valid exactly as the train stage will."""
    from driftloop.data.validate import infer_task
    from driftloop.features import Preprocessor
    from driftloop.model import TargetEncoder
    from driftloop.train import feature_frame

    target = params.base.target
    task = infer_task(splits["train"][target], params.base.task)
    enc = TargetEncoder.fit(splits["train"][target], task, params.base.positive_class)
    vp = params.validate_params
    pre = Preprocessor(params.features, tuple(vp.categorical_columns), tuple(vp.date_columns))
    X_train = pre.fit_transform(feature_frame(splits["train"], params))
    X_valid = pre.transform(feature_frame(splits["valid"], params))
    return task, enc, X_train, enc.encode(splits["train"][target]), X_valid, enc.encode(splits["valid"][target])


def fold_keys(params: Params, splits: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """``groups`` / ``times`` for the tune stage's CV folds (``driftloop.tune.fold_keys``)."""
    from driftloop.tune import fold_keys as keys

    return keys(params, splits["train"], splits["valid"])


def _training_rows(params: Params, splits: dict[str, pd.DataFrame]):
    """``retrain.training_data`` applied to train/valid (``driftloop.training_data``): splits, weights, info."""
    from driftloop.training_data import select

    chosen = select(splits["train"], splits["valid"], params)
    weights = (chosen.train_weight, chosen.valid_weight)
    return {**splits, "train": chosen.train, "valid": chosen.valid}, weights, chosen.info


def newest_period_rows(params: Params, valid: pd.DataFrame, test_path: Path) -> np.ndarray | None:
    """A mask of the valid rows from the test split's period onward: a time split with ``split.time_test_share`` < 1
    sends the rest of the newest period there (``driftloop.data.split``); None for any other split."""
    column = params.split.time_column
    if column is None or params.split.time_test_share >= 1.0 or column not in valid.columns or valid.empty:
        return None
    test_times = pd.read_parquet(test_path, columns=[column])[column]
    if test_times.empty:
        return None

    def times(s: pd.Series) -> pd.Series:
        return s if pd.api.types.is_numeric_dtype(s) else pd.to_datetime(s, errors="coerce")

    return (times(valid[column]) >= times(test_times).min()).to_numpy()


def retrain_budget(params: Params, has_champion: bool) -> Params:
    """With a champion (a retrain, warm-started from its parameters) the study gets ``retrain.n_trials`` trials
    (never more than ``tune.n_trials``)."""
    n = params.retrain.n_trials
    if not has_champion or n is None or n >= params.tune.n_trials:
        return params
    return params.model_copy(update={"tune": params.tune.model_copy(update={"n_trials": n})})


def champion_params(client, params: Params, problem: dict | None = None) -> list[dict]:
    """The current champion's tuned parameters, for warm start (empty when there is none, or when ``problem``
    is given and the champion predicts another target, task or classes: ``register.problem_of``)."""
    from driftloop import register as reg

    mv = reg.current_version(client, params.base.model_name, reg.CHAMPION)
    if mv is None or not mv.run_id:
        return []
    if problem is not None:
        known = reg.version_problem(mv)
        if known is None:  # a version registered before the problem tag: its model says
            try:
                known = reg.version_problem(mv, reg.load_version(params.base.model_name, str(mv.version)))
            except Exception:  # unloadable: its parameters are no evidence for this problem
                return []
        if reg.problem_mismatch(known, problem) is not None:
            return []
    run = client.get_run(mv.run_id)
    out = {}
    for k, v in run.data.params.items():
        if k.startswith("lgb."):
            try:
                out[k[4:]] = json.loads(v)
            except json.JSONDecodeError:
                out[k[4:]] = v
    return [out] if out else []


def study_name(params: Params, train_path: Path) -> str:
    from driftloop.tracking import md5_file

    if params.tune.study_name:
        return params.tune.study_name
    # the study's identity: the data and what defines the objective, not the budget (n_trials/timeout), so a
    # rerun with a larger budget continues the same study
    budget = {"n_trials", "timeout_seconds", "storage", "study_name", "num_threads"}
    objective = {k: v for k, v in params.tune.model_dump(mode="json").items() if k not in budget}
    parts = [params.base.seed, params.base.target, params.base.task, params.features.model_dump(mode="json"), objective]
    if params.train.class_weight == "balanced":  # weighted classes: another objective (auto tunes unweighted)
        parts += [params.train.class_weight, params.train.minority_share_auto]
    rp = params.retrain
    if rp.training_data != "all" or rp.coreset_rows:  # other rows or weights: another objective (names kept else)
        parts.append(rp.model_dump(mode="json", exclude={"n_trials", "keep_labeled_batches"}))
    key = json.dumps(parts, sort_keys=True)
    return f"{params.base.experiment}-{md5_file(train_path)[:10]}-{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def run_tune(params: Params, split_dir: str, out: str, report: str, progress=None, log_trials: bool = True) -> dict:
    from concurrent.futures import Future, ThreadPoolExecutor

    # imported whole here, before the worker thread imports MLflow and the plotting modules: two threads
    # importing one package tree at once can meet a partially initialised module
    import lightgbm  # noqa: F401
    import optuna  # noqa: F401

    from driftloop import tracking
    from driftloop import tune as tune_module
    from driftloop.tune import BackgroundCallback, can_yield_cpu, tune, yield_cpu

    splits = read_splits(split_dir, ("train", "valid"))  # the test split is not tune's input (nor a dvc.yaml dep)
    splits, weights, rows_info = _training_rows(params, splits)
    task, enc, X_train, y_train, X_valid, y_valid = _prepared(params, splits)
    name = study_name(params, split_paths(split_dir)["train"])
    paths = split_paths(split_dir)

    def setup():
        """MLflow's side: import, store start-up, the parent run, the champion's parameters.

        The tune and trial runs a killed process left RUNNING (its ``driftloop.owner`` is gone) are set
        FAILED first; this process's runs carry its own identity, for the next start to check.
        """
        client = tracking.connect(params)
        tags = tracking.lineage_tags(params, {"train": paths["train"], "valid": paths["valid"]})
        tags[tune_module.OWNER_TAG] = tune_module.process_identity()
        tune_module.fail_orphaned_runs(client, tracking.experiment_id(client, params.base.experiment, params))
        parent = tracking.start_run(client, params, run_name="tune", tags={**tags, f"{tracking.TAG}stage": "tune"})
        trial_logger = tracking.TrialLogger(client, parent.info.experiment_id, parent.info.run_id, tags)
        problem = {"target": params.base.target, "task": task, "classes": [str(c) for c in enc.classes]}
        return client, parent.info.run_id, trial_logger, champion_params(client, params, problem)

    # MLflow's side runs on a worker thread: set up while the first trial fits (LightGBM releases the GIL
    # while it boosts), then each trial's nested run written while the next one fits. With LightGBM on
    # every core, that thread runs at the lowest CPU priority (tune.yield_cpu()): at normal priority it took
    # a core from LightGBM's OpenMP threads, which all wait for each other (measured +25 % on the trial
    # fits). Where a thread cannot be lowered (not Linux), MLflow then stays in line.
    all_cores = not 0 < params.tune.num_threads < (os.cpu_count() or 1)
    overlap = not all_cores or can_yield_cpu()
    if overlap:
        pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="driftloop-mlflow", initializer=yield_cpu if all_cores else None
        )
        mlflow_side = pool.submit(setup)
        pool.submit(_import_plotting)  # the study plots' imports, after the set-up, while trials fit
        pool.shutdown(wait=False)
    else:
        mlflow_side = Future()
        mlflow_side.set_result(setup())

    def log_trial(study, trial):
        mlflow_side.result()[2](study, trial)

    callbacks = []
    logger = None
    if log_trials:
        logger = BackgroundCallback(log_trial, yield_cpu=all_cores) if overlap else None
        callbacks.append(logger or log_trial)
    if progress is not None:
        callbacks.append(progress)
    try:
        if params.retrain.n_trials is not None:  # the budget depends on whether a champion exists: look first
            params = retrain_budget(params, bool(mlflow_side.result()[3]))
        result = tune(
            X_train,
            y_train,
            X_valid,
            y_valid,
            task,
            len(enc.classes),
            params,
            study_name=name,
            warm_start=lambda: mlflow_side.result()[3],  # enqueued after the first trial: still trial 1
            callbacks=callbacks,
            train_weight=weights[0],
            valid_weight=weights[1],
            **fold_keys(params, splits),
        )
        if logger is not None:
            logger.close()
        client, run_id, _, _ = mlflow_side.result()
    except BaseException:
        if logger is not None:
            with contextlib.suppress(BaseException):  # the study's own error is the one to report
                logger.close()
        if mlflow_side.exception() is None:
            client, run_id, _, _ = mlflow_side.result()
            client.set_terminated(run_id, status="FAILED")
        raise
    tune_module.fault_point(tune_module.STUDY_DONE)
    summary = {**result.to_dict(), "task": task, "mlflow_run_id": run_id}
    tracking.log_batch(
        client,
        run_id,
        params={
            **{f"best.{k}": v for k, v in result.best_params.items()},
            "study": name,
            "metric": result.metric,
            "n_trials": params.tune.n_trials,
            "storage": params.tune.storage.split("://")[0],
            **{f"training_data.{k}": v for k, v in rows_info.items()},
            "sampler": params.tune.sampler,
            "validation": result.validation,
            "timeout_seconds": result.timeout_seconds,
            "refit_rounds": result.refit_rounds,
        },
        metrics={
            "best_score": result.best_value,
            "best_iteration": result.best_iteration,
            "n_complete": result.n_complete,
            "n_pruned": result.n_pruned,
            "n_failed": result.n_failed,
            "seconds": result.seconds,
        },
    )
    client.log_dict(run_id, tune_module.describe_space(params.tune), "search_space.json")
    _log_study_plots(client, run_id, result.study)
    client.set_terminated(run_id)
    _write_json(
        {
            "best_params": result.best_params,
            "lgb_params": result.lgb_params,
            "best_iteration": result.best_iteration,
            "refit_rounds": result.refit_rounds,
            "validation": result.validation,
            "metric": result.metric,
            "best_value": result.best_value,
            "task": task,
            "tune_run_id": run_id,
        },
        out,
    )
    _write_json(
        {
            "best_value": result.best_value,
            "n_complete": result.n_complete,
            "n_pruned": result.n_pruned,
            "seconds": round(result.seconds, 2),
            "timeout_seconds": result.timeout_seconds,
        },
        report,
    )
    return summary


def run_tune_worker(params: Params, split_dir: str, worker_index: int | None = None) -> int:
    """Run trials of the shared study until it has ``tune.n_trials`` (finished or running); no outputs.

    ``worker_index`` seeds this worker's sampler (``base.seed + worker_index``); by default the study
    numbers the processes that join it.
    """
    from driftloop.tune import WORKER_TRIAL, tune

    splits = read_splits(split_dir, ("train", "valid"))  # the test split is not tune's input (nor a dvc.yaml dep)
    splits, weights, _ = _training_rows(params, splits)
    task, enc, X_train, y_train, X_valid, y_valid = _prepared(params, splits)
    name = study_name(params, split_paths(split_dir)["train"])
    if params.retrain.n_trials is not None:  # the same budget as the tune stage it joins
        from driftloop import tracking
        from driftloop.register import CHAMPION, current_version

        client = tracking.connect(params)
        params = retrain_budget(params, current_version(client, params.base.model_name, CHAMPION) is not None)
    result = tune(
        X_train,
        y_train,
        X_valid,
        y_valid,
        task,
        len(enc.classes),
        params,
        study_name=name,
        worker_index=worker_index,
        trial_point=WORKER_TRIAL,
        train_weight=weights[0],
        valid_weight=weights[1],
        **fold_keys(params, splits),
    )
    return result.n_complete + result.n_pruned


def _import_plotting() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401


def _log_study_plots(client, run_id: str, study) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = ovm.plot_optimization_history(study)
        client.log_figure(run_id, ax.figure, "plots/optimization_history.png")
        plt.close(ax.figure)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 3:
            ax = ovm.plot_param_importances(study)
            client.log_figure(run_id, ax.figure, "plots/param_importances.png")
            plt.close(ax.figure)


# --------------------------------------------------------------------------- train
def run_train(
    params: Params, split_dir: str, tuned: str, validation: str, model_out: str, baselines_out: str, run_out: str
) -> dict:
    from driftloop import tracking
    from driftloop.data.validate import infer_task
    from driftloop.train import train

    splits = read_splits(split_dir, ("train", "valid"))  # test: only its row count is logged (below)
    n_test = count_rows(split_paths(split_dir)["test"])
    best = json.loads(Path(tuned).read_text())
    task = infer_task(splits["train"][params.base.target], params.base.task)
    fitted, weights, rows_info = _training_rows(params, splits)
    cross_validated = "CV" in str(best.get("validation", ""))
    result = train(
        fitted["train"],
        fitted["valid"],
        params,
        task,
        best["lgb_params"],
        refit_rounds=best.get("refit_rounds"),
        weight=weights[0],
        valid_weight=weights[1],
        tuned_cv=(best["metric"], best["best_value"]) if cross_validated else None,
        recent=newest_period_rows(params, fitted["valid"], split_paths(split_dir)["test"]),
    )
    report = json.loads(Path(validation).read_text()) if Path(validation).exists() else {}
    result.model.ignored = list(report.get("dropped_columns", []))
    _atomic_pickle(result.model, model_out)
    _atomic_pickle(result.baselines, baselines_out)

    client = tracking.connect(params)
    paths = split_paths(split_dir)
    tags = {
        **tracking.lineage_tags(params, paths),
        f"{tracking.TAG}stage": "train",
        f"{tracking.TAG}tune_run_id": best.get("tune_run_id", ""),
        f"{tracking.TAG}task": task,
    }
    algorithm = result.model.algorithm  # the algorithm selection's choice (driftloop.train.select)
    run = tracking.start_run(client, params, run_name=algorithm, tags={**tags, f"{tracking.TAG}algorithm": algorithm})
    run_id = run.info.run_id
    # the train stage's parameters: the tune stage's, with train.class_weight auto's scale_pos_weight when chosen
    lgb_logged = {f"lgb.{k}": json.dumps(v) for k, v in (result.lgb_params or best["lgb_params"]).items()}
    tracking.log_batch(
        client,
        run_id,
        params={
            **lgb_logged,
            "algorithm": algorithm,
            "num_trees": result.model.booster.num_trees(),
            "best_iteration": result.best_iteration,
            "refit": params.train.refit,
            "refit_rounds": result.refit_rounds,
            "rows.fit": result.fit_rows,
            "threshold": result.model.threshold,
            "target": params.base.target,
            "task": task,
            "rows.train": len(splits["train"]),
            "rows.valid": len(splits["valid"]),
            "rows.test": n_test,
            **{f"training_data.{k}": v for k, v in rows_info.items()},
        },
        metrics={f"valid_{k}": v for k, v in result.valid_metrics[_selected_name(result)].items()},
    )
    if result.selection:
        client.log_table(run_id, pd.DataFrame(result.selection), "algorithm_selection_valid.json")
    if result.class_weight:
        client.log_dict(run_id, result.class_weight, "class_weight.json")
    if result.adaptation:  # retrain.adapt: the revision's evidence on the newest period's rows
        client.log_dict(run_id, result.adaptation, "adaptation.json")
        tracking.log_batch(client, run_id, params={"adapted": result.adaptation["adopted"]})
    if report:
        client.log_dict(run_id, report, "validation.json")
        tracking.log_batch(client, run_id, metrics={"validation_warnings": report.get("n_warnings", 0)})
    client.log_dict(run_id, result.model.contract(), "contract.json")
    baseline_runs = {}
    for name in result.baselines:
        child = tracking.start_run(
            client, params, run_name=name, parent_run_id=run_id, tags={**tags, f"{tracking.TAG}algorithm": name}
        )
        tracking.log_batch(
            client,
            child.info.run_id,
            params={"algorithm": name},
            metrics={f"valid_{k}": v for k, v in result.valid_metrics[name].items()},
        )
        client.set_terminated(child.info.run_id)
        baseline_runs[name] = child.info.run_id
    info = {
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
        "baseline_run_ids": baseline_runs,
        "tune_run_id": best.get("tune_run_id"),
        "task": task,
    }
    _write_json(info, run_out)
    # FINISHED now: evaluate adds the test metrics later, but DVC skips evaluate (and register) when the refit
    # model is byte-identical to the last one, which left this run RUNNING forever (found by bench_faults)
    client.set_terminated(run_id)
    return {"valid": result.valid_metrics, **info}


def _selected_name(result) -> str:
    """The selected model's row in ``valid_metrics`` (lightgbm, or the linear model's baseline name)."""
    return next((r["model"] for r in result.selection if r["selected"]), "lightgbm")


# --------------------------------------------------------------------------- evaluate
def run_evaluate(
    params: Params,
    split_dir: str,
    model_path: str,
    baselines_path: str,
    run_info: str,
    metrics_out: str,
    plots_dir: str,
) -> dict:
    from driftloop import tracking
    from driftloop.evaluate import evaluate

    model = load_pickle(model_path)
    baselines = load_pickle(baselines_path)
    test = _read(split_paths(split_dir)["test"])
    ep = params.evaluate
    result = evaluate(
        model,
        baselines,
        test,
        plots_dir=Path(plots_dir),
        shap_rows=ep.shap_sample_rows,
        curve_points=ep.curve_points,
        calibration_bins=ep.calibration_bins,
        seed=params.base.seed,
        max_ece=ep.max_ece,
    )
    _write_json(result, metrics_out)
    info = json.loads(Path(run_info).read_text())
    client = tracking.connect(params)
    run_id = info["run_id"]
    tracking.log_batch(client, run_id, metrics={f"test_{k}": v for k, v in result["test"].items()})
    client.log_artifacts(run_id, plots_dir, "plots")
    client.log_dict(run_id, result, "metrics.json")
    for name, child in info.get("baseline_run_ids", {}).items():
        if name in result["baselines"]:
            tracking.log_batch(client, child, metrics={f"test_{k}": v for k, v in result["baselines"][name].items()})
    table = pd.DataFrame(
        [{"model": result["model"], **result["test"]}] + [{"model": k, **v} for k, v in result["baselines"].items()]
    )
    client.log_table(run_id, table, "algorithm_selection.json")
    client.set_terminated(run_id)
    return result


# --------------------------------------------------------------------------- register
def run_register(params: Params, split_dir: str, model_path: str, run_info: str, metrics: str, out: str) -> dict:
    """Gate the trained model and move its alias (compare-and-set against the champion it was compared with).

    Idempotent per train run: rerun after a kill, a version registered from the same run but never gated is
    gated again (no second version); one whose gate move committed gives its recorded result.
    """
    from driftloop import register as reg
    from driftloop import tracking
    from driftloop.faults import fault_point

    if not params.register.enabled:
        result = {"registered": False, "reason": "register.enabled is false"}
        _write_json(result, out)
        return result
    client = tracking.connect(params)
    reg.recover(client, params)  # a killed alias move first: the gate must compare against the real champion
    model = load_pickle(model_path)
    paths = split_paths(split_dir)
    test = _read(paths["test"])
    info = json.loads(Path(run_info).read_text())
    name = params.base.model_name
    mv = reg.version_of_run(client, name, info["run_id"])
    if mv is not None and (done := reg.gate_record(client, params, str(mv.version))) is not None:
        result = _register_result(name, mv, json.loads(mv.tags.get(f"{tracking.TAG}gate", "{}")), done)
        _write_json(result, out)
        return result
    champion_mv = reg.current_version(client, name, reg.CHAMPION)
    champion, error = None, None
    if champion_mv is not None:
        try:
            champion = reg.load_version(name, champion_mv.version)
        except Exception as exc:  # an unloadable champion must not block: the new model becomes challenger
            error = f"{type(exc).__name__}: {exc}"
        # a champion of another target/task/classes: refused before anything is written (a new model name)
        reg.check_same_problem(name, champion_mv, reg.version_problem(champion_mv, champion), model)
    evaluated = json.loads(Path(metrics).read_text()) if Path(metrics).exists() else {}
    test_metrics = evaluated.get("test", {})
    known = None  # the evaluate stage's value of the gate metric, if it scored this model on these test rows
    if evaluated.get("rows") == len(test) and evaluated.get("task") == model.task:
        known = test_metrics.get(reg.gate_metric(params, model.task))
    train = _read(paths["train"])
    valid = _read(paths["valid"]) if paths["valid"].exists() else None
    baseline_value, baseline_scores = reg.dummy_baseline(params, model, train, test, evaluated)
    compared = str(champion_mv.version) if champion_mv else None
    seen = reg.SeenRows.of([train] + ([valid] if valid is not None else []), "this run's train+valid splits", test)
    champion_seen = _seen_rows(client, champion_mv.run_id) if champion_mv is not None else None
    decision = reg.decide(
        model,
        champion,
        compared,
        test,
        params,
        error,
        new_value=known,
        valid_df=valid,
        baseline_value=baseline_value,
        baseline_scores=baseline_scores,
        champion_seen=champion_seen,
        challenger_seen=seen,
    )

    # nothing has been written to the registry up to here
    tags = {
        f"{tracking.TAG}test_metrics": json.dumps(test_metrics, default=str),
        f"{tracking.TAG}gate": json.dumps(decision.to_dict(), default=str),
        f"{tracking.TAG}decision": decision.decision,
    }
    if mv is None:  # not registered yet (else: registered by a run of this stage killed before its alias move)
        run_id = _ensure_run(client, params, info)
        fitted = pd.concat([train, valid]) if valid is not None and params.train.refit else train  # the model's rows
        reference = drift_reference(params, fitted, champion_seen)
        sample = reference.drop(columns=[params.base.target]).head(200)
        with _quiet():
            model_info = tracking.log_model(client, run_id, model, sample)
        _log_reference(client, run_id, reference)
        _log_seen_rows(client, run_id, seen)
        tags = {
            **tracking.lineage_tags(params, paths),
            f"{tracking.TAG}train_run_id": run_id,
            f"{tracking.TAG}tune_run_id": str(info.get("tune_run_id")),
            f"{tracking.TAG}task": model.task,
            reg.PROBLEM_TAG: json.dumps(reg.problem_of(model)),
            **tags,
        }
        mv = (
            client.create_model_version(
                name, model_info.model_uri, run_id=run_id, tags=tags, model_id=model_info.model_id
            )
            if _has_registered(client, name)
            else _create_and_register(client, name, model_info, run_id, tags)
        )
    else:
        for key, value in tags.items():
            client.set_model_version_tag(name, str(mv.version), key, value[:5000])
    fault_point(reg.AFTER_VERSION)
    record = reg.record_move(
        client,
        params,
        alias=decision.alias,
        to_version=str(mv.version),
        action="gate",
        reason=decision.reason,
        evidence=decision.to_dict(),
        # the promotion is a compare-and-set against the champion the gate compared with
        expect=compared if decision.alias == reg.CHAMPION else reg.ANY,
        since=f"the gate compared version {mv.version} against it (rerun to gate it against the new champion)",
    )
    result = _register_result(name, mv, decision.to_dict(), record)
    _write_json(result, out)
    return result


def _register_result(name: str, mv, decision: dict, record: dict) -> dict:
    return {
        "registered": True,
        "model": name,
        "version": str(mv.version),
        "alias": record["alias"],
        "outcome": decision.get("decision", ""),
        "decision": decision,
        "run_id": mv.run_id,
        "model_uri": f"models:/{name}/{mv.version}",
        "record": record,
    }


def _has_registered(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _create_and_register(client, name, model_info, run_id, tags):
    import contextlib

    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # created concurrently
        client.create_registered_model(name, description="driftloop model: raw rows in, predictions out.")
    return client.create_model_version(
        name, model_info.model_uri, run_id=run_id, tags=tags, model_id=model_info.model_id
    )


def _ensure_run(client, params: Params, info: dict) -> str:
    """The train run, or a fresh one if the tracking store no longer has it."""
    from mlflow.exceptions import MlflowException

    from driftloop import tracking

    try:
        client.get_run(info["run_id"])
        return info["run_id"]
    except MlflowException:
        run = tracking.start_run(client, params, run_name="lightgbm", tags={f"{tracking.TAG}stage": "register"})
        return run.info.run_id


def _log_reference(client, run_id: str, reference: pd.DataFrame) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        reference.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), "reference")


def drift_reference(params: Params, train: pd.DataFrame, champion_seen=None) -> pd.DataFrame:
    """The training rows logged as the model's drift reference (at most ``monitor.reference_rows``, seeded):
    ``train`` is what the model was fitted on (train + valid with ``train.refit``).

    ``monitor.reference: recent`` (after a retrain): the rows that were not in the current champion's data at all
    (not in its train, valid or test split) -- the data since it, i.e. the drift the new model absorbed -- when
    there are at least ``monitor.reference_min_rows`` of them; otherwise (a first model, or too few new rows),
    and with ``all``, a sample of all training rows.
    """
    mp = params.monitor
    pool = train
    if mp.reference == "recent" and champion_seen is not None:
        seen = champion_seen.overlap(train, known=True)
        if seen is not None and int((~seen).sum()) >= mp.reference_min_rows:
            pool = train[~seen]
    n_ref = min(mp.reference_rows, len(pool))
    return pool.sample(n=n_ref, random_state=params.base.seed) if n_ref < len(pool) else pool


def _log_seen_rows(client, run_id: str, seen) -> None:
    """The model's train+valid row keys (the fair gate's lineage), with the columns they were computed on."""
    import tempfile

    from driftloop import register as reg

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(reg.SEEN_ROWS_ARTIFACT).name
        seen.to_frame().to_parquet(path, index=False)
        (Path(tmp) / "seen_columns.json").write_text(json.dumps(seen.columns))
        folder = str(Path(reg.SEEN_ROWS_ARTIFACT).parent)
        client.log_artifact(run_id, str(path), folder)
        client.log_artifact(run_id, str(Path(tmp) / "seen_columns.json"), folder)


def _seen_rows(client, run_id: str):
    """The champion's train+valid row keys from its run (None: logged before driftloop recorded them)."""
    import tempfile

    from driftloop import register as reg

    folder = str(Path(reg.SEEN_ROWS_ARTIFACT).parent)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run_id, folder, tmp))
            frame = pd.read_parquet(local / Path(reg.SEEN_ROWS_ARTIFACT).name)
            cols = json.loads((local / "seen_columns.json").read_text())
    except Exception:  # noqa: BLE001 - no lineage keys: the gate records that it could not check
        return None
    return reg.SeenRows.from_frame(frame, cols, f"run {run_id}: {reg.SEEN_ROWS_ARTIFACT}")


def _quiet():
    import logging
    import warnings

    class _Ctx:
        def __enter__(self):
            self._w = warnings.catch_warnings()
            self._w.__enter__()
            warnings.simplefilter("ignore")
            self._level = logging.getLogger("mlflow").level
            logging.getLogger("mlflow").setLevel(logging.ERROR)

        def __exit__(self, *exc):
            logging.getLogger("mlflow").setLevel(self._level)
            return self._w.__exit__(*exc)

    return _Ctx()


# --------------------------------------------------------------------------- retraining
def retrain_on(
    params: Params,
    batch_id: str,
    batch: pd.DataFrame,
    monitor_run_id: str | None = None,
    project: str | Path = ".",
    summary_json: str | None = None,
) -> dict:
    """Add the labeled batch as a new DVC data version, reproduce the pipeline, link the audit trail.

    Write-ahead (``loop.retraining``): an intent is recorded before anything changes and committed once the
    trigger link is recorded. If the pipeline fails, the batch is withdrawn and ``dvc.lock`` and the outputs
    restored: the failure changes nothing, and the next run does not meet the batch again. If the process is
    killed, the next start finishes the job (forward if the model was registered, back otherwise).
    Returns the register stage's result plus ``retrain`` (the outcome: version, promoted or not, why).
    """
    from driftloop import loop

    with loop.retraining(
        params, batch_id, batch, project, monitor_run_id=monitor_run_id, summary_json=summary_json
    ) as txn:
        ran = loop.reproduce_pipeline(project)
        result = json.loads((Path(project) / _register_out(project)).read_text())
        if "register" not in {name.rsplit(":", 1)[-1] for name in ran}:  # nothing new registered
            result = {"registered": False, "reason": "the register stage did not run", "stages": ran}
        txn.registered(result)
    return {**result, "batch_id": txn.batch_id, "retrain": txn.outcome}


def _register_out(project: str | Path) -> str:
    """The register stage's declared output, read from dvc.yaml (declared once there)."""
    import yaml

    stage = yaml.safe_load((Path(project) / "dvc.yaml").read_text())["stages"]["register"]
    outs = stage["outs"]
    first = outs[0]
    return first if isinstance(first, str) else next(iter(first))
