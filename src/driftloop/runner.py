"""``driftloop run``: the DVC pipeline of ``dvc.yaml``, with its ``driftloop`` stages executed in this process.

``dvc repro`` starts a new interpreter for every stage: seven times the imports (pandas, scikit-learn,
LightGBM, MLflow with SQLAlchemy) and seven MLflow store start-ups — on small data that costs more
than the model fits (see benchmarks/README.md). Here DVC still does everything it does for
``dvc repro`` — reads the DAG, decides which stages changed, restores from the run-cache, checks
and caches the outputs, writes ``dvc.lock`` stage by stage — through ``Repo.reproduce``; only the
step that executes a stage's ``cmd`` is replaced: a ``driftloop <stage> ...`` command is parsed
and invoked on the same Typer app in this interpreter (warm imports, one MLflow store). Any other
command runs as a subprocess, exactly as DVC would run it.

So ``driftloop run`` and ``dvc repro`` are interchangeable: the same stages run, with the same
outputs and the same ``dvc.lock`` (a ``dvc repro`` after ``driftloop run`` has nothing to do, and
vice versa). A failing stage stops the run with its error and leaves ``dvc.lock`` as it was for
that stage and the ones after it; outputs are written atomically by the stages themselves.

The hook is DVC's ``dvc.stage.run.cmd_run(stage, dry=False, run_env=None)``, the one function
``run_stage`` calls to execute a command (DVC 3). It is swapped only for the duration of the
run; if a DVC release renames it, ``in_process_available()`` is false and ``driftloop run``
falls back to DVC's own subprocess execution (a test pins the hook against the installed DVC).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PROGRAM = "driftloop"
# stages that import neither MLflow nor matplotlib: the warm-up thread may import those beside them
DATA_STAGES = frozenset({"ingest", "validate", "split"})


def in_process_available() -> bool:
    """Whether the installed DVC has the command hook this module swaps (DVC 3's ``cmd_run``)."""
    try:
        from dvc.stage import run as dvc_run
    except ImportError:
        return False
    fn = getattr(dvc_run, "cmd_run", None)
    return callable(fn) and list(inspect.signature(fn).parameters)[:3] == ["stage", "dry", "run_env"]


def explain(exc: BaseException) -> str:
    """The message of ``exc`` and of every distinct cause under it, outermost first.

    DVC wraps the reason a stage could not run ("'data/raw.parquet' is busy ... (PID 123): driftloop run",
    another process holding the lock) in "failed to reproduce 'ingest'"; users need the reason.
    """
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).strip()
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return ": ".join(parts) or "unknown error"


def driftloop_args(cmd: str) -> list[str] | None:
    """The arguments of a ``driftloop ...`` command line (None for any other command)."""
    try:
        argv = shlex.split(cmd)
    except ValueError:
        return None
    if not argv or Path(argv[0]).name != PROGRAM:
        return None
    if any(tok in ("|", "&&", "||", ";", ">", "<") for tok in argv):  # shell syntax: let the shell run it
        return None
    return argv[1:]


def invoke(args: list[str], cwd: str | os.PathLike) -> int:
    """Run ``driftloop <args>`` on the Typer app in this process (from ``cwd``); its exit code."""
    import click

    from driftloop.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        rc = app(args=args, prog_name=PROGRAM, standalone_mode=False)
    except click.exceptions.ClickException as exc:  # usage errors: what the command line would print
        exc.show()
        rc = exc.exit_code
    except click.exceptions.Abort:
        rc = 130
    finally:
        os.chdir(old)
        _release_memory()
    return int(rc or 0)


def _release_memory() -> None:
    """Give a finished stage's memory back before the next one (peak RSS stays that of the largest stage).

    After the collection, what survives (modules, MLflow's and scikit-learn's class objects, caches) is
    frozen out of the cyclic collector's view (``gc.freeze``): later collections, automatic ones
    included, then scan only what the next stage allocates instead of the whole warm interpreter.
    """
    gc.collect()
    gc.freeze()
    with contextlib.suppress(Exception):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


@contextlib.contextmanager
def in_process_commands(echo: Callable[[str], None] = print) -> Iterator[None]:
    """While active, DVC executes ``driftloop`` stage commands in this process."""
    from dvc.stage import run as dvc_run
    from dvc.stage.exceptions import StageCmdFailedError

    original = dvc_run.cmd_run
    started: list = []
    warming: list[threading.Thread] = []

    def cmd_run(stage, dry=False, run_env=None):
        commands = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        parsed = [driftloop_args(c) for c in commands]
        if dry or any(a is None for a in parsed):
            return original(stage, dry=dry, run_env=run_env)
        command = parsed[0][:1]
        if not started:  # the first stage that runs: warm the model stages' MLflow and plotting up meanwhile
            started.append(stage)
            if command and command[0] in DATA_STAGES:
                import driftloop.pipeline  # noqa: F401 - pandas and pyarrow, here, before the thread starts

                warming.append(warm_up(Path(stage.repo.root_dir) / "params.yaml"))
        if not (command and command[0] in DATA_STAGES):  # the model stages import those packages themselves
            for thread in warming:
                thread.join()
        echo(f"Running stage '{stage.addressing}' (in process):")
        t0 = time.perf_counter()
        for cmd, args in zip(commands, parsed, strict=True):
            echo(f"> {cmd}")
            rc = invoke(args, stage.wdir)
            if rc != 0:
                raise StageCmdFailedError(cmd, rc)
        echo(f"Stage '{stage.addressing}' done in {time.perf_counter() - t0:.1f} s")
        return None

    dvc_run.cmd_run = cmd_run
    try:
        yield
    finally:
        dvc_run.cmd_run = original
        for thread in warming:  # not left importing while the interpreter shuts down
            thread.join(timeout=60)


def new_sqlite_store(uri: str, cwd: str | os.PathLike = ".") -> Path | None:
    """The file of a local SQLite MLflow store that does not exist yet (None for anything else)."""
    if not uri.startswith("sqlite:///"):
        return None  # a server, another database, or in-memory SQLite ("sqlite://")
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    path = path if path.is_absolute() else Path(cwd) / path
    return None if path.exists() else path


# Creates a store's tables: the MLflow client runs its Alembic migrations on first use of a new database.
_CREATE_STORE = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"


def warm_up(params_path: str | os.PathLike = "params.yaml") -> threading.Thread:
    """Import MLflow and matplotlib, open the MLflow store and map MLflow's requirements, on a daemon thread.

    The data stages (ingest, validate, split) keep one core busy with pandas, Arrow, pandera, LightGBM
    and scikit-learn; meanwhile MLflow and matplotlib are imported and the local SQLite MLflow store is
    opened, which the model stages would otherwise do first. Imports on a thread share the interpreter
    lock with the data stages, so a new store's tables (MLflow's Alembic migrations: ~2 s of pure
    Python) are created by a child process on the idle core instead; the thread opens the store once
    that process is done. The two import trees share nothing the data stages have not loaded before
    the thread starts (pandas, NumPy): two threads importing one package tree at once can meet a
    partially initialised module (seen with Optuna's), so the first model stage waits for the thread.
    Best effort: any error (the child's included) is left for the stage that meets it to report.
    """
    params_path = Path(params_path)
    params, creating = None, None
    with contextlib.suppress(Exception):
        from driftloop.config import load_params

        params = load_params(params_path)
        uri = params.base.tracking_uri
        if new_sqlite_store(uri, params_path.parent) is not None:
            creating = subprocess.Popen(
                [sys.executable, "-c", _CREATE_STORE, uri],
                cwd=params_path.parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def work() -> None:
        with contextlib.suppress(Exception):
            import matplotlib
            import mlflow  # noqa: F401

            from driftloop import tracking

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401

            # logging a pyfunc model checks its requirements against the installed distributions; MLflow
            # maps modules to distributions once per process by reading every installed package's
            # metadata (~1 s): build that map now, while a core is idle (a private helper: skipped if renamed)
            from mlflow.utils import requirements_utils

            getattr(requirements_utils, "_init_packages_to_modules_map", lambda: None)()

            if creating is not None:
                creating.wait()
            if params is not None and params.base.tracking_uri.startswith("sqlite:"):  # no network to wait on
                tracking.connect(params).search_experiments(max_results=1)

    thread = threading.Thread(target=work, name="driftloop-warm-up", daemon=True)
    thread.start()
    return thread


def reproduce(targets: list[str] | None = None, *, force: bool = False, in_process: bool = True, repo_root: str = "."):
    """``dvc repro [targets] [--force]``; stage commands in this process unless ``in_process`` is false.

    Returns the stages that ran. Raises ``dvc.exceptions.DvcException`` (``ReproductionError``) when a
    stage fails, as ``Repo.reproduce`` does.
    """
    from dvc.repo import Repo

    use_hook = in_process and in_process_available()
    with Repo(repo_root) as repo, in_process_commands() if use_hook else contextlib.nullcontext():
        return repo.reproduce(targets=targets or None, force=force)
