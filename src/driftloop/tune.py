"""Tune stage: Optuna (multivariate TPE, seeded) over LightGBM, with pruning on LightGBM's
per-iteration validation scores (``driftloop.pruners``: a trial clearly behind the best one stops).

The LightGBM datasets are built (binned) once and shared by every trial. Storage comes from
``tune.storage``: ``memory``; a journal file (``*.journal`` / ``file:PATH``) so a rerun resumes the
study; or a database URL (e.g. PostgreSQL) shared by several worker processes. LightGBM's
defaults and the current champion's parameters are enqueued as the first trials.
"""

from __future__ import annotations

import contextlib
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
from driftloop.faults import fault_point, register_point

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


# Trials and MLflow runs carry the identity of the process that runs them ("host:pid:start"), so the next
# start can tell a crashed owner (kill -9, power cut) from a live one and fail what it left RUNNING.
OWNER_ATTR = "driftloop.owner"
OWNER_TAG = "driftloop.owner"  # the same, as an MLflow run tag
FAILED_ATTR = "driftloop.failed_because"
WORKERS_ATTR = "driftloop.workers"  # study user attr: how many processes have joined (an atomic counter)
HEARTBEAT_SECONDS = 20  # RDB storages: a RUNNING trial without a heartbeat for GRACE_SECONDS is stale
GRACE_SECONDS = 120  # (Optuna's heartbeat; it catches owners on other hosts, whose pids cannot be checked here)

# fault points (driftloop.faults): where a kill -9 must leave a study and a stage that the next start recovers
TRIAL = register_point("tune.trial", "driftloop tune / tune-worker: inside a trial (RUNNING, before its fit)")
TRIAL_ASKED = register_point(
    "tune.trial_asked", "driftloop tune / tune-worker: a trial just asked, its owner recorded, budget lock held"
)
TRIAL_STORED = register_point(
    "tune.trial_stored", "driftloop tune: a trial's result stored in the study, before its MLflow run is written"
)
JOURNAL_LOCKED = register_point(
    "tune.journal_locked", "driftloop tune with a journal storage: while holding the journal file's lock"
)
WORKER_TRIAL = register_point("tune.worker_trial", "driftloop tune-worker: inside a trial (RUNNING, before its fit)")
STUDY_DONE = register_point(
    "tune.study_done", "driftloop tune: the study ended, before best_params.json and tune.json are written"
)


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start``: this process (or ``pid``) on this host; ``start`` guards against pid reuse."""
    import socket

    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``); "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5); fields after the name start at 3
    except (OSError, IndexError):
        return ""


def owner_alive(owner: str | None) -> bool | None:
    """Whether the process ``owner`` (a ``process_identity``) still runs: None when it is on another host."""
    import socket

    if not owner:
        return False
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return not (start and _start_ticks(pid) and _start_ticks(pid) != start)


def _flock_path(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


class FileLock:
    """An exclusive ``flock`` on a file: held by an open file, so the kernel releases it when the holder dies.

    No stale lock survives a kill -9 (unlike Optuna's symlink lock, whose relative symlink dangled and was
    retried forever). Reentrant within a thread; serialised between the threads of one process.
    """

    def __init__(self, path: str | Path, fault: str | None = None) -> None:
        import threading

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fault = fault
        self._thread_lock = threading.RLock()
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> bool:
        import fcntl

        self._thread_lock.acquire()
        if self._depth == 0:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                self._thread_lock.release()
                raise
            self._fd = fd
        self._depth += 1
        if self.fault:
            fault_point(self.fault)
        return True

    def release(self) -> None:
        import fcntl

        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._thread_lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _journal_lock(path: Path) -> FileLock:
    """The lock ``JournalFileBackend`` takes around each append (it calls only ``acquire``/``release``)."""
    return FileLock(_flock_path(path, ".flock"), fault=JOURNAL_LOCKED)


def _repair_journal(path: Path, lock: FileLock) -> None:
    """Under the lock: drop a last line a killed writer left unfinished (it would corrupt the next append),
    and a dangling ``.lock`` symlink Optuna's own lock left behind (older driftloop versions used it)."""
    legacy = _flock_path(path, ".lock")
    if legacy.is_symlink() and not legacy.exists():
        with contextlib.suppress(OSError):
            legacy.unlink()
    with lock, open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:  # scan back to the last complete line
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        f.truncate(pos)
        f.flush()
        os.fsync(f.fileno())


def journal_path(spec: str) -> Path | None:
    """The absolute journal file of a ``tune.storage`` value (None for memory and database URLs)."""
    if spec == "memory" or "://" in spec:
        return None
    return Path(spec.removeprefix("file:")).expanduser().resolve()


def make_storage(spec: str, heartbeat: bool = True):
    """``memory`` -> None; ``*.journal`` or ``file:PATH`` -> journal file; ``dialect://...`` -> RDB.

    A journal path is made absolute first, and guarded by a kernel file lock (``FileLock``); a database
    storage records trial heartbeats, so trials of a crashed process on another host are failed later.
    """
    import optuna

    if spec == "memory":
        return None
    if "://" in spec:
        kwargs = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS} if heartbeat else {}
        try:
            return optuna.storages.RDBStorage(spec, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        except RuntimeError as exc:
            if "compatible with the table schema" not in str(exc):
                raise
            from driftloop.config import ConfigError, mask_url

            # Optuna and MLflow both keep their schema version in an `alembic_version` table: one database
            # cannot hold both (Optuna then reads MLflow's revision and calls its own schema outdated)
            raise ConfigError(
                f"tune.storage {mask_url(spec)}: the database holds another application's schema (an MLflow "
                "tracking store?) or an Optuna schema of another version; give Optuna a database of its own"
            ) from None
    path = journal_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    lock = _journal_lock(path)
    path.touch(exist_ok=True)
    _repair_journal(path, lock)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))


class StudyLock:
    """Serialises driftloop's check-and-ask (and study recovery, enqueues, worker numbering) across processes.

    PostgreSQL: a session advisory lock on one connection held for the study's life (the server releases it
    when the process dies); SQLite and journal files: ``FileLock`` next to the file; memory: a no-op.
    Other databases: a ``FileLock`` in the temporary folder, which serialises processes on this host only.
    """

    def __init__(self, spec: str, study_name: str) -> None:
        import hashlib
        import tempfile

        self.spec, self._conn, self._engine, self._file = spec, None, None, None
        key = hashlib.sha256(f"driftloop.tune:{study_name}".encode()).digest()
        self._key = int.from_bytes(key[:8], "big", signed=True)
        if spec == "memory":
            return
        if "://" not in spec:
            self._file = FileLock(_flock_path(journal_path(spec), f".{key.hex()[:8]}.study-lock"))
            return
        import sqlalchemy as sa

        url = sa.make_url(spec)
        if url.get_backend_name() == "postgresql":
            from sqlalchemy.pool import NullPool

            self._engine = sa.create_engine(spec, poolclass=NullPool)
            self._conn = self._engine.connect()
            self._conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            base = Path(url.database).expanduser().resolve()
            base.parent.mkdir(parents=True, exist_ok=True)
        else:
            base = Path(tempfile.gettempdir()) / f"driftloop-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
        self._file = FileLock(_flock_path(base, f".{key.hex()[:8]}.study-lock"))

    def __enter__(self) -> StudyLock:
        if self._conn is not None:
            import sqlalchemy as sa

            self._conn.execute(sa.text("select pg_advisory_lock(:k)"), {"k": self._key})
        elif self._file is not None:
            self._file.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            import sqlalchemy as sa

            self._conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": self._key})
        elif self._file is not None:
            self._file.release()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._engine.dispose()
            self._conn = None


def fail_orphaned_trials(study) -> list[int]:
    """Fail the RUNNING trials whose process is gone; returns their numbers. Call under ``StudyLock``.

    A trial records its owner (``OWNER_ATTR``) right after it is asked, under the same lock, so under the
    lock a RUNNING trial without an owner was left by a process killed in between (or by an older
    driftloop). Owners on another host are left to Optuna's heartbeats (database storages).
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        if owner_alive(owner) is not False:
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, FAILED_ATTR, f"its process {owner or '?'} is gone")
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            failed.append(t.number)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # finished or failed by another process meanwhile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # database storages: trials without a recent heartbeat
    return failed


def fail_orphaned_runs(client, experiment_id: str, stages: Sequence[str] = ("tune", "tune.trial")) -> list[str]:
    """Set FAILED the RUNNING MLflow runs of ``stages`` whose process (tag ``driftloop.owner``) is gone."""
    tag = OWNER_TAG
    failed = []
    for stage in stages:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`driftloop.stage` = '{stage}'",
            max_results=1000,
        )
        for run in runs:
            if owner_alive(run.data.tags.get(tag)) is False and run.data.tags.get(tag):
                client.set_tag(run.info.run_id, "driftloop.failed_because", "its process is gone")
                client.set_terminated(run.info.run_id, status="FAILED")
                failed.append(run.info.run_id)
    return failed


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
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    tp: TuneParams,
    weights: tuple[np.ndarray | None, np.ndarray | None] | None = None,
):
    """LightGBM's train/valid datasets; ``weights``: optional (train, valid) sample weights (retrain.training_data)."""
    import lightgbm as lgb

    w_train, w_valid = weights or (None, None)
    ds_params = {"max_bin": tp.max_bin, "feature_pre_filter": False, "verbosity": -1}
    train = lgb.Dataset(
        X_train, y_train, weight=w_train, params=ds_params, free_raw_data=False, categorical_feature="auto"
    )
    valid = lgb.Dataset(X_valid, y_valid, weight=w_valid, reference=train, free_raw_data=False)
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
    worker_index: int | None = None,
    trial_point: str = TRIAL,
    weights: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> TuneResult:
    """Run (or resume, or join) the study and return the best parameters. ``callbacks`` are Optuna callbacks.

    ``warm_start``: parameter sets enqueued after LightGBM's defaults (the current champion's). A
    callable is called once the first trial has finished and its result enqueued then, so it is
    still the next trial (deterministic): the caller can look the champion up in MLflow while the
    first trial fits.

    Several processes may share one study (the tune stage and ``driftloop tune-worker``): under a
    ``StudyLock`` each fails the trials crashed processes left RUNNING, takes a worker number (its
    sampler's seed is ``base.seed + worker_index``, so workers do not propose the same sets) and asks
    for a trial only while COMPLETE + PRUNED + RUNNING < ``tune.n_trials``: the study ends with exactly
    that many finished trials. ``worker_index`` forces the number (give each worker a distinct one).
    ``weights``: optional (train, valid) sample weights (``driftloop.training_data``, retrain.training_data).
    """
    import lightgbm as lgb
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tp, seed = params.tune, params.base.seed
    metric = tune_metric(task, tp)
    direction = "maximize" if HIGHER_BETTER[metric] else "minimize"
    fixed = fixed_params(task, n_classes, tp, seed)
    train, valid = make_datasets(X_train, y_train, X_valid, y_valid, tp, weights)
    pruner = make_pruner(tp)
    lock = StudyLock(tp.storage, study_name)
    try:
        with lock:
            for attempt in range(5):  # workers of other studies may race to create the schema
                try:
                    study = optuna.create_study(
                        study_name=study_name,
                        storage=make_storage(tp.storage),
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
            fail_orphaned_trials(study)
            if worker_index is None:
                worker_index = 0
                if tp.storage != "memory":  # an atomic counter: the first process is 0, the next 1, ...
                    worker_index = int(study.user_attrs.get(WORKERS_ATTR, 0))
                    study.set_user_attr(WORKERS_ATTR, worker_index + 1)
            study.sampler = optuna.samplers.TPESampler(
                seed=seed + worker_index, multivariate=True, n_startup_trials=tp.n_startup_trials, constant_liar=True
            )

            def enqueue(candidates) -> None:  # under the lock: several workers never enqueue one set twice
                for candidate in candidates:
                    known = {k: candidate[k] for k in LGBM_DEFAULTS if k in candidate}
                    if len(known) == len(LGBM_DEFAULTS):
                        study.enqueue_trial(known, skip_if_exists=True)

            deferred: list[Callable] = []
            if tp.warm_start:
                enqueue([LGBM_DEFAULTS, *([] if callable(warm_start) else warm_start)])
                if callable(warm_start):
                    deferred.append(warm_start)

        def objective(trial) -> float:
            tuned = search_space(trial)
            fault_point(trial_point)
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

        budget = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        owner = process_identity()
        start = time.perf_counter()
        while tp.timeout_seconds is None or time.perf_counter() - start < tp.timeout_seconds:
            with lock:  # check-and-ask: no two processes take the last place of the budget
                if len(study.get_trials(deepcopy=False, states=budget)) >= tp.n_trials:
                    break
                trial = study.ask()
                trial.set_user_attr(OWNER_ATTR, owner)
                fault_point(TRIAL_ASKED)
            frozen = _run_trial(study, trial, objective, catch=(lgb.basic.LightGBMError,))
            fault_point(TRIAL_STORED)
            if deferred:  # after the first trial: the champion's parameters are the next trial
                with lock:
                    while deferred:
                        enqueue(deferred.pop()())
            for callback in callbacks:
                callback(study, frozen)
        seconds = time.perf_counter() - start
    finally:
        lock.close()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
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
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        seconds=seconds,
        study=study,
    )


def _run_trial(study, trial, objective: Callable, catch: tuple[type[BaseException], ...]):
    """Optuna's ``optimize`` step for one asked trial: heartbeat, objective, ``tell``; the stored FrozenTrial."""
    import optuna
    from optuna.trial import TrialState

    try:  # a private helper of Optuna's: without it, stale trials on other hosts are found by owner only
        from optuna.storages._heartbeat import get_heartbeat_thread

        heartbeat = get_heartbeat_thread(trial._trial_id, study._storage)
    except (ImportError, AttributeError):
        heartbeat = contextlib.nullcontext()
    error: BaseException | None = None
    with heartbeat:
        try:
            value, state = objective(trial), None
        except optuna.TrialPruned:
            value, state = None, TrialState.PRUNED
        except (Exception, KeyboardInterrupt) as exc:
            value, state, error = None, TrialState.FAIL, exc
    frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    if error is not None and not isinstance(error, catch):
        raise error
    return frozen
