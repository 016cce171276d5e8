"""Helpers shared by the training-pipeline benchmarks (``bench_pipeline``, ``bench_pruning``, ``bench_memory``).

- ``make_project``: a throw-away driftloop project (the repo's ``dvc.yaml`` and ``src/``, a
  ``params.yaml`` derived from the repo's, ``git init`` + ``dvc init``, MLflow on a SQLite file
  inside the project), as ``tests/conftest.py`` does for the integration tests;
- ``run_timed`` / ``run_usage``: a subprocess with its wall time, or with wall time, CPU time and
  peak RSS (``os.wait4``: the kernel's rusage of that child, what ``/usr/bin/time -v`` prints);
- ``machine``: the context worth printing next to any figure (cores, load, versions).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BIN = Path(sys.executable).parent  # .venv/bin: dvc, driftloop

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def set_dotted(params: dict, dotted: str, value: Any) -> None:
    """``set_dotted(p, "tune.n_trials", 30)``: nested assignment, creating sections as needed."""
    *path, key = dotted.split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value


def derived_params(overrides: dict[str, Any], base: dict | None = None) -> dict:
    p = copy.deepcopy(base if base is not None else repo_params())
    for dotted, value in overrides.items():
        set_dotted(p, dotted, value)
    return p


def effective_params(overrides: dict[str, Any]):
    """The validated ``Params`` (defaults filled in) of the repo's params.yaml plus ``overrides``."""
    from driftloop.config import Params

    return Params.model_validate(derived_params(overrides))


def env(extra: dict[str, str] | None = None, path_first: list[Path] | None = None) -> dict[str, str]:
    """The environment for subprocesses: .venv/bin on PATH, no inherited MLflow URI, no DVC analytics."""
    e = dict(os.environ)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DRIFTLOOP_OPTUNA_STORAGE"):
        e.pop(var, None)
    dirs = [str(d) for d in (path_first or [])] + [str(BIN)]
    e["PATH"] = os.pathsep.join(dirs + [e.get("PATH", "")])
    e["DVC_NO_ANALYTICS"] = "1"
    e.update(extra or {})
    return e


def run(
    cmd: list[str], cwd: Path, *, environ: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=environ or env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}) in {cwd}:\n{res.stdout}\n{res.stderr}")
    return res


def run_timed(
    cmd: list[str], cwd: Path, *, environ: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = run(cmd, cwd, environ=environ)
    return time.perf_counter() - t0, res


def run_usage(cmd: list[str], cwd: Path, *, environ: dict[str, str] | None = None, log: Path | None = None) -> dict:
    """Run ``cmd`` (output to ``log``); return its wall time, peak RSS (bytes) and CPU times.

    ``os.wait4`` gives the kernel's rusage of that child, including the descendants it waited for
    (``dvc repro`` -> each ``driftloop`` stage): CPU seconds are the whole tree's, the peak RSS is the
    largest single process's (what ``/usr/bin/time -v`` prints as "Maximum resident set size").
    """
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=environ or env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    if proc.returncode != 0:
        tail = log.read_text()[-3000:] if log else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}) in {cwd}:\n{tail}")
    return {
        "seconds": wall,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "peak_rss_bytes": ru.ru_maxrss * 1024,
    }


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def make_project(dest: Path, overrides: dict[str, Any]) -> Path:
    """A fresh project in ``dest``: dvc.yaml + src/ of the repo, derived params.yaml, git + dvc init."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    shutil.copytree(SRC, dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / ".gitignore", dest / ".gitignore")
    (dest / "data" / "labeled").mkdir(parents=True, exist_ok=True)  # a dependency of the ingest stage
    for name in ("data/.gitignore", "data/labeled/README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, dest / name)
    params = derived_params(
        {
            "base.tracking_uri": f"sqlite:///{dest / 'mlflow.db'}",
            "base.artifact_location": str(dest / "mlartifacts"),
            **overrides,
        }
    )
    write_params(dest / "params.yaml", params)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "bench@example.invalid"],
        ["git", "config", "user.name", "bench"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        run(cmd, dest)
    return dest


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    import lightgbm
    import optuna

    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "lightgbm": lightgbm.__version__,
        "optuna": optuna.__version__,
    }


def machine_line(m: dict) -> str:
    return (
        f"{m['date']}; {m['cpus']} cpus, load {m['loadavg']}; python {m['python']}, "
        f"lightgbm {m['lightgbm']}, optuna {m['optuna']}"
    )


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


def write_json(path: Path | None, result: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {path}")


_RUN_STAGE = re.compile(r"^Stage '(\w+)' done in ([\d.]+) s", re.M)


def run_stage_seconds(log: Path) -> dict[str, float]:
    """{stage: wall seconds} from the per-stage lines ``driftloop run`` prints."""
    return {m.group(1): float(m.group(2)) for m in _RUN_STAGE.finditer(Path(log).read_text())}


def finish(work: Path, keep: bool, json_path: Path | None, result: dict) -> dict:
    """Keep (and say where) or remove the work folder, then write the figures."""
    if keep:
        print(f"  work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    write_json(json_path, result)
    return result
