#!/usr/bin/env python
"""The scale-out servers on this machine, no containers: one command, their own CLIs, an existing PostgreSQL.

    .venv/bin/python deploy/local_stack.py                       # PostgreSQL at 127.0.0.1:5432, user postgres
    .venv/bin/python deploy/local_stack.py --pg postgresql://mlops@db.internal:5432 --project "$PWD"

It creates three databases when missing (``<prefix>_mlflow``, ``<prefix>_prefect``, ``<prefix>_optuna``), then starts

- ``mlflow server`` with its backend store on PostgreSQL and proxied artifacts (``--serve-artifacts``,
  stored under ``--artifacts-destination``: ``<dir>/mlartifacts`` unless given),
- ``prefect server start`` on PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``, asyncpg),
- ``prefect worker start --type process`` on the work pool prefect.yaml names (created when missing), running
  flows in ``--project``,

waits until each answers, writes ``<dir>/env.sh`` and prints the variables to export in the shells that run
``driftloop`` (MLFLOW_TRACKING_URI, DRIFTLOOP_OPTUNA_STORAGE, DRIFTLOOP_REGISTRY_LOCK_URL, PREFECT_API_URL).
It then stays in the foreground; Ctrl-C (or SIGTERM) stops the three servers (and, with ``--drop-on-exit``,
drops the databases it created). Server logs go to ``<dir>/*.log``.

No password is ever printed or written: give a password-less URL and let libpq/asyncpg read the password
from ``PGPASSWORD`` or ``~/.pgpass`` (both drivers do); a URL holding a password is refused.
Nothing runs at import (the integration test and the benchmark import ``Stack``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
POOL = "driftloop-local"  # the work pool prefect.yaml's deployments name
ROLES = ("mlflow", "prefect", "optuna")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _url(pg: str, driver: str, database: str):
    import sqlalchemy as sa

    return sa.engine.make_url(pg).set(drivername=f"postgresql+{driver}", database=database)


def _show(url) -> str:
    return url.render_as_string(hide_password=False)  # no password in it: checked in Stack.__post_init__


@dataclass
class Stack:
    """The servers of one stack; ``start()`` then ``stop()`` (or ``with Stack(...) as s:``)."""

    pg: str = DEFAULT_PG
    prefix: str = "driftloop"
    dir: Path = Path(".stack")
    project: Path = Path(".")
    host: str = "127.0.0.1"
    mlflow_port: int = 5000
    prefect_port: int = 4200
    artifacts_destination: str | None = None
    mlflow_workers: int = 1
    worker: bool = True
    pool: str = POOL
    drop_on_exit: bool = False
    bindir: Path = Path(sys.executable).parent
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import sqlalchemy as sa

        url = sa.engine.make_url(self.pg)
        if url.password:
            raise SystemExit(
                "refusing a PostgreSQL URL with a password (it would be printed and written to env.sh): "
                "drop it from --pg and set PGPASSWORD or ~/.pgpass instead"
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.prefix):
            raise SystemExit(f"--prefix must be a lower-case SQL identifier (got {self.prefix!r})")
        self.dir = Path(self.dir).resolve()
        self.project = Path(self.project).resolve()
        self.mlflow_port = self.mlflow_port or free_port()
        self.prefect_port = self.prefect_port or free_port()
        self.artifacts_destination = self.artifacts_destination or str(self.dir / "mlartifacts")

    # ------------------------------------------------------------------ addresses
    def database(self, role: str) -> str:
        return f"{self.prefix}_{role}"

    @property
    def mlflow_backend(self) -> str:
        return _show(_url(self.pg, "psycopg", self.database("mlflow")))

    @property
    def prefect_database(self) -> str:
        return _show(_url(self.pg, "asyncpg", self.database("prefect")))

    @property
    def optuna_storage(self) -> str:
        return _show(_url(self.pg, "psycopg", self.database("optuna")))

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    def client_env(self) -> dict[str, str]:
        """What the shells running ``driftloop`` (and its flows) export."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "DRIFTLOOP_OPTUNA_STORAGE": self.optuna_storage,
            # alias moves serialized by a PostgreSQL advisory lock, across machines (else a local lock file)
            "DRIFTLOOP_REGISTRY_LOCK_URL": self.mlflow_backend,
            "PREFECT_API_URL": self.prefect_api_url,
        }

    # ------------------------------------------------------------------ databases
    def create_databases(self) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        engine = sa.create_engine(_url(self.pg, "psycopg", "postgres"), poolclass=NullPool)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for role in ROLES:
                name = self.database(role)
                exists = conn.execute(sa.text("select 1 from pg_database where datname = :n"), {"n": name}).first()
                if not exists:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                    self.created.append(name)
        engine.dispose()

    def drop_databases(self, names: list[str] | None = None) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        engine = sa.create_engine(_url(self.pg, "psycopg", "postgres"), poolclass=NullPool)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in self.created if names is None else names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()

    # ------------------------------------------------------------------ processes
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = str(self.bindir) + os.pathsep + env.get("PATH", "")
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        log = (self.dir / f"{name}.log").open("w")
        # its own process group: stop() ends the server and the children it forks (gunicorn/uvicorn workers)
        self.procs[name] = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 120) -> Stack:
        self.dir.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifacts_destination:
            Path(self.artifacts_destination).mkdir(parents=True, exist_ok=True)
        self.create_databases()
        env = self._env()
        self._spawn(
            "mlflow",
            [
                str(self.bindir / "mlflow"),
                "server",
                "--backend-store-uri",
                self.mlflow_backend,
                "--serve-artifacts",
                "--artifacts-destination",
                self.artifacts_destination,
                "--host",
                self.host,
                "--port",
                str(self.mlflow_port),
                "--workers",
                str(self.mlflow_workers),
            ]
            # uvicorn's supervisor kills a worker that misses its 5 s health check: on a loaded host the
            # workers were killed while still importing MLflow, again and again (seen here at load 11 on 2 cores)
            + (["--uvicorn-opts", "--timeout-worker-healthcheck 120"] if self.mlflow_workers > 1 else []),
            env,
            self.dir,
        )
        prefect_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": self.prefect_database}
        prefect_env.pop("PREFECT_API_URL", None)
        self._spawn(
            "prefect-server",
            [str(self.bindir / "prefect"), "server", "start", "--host", self.host, "--port", str(self.prefect_port)],
            prefect_env,
            self.dir,
        )
        deadline = time.monotonic() + timeout
        self._wait("mlflow", f"{self.tracking_uri}/health", deadline)
        self._wait("prefect-server", f"{self.prefect_api_url}/health", deadline)
        if self.worker:
            worker_env = {
                **env,
                "PREFECT_API_URL": self.prefect_api_url,
                "DRIFTLOOP_PROJECT_DIR": str(self.project),  # prefect.yaml's pull step runs flows there
                **{k: v for k, v in self.client_env().items() if k != "PREFECT_API_URL"},
            }
            self._spawn(
                "prefect-worker",
                [str(self.bindir / "prefect"), "worker", "start", "--pool", self.pool, "--type", "process"],
                worker_env,
                self.project,
            )
        self.write_env()
        return self

    def _wait(self, name: str, url: str, deadline: float) -> None:
        import urllib.error
        import urllib.request

        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.tail(name)}")
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url} in time:\n{self.tail(name)}")
            time.sleep(0.5)

    def tail(self, name: str, n: int = 30) -> str:
        log = self.dir / f"{name}.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to every process group, SIGKILL after 15 s; drop the databases if asked."""
        for proc in reversed(list(self.procs.values())):  # the worker first, then the servers
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # children that outlived their leader
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()
        if self.drop_on_exit:
            self.drop_databases()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_env(self) -> Path:
        path = self.dir / "env.sh"
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items()]
        path.write_text("\n".join(lines) + "\n")
        return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server URL, no password (default {DEFAULT_PG})")
    ap.add_argument("--prefix", default="driftloop", help="database name prefix (default driftloop)")
    ap.add_argument("--random-suffix", action="store_true", help="append a random suffix to the prefix")
    ap.add_argument("--dir", default=".stack", help="logs, env.sh and (default) artifacts (default .stack)")
    ap.add_argument("--project", default=".", help="the driftloop project the worker runs flows in (default .)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mlflow-port", type=int, default=5000, help="0 = a free port")
    ap.add_argument("--prefect-port", type=int, default=4200, help="0 = a free port")
    ap.add_argument(
        "--artifacts-destination", default=None, help="local folder or s3://... (default <dir>/mlartifacts)"
    )
    ap.add_argument("--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow server (default 1)")
    ap.add_argument("--no-worker", action="store_true", help="do not start a Prefect worker")
    ap.add_argument("--drop-on-exit", action="store_true", help="drop the databases this run created on exit")
    a = ap.parse_args(argv)
    stack = Stack(
        pg=a.pg,
        prefix=a.prefix + (f"_{secrets.token_hex(4)}" if a.random_suffix else ""),
        dir=Path(a.dir),
        project=Path(a.project),
        host=a.host,
        mlflow_port=a.mlflow_port,
        prefect_port=a.prefect_port,
        artifacts_destination=a.artifacts_destination,
        mlflow_workers=a.mlflow_workers,
        worker=not a.no_worker,
        drop_on_exit=a.drop_on_exit,
    )

    def _term(signum, frame):  # SIGTERM ends the foreground wait like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    try:
        stack.start()
        print(f"driftloop stack up (logs in {stack.dir}); in the shells that run driftloop:\n", flush=True)
        print((stack.dir / "env.sh").read_text(), flush=True)
        print(f"or: source {stack.dir / 'env.sh'}")
        print(f"MLflow UI {stack.tracking_uri}, Prefect UI {stack.prefect_api_url[:-4]}")
        print("Ctrl-C stops the servers.", flush=True)
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(1)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        print(f"{', '.join(dead)} exited; stopping the stack:\n{stack.tail(dead[0])}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
