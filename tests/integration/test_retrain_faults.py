"""A killed retraining is finished at the next start, never left half done (real subprocesses, real SIGKILL).

`driftloop monitor BATCH --retrain` is killed at each `retrain.*` fault point; the next `driftloop run`,
`driftloop monitor` or `driftloop recover` rolls it back (the batch withdrawn, dvc.lock and outputs as
before: `git status` clean) or forward (registered: the batch stays, with its trigger link). Either way
`dvc status` is clean, no intent is left, and `driftloop run` has nothing to do: it never trains on a
batch silently. Also: `driftloop monitor` prints its numbers and exits 0 / 3 by decision.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, copy_project_files, dvc_clean, run, small_params, write_params

pytestmark = pytest.mark.slow

MODEL = "driftloop"


@pytest.fixture(scope="module")
def proj(tmp_path_factory) -> Path:
    """One trained project for the module (git + DVC + SQLite MLflow), committed: `git status` clean."""
    proj = tmp_path_factory.mktemp("faults") / "proj"
    proj.mkdir()
    copy_project_files(proj)
    # every case retrains on the same kind of drifted batch: with the default `monitor.reference: recent`, a
    # retrained champion's reference would be that drift (absorbed), and the next case's batch would not retrain
    overrides = {
        "monitor.cooldown_batches": 0,
        "monitor.reference": "all",
        "tune.n_trials": 2,
        "simulate.n_rows": 3000,
    }
    write_params(proj / "params.yaml", small_params(proj, **overrides))
    (proj / ".gitignore").write_text("mlflow.db\nmlartifacts/\nreports/monitoring/\nreports/alerts.jsonl\n")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.invalid"],
        ["git", "config", "user.name", "ci"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["driftloop", "run"],
    ):
        run(cmd, proj)
    _commit(proj, "first model")
    return proj


def _commit(proj: Path, message: str) -> None:
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", message, "--allow-empty"], proj)


def _client(proj: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")


def _versions(proj: Path) -> list:
    return sorted(_client(proj).search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))


def _nth_stage(proj: Path, point: str) -> str:
    """``retrain.after_stage@<stage name>`` -> ``retrain.after_stage@<its position in dvc.yaml>``."""
    import yaml

    name, _, stage = point.partition("@")
    if not stage or stage.isdigit():
        return point
    stages = [s for s, d in yaml.safe_load((proj / "dvc.yaml").read_text())["stages"].items() if d.get("cmd")]
    return f"{name}@{stages.index(stage) + 1}"


def _killed_monitor(proj: Path, point: str, seed: int) -> dict:
    """`driftloop monitor <drifted batch> --retrain` killed at ``point``; returns the intent it left."""
    point = _nth_stage(proj, point)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "DRIFTLOOP_FAULT": point}
    env.pop("MLFLOW_TRACKING_URI", None)
    batch = f"sim://2025-08?rows=2000&seed={seed}&covariate_shift=2&concept_drift=2"
    res = subprocess.run(
        ["driftloop", "monitor", batch, "--retrain"], cwd=proj, env=env, capture_output=True, text=True
    )
    assert res.returncode == -9, f"not killed at {point} ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    intent = json.loads((proj / ".driftloop/retrain.json").read_text())
    assert intent["batch_id"].startswith(f"sim-2025-08-{seed}-")
    return intent


def _summary(proj: Path, batch_id: str) -> dict:
    (path,) = (proj / "reports/monitoring" / batch_id).glob("*/summary.json")
    return json.loads(path.read_text())


def _check_invariants(proj: Path, intent: dict, before: dict) -> str:
    """Old state or new state, never a half one; returns which."""
    assert not (proj / ".driftloop/retrain.json").exists()
    status = run(["dvc", "status"], proj).stdout
    assert dvc_clean(status), status
    batch = proj / intent["batch_path"]
    dvcfile = batch.with_name(batch.name + ".dvc")
    assert batch.exists() == dvcfile.exists(), "a batch file without its .dvc file (or the reverse)"
    versions = _versions(proj)
    summary = _summary(proj, intent["batch_id"])
    client = _client(proj)
    if batch.exists():  # rolled forward: in the training data, with its trigger link both ways
        new = versions[-1]
        assert len(versions) == len(before["versions"]) + 1
        assert new.tags["driftloop.trigger.batch_id"] == intent["batch_id"]
        assert new.tags["driftloop.trigger.monitor_run_id"] == intent["monitor_run_id"]
        assert client.get_run(intent["monitor_run_id"]).data.tags["driftloop.retrain.version"] == str(new.version)
        assert summary["retrain"]["status"] == "registered" and str(summary["retrain"]["version"]) == str(new.version)
        assert (proj / "dvc.lock").read_bytes() != before["lock"]
        state = "new"
    else:  # rolled back: exactly as before
        assert (proj / "dvc.lock").read_bytes() == before["lock"]
        assert run(["git", "status", "--porcelain"], proj).stdout == ""
        assert len(versions) == len(before["versions"])
        assert summary["retrain"]["status"] == "rolled_back"
        state = "old"
    out = run(["driftloop", "run"], proj).stdout  # never trains on a batch silently
    assert "everything up to date" in out, out
    return state


@pytest.mark.parametrize(
    "point, seed, restart, expected",
    [
        # one case per way back and per restart command; benchmarks/bench_faults.py kills every retrain.* point
        ("retrain.after_intent", 101, ["driftloop", "recover"], "old"),
        ("retrain.after_stage@ingest", 103, ["driftloop", "monitor", "sim://2025-03?rows=1500&seed=1"], "old"),
        ("retrain.after_stage@tune", 104, ["driftloop", "run"], "old"),
        ("retrain.after_stage@register", 105, ["driftloop", "run"], "new"),
        ("retrain.after_pipeline", 106, ["driftloop", "recover"], "new"),
    ],
)
def test_a_killed_retraining_is_finished_at_the_next_start(proj, point, seed, restart, expected):
    assert run(["git", "status", "--porcelain"], proj).stdout == ""
    before = {"lock": (proj / "dvc.lock").read_bytes(), "versions": _versions(proj)}
    intent = _killed_monitor(proj, point, seed)
    res = run(restart, proj)
    assert "interrupted retraining" in res.stderr + res.stdout, res.stderr
    assert _check_invariants(proj, intent, before) == expected
    _commit(proj, f"after {point}")  # the next case starts from a clean tree


def test_the_same_batch_retrains_cleanly_after_a_rollback(proj):
    """After a rolled-back kill, the same batch goes through: nothing of the first attempt is in the way."""
    before = {"lock": (proj / "dvc.lock").read_bytes(), "versions": _versions(proj)}
    intent = _killed_monitor(proj, "retrain.after_stage@validate", 108)
    batch = f"sim://2025-08?rows=2000&seed={108}&covariate_shift=2&concept_drift=2"
    res = run(["driftloop", "monitor", batch, "--retrain"], proj)
    assert "rolled back" in res.stderr and "retrain: version" in res.stdout, res.stdout + res.stderr
    assert (proj / intent["batch_path"]).exists()
    assert len(_versions(proj)) == len(before["versions"]) + 1
    # monitored twice: both results kept
    assert len(list((proj / "reports/monitoring" / intent["batch_id"]).glob("*/summary.json"))) == 2
    # retraining the same batch again is refused: labeled data is never overwritten
    res = run(["driftloop", "monitor", batch, "--retrain"], proj, check=False)
    assert res.returncode == 1 and "already in the training data" in res.stderr, res.stderr
    _commit(proj, "retrained")


def test_monitor_prints_its_numbers_and_exit_codes(proj, tmp_path):
    res = run(["driftloop", "monitor", "sim://2025-02?rows=1500&seed=3&covariate_shift=1"], proj, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "drift share" in res.stdout and "prediction drift" in res.stdout and "performance: roc_auc" in res.stdout
    assert "most drifted columns" in res.stdout or "top columns" in res.stdout

    from driftloop.data.simulate import simulate

    path = tmp_path / "missing.csv"
    simulate(400, 5, start_date="2025-02-01", months=1).drop(columns=["credit_score"]).to_csv(path, index=False)
    res = run(["driftloop", "monitor", str(path)], proj, check=False)
    assert res.returncode == 3 and "SCHEMA_VIOLATION" in res.stdout and "credit_score" in res.stdout
    assert "drift share" not in res.stdout

    one = tmp_path / "one.csv"
    simulate(50, 6, start_date="2025-02-01", months=1).head(1).to_csv(one, index=False)
    res = run(["driftloop", "monitor", str(one)], proj, check=False)
    assert res.returncode == 0 and "INSUFFICIENT_DATA" in res.stdout, res.stdout
    assert "exit codes" in run(["driftloop", "monitor", "--help"], proj).stdout.lower()
