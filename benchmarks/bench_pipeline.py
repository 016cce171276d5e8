"""Benchmark: orchestration and tracking overhead of the training pipeline.

Measured side by side in one run (the machine is noisy; read the ratios, not the absolute times),
every leg on ``--rows`` simulated rows with ``--trials`` Optuna trials and every other setting from
the repo's ``params.yaml``:

1. **bare** - one Python process (this file with ``--bare-worker``) doing the same LightGBM work with
   no DVC, MLflow or CLI around it: the same simulated rows (the ID column dropped as the validate
   stage drops it), the same split and preprocessing, the same seeded Optuna study (TPE + the configured
   pruner, LightGBM defaults enqueued first, no MLflow callback), then the final refit and the
   baselines (``driftloop.train.train``). Interpreter start and imports included. The issue's
   target compares the pipeline with this: ``<= 1.10 x``.
2. **same** - the bare script doing the same *work* as the stages: also the validate stage's
   checks (``validate()``), evaluate (metrics, curves, importance and SHAP plots) and the gate
   decision. What the pipeline takes beyond this is orchestration (DVC, CLI, processes) and
   tracking (MLflow) alone.
3. **run** - ``driftloop run`` in a throw-away project (git + DVC, MLflow on a SQLite file in the
   project): DVC's reproduce with the stage commands executed in one process. The per-stage times
   are the ones ``driftloop run`` prints.
4. **repro** - ``dvc repro`` in another throw-away project: one process per stage; each
   ``driftloop <stage>`` command is timed (wall and CPU) by a one-line wrapper placed first on
   ``PATH`` that execs the real command under ``/usr/bin/time``.

"dvc+start" is a leg's total minus its stages (interpreter start, DVC reading the DAG, hashing and
caching the outputs, writing ``dvc.lock``). CPU times come from ``os.wait4`` (the process tree). After
the legs, the trial parameters, states and scores of the bare study are compared with the nested
MLflow trial runs of each pipeline leg: the benchmark says whether they did the SAME fits. Then a
``dvc repro`` and a ``driftloop run`` with nothing changed (target <= 3 s). ``--legs`` picks legs;
``--repeat N`` runs N rounds, rotating the order, and reports medians; ``--profile`` adds start-up
costs and the import time of every stage command (re-run outside DVC with ``PYTHONPROFILEIMPORTTIME``).

Usage::

    .venv/bin/python benchmarks/bench_pipeline.py                          # 100k rows, 30 trials
    .venv/bin/python benchmarks/bench_pipeline.py --rows 20000 --trials 8  # quick
    .venv/bin/python benchmarks/bench_pipeline.py --num-threads 1 --legs bare,run --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

STAGES = ("ingest", "validate", "split", "tune", "train", "evaluate", "register")
# stage -> phases of the bare script doing the same work (None: no counterpart in the bare script)
BARE_EQUIVALENT = {
    "ingest": ("simulate",),
    "validate": None,
    "split": ("split",),
    "tune": ("prepare", "tune"),
    "train": ("train",),
    "evaluate": None,
    "register": None,
}
# Per-stage timing: GNU time appends "<stage> <wall> <user> <sys> <exit>" to the log; without it, wall only.
TIMING_WRAPPER_TIME = """#!/bin/sh
exec /usr/bin/time -a -o "{log}" -f "$1 %e %U %S %x" "{real}" "$@"
"""
TIMING_WRAPPER_DATE = """#!/bin/sh
s=$(date +%s.%N)
"{real}" "$@"
rc=$?
e=$(date +%s.%N)
echo "$1 $(echo "$e - $s" | bc) nan nan $rc" >> "{log}"
exit $rc
"""


# ------------------------------------------------------------------------------------------ bare
EXTRA_PHASES = ("validate", "evaluate", "gate")  # the "same work" bare script's phases beyond the fits


def bare_worker(params_path: Path, out: Path, same_work: bool = False) -> None:
    """The bare script: same data, split, preprocessing, study, refit and baselines; no DVC/MLflow/CLI.

    With ``same_work`` it also validates, evaluates (metrics, curves, plots) and takes the gate
    decision, as the stages do: what is left of the pipeline's extra time is then orchestration
    (DVC, CLI, processes) and tracking (MLflow) alone.
    """
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        phases[name] = now - t0
        t0 = now

    import lightgbm  # noqa: F401
    import optuna
    import sklearn.linear_model  # noqa: F401

    from driftloop.config import load_params
    from driftloop.data.simulate import ID_COLUMN, simulate
    from driftloop.data.split import split
    from driftloop.data.validate import infer_task
    from driftloop.pipeline import _prepared
    from driftloop.train import train
    from driftloop.tune import tune

    params = load_params(params_path)
    lap("imports")
    s = params.simulate
    drift = s.drift if any(s.drift.model_dump().values()) else None
    df = simulate(
        s.n_rows,
        params.base.seed,
        start_date=s.start_date,
        months=s.months,
        default_rate=s.default_rate,
        drift=drift,
        chunk_rows=s.chunk_rows,
    )
    lap("simulate")
    if same_work:  # the validate stage's checks, without the CLI, DVC or MLflow
        from driftloop.data.validate import validate

        df, _ = validate(df, params, source="simulate")
        lap("validate")
    else:
        df = df.drop(columns=[ID_COLUMN])  # what the validate stage drops (checked against reports/validation.json)
    task = infer_task(df[params.base.target], params.base.task)
    parts = split(df, params, task)
    lap("split")
    task, enc, X_train, y_train, X_valid, y_valid = _prepared(
        params, {"train": parts["train"], "valid": parts["valid"]}
    )
    lap("prepare")
    result = tune(X_train, y_train, X_valid, y_valid, task, len(enc.classes), params, study_name="bare")
    lap("tune")
    fitted = train(parts["train"], parts["valid"], params, task, result.lgb_params)
    lap("train")
    if same_work:  # evaluate (metrics, curves, plots) and the gate decision, in memory and a scratch folder
        import tempfile

        from driftloop.evaluate import evaluate
        from driftloop.register import decide

        ep = params.evaluate
        with tempfile.TemporaryDirectory() as plots:
            evaluate(
                fitted.model,
                fitted.baselines,
                parts["test"],
                plots_dir=Path(plots),
                shap_rows=ep.shap_sample_rows,
                curve_points=ep.curve_points,
                calibration_bins=ep.calibration_bins,
                seed=params.base.seed,
            )
        lap("evaluate")
        decide(fitted.model, None, None, parts["test"], params)
        lap("gate")
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": {k: str(v) for k, v in t.params.items()},
            "value": t.value,
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None,
        }
        for t in result.study.get_trials(deepcopy=False)
        if t.state != optuna.trial.TrialState.RUNNING
    ]
    out.write_text(
        json.dumps(
            {
                "phases": phases,
                "trials": trials,
                "best_value": result.best_value,
                "n_complete": result.n_complete,
                "n_pruned": result.n_pruned,
                "rows": {k: len(v) for k, v in parts.items()},
                "valid_metrics": fitted.valid_metrics,
            },
            default=str,
        )
    )


def run_bare(params_path: Path, work: Path, same_work: bool = False) -> dict:
    name = "bare-same-work" if same_work else "bare"
    out = work / f"{name}.json"
    cmd = [sys.executable, __file__, "--bare-worker", str(params_path), "--out", str(out)]
    usage = C.run_usage(cmd + (["--same-work"] if same_work else []), work, log=work / f"{name}.log")
    res = json.loads(out.read_text())
    res.update(seconds=usage["seconds"], cpu_s=usage["cpu_s"])
    return res


# -------------------------------------------------------------------------------------- pipeline
def stage_times(log: Path) -> dict[str, dict[str, float]]:
    """{stage: {"seconds": wall, "cpu_s": user + sys}} from the wrapper's log."""
    times: dict[str, dict[str, float]] = {}
    if not log.exists():
        return times
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5 or parts[0] not in STAGES:
            continue  # e.g. GNU time's "Command exited with non-zero status"
        stage, wall, user, sys_, rc = parts
        if rc != "0":
            raise RuntimeError(f"stage {stage} failed (exit {rc})")
        t = times.setdefault(stage, {"seconds": 0.0, "cpu_s": 0.0})
        t["seconds"] += float(wall)
        t["cpu_s"] += float(user) + float(sys_)
    return times


def pipeline_trials(proj: Path) -> list[dict]:
    """The nested MLflow trial runs of the pipeline's tune run, in trial order."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    tune_run = json.loads((proj / "models/best_params.json").read_text())["tune_run_id"]
    exp = client.get_run(tune_run).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{tune_run}'", max_results=5000)
    trials = [
        {
            "number": int(r.data.tags["optuna.trial_number"]),
            "state": r.data.tags["optuna.state"],
            "params": dict(r.data.params),
            "value": r.data.metrics.get("score"),
            "seconds": r.data.metrics.get("duration_s"),
        }
        for r in runs
    ]
    return sorted(trials, key=lambda t: t["number"])


def compare_trials(pipe: list[dict], bare: list[dict]) -> dict:
    by_number = {t["number"]: t for t in bare}
    same_params = same_state = same_value = 0
    first_diff = None
    for t in pipe:
        b = by_number.get(t["number"])
        if b is None:
            continue
        p_ok = b["params"] == t["params"]
        s_ok = b["state"] == t["state"]
        v_ok = (b["value"] is None and t["value"] is None) or (
            b["value"] is not None and t["value"] is not None and abs(b["value"] - t["value"]) <= 1e-9
        )
        same_params += p_ok
        same_state += s_ok
        same_value += v_ok
        if first_diff is None and not (p_ok and s_ok and v_ok):
            first_diff = t["number"]
    return {
        "n_pipeline": len(pipe),
        "n_bare": len(bare),
        "same_params": same_params,
        "same_state": same_state,
        "same_value": same_value,
        "first_difference": first_diff,
        "identical": len(pipe) == len(bare) and same_params == same_state == same_value == len(pipe),
    }


def profile_startup(proj: Path, environ: dict) -> dict:
    """Start-up costs, each the best of 3 runs (they are paid once per stage command)."""
    uri = f"sqlite:///{proj / 'mlflow.db'}"
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "driftloop --help": [str(C.BIN / "driftloop"), "--help"],
        "import pandas, pyarrow": [sys.executable, "-c", "import pandas, pyarrow.parquet"],
        "import lightgbm, optuna, sklearn": [sys.executable, "-c", "import lightgbm, optuna, sklearn.linear_model"],
        "import mlflow (+MlflowClient)": [
            sys.executable,
            "-c",
            "import mlflow; from mlflow.tracking import MlflowClient",
        ],
        "MlflowClient on the project store (+experiment lookup)": [
            sys.executable,
            "-c",
            f"import mlflow; from mlflow.tracking import MlflowClient; c = MlflowClient({uri!r}); "
            "c.get_experiment_by_name('driftloop')",
        ],
        "dvc --version": [str(C.BIN / "dvc"), "--version"],
        "dvc status": [str(C.BIN / "dvc"), "status"],
    }
    out = {}
    for name, cmd in cmds.items():
        out[name] = min(C.run_timed(cmd, proj, environ=environ)[0] for _ in range(3))
    return out


_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)")


def import_seconds(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """Total import time of a process (its top-level imports, ``-X importtime``) and the largest ones."""
    tops: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m and not m.group(2):
            tops.append((m.group(3), int(m.group(1)) / 1e6))
    tops.sort(key=lambda t: -t[1])
    return sum(t for _, t in tops), tops[:4]


def profile_stages(proj: Path, work: Path) -> dict:
    """Each stage command once more, outside DVC, with ``PYTHONPROFILEIMPORTTIME``: wall time vs imports.

    Inputs are the pipeline's own outputs; outputs go to a scratch folder; MLflow runs on a copy of
    the project's store with the registered model deleted (so register takes the same path as in the
    pipeline run: no champion yet); tune runs 2 trials (its imports do not depend on the trials).
    """
    import logging

    import yaml

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    scratch = work / "profile"
    scratch.mkdir()
    shutil.copy(proj / "mlflow.db", scratch / "mlflow.db")
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    MlflowClient(uri, registry_uri=uri).delete_registered_model("driftloop")
    p = yaml.safe_load((proj / "params.yaml").read_text())
    p["base"]["tracking_uri"] = uri
    p["tune"]["n_trials"] = 2
    C.write_params(scratch / "params.yaml", p)
    s = str(scratch)
    cmds = {
        "ingest": ["ingest", "--out", f"{s}/raw.parquet"],
        "validate": [
            "validate",
            "--data",
            "data/raw.parquet",
            "--out",
            f"{s}/validated.parquet",
            "--report",
            f"{s}/validation.json",
        ],
        "split": ["split", "--data", "data/validated.parquet", "--out-dir", f"{s}/split"],
        "tune (2 trials)": [
            "tune",
            "--split-dir",
            "data/split",
            "--out",
            f"{s}/best_params.json",
            "--report",
            f"{s}/tune.json",
        ],
        "train": [
            "train",
            "--split-dir",
            "data/split",
            "--tuned",
            "models/best_params.json",
            "--validation",
            "reports/validation.json",
            "--model",
            f"{s}/model.pkl",
            "--baselines",
            f"{s}/baselines.pkl",
            "--run-info",
            f"{s}/run.json",
        ],
        "evaluate": [
            "evaluate",
            "--split-dir",
            "data/split",
            "--model",
            "models/model.pkl",
            "--baselines",
            "models/baselines.pkl",
            "--run-info",
            "models/run.json",
            "--metrics",
            f"{s}/metrics.json",
            "--plots",
            f"{s}/plots",
        ],
        "register": [
            "register",
            "--split-dir",
            "data/split",
            "--model",
            "models/model.pkl",
            "--run-info",
            "models/run.json",
            "--metrics",
            "reports/metrics.json",
            "--out",
            f"{s}/register.json",
        ],
    }
    environ = C.env({"PYTHONPROFILEIMPORTTIME": "1"})
    out = {}
    for name, args in cmds.items():
        seconds, res = C.run_timed(
            [str(C.BIN / "driftloop"), *args, "--params", str(scratch / "params.yaml")], proj, environ=environ
        )
        total, top = import_seconds(res.stderr)
        out[name] = {"seconds": seconds, "import_seconds": total, "top_imports": top}
    return out


# ------------------------------------------------------------------------------------------ main
LEGS = ("bare", "same", "run", "repro")
LEG_NAMES = {
    "bare": "bare script (the fits)",
    "same": "bare script (same work)",
    "run": "driftloop run",
    "repro": "dvc repro",
}


def run_stage_times(log: Path) -> dict[str, dict[str, float]]:
    """{stage: {"seconds": wall}} from ``driftloop run``'s own per-stage lines."""
    return {stage: {"seconds": s} for stage, s in C.run_stage_seconds(log).items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="simulate.n_rows (default 100,000)")
    ap.add_argument("--trials", type=int, default=30, help="tune.n_trials (default 30)")
    ap.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="override tune.num_threads in every leg (default: params.yaml, 0 = all cores);\n"
        "1 makes the comparison far less sensitive to other processes on the machine",
    )
    ap.add_argument(
        "--legs",
        default=",".join(LEGS),
        help="comma-separated legs (default all): bare = the LightGBM fits alone; same = the bare script doing\n"
        "the same work as the stages (validate, evaluate, gate too); run = `driftloop run`; repro = `dvc repro`",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of all legs (fresh projects), rotating their order; medians are reported",
    )
    ap.add_argument("--skip-noop", action="store_true", help="skip the second (no-op) runs")
    ap.add_argument("--profile", action="store_true", help="also measure start-up costs (imports, MLflow, DVC)")
    ap.add_argument("--keep", action="store_true", help="keep the throw-away project(s) and print where")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--bare-worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--same-work", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare_worker:
        bare_worker(args.bare_worker, args.out, same_work=args.same_work)
        return {}
    legs = [leg for leg in LEGS if leg in args.legs.split(",")]
    if "bare" not in legs:
        ap.error("--legs must include bare (the ratios' denominator)")

    overrides = {"simulate.n_rows": args.rows, "tune.n_trials": args.trials}
    if args.num_threads is not None:
        overrides["tune.num_threads"] = args.num_threads
    m = C.machine()
    tp = C.effective_params(overrides).tune
    print(
        f"# bench_pipeline: {args.rows:,} rows, {args.trials} trials, tune.num_threads={tp.num_threads}, "
        f"max_rounds={tp.max_rounds}, pruning={tp.pruning}; legs: {', '.join(LEG_NAMES[x] for x in legs)}"
    )
    print(f"# {C.machine_line(m)}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    wrapper_text = TIMING_WRAPPER_TIME if Path("/usr/bin/time").exists() else TIMING_WRAPPER_DATE
    rounds = []
    for i in range(args.repeat):
        work = tmp / f"round{i}"
        work.mkdir()
        order = legs[i % len(legs) :] + legs[: i % len(legs)]
        rnd: dict = {"load": {}, "stages": {}}
        for leg in order:
            print(f"[{i + 1}/{args.repeat}] {LEG_NAMES[leg]} ...", end=" ", flush=True)
            rnd["load"][leg] = C.loadavg()
            if leg in ("bare", "same"):
                params_path = work / "params.yaml"
                C.write_params(params_path, C.derived_params(overrides))
                rnd[leg] = run_bare(params_path, work, same_work=leg == "same")
            else:
                proj = C.make_project(work / leg, overrides)
                log = work / f"{leg}.log"
                if leg == "run":
                    rnd[leg] = C.run_usage([str(C.BIN / "driftloop"), "run"], proj, log=log)
                    rnd["stages"][leg] = run_stage_times(log)
                else:
                    wrapper_dir = work / "timing-bin"
                    wrapper_dir.mkdir(exist_ok=True)
                    stage_log = work / "stages.log"
                    wrapper = wrapper_dir / "driftloop"
                    wrapper.write_text(wrapper_text.format(real=C.BIN / "driftloop", log=stage_log))
                    wrapper.chmod(0o755)
                    rnd[leg] = C.run_usage(["dvc", "repro"], proj, environ=C.env(path_first=[wrapper_dir]), log=log)
                    rnd["stages"][leg] = stage_times(stage_log)
                rnd[leg]["dvc_itself"] = rnd[leg]["seconds"] - sum(t["seconds"] for t in rnd["stages"][leg].values())
                tune_report = json.loads((proj / "reports/tune.json").read_text())
                ptrials = pipeline_trials(proj)
                rnd[leg].update(
                    best_value=tune_report["best_value"],
                    n_pruned=tune_report["n_pruned"],
                    trial_seconds=sum(t["seconds"] or 0 for t in ptrials),
                    dropped_columns=json.loads((proj / "reports/validation.json").read_text())["dropped_columns"],
                    ptrials=ptrials,
                    proj=proj,
                )
            print(f"{rnd[leg]['seconds']:.1f}s", flush=True)
        for leg in ("run", "repro"):
            if leg in rnd:
                rnd[leg]["trials"] = compare_trials(rnd[leg].pop("ptrials"), rnd["bare"]["trials"])
        rnd["bare_trial_seconds"] = sum(t["seconds"] or 0 for t in rnd["bare"]["trials"])
        if not args.skip_noop:
            for leg, cmd in (("run", ["dvc", "repro"]), ("run", [str(C.BIN / "driftloop"), "run"])):
                if leg in rnd:
                    name = "noop " + Path(cmd[0]).name + (" run" if cmd[0].endswith("driftloop") else " repro")
                    rnd[name] = C.run_usage(cmd, rnd[leg]["proj"], log=work / "noop.log")["seconds"]
                    if "Running stage" in (work / "noop.log").read_text():
                        print(f"warning: `{name[5:]}` after driftloop run ran a stage", file=sys.stderr)
                    print(f"[{i + 1}/{args.repeat}] {name[5:]} with nothing changed ... {rnd[name]:.2f}s", flush=True)
        if args.profile and i == 0 and "repro" in rnd:
            print("profiling start-up costs ...", flush=True)
            rnd["startup"] = profile_startup(rnd["repro"]["proj"], C.env())
            print("profiling imports per stage ...", flush=True)
            rnd["stage_imports"] = profile_stages(rnd["repro"]["proj"], work)
        for leg in ("run", "repro"):
            if leg in rnd:
                rnd[leg]["proj"] = str(rnd[leg]["proj"])
        rounds.append(rnd)
        if args.keep:
            print(f"      projects kept in {work}")

    result = report(rounds, legs, args, m)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    C.write_json(args.json, result)
    return result


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(rounds: list[dict], legs: list[str], args, m: dict) -> dict:
    med = statistics.median
    n = len(rounds)

    def fits_only(r: dict) -> float:  # the bare script's wall time without its extra phases
        return r["bare"]["seconds"]

    def same(r: dict) -> float:
        return r["same"]["seconds"]

    wall = {leg: med(r[leg]["seconds"] for r in rounds) for leg in legs}
    cpu = {leg: med(r[leg]["cpu_s"] for r in rounds) for leg in legs}
    print(
        f"\n== Training pipeline vs bare script ({args.rows:,} rows, {args.trials} trials"
        f"{'' if n == 1 else f', median of {n} rounds'})"
    )
    print(f"  {'':<32}{'wall':>9}{'cpu':>9}{'/ fits':>9}{'/ same work':>13}")
    ratios: dict[str, dict[str, float]] = {}
    for leg in legs:
        ratios[leg] = {"fits": med(r[leg]["seconds"] / fits_only(r) for r in rounds)}
        if "same" in legs:
            ratios[leg]["same"] = med(r[leg]["seconds"] / same(r) for r in rounds)
        same_txt = f"{ratios[leg]['same']:12.2f}x" if "same" in legs else ""
        print(f"  {LEG_NAMES[leg]:<32}{wall[leg]:8.1f}s{cpu[leg]:8.1f}s{ratios[leg]['fits']:8.2f}x{same_txt}")
    print("  target: pipeline <= 1.10 x bare")
    for leg in ("run", "repro"):
        if leg in legs:
            print(
                f"    {LEG_NAMES[leg]:<16} / the fits: {ratios[leg]['fits']:.2f}x "
                f"{_verdict(ratios[leg]['fits'] <= 1.10)}"
                + (
                    f"; / the same work: {ratios[leg]['same']:.2f}x {_verdict(ratios[leg]['same'] <= 1.10)}"
                    if "same" in legs
                    else ""
                )
            )
    if "same" in legs:
        phases = {k: med(r["same"]["phases"].get(k, 0.0) for r in rounds) for k in EXTRA_PHASES}
        print(
            "  the same-work script's extra phases: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
            + " (what validate/evaluate/register compute besides tracking)"
        )

    bare_phases = {k: med(r["bare"]["phases"][k] for r in rounds) for k in rounds[0]["bare"]["phases"]}
    stage_legs = [leg for leg in ("run", "repro") if leg in legs]
    if stage_legs:
        print(
            "\n  per stage (wall): `driftloop run` times its stages itself; "
            "under dvc repro a wrapper times each command"
        )
        print(f"  {'stage':<12}" + "".join(f"{LEG_NAMES[x]:>16}" for x in stage_legs) + f"{'bare':>10}  bare phases")
        for st in STAGES:
            eq = BARE_EQUIVALENT[st]
            b = sum(bare_phases.get(k, 0.0) for k in eq) if eq else None
            cells = "".join(
                f"{med(r['stages'][x].get(st, {}).get('seconds', 0.0) for r in rounds):15.1f}s" for x in stage_legs
            )
            print(
                f"  {st:<12}{cells}{(f'{b:9.1f}s' if b is not None else '         -')}  "
                + ("+".join(eq) if eq else "-")
            )
        cells = "".join(f"{med(r[x]['dvc_itself'] for r in rounds):15.1f}s" for x in stage_legs)
        print(f"  {'dvc+start':<12}{cells}{bare_phases['imports']:9.1f}s  total - sum of stages (bare: imports)")
    for r in rounds:
        for leg in stage_legs:
            t = r[leg]["trials"]
            tune_s = r["stages"][leg].get("tune", {}).get("seconds", 0.0)
            print(
                f"\n  {LEG_NAMES[leg]}: trial fits {r[leg]['trial_seconds']:.1f}s "
                f"(bare {r['bare_trial_seconds']:.1f}s);"
                f" tune outside the trials {tune_s - r[leg]['trial_seconds']:.1f}s;"
                f" same trial sequence as the bare script: {'yes' if t['identical'] else 'NO'} "
                f"({t['same_params']}/{t['n_pipeline']}); "
                f"best {r[leg]['best_value']:.6f} vs {r['bare']['best_value']:.6f};"
                f" pruned {r[leg]['n_pruned']} / {r['bare']['n_pruned']}"
            )
            if r[leg]["dropped_columns"] != ["application_id"]:
                print(
                    f"  warning: the validate stage dropped {r[leg]['dropped_columns']}, "
                    "the bare script only application_id"
                )
        print(f"  load average at the start of each leg: {r['load']}")
    noops = {}
    for name in ("noop dvc repro", "noop driftloop run"):
        vals = [r[name] for r in rounds if name in r]
        if vals:
            noops[name] = med(vals)
    if noops:
        print(
            "\n== Nothing changed (after driftloop run): " + ", ".join(f"{k[5:]} {v:.2f} s" for k, v in noops.items())
        )
        print(f"   target <= 3 s: {_verdict(all(v <= 3 for v in noops.values()))}")
    r0 = rounds[0]
    if "startup" in r0:
        print("\n== Start-up costs (best of 3)")
        for k, v in r0["startup"].items():
            print(f"  {k:<58}{v:6.2f} s")
    if "stage_imports" in r0:
        print("\n== Imports per stage command (rerun outside DVC with PYTHONPROFILEIMPORTTIME; tune with 2 trials)")
        print(f"  {'stage':<18}{'wall':>8}{'imports':>9}  largest imports")
        for k, v in r0["stage_imports"].items():
            top = ", ".join(f"{nm} {t:.1f}" for nm, t in v["top_imports"])
            print(f"  {k:<18}{v['seconds']:7.1f}s{v['import_seconds']:8.1f}s  {top}")
        print(f"  {'all stages':<18}{'':>8}{sum(v['import_seconds'] for v in r0['stage_imports'].values()):8.1f}s")
    return {
        "benchmark": "pipeline",
        "machine": m,
        "rows": args.rows,
        "trials": args.trials,
        "repeat": n,
        "num_threads": args.num_threads,
        "legs": legs,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "ratios": ratios,
        "ratio_target": 1.10,
        "noop_seconds": noops,
        "noop_target": 3.0,
        "bare_phases": bare_phases,
        "rounds": [
            {k: v for k, v in r.items() if k not in ("bare", "same")}
            | {x: {k: v for k, v in r[x].items() if k != "trials"} for x in ("bare", "same") if x in r}
            for r in rounds
        ],
    }


if __name__ == "__main__":
    main()
