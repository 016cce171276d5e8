"""Tune workers on one PostgreSQL study: repeated parameter sets, the exact trial budget, trials per minute.

Two legs on the same split files and the same budget, each on a fresh study:

- ``one``: the tune stage alone (``driftloop tune``), one LightGBM thread;
- ``shared``: ``--workers`` ``driftloop tune-worker`` processes plus the tune stage at once, one thread each.

For the shared leg it prints the finished trials (must equal ``tune.n_trials``), trials left RUNNING (0), and
repeated parameter sets among the sampled trials (the enqueued LightGBM defaults excluded); for both legs the
wall time and trials per minute, and their ratio.

    python benchmarks/bench_tune_workers.py                          # 30 trials, 2 workers + the stage
    python benchmarks/bench_tune_workers.py --rows 20000 --trials 30 --workers 1
    DRIFTLOOP_BENCH_PG=postgresql+psycopg://postgres@127.0.0.1:5432/driftloop_bench python benchmarks/...

It needs a PostgreSQL server (the database is created when missing; never one that holds an MLflow store:
Optuna and MLflow both keep an ``alembic_version`` table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from _common import env, machine, machine_line, make_project, run, write_json

TUNE = ["tune", "--split-dir", "data/split", "--out", "models/best_params.json", "--report", "reports/tune.json"]
WORKER = ["tune-worker", "--split-dir", "data/split"]


def _database(url: str) -> str:
    u = sa.engine.make_url(url)
    engine = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{u.database}"'))
    engine.dispose()
    return u.render_as_string(hide_password=False)


def _leg(proj: Path, storage: str, argvs: list[list[str]]) -> dict:
    import optuna

    study = f"bench-{uuid.uuid4().hex[:8]}"
    environ = env({"DRIFTLOOP_OPTUNA_STORAGE": storage})
    # the study name comes from params (tune.study_name): a fresh one per leg
    text = (proj / "params.yaml").read_text()
    import yaml

    p = yaml.safe_load(text)
    p["tune"]["study_name"] = study
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "driftloop.cli", *argv], cwd=proj, env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]  # fmt: skip
    outs = [pr.communicate() for pr in procs]
    seconds = time.perf_counter() - t0
    for pr, (_, err) in zip(procs, outs, strict=True):
        if pr.returncode != 0:
            raise RuntimeError(f"a tune process failed ({pr.returncode}):\n{err[-3000:]}")
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    running = [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    sampled = [tuple(sorted(t.params.items())) for t in trials if "fixed_params" not in t.system_attrs]
    best = max((t.value for t in trials if t.state.name == "COMPLETE"), default=None)
    # the trials' own window (first start -> last end): process start-up and the stage's closing work left out
    starts = [t.datetime_start for t in finished if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    window = (max(ends) - min(starts)).total_seconds() if starts and ends else seconds
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished if t.datetime_complete)
    optuna.delete_study(study_name=study, storage=storage)
    return {
        "processes": len(argvs),
        "seconds": round(seconds, 1),
        "finished": len(finished),
        "running": len(running),
        "duplicates": len(sampled) - len(set(sampled)),
        "trials_per_minute": round(len(finished) / seconds * 60, 2),
        "trial_window_s": round(window, 1),
        "trials_per_minute_window": round(len(finished) / window * 60, 2),
        "mean_trial_s": round(busy / max(len(finished), 1), 2),
        "best": best,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2, help="tune-worker processes beside the tune stage")
    ap.add_argument(
        "--pg",
        default=os.environ.get("DRIFTLOOP_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/driftloop_bench"),
    )
    ap.add_argument(
        "--pruning", action="store_true", help="keep tune.pruning on (off by default: every trial costs the same)"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/driftloop-bench-tune-workers"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    print(machine_line(machine()))
    storage = _database(args.pg)
    shutil.rmtree(args.work, ignore_errors=True)
    proj = make_project(
        args.work / "proj",
        {
            "simulate.n_rows": args.rows,
            "tune.n_trials": args.trials,
            "tune.num_threads": 1,
            "tune.pruning": args.pruning,
        },
    )
    run(["driftloop", "run", "split"], proj)
    print(f"{args.rows} rows, {args.trials} trials, 1 LightGBM thread per process")
    one = _leg(proj, storage, [TUNE])
    print(f"  one process (the tune stage): {one}")
    shared = _leg(proj, storage, [WORKER] * args.workers + [TUNE])
    print(f"  {args.workers} tune-workers + the tune stage: {shared}")
    ratio = shared["trials_per_minute"] / one["trials_per_minute"]
    print()
    print(f"finished trials: {shared['finished']} of tune.n_trials {args.trials}; left RUNNING: {shared['running']}")
    print(f"repeated parameter sets: {shared['duplicates']} of {shared['finished']} (one process: {one['duplicates']})")
    print(f"trials per minute, wall time: {shared['trials_per_minute']} vs {one['trials_per_minute']} = {ratio:.2f}x")
    wratio = shared["trials_per_minute_window"] / one["trials_per_minute_window"]
    print(
        f"trials per minute, the trials' window: {shared['trials_per_minute_window']} vs "
        f"{one['trials_per_minute_window']} = {wratio:.2f}x   (target >= 1.7x at the same trial cost: mean trial "
        f"{shared['mean_trial_s']} s vs {one['mean_trial_s']} s)"
    )
    print(f"best value: {shared['best']:.4f} vs {one['best']:.4f}")
    write_json(args.json, {"one": one, "shared": shared, "ratio": round(ratio, 2), "window_ratio": round(wratio, 2),
                           "rows": args.rows, "trials": args.trials, "workers": args.workers})  # fmt: skip


if __name__ == "__main__":
    main()
