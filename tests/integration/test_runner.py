"""`driftloop run`: the DVC pipeline with its stage commands in one process, interchangeable with `dvc repro`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run, write_params

from driftloop import runner

pytestmark = pytest.mark.slow


def _lock_outs(proj) -> dict[str, str]:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    return {o["path"]: o.get("md5") for st in lock["stages"].values() for o in st.get("outs", [])}


DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = list(DVC_STAGES)  # declared upstream first (a chain)


def _ran(out: str) -> set[str]:
    """The stages an output says ran, but those that always run (the source fingerprint)."""
    return set(re.findall(r"Running stage '(\w+)'", out)) - {s for s in STAGES if DVC_STAGES[s].get("always_changed")}


def _stage_lines(out: str, stages: list[str], total: int, first: int = 1) -> None:
    """Every stage has its start line (stage k of N, time so far) and its end line (seconds)."""
    for k, name in enumerate(stages, start=first):
        assert re.search(rf"^\[{k}/{total}\] Running stage '{name}' \(in process\), \d+:\d\d elapsed:$", out, re.M), out
        assert re.search(rf"^Stage '{name}' done in \d+\.\d s \[{k}/{total}, \d+:\d\d elapsed\]$", out, re.M), out


def test_run_in_process_records_the_same_lock_as_dvc_repro(project):
    upto_split = STAGES[: STAGES.index("split") + 1]  # (source,) ingest, validate, split
    first = run(["driftloop", "run", "split"], project)
    assert first.stdout.count("(in process)") == len(upto_split)  # no stage process
    changed = [s for s in upto_split if not DVC_STAGES[s].get("always_changed")]  # the source stage does not count
    assert f"run: {len(changed)} stage(s) ran" in first.stdout
    _stage_lines(first.stdout, upto_split, len(upto_split))  # not a terminal: plain lines
    hashes = _lock_outs(project)
    assert set(hashes) >= {"data/raw.parquet", "data/validated.parquet", "data/split/train.parquet"}

    # dvc itself sees the lock driftloop wrote as up to date, and its own rerun gives the same data hashes
    assert "up to date" in run(["dvc", "status", "split"], project).stdout
    assert not _ran(run(["dvc", "repro", "split"], project).stdout)
    run(["dvc", "repro", "--force", "split"], project)
    assert _lock_outs(project) == hashes

    # the rest of the DAG, then nothing to do either way
    rest = run(["driftloop", "run"], project)
    after_split = STAGES[len(upto_split) :]
    always = [s for s in upto_split if DVC_STAGES[s].get("always_changed")]
    assert rest.stdout.count("(in process)") == len(always) + len(after_split)
    assert "version 1 -> @champion" in rest.stdout
    _stage_lines(rest.stdout, after_split, len(STAGES), first=len(upto_split) + 1)
    again = run(["driftloop", "run"], project).stdout
    # the stage that always runs (the source fingerprint) does not count: nothing after it changes
    assert "run: everything up to date" in again and "Running stage 'ingest'" not in again
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status or all(f"{s}:" not in status for s in STAGES if s not in always), status
    assert not _ran(run(["dvc", "repro"], project).stdout)

    # evaluate's curves reach MLflow as images beside their data (and the stage's plots folder has them)
    from mlflow.tracking import MlflowClient

    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    logged = {
        Path(a.path).name for a in MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run_id, "plots")
    }
    for name in ("roc", "precision_recall", "calibration", "confusion"):
        assert {f"{name}.csv", f"{name}.png"} <= logged, logged
        assert (project / "reports/plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_failing_stage_exits_nonzero_and_keeps_the_lock(project):
    run(["driftloop", "run", "split"], project)
    before = (project / "dvc.lock").read_bytes()
    raw = (project / "data/raw.parquet").read_bytes()
    bad = project / "empty.csv"
    bad.write_text("")
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["ingest"].update(source="csv", path=str(bad))
    write_params(project / "params.yaml", p)
    res = run(["driftloop", "run"], project, check=False)
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert str(bad) in out  # the stage's own message, naming the file
    assert "failed to reproduce 'ingest'" in out
    assert "Running stage 'validate'" not in out  # nothing after the failed stage ran
    assert (project / "dvc.lock").read_bytes() == before
    assert (project / "data/raw.parquet").read_bytes() == raw


def test_run_subprocess_mode_uses_one_process_per_stage(project):
    res = run(["driftloop", "run", "--subprocess", "ingest"], project)
    assert "(in process)" not in res.stdout
    assert "Running stage 'ingest'" in res.stdout
    assert "up to date" in run(["dvc", "status", "ingest"], project).stdout


def test_the_dvc_hook_exists_in_the_installed_dvc():
    # if a DVC release renames dvc.stage.run.cmd_run, `driftloop run` falls back to subprocesses; this says so
    assert runner.in_process_available()


def test_connecting_leaves_no_uri_behind_for_the_next_params_file(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; load_params reads that variable as a user's
    # override, so without care the second project loaded in one process would log to the first one's store
    from conftest import small_params

    from driftloop import tracking
    from driftloop.config import load_params

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        write_params(d / "params.yaml", small_params(d, **{"base.registry_uri": f"sqlite:///{d / 'registry.db'}"}))
    tracking.connect(load_params(a / "params.yaml"))
    second = load_params(b / "params.yaml")
    assert second.base.tracking_uri == f"sqlite:///{b / 'mlflow.db'}"
    assert second.base.registry_uri == f"sqlite:///{b / 'registry.db'}"
    import mlflow

    assert mlflow.get_tracking_uri() == f"sqlite:///{a / 'mlflow.db'}"  # MLflow itself still points at a

    # a project without a registry URI has its registry in its tracking store, whatever came before
    third = load_params(write_params(tmp_path / "c.yaml", small_params(tmp_path)))
    assert third.base.registry_uri is None
    client = tracking.connect(third)
    assert mlflow.get_registry_uri() == client._registry_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"

    # a user's own override survives connecting
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")
    tracking.connect(second)
    assert load_params(a / "params.yaml").base.tracking_uri == f"sqlite:///{tmp_path / 'user.db'}"


def test_only_a_new_local_sqlite_store_is_created_by_a_child_process(tmp_path):
    (tmp_path / "old.db").touch()
    assert runner.new_sqlite_store("sqlite:///mlflow.db", tmp_path) == tmp_path / "mlflow.db"
    assert runner.new_sqlite_store(f"sqlite:///{tmp_path / 'x.db'}", "/") == tmp_path / "x.db"
    assert runner.new_sqlite_store("sqlite:///old.db?timeout=5", tmp_path) is None  # exists: just opened
    for uri in ("sqlite://", "http://127.0.0.1:5000", "postgresql://postgres@127.0.0.1/test", "file:./mlruns"):
        assert runner.new_sqlite_store(uri, tmp_path) is None


def test_warm_up_opens_the_store_and_maps_mlflows_requirements(tmp_path, monkeypatch):
    import sqlite3

    from conftest import small_params
    from mlflow.utils import requirements_utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store is the params file's
    write_params(tmp_path / "params.yaml", small_params(tmp_path))
    requirements_utils._MODULES_TO_PACKAGES = None  # as in a new process
    runner.warm_up(tmp_path / "params.yaml").join(timeout=120)
    assert requirements_utils._MODULES_TO_PACKAGES  # log_model's requirement check will not scan site-packages
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # the store exists, with MLflow's tables
        tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"experiments", "runs", "registered_models"} <= tables


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("driftloop ingest --out data/raw.parquet", ["ingest", "--out", "data/raw.parquet"]),
        ("/opt/venv/bin/driftloop split --out-dir 'data/my split'", ["split", "--out-dir", "data/my split"]),
        ("python train.py", None),
        ("driftloop ingest --out a.parquet && touch done", None),
        ("driftloop ingest > log.txt", None),
        ("driftloop 'unbalanced", None),
        ("", None),
    ],
)
def test_driftloop_args(cmd, args):
    assert runner.driftloop_args(cmd) == args


def test_a_second_concurrent_run_names_the_process_that_holds_the_lock(project):
    """Two `driftloop run` at once: the second stops, naming the first by PID, and changes nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["tune"].update(n_trials=200, max_rounds=2000, early_stopping_rounds=500)  # a tune stage that lasts
    write_params(project / "params.yaml", p)
    run(["driftloop", "run", "split"], project)
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = project / "first.log"
    with log.open("w") as fh:
        first = subprocess.Popen(["driftloop", "run"], cwd=project, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Running stage 'tune'" not in log.read_text():
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        lock_before = (project / "dvc.lock").read_bytes()
        second = run(["driftloop", "run"], project, check=False)
        assert first.poll() is None, "the first run ended before the second tried: the test proves nothing"
        assert second.returncode == 1
        out = second.stdout + second.stderr
        assert "is busy" in out and f"PID {first.pid}" in out, out
        assert (project / "dvc.lock").read_bytes() == lock_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
