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

from driftloop.config import Params, SpaceParams, TuneParams
from driftloop.faults import fault_point, register_point

# LightGBM's defaults (inside the default space; max_bin and min_split_gain as tune.max_bin and ~0): a first trial
LGBM_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 20,
    "max_bin": 255,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "lambda_l1": 1e-8,
    "lambda_l2": 1e-8,
    "min_split_gain": 1e-8,
    "cat_smooth": 10.0,
}
# cheap configurations enqueued before the defaults (as FLAML's CFO starts low): few leaves, a large learning rate,
# coarse bins; the search then has a finished trial in seconds, even under a short time budget on large data
LOW_COST_STARTS: tuple[dict[str, Any], ...] = (
    {**LGBM_DEFAULTS, "num_leaves": 4, "learning_rate": 0.3, "max_bin": 63},
    {**LGBM_DEFAULTS, "num_leaves": 8, "learning_rate": 0.2, "min_child_samples": 10, "max_bin": 63},
)
# searched on a log scale; integer-valued
LOG_SCALE = frozenset(
    {"learning_rate", "num_leaves", "min_child_samples", "lambda_l1", "lambda_l2", "min_split_gain", "cat_smooth"}
)
INT_PARAMS = frozenset({"num_leaves", "min_child_samples", "max_bin"})
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


def class_weighting(task: str, y: np.ndarray, how: str, auto_share: float) -> dict[str, Any]:
    """``train.class_weight`` for labels ``y`` (train rows): ``{"fixed": {...}}`` LightGBM parameters,
    ``{"choose": [scale_pos_weight, ...]}`` for the train stage to choose from after an unweighted study (auto:
    1, sqrt(neg/pos) and neg/pos; ``driftloop.train``), ``{"class_weights": array}`` per class code
    (multiclass), or {}."""
    if task == "regression" or how == "none":
        return {}
    counts = np.bincount(y).astype(float)
    if task == "binary":
        ratio = counts[0] / max(counts[1], 1.0)
        if how == "balanced":
            return {"fixed": {"scale_pos_weight": float(ratio)}}
        share = counts.min() / counts.sum()
        if share < auto_share and ratio > 1:
            return {"choose": [1.0, float(np.sqrt(ratio)), float(ratio)]}
        return {}
    if how == "balanced":  # multiclass: rows weighted as scikit-learn's "balanced"
        return {"class_weights": counts.sum() / (len(counts) * np.maximum(counts, 1.0))}
    return {}


def row_weights(weighting: dict[str, Any], y: np.ndarray, weight: np.ndarray | None) -> np.ndarray | None:
    """Sample weights combining the caller's ``weight`` with multiclass class weights (None when neither)."""
    if "class_weights" not in weighting:
        return weight
    w = weighting["class_weights"][y]
    return w if weight is None else w * weight


def search_space(trial, space: SpaceParams | None = None, grid: dict[str, list] | None = None) -> dict[str, Any]:
    """The trial's LightGBM parameters: every key of ``LGBM_DEFAULTS``.

    ``space`` (``tune.space``) gives the bounds; a parameter whose low equals its high is fixed, not suggested.
    With ``grid`` (``tune.sampler: grid``) only the grid's parameters are suggested, from its value lists; the
    rest keep LightGBM's defaults. (``train.class_weight: auto`` is not searched here: see ``class_weighting``.)
    """
    out = {}
    if grid:
        out.update(LGBM_DEFAULTS)
        for name, values in grid.items():
            out[name] = trial.suggest_categorical(name, [_cast(name, v) for v in values])
        return out
    space = space or SpaceParams()
    for name in LGBM_DEFAULTS:
        bounds = getattr(space, name)
        if name == "max_bin":
            out[name] = trial.suggest_categorical(name, list(bounds)) if len(set(bounds)) > 1 else bounds[0]
        elif bounds[0] == bounds[1]:
            out[name] = _cast(name, bounds[0])
        elif name in INT_PARAMS:
            out[name] = trial.suggest_int(name, int(bounds[0]), int(bounds[1]), log=name in LOG_SCALE)
        else:
            out[name] = trial.suggest_float(name, float(bounds[0]), float(bounds[1]), log=name in LOG_SCALE)
    return out


def _cast(name: str, value: Any) -> Any:
    return int(value) if name in INT_PARAMS else float(value)


def describe_space(tp: TuneParams) -> dict[str, Any]:
    """The search as logged to MLflow (``search_space.json``) and shown by ``driftloop config`` (``tune.space``)."""
    if tp.sampler == "grid":
        space = {k: {"grid": list(v)} for k, v in tp.grid.items()}
        fixed = {k: v for k, v in LGBM_DEFAULTS.items() if k not in tp.grid}
    else:
        space, fixed = {}, {}
        for name in LGBM_DEFAULTS:
            bounds = getattr(tp.space, name)
            if name == "max_bin":
                space[name] = {"choices": list(bounds)}
            elif bounds[0] == bounds[1]:
                fixed[name] = bounds[0]
            else:
                space[name] = {"low": bounds[0], "high": bounds[1], "log": name in LOG_SCALE}
    return {"sampler": tp.sampler, "space": space, "fixed": fixed}


def clip_to_space(candidate: dict[str, Any], space: SpaceParams) -> dict[str, Any]:
    """An enqueued configuration moved inside ``space`` (a narrowed space must not start outside itself)."""
    out = {}
    for name, value in candidate.items():
        bounds = getattr(space, name, None)
        if bounds is None:
            out[name] = value
        elif name == "max_bin":
            out[name] = min(bounds, key=lambda b: (abs(b - value), b))
        else:
            out[name] = _cast(name, min(max(value, bounds[0]), bounds[1]))
    return out


def make_sampler(tp: TuneParams, seed: int):
    """``tune.sampler``, seeded: tpe (multivariate, constant liar for parallel workers), random, grid (the
    ``tune.grid`` value lists), cmaes (categorical ``max_bin`` drawn independently) or qmc (scrambled Sobol)."""
    import optuna

    s = optuna.samplers
    if tp.sampler == "random":
        return s.RandomSampler(seed=seed)
    if tp.sampler == "grid":

        class Grid(s.GridSampler):
            def after_trial(self, study, trial, state, values) -> None:
                pass  # Optuna's calls study.stop() (optimize() only); the stage caps n_trials at the grid's size

        return Grid({k: [_cast(k, v) for v in vals] for k, vals in tp.grid.items()}, seed=seed)
    if tp.sampler == "cmaes":
        return s.CmaEsSampler(seed=seed, n_startup_trials=tp.n_startup_trials, warn_independent_sampling=False)
    if tp.sampler == "qmc":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return s.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return s.TPESampler(seed=seed, multivariate=True, n_startup_trials=tp.n_startup_trials, constant_liar=True)


def grid_size(tp: TuneParams) -> int:
    n = 1
    for values in tp.grid.values():
        n *= len(set(values))
    return n


# tune.num_threads: 0 (auto) fits on one thread below this many train+valid rows: there LightGBM's OpenMP threads
# wait on each other more than they share work, and on a loaded machine far more (a 5-fold CV on 569 rows: 2 s on
# one thread, 44-72 s on both cores at load 9; benchmarks/README.md)
SINGLE_THREAD_MAX_ROWS = 20_000


def effective_threads(tp: TuneParams, n_rows: int) -> int:
    """``tune.num_threads`` for data of ``n_rows`` rows: as set, or (0) one thread on small data, else all cores."""
    if tp.num_threads:
        return tp.num_threads
    return 1 if n_rows < SINGLE_THREAD_MAX_ROWS else 0


def auto_timeout(n_rows: int, n_columns: int) -> float:
    """``tune.timeout_seconds: auto``: 30 s plus 50 s per million cells of train+valid, at most 600 s.

    100k rows x 30 columns: 180 s; 20k x 20: 50 s; a few thousand rows: ~30 s (30 trials usually finish first).
    """
    return float(min(30.0 + 50.0 * n_rows * max(n_columns, 1) / 1e6, 600.0))


def resolve_timeout(tp: TuneParams, n_rows: int, n_columns: int) -> float | None:
    return auto_timeout(n_rows, n_columns) if tp.timeout_seconds == "auto" else tp.timeout_seconds


def fold_keys(params: Params, train_df: pd.DataFrame, valid_df: pd.DataFrame) -> dict[str, Any]:
    """``groups`` / ``times`` for CV folds (train rows then valid rows), from split.group_column and
    split.time_column: a group never straddles folds; time-ordered folds validate on later rows."""
    out: dict[str, Any] = {}
    for key, column in (("groups", params.split.group_column), ("times", params.split.time_column)):
        if column:
            out[key] = pd.concat([train_df[column], valid_df[column]], ignore_index=True).to_numpy()
    return out


@dataclass
class ValidationPlan:
    """How trials are scored: the validation split (``folds`` None) or k folds over train+valid."""

    kind: str  # holdout | kfold | stratified | group | time
    folds: list[tuple[np.ndarray, np.ndarray]] | None
    fit_rows: float  # rows a trial's model is fitted on (mean over folds): the refit scales rounds by total/this
    total_rows: int  # train + valid

    @property
    def n_folds(self) -> int:
        return len(self.folds) if self.folds else 0

    def describe(self) -> str:
        return "the validation split" if self.folds is None else f"{self.n_folds}-fold CV ({self.kind}) on train+valid"

    def refit_rounds(self, best_iteration: int) -> int:
        """The tuned rounds scaled from the rows a trial fitted on to train+valid (the refit's rows)."""
        return max(1, int(round(best_iteration * self.total_rows / max(self.fit_rows, 1.0))))


def validation_plan(
    tp: TuneParams,
    task: str,
    y: np.ndarray,
    n_train: int,
    seed: int,
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> ValidationPlan:
    """``tune.cv_folds`` resolved for these rows (``y``: train then valid labels, ``n_train`` of them train).

    auto: CV when train+valid hold at most ``tune.cv_auto_max_rows`` rows. Folds are stratified for
    classification (at most as many as the smallest class has rows), grouped when ``groups`` are given (a group
    never straddles folds), expanding-window time-ordered when ``times`` are (each fold validates on later rows).
    Fewer than 2 possible folds: the validation split.
    """
    total = len(y)
    holdout = ValidationPlan("holdout", None, float(n_train), total)
    k = tp.cv_folds
    if k == "auto":
        k = tp.cv_auto_folds if total <= tp.cv_auto_max_rows else 0
    if k < 2:
        return holdout
    from sklearn import model_selection as ms

    index = np.arange(total)
    if times is not None:
        order = np.argsort(np.asarray(times), kind="stable")
        splitter = ms.TimeSeriesSplit(n_splits=k)
        folds = [(order[tr], order[va]) for tr, va in splitter.split(order)]
        kind = "time"
    elif groups is not None:
        n_groups = len(pd.unique(groups))
        k = min(k, n_groups)
        if k < 2:
            return holdout
        if task == "regression":
            splitter = ms.GroupKFold(n_splits=k)
        else:
            k = min(k, int(np.bincount(y).min()))
            if k < 2:
                return holdout
            splitter = ms.StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(index, y, groups))
        kind = "group"
    elif task == "regression":
        folds = list(ms.KFold(n_splits=k, shuffle=True, random_state=seed).split(index))
        kind = "kfold"
    else:
        k = min(k, int(np.bincount(y).min()))
        if k < 2:
            return holdout
        folds = list(ms.StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(index, y))
        kind = "stratified"
    return ValidationPlan(kind, folds, float(np.mean([len(tr) for tr, _ in folds])), total)


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


def pruning_on(tp: TuneParams, cross_validated: bool) -> bool:
    """``tune.pruning``: true / false, or auto: on for the validation split, off for cross-validated trials."""
    return not cross_validated if tp.pruning == "auto" else bool(tp.pruning)


def make_pruner(tp: TuneParams, enabled: bool | None = None):
    """``tune.pruning`` / ``tune.pruner``: the best-curve pruner (default), Optuna's median pruner, or none."""
    import optuna

    if not (pruning_on(tp, False) if enabled is None else enabled):
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


def _deadline_callback(deadline: float, study):
    """Stop the trial (as pruned) once the time budget is spent, provided a trial has completed: a slow
    configuration (a small learning rate, 1,000 rounds) started just before the deadline does not run past it."""
    import optuna
    from optuna.trial import TrialState

    def callback(env) -> None:
        if time.perf_counter() > deadline and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise optuna.TrialPruned("the time budget (tune.timeout_seconds) ran out")

    callback.order = 26
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
    validation: str = "the validation split"  # ValidationPlan.describe()
    refit_rounds: int | None = None  # the best trial's rounds scaled to train+valid (the train stage's refit)
    timeout_seconds: float | None = None  # the time budget this run had (tune.timeout_seconds resolved)
    study: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "study"}


def make_datasets(
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    tp: TuneParams,
    max_bin: int | None = None,
    train_weight: np.ndarray | None = None,
    valid_weight: np.ndarray | None = None,
):
    """LightGBM's train/valid datasets; ``weights``: optional (train, valid) sample weights (retrain.training_data)."""
    import lightgbm as lgb

    ds_params = dataset_params(tp, max_bin)
    train = lgb.Dataset(
        X_train, y_train, weight=train_weight, params=ds_params, free_raw_data=False, categorical_feature="auto"
    )
    valid = lgb.Dataset(X_valid, y_valid, weight=valid_weight, reference=train, free_raw_data=False)
    return train, valid


def dataset_params(tp: TuneParams, max_bin: int | None = None) -> dict[str, Any]:
    return {"max_bin": int(max_bin or tp.max_bin), "feature_pre_filter": False, "verbosity": -1}


def full_dataset(X: pd.DataFrame, y: np.ndarray, tp: TuneParams, max_bin: int | None = None, weight=None):
    """One LightGBM dataset of all rows (CV folds are subsets of it; the final refit fits on it)."""
    import lightgbm as lgb

    return lgb.Dataset(
        X, y, weight=weight, params=dataset_params(tp, max_bin), free_raw_data=False, categorical_feature="auto"
    )


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
    groups: np.ndarray | None = None,
    times: np.ndarray | None = None,
    train_weight: np.ndarray | None = None,
    valid_weight: np.ndarray | None = None,
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

    Validation (``validation_plan``): the validation split, or k-fold CV over train+valid (``tune.cv_folds``;
    ``groups``/``times`` give grouped / time-ordered folds, both aligned with train rows then valid rows).
    The study stops at ``tune.n_trials`` or when ``tune.timeout_seconds`` (auto: ``auto_timeout``) is spent.
    """
    import lightgbm as lgb
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tp, seed = params.tune, params.base.seed
    metric = tune_metric(task, tp)
    direction = "maximize" if HIGHER_BETTER[metric] else "minimize"
    fixed = fixed_params(task, n_classes, tp, seed)
    y_all = np.concatenate([y_train, y_valid])
    fixed["num_threads"] = effective_threads(tp, len(y_all))
    weighting = class_weighting(task, y_train, params.train.class_weight, params.train.minority_share_auto)
    fixed.update(weighting.get("fixed", {}))
    train_weight = row_weights(weighting, y_train, train_weight)
    valid_weight = row_weights(weighting, y_valid, valid_weight)
    if train_weight is not None and valid_weight is None:
        valid_weight = np.ones(len(y_valid))
    plan = validation_plan(tp, task, y_all, len(y_train), seed, groups, times)
    pruning = pruning_on(tp, plan.folds is not None)
    timeout = resolve_timeout(tp, len(y_all), X_train.shape[1])
    for callback in callbacks:  # e.g. the progress display: trials and the time budget
        if hasattr(callback, "set_budget"):
            callback.set_budget(timeout)
    datasets: dict[int, Any] = {}  # max_bin -> the binned dataset(s), built once each and shared by trials

    def data_for(max_bin: int):
        if max_bin not in datasets:
            if plan.folds is None:
                datasets[max_bin] = make_datasets(
                    X_train, y_train, X_valid, y_valid, tp, max_bin, train_weight, valid_weight
                )
            else:
                weight = None if train_weight is None else np.concatenate([train_weight, valid_weight])
                X_all = pd.concat([X_train, X_valid], ignore_index=True)
                datasets[max_bin] = full_dataset(X_all, y_all, tp, max_bin, weight)
        return datasets[max_bin]

    pruner = make_pruner(tp, pruning)
    grid = tp.grid if tp.sampler == "grid" else None
    n_trials = min(tp.n_trials, grid_size(tp)) if grid else tp.n_trials
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
            study.sampler = make_sampler(tp, seed + worker_index)

            def enqueue(candidates) -> None:  # under the lock: several workers never enqueue one set twice
                for candidate in candidates:
                    known = {k: candidate[k] for k in LGBM_DEFAULTS if k in candidate}
                    if len(known) == len(LGBM_DEFAULTS):
                        study.enqueue_trial(clip_to_space(known, tp.space), skip_if_exists=True)

            deferred: list[Callable] = []
            if grid is None:  # a grid is its own plan: nothing enqueued
                enqueue(LOW_COST_STARTS if tp.low_cost_start else ())
            if tp.warm_start and grid is None:
                enqueue([LGBM_DEFAULTS, *([] if callable(warm_start) else warm_start)])
                if callable(warm_start):
                    deferred.append(warm_start)

        def objective(trial) -> float:
            tuned = search_space(trial, tp.space, grid)
            fault_point(trial_point)
            cb = [_metric_callback(trial, metric, tp.report_every)] if pruning else []
            if timeout is not None:
                cb.append(_deadline_callback(study_start + timeout, study))
            start = time.perf_counter()
            data = data_for(tuned["max_bin"])
            if plan.folds is not None:
                res = lgb.cv(
                    {**fixed, **tuned},
                    data,
                    num_boost_round=tp.max_rounds,
                    folds=plan.folds,
                    seed=seed,
                    callbacks=[lgb.early_stopping(tp.early_stopping_rounds, verbose=False), *cb],
                )
                scores = res[f"valid {metric}-mean"]
                best_iter, value = len(scores), float(scores[-1])
            else:
                train, valid = data
                booster = fit_booster({**fixed, **tuned}, train, valid, tp, cb)
                best_iter = booster.best_iteration or booster.current_iteration()
                value = float(booster.best_score["valid"][metric])
            trial.set_user_attr("best_iteration", int(best_iter))
            trial.set_user_attr("fit_seconds", time.perf_counter() - start)
            trial.set_user_attr("lgb", tuned)  # every tuned key, searched or fixed by tune.space
            return value

        budget = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        owner = process_identity()
        start = study_start = time.perf_counter()
        while timeout is None or time.perf_counter() - start < timeout:
            with lock:  # check-and-ask: no two processes take the last place of the budget
                if len(study.get_trials(deepcopy=False, states=budget)) >= n_trials:
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
    best_params = {**best.user_attrs.get("lgb", {}), **best.params}
    best_iteration = int(best.user_attrs.get("best_iteration", tp.max_rounds))
    return TuneResult(
        best_params=best_params,
        lgb_params={**fixed, **best_params},
        best_value=float(best.value),
        best_iteration=best_iteration,
        metric=metric,
        direction=direction,
        study_name=study_name,
        n_complete=len(complete),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        seconds=seconds,
        validation=plan.describe(),
        refit_rounds=plan.refit_rounds(best_iteration),
        timeout_seconds=timeout,
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
