"""BackgroundCallback: trial logging off the optimisation thread, in order, errors not lost."""

from __future__ import annotations

import threading
import time

import pytest

from driftloop.tune import BackgroundCallback, can_yield_cpu


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


@pytest.mark.skipif(not can_yield_cpu(), reason="per-thread nice values are a Linux feature")
def test_yield_cpu_lowers_only_the_calling_thread():
    import os

    seen = {}

    def work(study, trial):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    cb = BackgroundCallback(work, yield_cpu=True)
    cb("study", 0)
    cb.close()
    assert seen["nice"] == 19  # the logging thread gives way to LightGBM's threads
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller is untouched
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # and so is the process

    cb = BackgroundCallback(work)
    cb("study", 1)
    cb.close()
    assert seen["nice"] == before  # by default the worker keeps the normal priority
