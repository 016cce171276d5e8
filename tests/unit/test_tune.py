"""BackgroundCallback: trial logging off the optimisation thread, in order, errors not lost."""

from __future__ import annotations

import threading
import time

import pytest

from driftloop.tune import BackgroundCallback


def test_background_callback_runs_every_trial_in_order_off_the_calling_thread():
    seen, threads = [], set()

    def slow(study, trial):
        time.sleep(0.01)
        seen.append((study, trial))
        threads.add(threading.current_thread().name)

    cb = BackgroundCallback(slow)
    t0 = time.perf_counter()
    for i in range(20):
        cb("study", i)
    queued = time.perf_counter() - t0
    cb.close()
    assert seen == [("study", i) for i in range(20)]
    assert threads == {"driftloop-trial-logger"}
    assert queued < 0.1  # the caller did not wait for the 20 x 10 ms of work
    cb.close()  # idempotent


def test_background_callback_reraises_the_first_error():
    calls, go = [], threading.Event()

    def failing(study, trial):
        go.wait(5)  # hold the worker until all three trials are queued
        calls.append(trial)
        if trial == 1:
            raise RuntimeError("tracking store unreachable")

    cb = BackgroundCallback(failing)
    cb(None, 0)
    cb(None, 1)
    cb(None, 2)  # queued before the worker saw the error: skipped, not run after a failure
    go.set()
    with pytest.raises(RuntimeError, match="unreachable"):
        cb.close()
    assert calls == [0, 1]
    with pytest.raises(RuntimeError, match="unreachable"):  # later trials fail fast instead of logging nothing
        cb(None, 3)


class _Trial:
    def __init__(self, prune_after: int | None = None):
        self.reports: list[tuple[int, float]] = []
        self.user_attrs: dict = {}
        self.prune_after = prune_after

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune_after is not None and len(self.reports) >= self.prune_after

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


def _feed(callback, rounds: int) -> None:
    from types import SimpleNamespace

    for i in range(rounds):
        callback(SimpleNamespace(iteration=i, evaluation_result_list=[("valid", "auc", i / 1000, True)]))


@pytest.mark.parametrize(
    ("learning_rate", "rounds", "expected"),
    [
        (None, 12, [(5, 0.004), (10, 0.009)]),  # by rounds: every 5 rounds
        (0.1, 12, [(5, 0.004), (10, 0.009)]),  # LightGBM's default rate: progress == rounds
        (0.3, 5, [(5, 0.001), (10, 0.003), (15, 0.004)]),  # 3 units a round
        (0.02, 50, [(5, 0.024), (10, 0.049)]),  # 0.2 units a round: a report every 25 rounds
        (1.0, 1, [(5, 0.0), (10, 0.0)]),  # one round crosses two report points: both get its value
    ],
)
def test_metric_callback_reports_rounds_or_learning_progress(learning_rate, rounds, expected):
    from driftloop.tune import _metric_callback

    trial = _Trial()
    _feed(_metric_callback(trial, "auc", 5, learning_rate), rounds)
    assert trial.reports == expected


def test_metric_callback_prunes_and_records_the_round():
    import optuna

    from driftloop.tune import _metric_callback

    trial = _Trial(prune_after=2)
    with pytest.raises(optuna.TrialPruned):
        _feed(_metric_callback(trial, "auc", 5, 0.05), 100)
    assert trial.user_attrs["pruned_at"] == 200 // 10  # progress 10 (2nd report) after 20 rounds at lr 0.05
