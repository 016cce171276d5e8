"""A simulated production year through the closed loop: monitor, alert, retrain -- next to a model
that is never retrained.

``run_demo`` makes a throw-away project workspace (the repo's ``dvc.yaml`` and ``src/``, a derived
``params.yaml``, git + DVC, a SQLite MLflow store and an alert log inside it), trains the first model
with ``dvc repro``, then for every month: simulates the month with the built-in simulator (labels
included; drift ``demo.drift`` from month ``demo.drift_from_month`` on), monitors it against the
champion in force (``loop.monitor_batch``), and retrains when the loop decides ``retrain``
(``pipeline.retrain_on``: the labeled batch becomes a DVC data version, ``dvc repro`` runs, the gate
decides champion or challenger). Each month's ROC AUC of the champion in force at its start is
recorded next to the AUC of the first model, never retrained. Outputs in the output directory:
``timeline.png``, ``timeline.html`` (the picture embedded, a table per month, links to the monthly
Evidently reports) and ``summary.json``. docs/demo.md describes it and the measured figures.

Nothing runs at import.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftloop.config import DemoParams, DriftParams, Params, load_params
from driftloop.errors import DriftloopError

MARKER = ".driftloop-demo"  # marks a directory the demo made (and may delete on the next run)
REGISTER_REPORT = "reports/register.json"  # the register stage's decision (dvc.yaml)
INITIAL_START = "2024-01-01"  # the initial training data covers 2024; production starts 2025-01
INITIAL_MONTHS = 12
FIRST_PRODUCTION_YEAR = 2025

# Workspace settings besides the demo's own sizes. A time-based split, so the gate compares
# champion and challenger on the most recent data. test/valid are 10 % each (not the usual 20 %):
# a retrain appends one labeled month to the history, and with a time split the newest rows go to
# test, then valid; with 20 % + 20 % no drifted row would ever reach the training split in a year.
# time_test_share 0.5: half of the newest period (the month that triggered) is the gate's test, the other
# half validates and is refitted, so the first retrain after a drift already learns from it
# (docs/demo.md, "Reading the curve").
WORKSPACE_OVERRIDES: dict[str, Any] = {
    "split.time_column": "application_date",
    "split.test_size": 0.1,
    "split.valid_size": 0.1,
    "split.time_test_share": 0.5,
    # One LightGBM thread: on a shared 2-core machine OpenMP threads that wait for a busy core spin, and
    # tuning with num_threads 0 (all cores) was measured 27x slower than with 1 under load (load ~7).
    "tune.num_threads": 1,
    "ingest.source": "simulate",
    "ingest.labeled_dir": "data/labeled",
    "alerts.log_path": "reports/alerts.jsonl",
    "monitor.output_dir": "reports/monitoring",
}
# Connection settings the environment could override: removed while the demo runs, so it stays
# inside its workspace (restored afterwards).
_ENV_CLEARED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DRIFTLOOP_OPTUNA_STORAGE", "DRIFTLOOP_ALERT_URLS")


@dataclass
class MonthRecord:
    month: int  # 1-based month of the simulated year
    label: str  # YYYY-MM
    drifted: bool  # drift injected in this month
    batch_id: str
    rows: int
    status: str
    reasons: list[str]
    drift_share: float | None
    n_drifted: int | None
    prediction_drift: bool | None
    target_drift: bool | None
    version_in_force: str  # champion version that monitored (and would have scored) the month
    auc_retrained: float | None  # that champion's ROC AUC on the month's labels
    auc_never_retrained: float | None  # the first model's ROC AUC on the same labels
    report_html: str | None
    seconds_monitor: float
    retrain: dict[str, Any] | None = None  # version, alias, gate reason, gate rows, seconds (when retrained)
    alert: bool = False
    # the champion's label-free (CBPE) ROC AUC estimate, made before the labels were read, and its interval
    auc_estimated: float | None = None
    auc_estimated_low: float | None = None
    auc_estimated_high: float | None = None
    auc_oracle: float | None = None  # a model trained on demo.oracle_rows post-drift rows (drifted months only)
    labeled_kept: bool = False  # the batch joined the training data without a retrain (retrain.keep_labeled_batches)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DemoResult:
    out_dir: Path
    workspace: Path
    settings: dict[str, Any]
    months: list[MonthRecord] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, path: str | Path) -> DemoResult:
        """A result read back from its ``summary.json`` (to redraw the timeline without rerunning)."""
        import json

        path = Path(path)
        s = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            path.parent.resolve(),
            Path(s["workspace"]),
            s["settings"],
            [MonthRecord(**m) for m in s["months"]],
            dict(s.get("seconds", {})),
        )

    @property
    def retrains(self) -> list[MonthRecord]:
        return [m for m in self.months if m.retrain]

    def after_drift(self) -> dict[str, float | None]:
        rows = [m for m in self.months if m.drifted]
        with_ = [m.auc_retrained for m in rows if m.auc_retrained is not None]
        without = [m.auc_never_retrained for m in rows if m.auc_never_retrained is not None]
        a = sum(with_) / len(with_) if with_ else None
        b = sum(without) / len(without) if without else None
        return {
            "retrained": a,
            "never_retrained": b,
            "difference": None if a is None or b is None else a - b,
            "months": len(rows),
        }

    def summary_oracle(self) -> float | None:
        return _mean([m.auc_oracle for m in self.months if m.drifted])

    def estimate_error(self) -> dict[str, Any]:
        """Mean |CBPE estimate - realized AUC| of the champion in force, over the months with both."""
        pairs = [(m.auc_estimated, m.auc_retrained) for m in self.months]
        errs = [abs(e - r) for e, r in pairs if e is not None and r is not None]
        inside = [
            m.auc_estimated_low <= m.auc_retrained <= m.auc_estimated_high
            for m in self.months
            if None not in (m.auc_estimated_low, m.auc_estimated_high, m.auc_retrained)
        ]
        return {
            "mae": _mean(errs),
            "max": max(errs) if errs else None,
            "months": len(errs),
            "realized_inside_interval": sum(inside),
        }

    def gap_closed(self) -> dict[str, Any]:
        """Per drifted month with an oracle: (loop - never) / (oracle - never); the first month after the first
        retrain, and the mean over the drifted months after it."""
        first = next((m.month for m in self.months if m.retrain and m.drifted), None)  # not a false alarm before
        out: dict[str, Any] = {"first_month_after_retrain": None, "mean_after_retrain": None}
        vals = []
        for m in self.months:
            if first is None or m.month <= first or None in (m.auc_oracle, m.auc_retrained, m.auc_never_retrained):
                continue
            gap = m.auc_oracle - m.auc_never_retrained
            if gap > 1e-3:
                vals.append((m.month, (m.auc_retrained - m.auc_never_retrained) / gap))
        if vals:
            out["first_month_after_retrain"] = vals[0][1] if vals[0][0] == first + 1 else None
            out["mean_after_retrain"] = _mean([v for _, v in vals])
        return out

    def summary(self) -> dict[str, Any]:
        before = [m for m in self.months if not m.drifted]
        return {
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "settings": self.settings,
            "workspace": str(self.workspace),
            "mean_auc_after_drift": self.after_drift(),
            "mean_auc_before_drift": {
                "retrained": _mean([m.auc_retrained for m in before]),
                "never_retrained": _mean([m.auc_never_retrained for m in before]),
                "months": len(before),
            },
            "mean_auc_oracle_after_drift": self.summary_oracle(),
            "gap_closed": self.gap_closed(),
            "estimate_error": self.estimate_error(),
            "curves": {
                "month": [m.label for m in self.months],
                "auc_retrained": [m.auc_retrained for m in self.months],
                "auc_never_retrained": [m.auc_never_retrained for m in self.months],
                "auc_estimated": [m.auc_estimated for m in self.months],
                "auc_oracle": [m.auc_oracle for m in self.months],
                "drift_share": [m.drift_share for m in self.months],
                "status": [m.status for m in self.months],
                "version_in_force": [m.version_in_force for m in self.months],
            },
            "retrains": [{"month": m.label, **(m.retrain or {})} for m in self.retrains],
            "statuses": {s: sum(m.status == s for m in self.months) for s in sorted({m.status for m in self.months})},
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "months": [m.to_dict() for m in self.months],
        }


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# --------------------------------------------------------------------------- settings
def demo_settings(params: Params, **overrides: Any) -> DemoParams:
    """``params.demo`` with the non-None overrides applied (validated)."""
    data = params.demo.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DemoParams.model_validate(data)
    except Exception as exc:  # pydantic ValidationError: a bad command-line value
        raise DriftloopError(f"invalid demo settings: {exc}") from None


def month_label(i: int) -> str:
    """1-based month of the simulated production year -> ``YYYY-MM`` (from 2025-01)."""
    y, m = divmod(i - 1, 12)
    return f"{FIRST_PRODUCTION_YEAR + y}-{m + 1:02d}"


def batch_spec(i: int, demo: DemoParams, seed: int) -> str:
    """The ``sim://`` spec of month ``i`` (drift from ``demo.drift_from_month`` on)."""
    q = {"rows": demo.rows_per_month, "seed": seed * 1000 + i}
    if i >= demo.drift_from_month:
        q.update({k: v for k, v in demo.drift.model_dump().items() if v})
    return f"sim://{month_label(i)}?" + "&".join(f"{k}={v}" for k, v in q.items())


def _project_root() -> Path:
    """Where dvc.yaml and src/ come from: the current directory if it is a driftloop project, else
    the checkout this package is installed from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "dvc.yaml").is_file() and (root / "src" / "driftloop").is_dir():
            return root
    raise DriftloopError("no driftloop project (dvc.yaml, src/driftloop) here: run the demo from the repository root")


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *path, key = dotted.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {}) or {}
    node[key] = value


def workspace_params(raw: dict, demo: DemoParams, workspace: Path) -> dict:
    """The workspace's params.yaml: the project's, with the simulator as source, the demo's sizes,
    the time split, and a workspace-local SQLite MLflow store and alert log."""
    import copy

    p = copy.deepcopy(raw or {})
    overrides = {
        **WORKSPACE_OVERRIDES,
        "base.tracking_uri": f"sqlite:///{workspace / 'mlflow.db'}",
        "base.registry_uri": None,
        "base.artifact_location": str(workspace / "mlartifacts"),
        "simulate.n_rows": demo.initial_rows,
        "simulate.start_date": INITIAL_START,
        "simulate.months": INITIAL_MONTHS,
        "simulate.drift": DriftParams().model_dump(),
        "tune.n_trials": demo.n_trials,
        "tune.storage": "memory",
        "alerts.urls": [],
    }
    for dotted, value in overrides.items():
        _set_dotted(p, dotted, value)
    return p


def make_workspace(workspace: Path, raw_params: dict, demo: DemoParams, root: Path | None = None) -> Path:
    """A fresh project in ``workspace`` (deleted first if an earlier demo made it): dvc.yaml, src/,
    params.yaml, .gitignore; git init + dvc init + a first commit."""
    import yaml

    root = root or _project_root()
    workspace = workspace.resolve()
    if workspace.exists():
        if not (workspace / MARKER).exists():
            raise DriftloopError(f"{workspace} exists and was not made by the demo: choose another --out")
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    (workspace / MARKER).write_text("made by `driftloop demo`; deleted by its next run\n")
    shutil.copy(root / "dvc.yaml", workspace / "dvc.yaml")
    shutil.copytree(root / "src", workspace / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if (root / ".gitignore").is_file():
        shutil.copy(root / ".gitignore", workspace / ".gitignore")
    (workspace / "data" / "labeled").mkdir(parents=True)
    (workspace / "data" / "labeled" / ".gitkeep").touch()
    params = workspace_params(raw_params, demo, workspace)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "demo@example.invalid"],
        ["git", "config", "user.name", "driftloop demo"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
    ):
        _run(cmd, workspace)
    _commit(workspace, "demo workspace")
    return workspace


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    beside = Path(sys.executable).parent / cmd[0]  # dvc from this environment, even when not on PATH
    cmd = [str(beside), *cmd[1:]] if beside.is_file() else cmd
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise DriftloopError(f"{' '.join(cmd)} failed in {cwd}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def _commit(workspace: Path, message: str) -> None:
    _run(["git", "add", "-A"], workspace)
    _run(["git", "commit", "-q", "--allow-empty", "-m", message], workspace)


@contextlib.contextmanager
def inside_workspace(workspace: Path):
    """cwd = the workspace (loop and pipeline use relative paths from params), .venv/bin first on
    PATH (the stage commands), no connection overrides from the environment; all restored after."""
    old_cwd = os.getcwd()
    saved = {k: os.environ.get(k) for k in (*_ENV_CLEARED, "PATH", "DVC_NO_ANALYTICS")}
    try:
        for k in _ENV_CLEARED:
            os.environ.pop(k, None)
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        os.environ["DVC_NO_ANALYTICS"] = "1"
        os.chdir(workspace)
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _output_to(log: Path):
    """Send fds 1 and 2 (DVC and the stage commands it spawns) to ``log``; on an error the tail is
    in the exception message."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {dt.datetime.now().isoformat(timespec='seconds')}\n")
        fh.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        except Exception as exc:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise DriftloopError(f"{type(exc).__name__}: {exc}\n--- last lines of {log}:\n{tail}") from exc
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def reproduce(log: Path) -> None:
    """``dvc repro`` of the workspace, each stage in its own process as DVC runs it, output to ``log``;
    the stages report their progress (``runner.observe`` listeners see it)."""
    from driftloop import runner

    with _output_to(log):
        runner.reproduce(in_process=False)


@contextlib.contextmanager
def _screen(console):
    """A console on the terminal (or file) ``console`` prints to, that stays there while fds 1 and 2 go
    to the DVC log (``_output_to``): progress during training and retraining reaches the user."""
    if console is None:
        yield None
        return
    try:
        fd = os.dup(console.file.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's buffer): print to it as is
        yield console
        return
    from rich.console import Console

    with os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace") as fh:
        screen = Console(file=fh, width=console.width, force_terminal=console.is_terminal, highlight=False)
        yield screen
        fh.flush()


def month_line(rec: MonthRecord, months: int, elapsed: float) -> str:
    """The line a month ends with: month k of N, the decision, the drift share and both AUCs."""
    from driftloop.runner import clock

    return (
        f"demo: month {rec.month}/{months} {rec.label}{' (drift)' if rec.drifted else ''}: {rec.status}, "
        f"drift share {_fmt(rec.drift_share, '.2f')}, AUC v{rec.version_in_force} {_fmt(rec.auc_retrained)} "
        f"/ never retrained {_fmt(rec.auc_never_retrained)} [{clock(elapsed)} elapsed]"
    )


def _stage_reporter(say, prefix: str):
    """A ``runner.observe`` listener: one line per pipeline stage that ends (and "still running" lines)."""
    from driftloop.runner import clock

    def listener(ev) -> None:
        if ev.kind == "start":
            return
        what = {"done": "done in", "failed": "failed after", "skipped": "unchanged,"}.get(ev.kind)
        if what is None:  # "running"
            say(f"{prefix}stage {ev.index}/{ev.total} {ev.name} still running ({clock(ev.seconds)})")
        else:
            say(f"{prefix}stage {ev.index}/{ev.total} {ev.name} {what} {ev.seconds:.1f} s")

    return listener


# --------------------------------------------------------------------------- the year
def _auc(model, df) -> float | None:
    from driftloop import monitor as mon

    y = df[model.target]
    keep = y.notna()
    perf = mon.performance(model.encoder.encode(y[keep]), model.predict_scores(df[keep]), model.task, None)
    return perf["metrics"].get("roc_auc")


def train_oracle(wp: Params, demo: DemoParams, first_model, lgb_params: dict):
    """The oracle: the first model's tuned LightGBM parameters fitted on ``demo.oracle_rows`` rows of the drifted
    distribution (simulated over the drifted months, another seed), split like the workspace's data, every row
    with equal weight. The columns the validation dropped for the first model (IDs) are dropped here too."""
    from driftloop.data.simulate import simulate
    from driftloop.data.split import split
    from driftloop.train import train

    first_drifted = demo.drift_from_month
    df = simulate(
        demo.oracle_rows,
        wp.base.seed + 7919,
        start_date=f"{month_label(first_drifted)}-01",
        months=demo.months - first_drifted + 1,
        drift=demo.drift,
        id_offset=10_000_000,
    )
    df = df.drop(columns=[c for c in getattr(first_model, "ignored", []) if c in df.columns])
    plain = wp.model_copy(update={"retrain": wp.retrain.model_copy(update={"training_data": "all"})})
    parts = split(df, plain, "binary")
    return train(parts["train"], parts["valid"], plain, "binary", lgb_params).model


def _adapted() -> bool:
    """Whether the retrained model is the revised ensemble (retrain.adapt; ``models/model.pkl`` of the workspace)."""
    from driftloop.pipeline import load_pickle

    path = Path("models/model.pkl")
    return path.exists() and bool(getattr(load_pickle(path), "revised", False))


def _gate_rows(decision: dict) -> dict[str, Any]:
    """Which rows the gate compared the models on (``register.unseen_rows``' audit), in short."""
    g = decision.get("gate_rows") or {}
    return {k: g.get(k) for k in ("rows", "test_rows", "seen_by_champion", "seen_by_challenger", "provenance")}


def _test_period(column: str) -> list[str] | None:
    """First and last day of the workspace's test split (the gate's rows come from it)."""
    import pandas as pd

    path = Path("data/split/test.parquet")
    if not path.is_file():
        return None
    t = pd.to_datetime(pd.read_parquet(path, columns=[column])[column])
    return [str(t.min().date()), str(t.max().date())]


def run_demo(
    out_dir: str | Path | None = None,
    *,
    params_path: str | Path = "params.yaml",
    months: int | None = None,
    rows_per_month: int | None = None,
    initial_rows: int | None = None,
    drift_from_month: int | None = None,
    n_trials: int | None = None,
    console=None,
) -> DemoResult:
    """Run the simulated year; write timeline.png, timeline.html and summary.json to ``out_dir``
    (default ``demo.output_dir``); the workspace is ``out_dir/workspace``."""
    import yaml

    t_start = time.perf_counter()
    params_path = Path(params_path)
    base = load_params(params_path)
    raw = yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.is_file() else {}
    demo = demo_settings(
        base,
        months=months,
        rows_per_month=rows_per_month,
        initial_rows=initial_rows,
        drift_from_month=drift_from_month,
        n_trials=n_trials,
    )
    if demo.drift_from_month > demo.months:
        raise DriftloopError(f"demo.drift_from_month ({demo.drift_from_month}) is after the last month ({demo.months})")
    out = Path(out_dir or demo.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _screen(console) as screen:
        say = (lambda text: screen.print(text, highlight=False, markup=False)) if screen else (lambda text: None)
        result = _run_year(out, raw, base, demo, say, t_start)
    result.seconds["total"] = time.perf_counter() - t_start
    write_outputs(result)
    return result


def _run_year(out: Path, raw: dict, base: Params, demo: DemoParams, say, t_start: float) -> DemoResult:
    from driftloop import loop, pipeline, runner, tracking
    from driftloop import register as reg

    ws = make_workspace(out / "workspace", raw, demo)
    settings = {
        **demo.model_dump(mode="json"),
        "output_dir": str(out),
        "split": {k.split(".", 1)[1]: v for k, v in WORKSPACE_OVERRIDES.items() if k.startswith("split.")},
        "monitor": base.monitor.model_dump(mode="json"),
        "register": base.register.model_dump(mode="json"),
    }
    result = DemoResult(out, ws, settings)
    log = ws / "dvc.log"
    with inside_workspace(ws):
        wp = load_params("params.yaml")
        say(f"demo: workspace {ws}")
        say(
            f"demo: training the first model on {demo.initial_rows} rows ({INITIAL_START[:4]}), "
            f"{demo.n_trials} Optuna trials (dvc repro; log: {log.name})"
        )
        t0 = time.perf_counter()
        with runner.observe(_stage_reporter(say, "demo:   first model: ")):
            reproduce(log)
        _commit(ws, "first model")
        result.seconds["initial_training"] = time.perf_counter() - t0

        gate = json.loads(Path(REGISTER_REPORT).read_text()).get("decision") or {}
        if gate.get("alias") != "champion":  # e.g. too few test events for the gate (register.min_test_events)
            raise DriftloopError(
                f"demo: the first model was not promoted to @champion ({gate.get('reason', 'no gate decision')}); "
                "give the demo more rows (demo.initial_rows) or relax the register settings"
            )
        client = tracking.connect(wp)
        first = loop.resolve_champion(client, wp)
        champions = {first.version: first}
        t0 = time.perf_counter()
        tuned = json.loads(Path("models/best_params.json").read_text())["lgb_params"]
        oracle = train_oracle(wp, demo, first.model, tuned)
        result.seconds["oracle_training"] = time.perf_counter() - t0
        say(f"demo: oracle trained on {demo.oracle_rows} post-drift rows ({result.seconds['oracle_training']:.0f} s)")
        retrain_seconds = 0.0
        monitor_seconds = 0.0
        for i in range(1, demo.months + 1):
            version = reg.current_version(client, wp.base.model_name, reg.CHAMPION).version
            champ = champions.get(str(version)) or champions.setdefault(str(version), loop.resolve_champion(client, wp))
            spec = batch_spec(i, demo, wp.base.seed)
            batch_id, df = loop.simulated_batch(spec, wp)
            t0 = time.perf_counter()
            res = loop.monitor_batch(wp, batch_id, df, client=client, champion=champ)
            t_mon = time.perf_counter() - t0
            monitor_seconds += t_mon
            perf = res.get("performance") or {}
            auc_never = perf.get("metrics", {}).get("roc_auc") if champ.version == first.version else None
            if auc_never is None:
                auc_never = _auc(first.model, df)
            est = res.get("estimated_performance") or {}
            drifted = i >= demo.drift_from_month
            rec = MonthRecord(
                month=i,
                label=month_label(i),
                drifted=drifted,
                batch_id=batch_id,
                rows=len(df),
                status=res["status"],
                reasons=list(res.get("decision", {}).get("reasons", [])),
                drift_share=(res.get("drift") or {}).get("drift_share"),
                n_drifted=(res.get("drift") or {}).get("n_drifted"),
                prediction_drift=(res.get("prediction_drift") or {}).get("drifted"),
                target_drift=(res.get("target_drift") or {}).get("drifted"),
                version_in_force=str(champ.version),
                auc_retrained=perf.get("metrics", {}).get("roc_auc"),
                auc_never_retrained=auc_never,
                report_html=res.get("report_html"),
                seconds_monitor=t_mon,
                alert="alert" in res,
                auc_estimated=est.get("roc_auc"),
                auc_estimated_low=est.get("roc_auc_low"),
                auc_estimated_high=est.get("roc_auc_high"),
                auc_oracle=_auc(oracle, df) if drifted else None,
            )
            say(month_line(rec, demo.months, time.perf_counter() - t_start))
            if res["status"] == "retrain":
                t0 = time.perf_counter()
                say(f"demo: month {i}/{demo.months}: retraining on {batch_id} (dvc repro; log: {log.name})")
                with (
                    runner.observe(_stage_reporter(say, f"demo:   month {i}/{demo.months} retraining: ")),
                    _output_to(log),
                ):
                    out_reg = pipeline.retrain_on(wp, batch_id, df, res.get("mlflow_run_id"), project=".")
                dt_retrain = time.perf_counter() - t0
                retrain_seconds += dt_retrain
                _commit(ws, f"retrain on {batch_id}")
                decision = out_reg.get("decision") or {}
                rec.retrain = {
                    "version": out_reg.get("version"),
                    "alias": out_reg.get("alias"),
                    "reason": decision.get("reason") or out_reg.get("reason"),
                    "improvement": decision.get("improvement"),
                    "gate_rows": _gate_rows(decision),
                    "test_period": _test_period(wp.split.time_column) if wp.split.time_column else None,
                    "adapted": _adapted(),
                    "seconds": round(dt_retrain, 1),
                }
                say(
                    f"demo: month {i}/{demo.months}: retrained -> v{rec.retrain['version']} "
                    f"@{rec.retrain['alias']}{' (adapted)' if rec.retrain['adapted'] else ''} ({dt_retrain:.0f} s): "
                    f"{rec.retrain['reason']}"
                )
            else:  # retrain.keep_labeled_batches: the month's labels join the training data (DVC's output to the log)
                with _output_to(log):
                    rec.labeled_kept = loop.keep_labeled_batch(wp, res, df, ".") is not None
                if rec.labeled_kept:
                    _commit(ws, f"labeled batch {res['batch_id']}")
            result.months.append(rec)
        result.seconds.update(monitoring=monitor_seconds, retraining=retrain_seconds)
    return result


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


# --------------------------------------------------------------------------- outputs
STATUS_COLOURS = {
    "ok": "#2e7d32",
    "warn": "#f9a825",
    "retrain": "#c62828",
    "schema_violation": "#6a1b9a",
    "error": "#424242",
}


def plot_timeline(result: DemoResult, path: Path) -> Path:
    """Drift share and decisions per month (top), monthly AUC retrained vs never retrained (bottom);
    retraining events as vertical lines (dashed: the new version became @challenger)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    months = result.months
    x = list(range(1, len(months) + 1))
    drift_from = result.settings["drift_from_month"]
    mp = result.settings["monitor"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.6), sharex=True, gridspec_kw={"height_ratios": [1, 1.25]})
    right = len(months) + 0.9
    for ax in (ax1, ax2):
        ax.axvspan(drift_from - 0.5, right, color="#fde0dc", alpha=0.5, lw=0, zorder=0)
        for m in months:
            if m.retrain:
                promoted = m.retrain.get("alias") == "champion"
                ax.axvline(m.month + 0.5, color="#1565c0", lw=1.6, ls="-" if promoted else "--", zorder=1)
    shares = [m.drift_share if m.drift_share is not None else 0.0 for m in months]
    ax1.bar(x, shares, color="#90a4ae", width=0.6, zorder=2)
    ax1.axhline(mp["drift_share_warn"], color=STATUS_COLOURS["warn"], lw=1, ls=":", zorder=2)
    ax1.axhline(mp["drift_share_retrain"], color=STATUS_COLOURS["retrain"], lw=1, ls=":", zorder=2)
    top = max([*shares, mp["drift_share_retrain"]]) * 1.25 + 0.05
    for xi, m, s in zip(x, months, shares, strict=True):
        ax1.scatter(
            [xi],
            [s + top * 0.06],
            marker="v" if m.status != "ok" else "o",
            s=70 if m.status != "ok" else 30,
            color=STATUS_COLOURS.get(m.status, "#000"),
            zorder=3,
        )
    ax1.set_ylim(0, top)
    for m in months:
        if m.retrain:
            ax1.text(
                m.month + 0.57,
                top * 0.97,
                f"retrain -> v{m.retrain['version']} @{m.retrain['alias']}",
                rotation=90,
                va="top",
                ha="left",
                fontsize=7,
                color="#1565c0",
            )
    ax1.set_ylabel("share of drifted columns")
    ax1.set_title("driftloop demo: a simulated production year", loc="left", fontsize=11)
    handles = [
        Line2D([], [], marker="o" if s == "ok" else "v", ls="", color=STATUS_COLOURS[s], label=s)
        for s in ("ok", "warn", "retrain")
    ]
    handles += [
        Line2D([], [], color=STATUS_COLOURS["warn"], ls=":", label="warn threshold"),
        Line2D([], [], color=STATUS_COLOURS["retrain"], ls=":", label="retrain threshold"),
    ]
    ax1.legend(handles=handles, loc="upper left", fontsize=8, ncol=5, frameon=False)

    a = [m.auc_retrained for m in months]
    b = [m.auc_never_retrained for m in months]
    e = [m.auc_estimated for m in months]
    o = [m.auc_oracle for m in months]
    lo = [m.auc_estimated_low if m.auc_estimated_low is not None else float("nan") for m in months]
    hi = [m.auc_estimated_high if m.auc_estimated_high is not None else float("nan") for m in months]

    def line(values, label, **style) -> None:  # a month without a value is a gap in the line
        if any(v is not None for v in values):
            ax2.plot(x, [float("nan") if v is None else v for v in values], label=label, zorder=3, **style)

    if any(v is not None for v in e):
        ax2.fill_between(x, lo, hi, color="#90caf9", alpha=0.35, lw=0, zorder=2)
    line(e, "estimated before labels (CBPE, 95 % interval)", marker="x", color="#42a5f5", lw=1.2, ls=":")
    line(a, "closed loop, realized (champion in force)", marker="o", color="#1565c0", lw=2)
    line(b, "first model, never retrained", marker="s", color="#757575", lw=1.6, ls="--")
    line(o, "oracle (trained on post-drift data)", marker="^", color="#2e7d32", lw=1.4, ls="-.")
    for m in months:
        if m.retrain and _gate_text(m.retrain):  # which rows the gate compared the two models on
            ax2.text(
                m.month + 0.57,
                0.98,
                _gate_text(m.retrain).strip(" ()"),
                rotation=90,
                va="top",
                ha="left",
                fontsize=7,
                color="#1565c0",
                transform=ax2.get_xaxis_transform(),
            )
        if m.version_in_force and m.auc_retrained is not None:
            ax2.annotate(
                f"v{m.version_in_force}",
                (m.month, m.auc_retrained),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=7,
                color="#1565c0",
            )
    vals = [v for v in a + b + e + o if v is not None]
    if vals:
        ax2.set_ylim(min(vals) - 0.02, max(vals) + 0.025)
    ax2.set_ylabel("ROC AUC on the month's labels")
    handles2, _ = ax2.get_legend_handles_labels()
    handles2 += [
        Line2D([], [], color="#1565c0", lw=1.6, label="retrained (solid: promoted, dashed: challenger)"),
        Patch(color="#fde0dc", label="drift injected"),
    ]
    ax2.legend(handles=handles2, loc="lower left", fontsize=8, frameon=False, ncol=2)
    ax2.set_xticks(x, [m.label for m in months], rotation=45, ha="right", fontsize=8)
    ax2.set_xlim(0.5, right)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _gate_text(retrain: dict) -> str:
    """`` (gate: 812 unseen rows, 2025-05-27..06-30)``: the rows the gate compared the two models on (``adapted; ``
    first when the retrain's model revision was adopted)."""
    rows = (retrain.get("gate_rows") or {}).get("rows")
    if rows is None:
        return ""
    period = retrain.get("test_period")
    when = f", {period[0]}..{period[1][5:]}" if period else ""
    adapted = "adapted; " if retrain.get("adapted") else ""  # retrain.adapt: the revision was adopted
    return f" ({adapted}gate: {rows} unseen rows{when})"


def write_html(result: DemoResult, png: Path, path: Path) -> Path:
    """A self-contained page: the timeline (base64 PNG) and one table row per month."""
    s = result.after_drift()
    est = result.estimate_error()
    img = base64.b64encode(png.read_bytes()).decode("ascii")
    rows = []
    for m in result.months:
        link = "-"
        if m.report_html:
            rel = os.path.relpath(Path(result.workspace, m.report_html), path.parent)
            link = f"<a href='{html.escape(rel)}'>report</a>"
        action = "-"
        if m.retrain:
            version, alias = html.escape(str(m.retrain["version"])), html.escape(str(m.retrain["alias"]))
            action = (
                f"retrained: v{version} &rarr; @{alias}"
                f"<br><small>{html.escape(_gate_text(m.retrain).strip(' ()'))}</small>"
                f"<br><small>{html.escape(str(m.retrain.get('reason') or ''))}</small>"
            )
        elif m.labeled_kept:
            action = "labels kept for the next retrain"
        colour = STATUS_COLOURS.get(m.status, "#000")
        reasons = html.escape("; ".join(m.reasons)) or "-"
        rows.append(
            f"<tr><td>{m.label}{' &#9888;' if m.drifted else ''}</td>"
            f"<td style='color:{colour};font-weight:bold' title='{reasons}'>{html.escape(m.status)}</td>"
            f"<td>{_fmt(m.drift_share, '.2f')}</td><td>{'yes' if m.prediction_drift else 'no'}</td>"
            f"<td>{_fmt(m.auc_estimated)} [{_fmt(m.auc_estimated_low)}, {_fmt(m.auc_estimated_high)}]</td>"
            f"<td>{_fmt(m.auc_retrained)}</td><td>{_fmt(m.auc_never_retrained)}</td><td>{_fmt(m.auc_oracle)}</td>"
            f"<td>v{html.escape(m.version_in_force)}</td>"
            f"<td>{action}</td><td>{link}</td><td><small>{reasons}</small></td></tr>"
        )
    st = result.settings
    drift = ", ".join(f"{k}={v}" for k, v in st["drift"].items() if v) or "none"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>driftloop demo: a simulated production year</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f0f0f0; }} img {{ max-width: 100%; }}
.k {{ font-size: 1.2em; }}
</style></head><body>
<h1>driftloop demo: a simulated production year</h1>
<p>{st["months"]} monthly batches of {st["rows_per_month"]} labeled rows; first model trained on
{st["initial_rows"]} rows of {INITIAL_START[:4]}; drift ({html.escape(drift)}) from month
{st["drift_from_month"]} ({month_label(st["drift_from_month"])}).
Each month is monitored against the champion in force; a <b>retrain</b> decision adds the labeled batch as a DVC data
version and reruns the pipeline, whose gate makes the new version @champion or @challenger.</p>
<p class="k">Mean monthly ROC AUC after the drift: <b>{_fmt(s["retrained"])}</b> with the closed loop vs
<b>{_fmt(s["never_retrained"])}</b> never retrained (difference {_fmt(s["difference"], "+.3f")}); the oracle
{_fmt(result.summary_oracle())}. Label-free estimate: mean |estimated - realized| {_fmt(est["mae"])} over
{est["months"]} months. Total run time {result.seconds.get("total", 0):.0f} s.</p>
<img alt="timeline" src="data:image/png;base64,{img}">
<h2>Month by month</h2>
<table><tr><th>month</th><th>status</th><th>drift share</th><th>prediction drift</th>
<th>AUC estimated before labels (CBPE)</th><th>AUC (loop)</th><th>AUC (never retrained)</th><th>AUC (oracle)</th>
<th>version in force</th><th>retraining</th><th>Evidently</th><th>reasons</th></tr>
{"".join(rows)}
</table>
<p><small>Workspace (git + DVC + MLflow, SQLite): {html.escape(str(result.workspace))}.
<code>cd</code> there and run <code>driftloop ui</code> to browse the runs,
<code>driftloop history</code> for the alias moves.
Alerts: {html.escape(str(Path(result.workspace, "reports", "alerts.jsonl")))}.</small></p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_outputs(result: DemoResult) -> dict[str, Path]:
    from driftloop.evaluate import write_json

    png = plot_timeline(result, result.out_dir / "timeline.png")
    page = write_html(result, png, result.out_dir / "timeline.html")
    summary = result.out_dir / "summary.json"
    write_json(result.summary(), summary)
    return {"png": png, "html": page, "summary": summary}


def rich_table(result: DemoResult):
    from rich.table import Table

    s = result.after_drift()
    table = Table(
        title="driftloop demo: monthly ROC AUC, closed loop vs never retrained",
        caption=f"after the drift: {_fmt(s['retrained'])} vs {_fmt(s['never_retrained'])} "
        f"({_fmt(s['difference'], '+.3f')}); {len(result.retrains)} retrain(s); "
        f"{result.seconds.get('total', 0):.0f} s",
    )
    cols = ("month", "drift", "status", "drift share", "AUC est.", "AUC loop", "AUC never", "AUC oracle", "version")
    for col in (*cols, "retraining"):
        table.add_column(col, justify="right" if col.startswith(("AUC", "drift share")) else "left")
    colours = {"ok": "green", "warn": "yellow", "retrain": "red"}
    for m in result.months:
        action = f"v{m.retrain['version']} -> @{m.retrain['alias']}{_gate_text(m.retrain)}" if m.retrain else ""
        action = action or ("labels kept" if m.labeled_kept else "")
        table.add_row(
            m.label,
            "yes" if m.drifted else "",
            f"[{colours.get(m.status, 'magenta')}]{m.status}[/]",
            _fmt(m.drift_share, ".2f"),
            _fmt(m.auc_estimated),
            _fmt(m.auc_retrained),
            _fmt(m.auc_never_retrained),
            _fmt(m.auc_oracle),
            f"v{m.version_in_force}",
            action,
        )
    return table
