"""The tune stage under real faults: a real ``kill -9`` (driftloop.faults) of ``driftloop tune`` / ``tune-worker``
subprocesses at named points, then a restart with no hand repair. Invariants: the rerun ends in bounded time, no
finished trial is lost, nothing stays RUNNING (Optuna trials, MLflow runs), the study has exactly ``tune.n_trials``
finished trials, the git-tracked ``reports/tune.json`` survives a killed run. Several processes on one PostgreSQL
study do not repeat parameter sets and stop exactly at the budget.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, run_data_stages, small_params, write_params

from driftloop import pipeline, tracking
from driftloop.config import load_params
from driftloop.tune import LOW_COST_STARTS

pytestmark = pytest.mark.slow

TUNE = ["tune", "--split-dir", "data/split", "--out", "models/best_params.json", "--report", "reports/tune.json"]
SENTINEL = {"best_value": 0.5, "n_complete": 1, "n_pruned": 0, "seconds": 1.0}


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRIFTLOOP_FAULT", "MLFLOW_TRACKING_URI")}
    env.pop("DRIFTLOOP_OPTUNA_STORAGE", None)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    if fault:
        env["DRIFTLOOP_FAULT"] = fault
    return env


def _run(argv: list[str], cwd: Path, fault: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(fault), capture_output=True, text=True, timeout=timeout)


def _driftloop(args: list[str], cwd: Path, fault: str | None = None, timeout: float = 240):
    return _run([sys.executable, "-m", "driftloop.cli", *args], cwd, fault, timeout)


def _trials(study) -> dict[int, tuple[str, float | None, dict]]:
    return {t.number: (t.state.name, t.value, dict(t.params)) for t in study.get_trials(deepcopy=False)}


def _journal_study(project: Path, p):
    import optuna

    from driftloop.tune import make_storage

    name = pipeline.study_name(p, project / "data/split/train.parquet")
    return optuna.load_study(study_name=name, storage=make_storage(str(project / p.tune.storage)))


@pytest.fixture
def journal_project(project, monkeypatch):
    """The project with a relative journal storage (the reported case), its data stages run."""
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DRIFTLOOP_OPTUNA_STORAGE", raising=False)
    write_params(project / "params.yaml", small_params(project, **{"tune.storage": "optuna/study.journal"}))
    p = load_params(project / "params.yaml")
    run_data_stages(p)
    (project / "reports").mkdir(exist_ok=True)
    (project / "reports/tune.json").write_text(json.dumps(SENTINEL))  # as if committed by an earlier run
    return project, p


DVC_TUNE = ["dvc", "repro", "--single-item", "tune"]


@pytest.mark.parametrize(
    ("fault", "via_dvc"),
    [("tune.trial@2", False), ("tune.trial_stored@2", False), ("tune.trial_asked@3", False), ("tune.study_done", True)],
)
def test_killed_tune_reruns_to_completion_without_losing_trials(journal_project, fault, via_dvc):
    """``via_dvc``: through ``dvc repro``, which deletes a stage's non-persisted outputs before running it."""
    project, p = journal_project
    killed = _run(DVC_TUNE, project, fault) if via_dvc else _driftloop(TUNE, project, fault)
    assert killed.returncode != 0 if via_dvc else killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert json.loads((project / "reports/tune.json").read_text()) == SENTINEL  # DVC did not delete it (persist)
    before = _trials(_journal_study(project, p))
    if fault in ("tune.trial@2", "tune.trial_asked@3"):
        assert [state for state, _, _ in before.values()].count("RUNNING") == 1, before
    if fault == "tune.trial@2":  # what older versions left: Optuna's lock, a dangling relative symlink
        (project / "optuna/study.journal.lock").symlink_to("optuna/study.journal")

    rerun = _run(DVC_TUNE, project, timeout=180) if via_dvc else _driftloop(TUNE, project, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    after = _trials(_journal_study(project, p))
    for number, (state, value, params) in before.items():  # no finished trial lost
        if state in ("COMPLETE", "PRUNED"):
            assert after[number] == (state, value, params)
    states = [state for state, _, _ in after.values()]
    assert "RUNNING" not in states  # the killed trial was failed at the next start
    assert states.count("COMPLETE") + states.count("PRUNED") == p.tune.n_trials
    report = json.loads((project / "reports/tune.json").read_text())
    assert report != SENTINEL and report["n_complete"] + report["n_pruned"] == p.tune.n_trials

    client = tracking.connect(p)
    exp = client.get_experiment_by_name(p.base.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]  # MLflow runs of the killed one: FAILED
    tune_runs = [r.info.status for r in runs if r.data.tags.get("driftloop.stage") == "tune"]
    assert tune_runs.count("FINISHED") == 1 and set(tune_runs) <= {"FAILED", "FINISHED"}


def test_stale_journal_lock_of_a_killed_writer_does_not_block(journal_project):
    """Killed while holding the journal's lock: the kernel releases it, the rerun does not wait for it."""
    project, p = journal_project
    killed = _driftloop(TUNE, project, "tune.journal_locked@5")
    assert killed.returncode == -signal.SIGKILL
    import time

    t0 = time.perf_counter()
    rerun = _driftloop(TUNE, project, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert time.perf_counter() - t0 < 100  # Optuna's symlink lock waited 30 s (absolute) or forever (relative)


@pytest.mark.postgres
def test_workers_and_the_stage_share_a_postgres_study_exactly(project, monkeypatch, pg_url, unique_name):
    """2 tune-workers + the tune stage at once on one study: exactly n_trials finished, no repeated sets."""
    import optuna

    monkeypatch.chdir(project)
    n_trials = 12
    overrides = {"tune.storage": pg_url, "tune.study_name": unique_name, "tune.n_trials": n_trials}
    write_params(project / "params.yaml", small_params(project, **overrides))
    p = load_params(project / "params.yaml")
    run_data_stages(p)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", *argv],
            cwd=project,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in (["tune-worker", "--split-dir", "data/split"],) * 2 + (TUNE,)
    ]
    try:
        outs = [proc.communicate(timeout=400) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], outs
        study = optuna.load_study(study_name=unique_name, storage=pg_url)
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) == n_trials
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
        enqueued = [t for t in trials if "fixed_params" in t.system_attrs]
        # the cheap starts and LightGBM's defaults, each enqueued once although three processes started
        assert len(enqueued) == len(LOW_COST_STARTS) + 1
        assert len({str(sorted(t.system_attrs["fixed_params"].items())) for t in enqueued}) == len(enqueued)
        sampled = [tuple(sorted(t.params.items())) for t in trials if "fixed_params" not in t.system_attrs]
        assert len(sampled) - len(set(sampled)) <= 1
        assert study.user_attrs["driftloop.workers"] == 3  # each process took its own sampler seed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        optuna.delete_study(study_name=unique_name, storage=pg_url)


@pytest.mark.postgres
def test_killed_worker_trial_is_failed_by_the_next_worker(project, monkeypatch, pg_url, unique_name):
    import optuna

    monkeypatch.chdir(project)
    overrides = {"tune.storage": pg_url, "tune.study_name": unique_name, "tune.n_trials": 4}
    write_params(project / "params.yaml", small_params(project, **overrides))
    p = load_params(project / "params.yaml")
    run_data_stages(p)
    try:
        killed = _driftloop(["tune-worker", "--split-dir", "data/split"], project, "tune.worker_trial@2")
        assert killed.returncode == -signal.SIGKILL
        study = optuna.load_study(study_name=unique_name, storage=pg_url)
        states = [t.state.name for t in study.trials]
        # the cheap starts and LightGBM's defaults are enqueued first: those not yet asked for stay WAITING
        assert states[:2] == ["COMPLETE", "RUNNING"] and set(states[2:]) <= {"WAITING"}, states
        again = _driftloop(["tune-worker", "--split-dir", "data/split", "--worker-index", "7"], project)
        assert again.returncode == 0, again.stderr
        states = [t.state.name for t in optuna.load_study(study_name=unique_name, storage=pg_url).trials]
        assert states[:2] == ["COMPLETE", "FAIL"]  # failed at once (its pid is gone), not after the grace period
        assert states.count("COMPLETE") + states.count("PRUNED") == 4 and "RUNNING" not in states
    finally:
        optuna.delete_study(study_name=unique_name, storage=pg_url)
