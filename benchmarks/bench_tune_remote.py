"""The tune stage against a remote MLflow tracking server vs the embedded SQLite store: what the round trips cost.

The tune stage logs each finished trial as a nested MLflow run in a few batched calls (``tracking.TrialLogger``,
``tracking.log_batch``). This benchmark runs the same ``driftloop tune`` on the same split files, alternating
(A B B A ...) between:

- ``sqlite``: the embedded default, ``sqlite:///mlflow.db`` in the project;
- ``server``: a real ``mlflow server`` on 127.0.0.1 (its own SQLite backend, ``--serve-artifacts``), reached over HTTP
  (``MLFLOW_TRACKING_URI=http://...``), started once before the legs;

and prints each leg's wall time and the study's own time (``seconds`` in the stage's report: the trials and their
logging, without the process start-up), the medians and their ratio (server / sqlite; the target is <= 1.05x).

    python benchmarks/bench_tune_remote.py                  # 20,000 rows, 30 trials, 4 rounds
    python benchmarks/bench_tune_remote.py --rows 20000 --trials 30 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import BIN, ROOT, env, machine, machine_line, make_project, run, run_timed, write_json

sys.path.insert(0, str(ROOT / "deploy"))
from local_stack import free_port  # noqa: E402

TUNE = ["driftloop", "tune", "--split-dir", "data/split", "--out", "models/best_params.json", "--report", "t.json"]


def start_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "mlflow-server.log", "w")  # noqa: SIM115 - closed with the process
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
           "--serve-artifacts", "--artifacts-destination", str(work / "server-artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}): see {work / 'mlflow-server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not answer {url}/health in 180 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4, help="pairs of legs (A B, then B A, ...)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/driftloop-bench-tune-remote"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    print(machine_line(machine()))
    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    proj = make_project(args.work / "proj", {"simulate.n_rows": args.rows, "tune.n_trials": args.trials})
    run(["driftloop", "run", "split"], proj)
    server, url = start_server(args.work)
    legs = {"sqlite": env(), "server": env({"MLFLOW_TRACKING_URI": url})}
    seconds: dict[str, list[float]] = {"sqlite": [], "server": []}
    study: dict[str, list[float]] = {"sqlite": [], "server": []}
    try:
        print(f"{args.rows} rows, {args.trials} trials per leg; server {url} (SQLite backend, proxied artifacts)")
        s, _ = run_timed(TUNE, proj, environ=legs["sqlite"])  # warm-up: file caches, first imports (not counted)
        print(f"  warm-up sqlite: {s:6.1f} s (not counted)")
        for r in range(args.rounds):
            order = ["sqlite", "server"] if r % 2 == 0 else ["server", "sqlite"]
            for name in order:
                s, _ = run_timed(TUNE, proj, environ=legs[name])
                seconds[name].append(round(s, 1))
                study[name].append(json.loads((proj / "t.json").read_text())["seconds"])
                print(f"  round {r + 1} {name:>6}: {s:6.1f} s wall, study {study[name][-1]:6.1f} s")
    finally:
        server.terminate()
        server.wait(30)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    med_study = {k: statistics.median(v) for k, v in study.items()}
    ratio, ratio_study = med["server"] / med["sqlite"], med_study["server"] / med_study["sqlite"]
    print(f"\nmedian wall:  server {med['server']:.1f} s vs sqlite {med['sqlite']:.1f} s = {ratio:.3f}x")
    print(f"median study: server {med_study['server']:.1f} s vs sqlite {med_study['sqlite']:.1f} s = "
          f"{ratio_study:.3f}x (target <= 1.05x)")  # fmt: skip
    write_json(args.json, {"seconds": seconds, "study_seconds": study, "median": med, "median_study": med_study,
                           "ratio": round(ratio, 3), "ratio_study": round(ratio_study, 3), "rows": args.rows,
                           "trials": args.trials, "machine": machine()})  # fmt: skip


if __name__ == "__main__":
    main()
