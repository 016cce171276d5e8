"""Benchmark: peak memory of ingest and training on 10M simulated rows (target < 8 GiB).

Every stage command runs as its own process, exactly as ``dvc.yaml`` calls it (same paths, a
``params.yaml`` derived from the repo's with ``simulate.n_rows: --rows``), one after the other,
and its peak resident set size is read from the kernel (``os.wait4``: ``ru_maxrss`` of that
child, the figure ``/usr/bin/time -v`` prints as "Maximum resident set size"):

- ``ingest``: the simulator streamed in ``simulate.chunk_rows`` chunks into ``data/raw.parquet``;
- ``validate`` and ``split``: needed to produce the split; measured too (not part of the target);
- ``tune`` (``--tune-trials``, default 2; 0 skips it): the tune stage with a few short trials
  (``tune.max_rounds: --max-rounds``), MLflow on a SQLite file in the work folder;
- ``train``: the train stage as the pipeline runs it (LightGBM refit with fixed parameters, the
  LightGBM defaults, ``--max-rounds`` rounds at most, plus the configured baselines:
  dummy and one-hot + standardised logistic regression);
- ``train (LightGBM only)``: the same with ``train.baselines: []``, to separate the LightGBM
  fit from the baselines.

Target (from the issue): ingest and training stay under 8 GiB peak. This takes several minutes
at 10M rows (2 cores); ``--rows 1000000`` is a quick check.

Usage::

    .venv/bin/python benchmarks/bench_memory.py                        # 10M rows
    .venv/bin/python benchmarks/bench_memory.py --rows 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

LIMIT_GIB = 8.0
TARGET_STAGES = {"ingest", "tune", "train", "train (LightGBM only)"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="simulate.n_rows (default 10,000,000)")
    ap.add_argument("--max-rounds", type=int, default=50, help="LightGBM rounds at most in tune and train (default 50)")
    ap.add_argument("--tune-trials", type=int, default=2, help="trials of the tune stage (default 2; 0 skips tune)")
    ap.add_argument("--skip-baselines", action="store_true", help="measure train with LightGBM only (no baselines)")
    ap.add_argument("--num-threads", type=int, default=None, help="override tune.num_threads (default: params.yaml)")
    ap.add_argument(
        "--driftloop-run",
        action="store_true",
        help="instead: the peak RSS of one `driftloop run` (every stage in one process) in a throw-away project",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data, logs) and print where")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    (work / "data" / "labeled").mkdir(parents=True)
    overrides = {
        "simulate.n_rows": args.rows,
        "base.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
        "base.artifact_location": str(work / "mlartifacts"),
        "tune.n_trials": max(args.tune_trials, 1),
        "tune.max_rounds": args.max_rounds,
        "tune.early_stopping_rounds": max(5, min(50, args.max_rounds // 5)),
        "tune.pruner_warmup_rounds": min(30, args.max_rounds // 2),
    }
    if args.num_threads is not None:
        overrides["tune.num_threads"] = args.num_threads
    if args.driftloop_run:
        return in_process(args, overrides, work)
    params = C.derived_params(overrides)
    C.write_params(work / "params.yaml", params)
    C.write_params(work / "params_lgb_only.yaml", C.derived_params({"train.baselines": []}, base=params))
    eff = C.effective_params(overrides)

    # fixed LightGBM parameters for train: the defaults of the search space (what trial 0 of tune fits)
    from driftloop.tune import LGBM_DEFAULTS, lgb_params

    (work / "models").mkdir()
    fixed = lgb_params("binary", 2, eff.tune, eff.base.seed, dict(LGBM_DEFAULTS))
    (work / "models/fixed_params.json").write_text(json.dumps({"lgb_params": fixed, "tune_run_id": ""}))

    dl = str(C.BIN / "driftloop")
    train_args = [
        "--split-dir",
        "data/split",
        "--tuned",
        "models/fixed_params.json",
        "--validation",
        "reports/validation.json",
        "--model",
        "models/model.pkl",
        "--baselines",
        "models/baselines.pkl",
        "--run-info",
        "models/run.json",
    ]
    steps = [
        ("ingest", [dl, "ingest", "--out", "data/raw.parquet"]),
        (
            "validate",
            [
                dl,
                "validate",
                "--data",
                "data/raw.parquet",
                "--out",
                "data/validated.parquet",
                "--report",
                "reports/validation.json",
            ],
        ),
        ("split", [dl, "split", "--data", "data/validated.parquet", "--out-dir", "data/split"]),
    ]
    if args.tune_trials > 0:
        steps.append(
            (
                "tune",
                [
                    dl,
                    "tune",
                    "--split-dir",
                    "data/split",
                    "--out",
                    "models/best_params.json",
                    "--report",
                    "reports/tune.json",
                ],
            )
        )
    steps.append(("train (LightGBM only)", [dl, "train", *train_args, "--params", "params_lgb_only.yaml"]))
    if not args.skip_baselines:
        steps.append(("train", [dl, "train", *train_args]))

    m = C.machine()
    print(
        f"# bench_memory: {args.rows:,} rows; tune {args.tune_trials} trial(s), max_rounds={args.max_rounds}, "
        f"num_threads={eff.tune.num_threads}; train baselines {eff.train.baselines}; limit {LIMIT_GIB:g} GiB"
    )
    print(f"# {C.machine_line(m)}; work folder {work}")
    results = []
    for name, cmd in steps:
        print(f"{name} ...", end=" ", flush=True)
        r = C.run_usage(cmd, work, log=work / f"{name.split()[0]}{'-lgb' if 'only' in name else ''}.log")
        r.update(stage=name, loadavg=C.loadavg())
        results.append(r)
        print(f"{r['seconds']:.0f}s, peak RSS {C.gib(r['peak_rss_bytes']):.2f} GiB", flush=True)

    sizes = {
        p.name: p.stat().st_size
        for p in [
            work / "data/raw.parquet",
            work / "data/validated.parquet",
            *sorted((work / "data/split").glob("*.parquet")),
        ]
        if p.exists()
    }
    print(f"\n== Peak RSS per stage process ({args.rows:,} rows)")
    print(f"  {'stage':<24}{'peak RSS':>12}{'wall':>9}{'cpu':>9}   in target")
    for r in results:
        in_target = r["stage"] in TARGET_STAGES
        ok = C.gib(r["peak_rss_bytes"]) < LIMIT_GIB
        print(
            f"  {r['stage']:<24}{C.gib(r['peak_rss_bytes']):9.2f} GiB{r['seconds']:8.0f}s"
            f"{r['user_s'] + r['sys_s']:8.0f}s   {('yes' if in_target else 'no '):<4}{'' if ok else '  OVER'}"
        )
    target = [r for r in results if r["stage"] in TARGET_STAGES]
    worst = max(target, key=lambda r: r["peak_rss_bytes"])
    met = C.gib(worst["peak_rss_bytes"]) < LIMIT_GIB
    print(
        f"\n  highest of ingest/tune/train: {C.gib(worst['peak_rss_bytes']):.2f} GiB ({worst['stage']}); "
        f"target < {LIMIT_GIB:g} GiB: {'met' if met else 'MISSED'}"
    )
    print("  files: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))
    result = {
        "benchmark": "memory",
        "machine": m,
        "rows": args.rows,
        "max_rounds": args.max_rounds,
        "tune_trials": args.tune_trials,
        "limit_gib": LIMIT_GIB,
        "stages": results,
        "max_target_gib": C.gib(worst["peak_rss_bytes"]),
        "target_met": met,
        "file_bytes": sizes,
    }
    return C.finish(work, args.keep, args.json, result)


def in_process(args, overrides: dict, work: Path) -> dict:
    """``driftloop run`` on the whole DAG in one process: its peak RSS is the largest stage's plus what
    earlier stages left behind (the runner collects garbage and releases Arrow's pool between stages)."""
    overrides = {k: v for k, v in overrides.items() if not k.startswith("base.")}  # the project's own store
    proj = C.make_project(work / "proj", overrides)
    m = C.machine()
    print(
        f"# bench_memory --driftloop-run: {args.rows:,} rows, tune {args.tune_trials} trial(s), limit {LIMIT_GIB:g} GiB"
    )
    print(f"# {C.machine_line(m)}; project {proj}", flush=True)
    log = work / "run.log"
    r = C.run_usage([str(C.BIN / "driftloop"), "run"], proj, log=log)
    stages = C.run_stage_seconds(log)
    peak = C.gib(r["peak_rss_bytes"])
    print(
        f"\n== driftloop run ({args.rows:,} rows): {r['seconds']:.0f}s, peak RSS {peak:.2f} GiB "
        f"(target < {LIMIT_GIB:g} GiB: {'met' if peak < LIMIT_GIB else 'MISSED'})"
    )
    print("  stages: " + ", ".join(f"{k} {v:.0f}s" for k, v in stages.items()))
    result = {
        "benchmark": "memory-driftloop-run",
        "machine": m,
        "rows": args.rows,
        "limit_gib": LIMIT_GIB,
        "seconds": r["seconds"],
        "peak_rss_gib": peak,
        "stages": stages,
        "target_met": peak < LIMIT_GIB,
    }
    return C.finish(work, args.keep, args.json, result)


if __name__ == "__main__":
    main()
