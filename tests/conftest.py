"""Shared fixtures: small params, a throw-away project (git + DVC + SQLite MLflow), PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

# `import dvc` binds DVC's log handlers to sys.stdout/stderr of that moment: imported here, under pytest's
# session-wide capture, never first inside a test's capfd (closed after that test: a later test's DVC log line
# then raised "I/O operation on closed file", depending on which module a worker ran first)
import dvc  # noqa: F401
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
PG_URL = os.environ.get("DRIFTLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def small_params(tmp: Path, **overrides) -> dict:
    """params.yaml of the repo, shrunk for tests (a few thousand rows, a few trials)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["base"]["tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    p["base"]["artifact_location"] = str(tmp / "mlartifacts")
    p["simulate"]["n_rows"] = 3000
    p["tune"].update(
        n_trials=4, max_rounds=80, early_stopping_rounds=10, num_threads=1, pruner_warmup_rounds=5, n_startup_trials=2
    )
    p["tune"]["timeout_seconds"] = None  # tests count trials: no time budget to cut a study short on a loaded machine
    # the gate, registry and monitoring scenarios are built from LightGBM models of chosen strength: no algorithm
    # selection swapping in a linear model (tests/unit/test_tune_quality.py covers the selection)
    p["train"]["candidates"] = []
    p["register"]["n_bootstrap"] = 50
    p["monitor"]["reference_rows"] = 1000
    p["evaluate"]["shap_sample_rows"] = 200
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        p[section][key] = value
    return p


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def dvc_clean(status_stdout: str) -> bool:
    """``dvc status`` has nothing to do but the ``source`` stage, which is ``always_changed`` by design."""
    from driftloop.runner import status_clean

    return status_clean(status_stdout)


def copy_project_files(proj: Path) -> None:
    """What a clone has that the pipeline reads: dvc.yaml, src/ (stage deps), data/labeled/."""
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (proj / "data" / "labeled").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "data" / "labeled" / "README.md", proj / "data" / "labeled" / "README.md")


def module_workdir(tmp_path_factory, name: str) -> tuple[Path, pytest.MonkeyPatch]:
    """A module fixture's working directory: a fresh temp dir made the cwd, with no tracking URI, alert URLs or serve
    token from the environment (they would override the module's params.yaml). Call ``mp.undo()`` at teardown."""
    work = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    for var in ("MLFLOW_TRACKING_URI", "DRIFTLOOP_ALERT_URLS", "DRIFTLOOP_SERVE_TOKEN"):
        mp.delenv(var, raising=False)
    return work, mp


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh driftloop project: the repo's dvc.yaml and src/, small params, git + dvc init."""
    proj = tmp_path / "proj"
    proj.mkdir()
    copy_project_files(proj)
    write_params(proj / "params.yaml", small_params(proj))
    run(["git", "init", "-q"], proj)
    run(["git", "config", "user.email", "ci@example.invalid"], proj)
    run(["git", "config", "user.name", "ci"], proj)
    run(["dvc", "init", "-q"], proj)
    run(["dvc", "config", "core.analytics", "false"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "init"], proj)
    return proj


def pg_database(name: str) -> str:
    """A database of its own on the local PostgreSQL (created once), its URL; skips when unreachable.

    Optuna and MLflow both keep their schema revision in an ``alembic_version`` table, so they cannot share a
    database: Optuna's tests and MLflow's get one each, never the server's shared ``test`` database.
    """
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3}, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for attempt in range(20):  # two xdist workers may create it at once (or hold template1 a moment)
                if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                    break
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                except sa.exc.DBAPIError:
                    if attempt == 19:
                        raise
                    time.sleep(0.5)
        engine.dispose()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> str:
    """The local PostgreSQL, a database for Optuna studies and SQL ingest; skips with a reason when unreachable."""
    return pg_database("driftloop_test")


@pytest.fixture
def pg_mlflow_url() -> str:
    """The local PostgreSQL, a database for MLflow tracking stores (never shared with Optuna)."""
    return pg_database("driftloop_test_mlflow")


@pytest.fixture
def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


# In-process stages with the paths dvc.yaml declares (for tests that need a model without `dvc repro`).
def run_data_stages(p) -> dict:
    """ingest → validate → split in the current directory; returns the validation report."""
    from driftloop import pipeline

    pipeline.run_ingest(p, "data/raw.parquet")
    report = pipeline.run_validate(p, "data/raw.parquet", "data/validated.parquet", "reports/validation.json")
    pipeline.run_split(p, "data/validated.parquet", "data/split")
    return report


def run_model_stages(p, tuned: str = "models/best_params.json") -> tuple[dict, dict]:
    """train → evaluate → register from ``tuned``; returns (evaluation, registration)."""
    from driftloop import pipeline

    pipeline.run_train(
        p, "data/split", tuned, "reports/validation.json", "models/model.pkl", "models/baselines.pkl", "models/run.json"
    )
    evaluation = pipeline.run_evaluate(
        p,
        "data/split",
        "models/model.pkl",
        "models/baselines.pkl",
        "models/run.json",
        "reports/metrics.json",
        "reports/plots",
    )
    registration = pipeline.run_register(
        p, "data/split", "models/model.pkl", "models/run.json", "reports/metrics.json", "reports/register.json"
    )
    return evaluation, registration


# In-process model fitting and registration (for tests that need registered versions without the pipeline).
def fit_model(p, df, task: str):
    """A small LightGBM model fitted on ``df`` as the train stage does; returns (model, split parts)."""
    from driftloop.data.split import split
    from driftloop.train import train
    from driftloop.tune import LGBM_DEFAULTS, lgb_params

    parts = split(df, p, task)
    n_classes = parts["train"][p.base.target].nunique() if task == "multiclass" else 2
    hp = lgb_params(task, n_classes, p.tune, p.base.seed, dict(LGBM_DEFAULTS))
    return train(parts["train"], parts["valid"], p, task, hp).model, parts


def register_model(client, p, model, sample, name: str, *, reference=None):
    """What the register stage does (in process, no gate): log into a run, create the version with the
    integrity tags, move @champion to it."""
    import contextlib

    from driftloop import tracking

    run_id = tracking.start_run(client, p, run_name="lightgbm").info.run_id
    info = tracking.log_model(client, run_id, model, sample)
    if reference is not None:
        ref = Path(p.base.artifact_location).parent / "reference.parquet"
        reference.to_parquet(ref, index=False)
        client.log_artifact(run_id, str(ref), "reference")
    client.set_terminated(run_id)
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.create_registered_model(name)
    mv = client.create_model_version(
        name, info.model_uri, run_id=run_id, tags=tracking.integrity_tags(info), model_id=info.model_id
    )
    client.set_registered_model_alias(name, "champion", mv.version)
    return info, mv


# Server processes (tests/integration/test_serve_process.py, benchmarks/bench_serving.py).
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], cwd: Path, env: dict[str, str], url: str, timeout: float):
    """Start ``cmd`` in its own process group; the process once ``url`` answers 200, None after ``timeout``."""
    import tempfile

    import httpx

    output = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the process; not a pipe: a chatty server would block once the pipe is full
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    proc.output = output
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{server_output(proc)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    return None


def stop_server(proc, sig: int | None = None, timeout: float = 30) -> int:
    """SIGTERM (or ``sig``) to the server's process group, SIGKILL after ``timeout``; its exit status."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM if sig is None else sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def server_output(proc) -> str:
    """What a process of ``start_server`` printed so far."""
    proc.output.seek(0)
    return proc.output.read()
