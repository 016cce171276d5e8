"""Scheduled deployments fire: a real ``prefect server start`` (its own SQLite database in a temporary
PREFECT_HOME), a process work pool and a ``prefect worker``, and ``prefect deploy`` of prefect.yaml's
monitoring deployment with an extra interval schedule due ~20 s after the deploy. The server's scheduler
must create the run by itself (``auto_scheduled``) and the worker must run it to COMPLETED within 90 s of
its due time.

The deployment's default batch (``data/incoming/latest.parquet``) does not exist in the throw-away project,
so the flow takes its cheap path: a bad batch is a monitoring result (status ``error``, a summary.json), not
a crash, and no trained model is needed. This catches a dependency set whose scheduler cannot insert runs
(Prefect 3.8.8 with SQLAlchemy 2.1: ``Can't evaluate bulk DML statement``), which triggered runs never hit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, ROOT, small_params, write_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

POOL = "driftloop-local"  # the pool prefect.yaml names
DEPLOYMENT = "driftloop-monitoring/monitoring"  # <flow name>/<deployment name>
DUE_AFTER_DEPLOY = 20  # seconds between the end of `prefect deploy` and the scheduled run's due time
MAX_DELAY = 90  # seconds from the due time to COMPLETED (the figure in the README)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
        PREFECT_HOME=str(home / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        DO_NOT_TRACK="1",
        DRIFTLOOP_PROJECT_DIR=str(home / "proj"),  # prefect.yaml's pull step: the worker runs flows there
    )
    return env


def _start(cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    """A background process in its own process group (so its children are stopped with it)."""
    out = log.open("w")
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    pgid = proc.pid  # start_new_session: the process leads its own group
    try:
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    with contextlib.suppress(ProcessLookupError):  # flow-run subprocesses the worker started, if any outlived it
        os.killpg(pgid, signal.SIGKILL)


def _cli(args: list[str], env: dict, cwd: Path) -> str:
    res = subprocess.run([f"{BIN}/prefect", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"prefect {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def test_a_scheduled_run_is_created_by_the_server_and_completes(tmp_path):
    import httpx

    t0 = time.monotonic()
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "prefect.yaml", proj / "prefect.yaml")
    shutil.copytree(ROOT / "flows", proj / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    write_params(proj / "params.yaml", small_params(proj))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _env(tmp_path, api)
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _start(
                [f"{BIN}/prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env,
                tmp_path,
                server_log,
            )
        )
        http = httpx.Client(base_url=api, timeout=10)
        deadline = time.monotonic() + 90
        while True:
            assert procs[0].poll() is None, f"prefect server exited:\n{_tail(server_log)}"
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"prefect server not healthy in 90 s:\n{_tail(server_log)}"
            time.sleep(0.5)
        server_up = time.monotonic() - t0

        _cli(["work-pool", "create", POOL, "--type", "process"], env, proj)
        procs.append(_start([f"{BIN}/prefect", "worker", "start", "--pool", POOL], env, proj, worker_log))

        # prefect.yaml's monitoring deployment, as users deploy it, plus one interval schedule due soon
        # (`--interval` adds to the file's daily cron; a long interval so only one run falls in the test)
        deploy_started = time.monotonic()
        due = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=DUE_AFTER_DEPLOY + 15)
        _cli(
            ["deploy", "--prefect-file", "prefect.yaml", "--name", "monitoring"]
            + ["--interval", "3600", "--anchor-date", due.isoformat()],
            env,
            proj,
        )
        deploy_time = time.monotonic() - deploy_started
        deployment = http.get(f"/deployments/name/{DEPLOYMENT}").json()
        assert {s["schedule"].get("interval") for s in deployment["schedules"]} >= {3600.0}

        # the scheduler (not this test) creates the run; the worker picks it up and runs it
        body = {"deployments": {"id": {"any_": [deployment["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 5}
        run: dict | None = None
        while True:
            runs = [
                r
                for r in http.post("/flow_runs/filter", json=body).json()
                if _when(r["expected_start_time"]) == due  # not the 06:00 runs of the file's cron
            ]
            run = runs[0] if runs else None
            if run and run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                break
            late = (dt.datetime.now(dt.UTC) - due).total_seconds()
            assert late < MAX_DELAY, (
                f"no COMPLETED scheduled run {MAX_DELAY} s after its due time {due.isoformat()} "
                f"(run: {run and run['state_name']})\n--- server log\n{_tail(server_log)}\n"
                f"--- worker log\n{_tail(worker_log)}"
            )
            time.sleep(1)

        assert run["state_type"] == "COMPLETED", f"{run['state_name']}\n--- worker log\n{_tail(worker_log, 80)}"
        assert run["auto_scheduled"] is True  # created by the server's scheduler service
        started, ended = _when(run["start_time"]), _when(run["end_time"])
        delay, done = (started - due).total_seconds(), (ended - due).total_seconds()
        assert done <= MAX_DELAY
        # the flow ran in the project (prefect.yaml's pull step) and took the bad-batch path
        summaries = list((proj / "reports").rglob("summary.json"))
        assert summaries, f"no summary.json under {proj / 'reports'}\n--- worker log\n{_tail(worker_log, 80)}"
        print(
            f"\nschedule: server up {server_up:.1f} s, deploy {deploy_time:.1f} s; run due {due.isoformat()}, "
            f"started +{delay:.1f} s, completed +{done:.1f} s after its due time; "
            f"test {time.monotonic() - t0:.1f} s",
            file=sys.stderr,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc)
