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
import dataclasses
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


# --------------------------------------------------------------------------- progress of the stages
HEARTBEAT_SECONDS = 30.0  # a running stage says so after this long, then after twice as long, ...
HEARTBEAT_MAX_SECONDS = 300.0  # ... at most this long between two such lines
_listeners: list[Callable[[StageEvent], None]] = []


@dataclasses.dataclass(frozen=True)
class StageEvent:
    """What a ``StageProgress`` reports: ``kind`` is "start", "running", "done", "failed" or "skipped"."""

    kind: str
    index: int  # k of "stage k of N", 1-based
    total: int  # N
    name: str
    seconds: float  # in the stage so far (0 for "start")
    elapsed: float  # since the run began


@contextlib.contextmanager
def observe(listener: Callable[[StageEvent], None]) -> Iterator[None]:
    """While active, ``listener`` receives every stage event of this process (the demo shows them)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = max(int(seconds), 0)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def stage_line(event: StageEvent, how: str = "") -> str:
    """The plain line for a stage event (CI logs, Prefect logs, a redirected ``driftloop run``).

    The start line keeps DVC's "Running stage '<name>'" and the end line its "Stage '<name>' done in <s> s"
    wording (what ``dvc repro`` users and the benchmarks read), with "k/N" and the time since the run began.
    """
    k, n, name, elapsed = event.index, event.total, event.name, clock(event.elapsed)
    if event.kind == "start":  # a subprocess: DVC's own "Running stage" line follows
        what = f"stage '{name}' in a subprocess" if how == "subprocess" else f"Running stage '{name}'"
        what += f" ({how})" if how and how != "subprocess" else ""
        return f"[{k}/{n}] {what}, {elapsed} elapsed:"
    if event.kind == "running":
        return f"[{k}/{n}] stage '{name}' still running: {clock(event.seconds)} so far, {elapsed} elapsed"
    verb = {"done": "done in", "failed": "failed after", "skipped": "unchanged, skipped in"}[event.kind]
    return f"Stage '{name}' {verb} {event.seconds:.1f} s [{k}/{n}, {elapsed} elapsed]"


def stage_markup(event: StageEvent, how: str = "") -> str:
    """The same line as Rich markup (a terminal)."""
    from rich.markup import escape

    k, n, name, elapsed = event.index, event.total, escape(event.name), clock(event.elapsed)
    if event.kind == "start":
        detail = f"{escape(how)} · " if how else ""
        return f"[bold cyan]▶ {k}/{n}[/] [bold]{name}[/] [dim]{detail}{elapsed} elapsed[/]"
    if event.kind == "running":
        return f"[dim]… {k}/{n} {name} still running: {clock(event.seconds)} so far · {elapsed} elapsed[/]"
    mark, verb = {
        "done": ("[green]✓", "done in"),
        "failed": ("[bold red]✗", "failed after"),
        "skipped": ("[dim]=", "unchanged, checked in"),
    }[event.kind]
    return f"{mark} {k}/{n}[/] [bold]{name}[/] {verb} [bold]{event.seconds:.1f} s[/] [dim]· {elapsed} elapsed[/]"


def status_clean(status_stdout: str) -> bool:
    """``dvc status`` output that leaves nothing to do: up to date, or only ``always_changed`` stages listed
    (the ``source`` stage fingerprints the data source on every run; DVC cannot know without looking)."""
    text = status_stdout.strip()
    if not text or "up to date" in text:
        return True
    # stage headers ("source:") at the margin; every indented line must be "always changed"
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return all((not ln[0].isspace() and ln.endswith(":")) or ln.strip() == "always changed" for ln in lines)


def stage_plan(repo, targets: list[str] | None = None) -> list[str]:
    """The stages with a command that ``dvc repro [targets]`` visits, in the order it visits them."""
    try:
        from dvc.dvcfile import PROJECT_FILE
        from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

        steps = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, list(targets or [PROJECT_FILE])))
    except Exception:  # DVC internals renamed: the declared order
        steps = list(repo.index.stages)
    return [s.addressing for s in steps if getattr(s, "cmd", None)]


@dataclasses.dataclass
class _Running:
    t0: float
    skipped: bool = False

    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def skip(self) -> None:
        """The stage turned out unchanged (DVC skipped it): its end line says so."""
        self.skipped = True


def trial_line(done: int, total: int, complete: int, pruned: int, best: float | None, elapsed: float,
               eta: float | None, budget: float | None = None) -> str:  # fmt: skip
    """``tune: trial 12/30 (9 complete, 3 pruned), best 0.82103, 0:41 elapsed of a 3:00 budget, ETA 1:02``."""
    best_text = f", best {best:.5f}" if best is not None else ""
    eta_text = f", ETA {clock(eta)}" if eta is not None else ""
    budget_text = f" of a {clock(budget)} budget" if budget is not None else ""
    return (
        f"tune: trial {done}/{total} ({complete} complete, {pruned} pruned){best_text}, "
        f"{clock(elapsed)} elapsed{budget_text}{eta_text}"
    )


class TrialProgress:
    """An Optuna callback that says where the search is: trial n of N (counted in the study, so a resumed or
    shared study shows its real position), complete and pruned, the best value so far, elapsed time, ETA.

    On a terminal: a Rich bar with those figures (``console``). Otherwise plain lines through ``echo`` (stdout,
    or a Prefect logger): the first trial, then at most one every ``every`` seconds, and the last one — so
    a 20-minute study in a log or CI is never silent, and never floods.
    """

    def __init__(self, total: int, *, console=None, echo: Callable[[str], None] | None = None, every: float = 15.0):
        self.total, self.every, self._echo = total, every, echo or (lambda line: print(line, flush=True))
        self._console = console if console is not None and console.is_terminal else None
        self.t0 = time.monotonic()
        self._ran = 0  # trials finished by this process (for the ETA)
        self.budget: float | None = None  # tune.timeout_seconds as resolved by the study (set_budget)
        self._last_line = -float("inf")
        self._bar = self._task = None

    def __enter__(self) -> TrialProgress:
        if self._console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[extra]}"))
            self._bar = Progress(TextColumn("{task.description}"), *columns, console=self._console)
            self._task = self._bar.add_task("tune (trials)", total=self.total, extra="")
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def set_budget(self, seconds: float | None) -> None:
        """The study's time budget: shown, and the ETA never runs past it."""
        self.budget = seconds

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        self._ran += 1
        states = [t.state for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
        complete, pruned = states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)
        done = min(complete + pruned, self.total)
        try:
            best = float(study.best_value)
        except ValueError:  # no complete trial yet
            best = None
        elapsed = time.monotonic() - self.t0
        left = max(self.total - done, 0)
        eta = elapsed / self._ran * left if left else None  # at this process's pace so far
        if eta is not None and self.budget is not None:
            eta = max(min(eta, self.budget - elapsed), 0.0)
        if self._bar is not None:
            extra = (f"best {best:.5f}  " if best is not None else "") + (f"ETA {clock(eta)}" if left else "")
            if self.budget is not None:
                extra += f"  budget {clock(self.budget)}"
            self._bar.update(self._task, completed=done, extra=extra)
            return
        if self._ran == 1 or not left or elapsed - self._last_line >= self.every:
            self._last_line = elapsed
            self._echo(trial_line(done, self.total, complete, pruned, best, elapsed, eta, self.budget))


class StageProgress:
    """Lines that say where a pipeline run is: stage k of N, its name, the time since the run began; when a
    stage ends, its duration; while a long one runs, a line now and then (after 30 s, 60 s, 120 s, ... at
    most every 5 minutes).

    Output: ``echo`` when given (a Prefect logger's ``info``, ``print``); otherwise Rich markup on the CLI's
    stderr console when that is a terminal, else plain lines on stdout (beside DVC's own). Lines, never a
    live display: a stage may show its own (tune's trials, ingest's rows) on the same console, which prints
    these lines above it; the "still running" lines are left out while such a display is on screen.
    """

    def __init__(
        self,
        plan: list[str] | None = None,
        *,
        echo: Callable[[str], None] | None = None,
        console=None,
        heartbeat: float | None = HEARTBEAT_SECONDS,
        heartbeat_max: float = HEARTBEAT_MAX_SECONDS,
    ) -> None:
        self.plan = list(plan) if plan is not None else None
        self.heartbeat, self.heartbeat_max = heartbeat, heartbeat_max
        self._echo, self._console = echo, console
        self._lock = threading.Lock()
        self._extra: list[str] = []
        self.t0 = time.monotonic()

    # where the lines go
    def _rich_console(self):
        if self._echo is not None:
            return None
        if self._console is None:
            from driftloop.cli import err

            self._console = err
        return self._console if self._console.is_terminal else None

    def _live_on_screen(self) -> bool:
        console = self._rich_console()
        return bool(console is not None and getattr(console, "_live_stack", None))

    def emit(self, event: StageEvent, how: str = "") -> None:
        for listener in list(_listeners):
            with contextlib.suppress(Exception):
                listener(event)
        console = self._rich_console()
        with self._lock:
            if console is not None:
                console.print(stage_markup(event, how), highlight=False)
            elif self._echo is not None:
                self._echo(stage_line(event, how))
            else:
                print(stage_line(event, how), flush=True)

    def note(self, text: str) -> None:
        """A line of detail under the current stage (its command)."""
        console = self._rich_console()
        with self._lock:
            if console is not None:
                from rich.markup import escape

                console.print(f"[dim]{escape(text)}[/]", highlight=False, soft_wrap=True)
            elif self._echo is not None:
                self._echo(text)
            else:
                print(text, flush=True)

    # the numbers
    def position(self, name: str) -> tuple[int, int]:
        """(k, N) of a stage: its place in the plan (stages outside it are counted on after it)."""
        plan = self.plan or []
        if name in plan:
            return plan.index(name) + 1, len(plan)
        if name not in self._extra:
            self._extra.append(name)
        k = len(plan) + self._extra.index(name) + 1
        return k, max(len(plan), k)

    def event(self, kind: str, name: str, seconds: float = 0.0) -> StageEvent:
        k, n = self.position(name)
        return StageEvent(kind, k, n, name, seconds, time.monotonic() - self.t0)

    @contextlib.contextmanager
    def stage(self, name: str, how: str = "") -> Iterator[_Running]:
        """Around one stage: the start line, "still running" lines, then "done in" or "failed after" (or
        "unchanged, skipped" when the caller calls ``skip()`` on what this yields)."""
        t0 = time.monotonic()
        running = _Running(t0)
        self.emit(self.event("start", name), how)
        stop = threading.Event()
        ticker = None
        if self.heartbeat:
            ticker = threading.Thread(target=self._tick, args=(name, t0, stop), name="driftloop-progress", daemon=True)
            ticker.start()
        ok = False
        try:
            yield running
            ok = True
        finally:
            stop.set()
            if ticker is not None:
                ticker.join(timeout=5)
            kind = ("skipped" if running.skipped else "done") if ok else "failed"
            self.emit(self.event(kind, name, running.seconds()), how)

    def skipped(self, name: str, seconds: float = 0.0) -> None:
        self.emit(self.event("skipped", name, seconds))

    def _tick(self, name: str, t0: float, stop: threading.Event) -> None:
        wait = self.heartbeat
        while not stop.wait(wait):
            if not self._live_on_screen():
                self.emit(self.event("running", name, time.monotonic() - t0))
            wait = min(wait * 2, max(self.heartbeat_max, self.heartbeat))


@contextlib.contextmanager
def in_process_commands(
    echo: Callable[[str], None] | None = None,
    *,
    in_process: bool = True,
    plan: list[str] | None = None,
    progress: StageProgress | None = None,
) -> Iterator[StageProgress]:
    """While active, DVC executes ``driftloop`` stage commands in this process (unless ``in_process`` is
    false), and every stage that runs, in process or not, reports its progress (``StageProgress``).

    ``plan``: the stages the run visits, for "stage k of N" (default: every stage of the repository, read
    when the first stage starts). ``echo``: where the lines go (default: see ``StageProgress``).
    """
    from dvc.stage import run as dvc_run
    from dvc.stage.exceptions import StageCmdFailedError

    original = dvc_run.cmd_run
    started: list = []
    warming: list[threading.Thread] = []
    progress = progress or StageProgress(plan, echo=echo)

    def cmd_run(stage, dry=False, run_env=None):
        commands = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        parsed = [driftloop_args(c) for c in commands]
        if dry:
            return original(stage, dry=dry, run_env=run_env)
        if progress.plan is None:
            with contextlib.suppress(Exception):
                progress.plan = stage_plan(stage.repo)
        if not in_process or any(a is None for a in parsed):  # DVC runs it (and prints its own lines)
            with progress.stage(stage.addressing, "subprocess"):
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
        with progress.stage(stage.addressing, "in process"):
            for cmd, args in zip(commands, parsed, strict=True):
                progress.note(f"> {cmd}")
                rc = invoke(args, stage.wdir)
                if rc != 0:
                    raise StageCmdFailedError(cmd, rc)
        return None

    dvc_run.cmd_run = cmd_run
    try:
        yield progress
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

    Every stage that runs reports its progress (stage k of N, time; ``StageProgress``), in either mode.
    Returns the stages that ran. Raises ``dvc.exceptions.DvcException`` (``ReproductionError``) when a
    stage fails, as ``Repo.reproduce`` does.
    """
    from dvc.repo import Repo

    with Repo(repo_root) as repo:
        if not in_process_available():  # DVC runs and prints every stage itself
            return repo.reproduce(targets=targets or None, force=force)
        with in_process_commands(in_process=in_process, plan=stage_plan(repo, targets)):
            return repo.reproduce(targets=targets or None, force=force)
