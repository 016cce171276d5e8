"""Benchmark: what pruning buys the tune stage (trials per minute, best score).

The same Optuna study (``driftloop.tune.tune``: seeded multivariate TPE, LightGBM defaults
enqueued first, early stopping) is run in-process twice on the same data and seed, once with
``tune.pruning: true`` (``tune.pruner``: by default the best-curve pruner of ``driftloop.pruners``, on
LightGBM's validation metric) and once with
``tune.pruning: false``; no MLflow, no DVC. Data: ``--rows`` simulated rows, the ID column
dropped (as the validate stage does), the pipeline's split and preprocessing; the LightGBM
datasets are built once per study, as in the tune stage.

Printed side by side: optimisation time (``study.optimize``, which includes building the LightGBM
datasets on the first trial), trials per minute, completed / pruned trials, boosting rounds
trained in all, and the best validation score with its trial, learning rate and tree count.
Target (from the issue): >= 2x trials per minute with pruning at an equal or better best score
(same number of trials). Two diagnostics follow: the seeded start-up trials (same parameters in
both studies) that pruning stopped although, unpruned, they beat the pruned study's best; and an
**equal-time** leg (``--no-equal-time`` skips it): pruning on, given the time the unpruned study
took (``tune.timeout_seconds``), to show the best score pruning reaches for the same compute.
``--pruner median`` runs Optuna's median pruner instead; ``--seeds 42,1,7`` repeats the whole
comparison for each ``base.seed`` (data and study) and prints a summary: the best-of-30 score moves
by several 1e-4 from one configuration to the next, so one seed cannot tell a pruner's cost apart
from luck. ``--pruner-warmup`` tries another ``tune.pruner_warmup_rounds`` in the pruning legs. With
``--repeat N`` the two legs alternate in order (ABBA...) and medians are reported (the machine
is shared: read ratios, not absolute times).

Usage::

    .venv/bin/python benchmarks/bench_pruning.py                          # 100k rows, 30 trials
    .venv/bin/python benchmarks/bench_pruning.py --rows 20000 --trials 10 # quick
    .venv/bin/python benchmarks/bench_pruning.py --repeat 2 --json out.json
    .venv/bin/python benchmarks/bench_pruning.py --num-threads 1 --seeds 42,1,7 --no-equal-time
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def prepare(params):
    from driftloop.data.simulate import ID_COLUMN, simulate
    from driftloop.data.split import split
    from driftloop.data.validate import infer_task
    from driftloop.pipeline import _prepared

    s = params.simulate
    df = simulate(
        s.n_rows,
        params.base.seed,
        start_date=s.start_date,
        months=s.months,
        default_rate=s.default_rate,
        chunk_rows=s.chunk_rows,
    ).drop(columns=[ID_COLUMN])
    task = infer_task(df[params.base.target], params.base.task)
    parts = split(df, params, task)
    return _prepared(params, {"train": parts["train"], "valid": parts["valid"]})


def rounds_trained(trial, tp) -> int:
    """Boosting rounds a trial actually trained (pruned: up to the pruning report; complete: best + patience)."""
    if "pruned_at" in trial.user_attrs:
        return int(trial.user_attrs["pruned_at"])
    best = trial.user_attrs.get("best_iteration")
    if best is None:
        return 0
    return min(int(best) + tp.early_stopping_rounds, tp.max_rounds)


def run_leg(data, overrides: dict, pruning: bool, name: str | None = None) -> dict:
    from driftloop.tune import tune

    params = C.effective_params({**overrides, "tune.pruning": pruning})
    task, enc, X_train, y_train, X_valid, y_valid = data
    t0 = time.perf_counter()
    res = tune(
        X_train,
        y_train,
        X_valid,
        y_valid,
        task,
        len(enc.classes),
        params,
        study_name=name or f"bench-pruning-{pruning}",
    )
    total = time.perf_counter() - t0
    trials = [t for t in res.study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    n = len(trials)
    return {
        "pruning": pruning,
        "optimize_seconds": res.seconds,
        "setup_seconds": total - res.seconds,
        "trials": n,
        "trials_per_minute": 60.0 * n / res.seconds,
        "n_complete": res.n_complete,
        "n_pruned": res.n_pruned,
        "rounds": sum(rounds_trained(t, params.tune) for t in trials),
        "best_value": res.best_value,
        "best_trial": res.study.best_trial.number,
        "best_iteration": res.best_iteration,
        "metric": res.metric,
        "direction": res.direction,
        "best_params": res.best_params,
        "trial_log": [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "rounds": rounds_trained(t, params.tune),
                "seconds": t.user_attrs.get("fit_seconds"),
            }
            for t in trials
        ],
    }


def killed_winners(on: dict, off: dict, higher: bool) -> list[dict]:
    """Trials with the same parameters in both studies (the seeded start-up trials) that pruning
    stopped, although without pruning they finished better than the pruned study's best."""
    off_by_number = {t["number"]: t for t in off["trial_log"]}
    out = []
    for t in on["trial_log"]:
        o = off_by_number.get(t["number"])
        if t["state"] != "PRUNED" or o is None or o["params"] != t["params"] or o["value"] is None:
            continue
        better = o["value"] > on["best_value"] if higher else o["value"] < on["best_value"]
        if better:
            out.append(
                {
                    "number": t["number"],
                    "value_without_pruning": o["value"],
                    "pruned_at": t["rounds"],
                    "rounds_without_pruning": o["rounds"],
                    "learning_rate": t["params"].get("learning_rate"),
                }
            )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="simulated rows (default 100,000)")
    ap.add_argument("--trials", type=int, default=30, help="tune.n_trials per study (default 30)")
    ap.add_argument(
        "--num-threads", type=int, default=None, help="override tune.num_threads (default: params.yaml, 0 = all cores)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="run each leg N times, alternating order; medians reported")
    ap.add_argument(
        "--pruner-warmup",
        type=int,
        default=None,
        help="override tune.pruner_warmup_rounds (pruning legs only), to try a less aggressive pruner",
    )
    ap.add_argument(
        "--pruner",
        choices=("best_curve", "median"),
        default=None,
        help="override tune.pruner in the pruning legs (default: params.yaml)",
    )
    ap.add_argument(
        "--seeds",
        default=None,
        help="comma-separated base.seed values (data and study): the whole comparison per seed, then a summary",
    )
    ap.add_argument(
        "--no-equal-time",
        action="store_true",
        help="skip the equal-time leg (pruning on, with the time the unpruned study took)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if not args.seeds:
        return compare(args, {})
    results = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        print(f"\n######## base.seed = {seed}")
        results.append(compare(args, {"base.seed": seed}, json_path=None))
    eq = all(r["equal_time"] for r in results)
    print("\n== Summary over seeds (pruning on vs off, same number of trials; equal time: pruning on, same seconds)")
    print(
        f"  {'seed':>6}{'best on':>10}{'best off':>10}{'on - off':>10}{'trials/min x':>14}{'rounds x':>10}"
        + (f"{'equal time: trials':>20}{'best':>9}{'- off':>10}" if eq else "")
    )
    for r in results:
        on, off = r["legs"]["pruning_on"][0], r["legs"]["pruning_off"][0]
        line = (
            f"  {r['seed']:>6}{r['best_on']:10.5f}{r['best_off']:10.5f}{r['best_on'] - r['best_off']:+10.5f}"
            f"{r['speedup']:13.2f}x{off['rounds'] / on['rounds']:9.2f}x"
        )
        if eq:
            e = r["equal_time"]
            line += f"{e['trials']:>20d}{e['best_value']:9.5f}{e['best_value'] - r['best_off']:+10.5f}"
        print(line)
    mean = statistics.mean
    print(
        f"  {'mean':>6}{'':>20}{mean(r['best_on'] - r['best_off'] for r in results):+10.5f}"
        f"{mean(r['speedup'] for r in results):13.2f}x"
        + (f"{'':>30}{mean(r['equal_time']['best_value'] - r['best_off'] for r in results):+10.5f}" if eq else "")
    )
    summary = {"benchmark": "pruning", "seeds": results}
    C.write_json(args.json, summary)
    return summary


def compare(args, seed_override: dict, json_path: Path | None | bool = True) -> dict:
    overrides = {"simulate.n_rows": args.rows, "tune.n_trials": args.trials, "tune.storage": "memory", **seed_override}
    if args.num_threads is not None:
        overrides["tune.num_threads"] = args.num_threads
    on_overrides = dict(overrides)
    if args.pruner_warmup is not None:
        on_overrides["tune.pruner_warmup_rounds"] = args.pruner_warmup
    if args.pruner is not None:
        on_overrides["tune.pruner"] = args.pruner
    params = C.effective_params(on_overrides)
    tp = params.tune
    m = C.machine()
    print(
        f"# bench_pruning: {args.rows:,} rows, {args.trials} trials per study, num_threads={tp.num_threads}, "
        f"max_rounds={tp.max_rounds}, early_stopping={tp.early_stopping_rounds}; pruner: {tp.pruner}"
        f"{f' (margin {tp.pruner_margin})' if tp.pruner == 'best_curve' else ''}, seed {params.base.seed}, "
        f"startup_trials={tp.pruner_startup_trials}, warmup_rounds={tp.pruner_warmup_rounds}, "
        f"report_every={tp.report_every}; sampler: TPE, startup_trials={tp.n_startup_trials}"
    )
    print(f"# {C.machine_line(m)}")
    t0 = time.perf_counter()
    data = prepare(params)
    print(
        f"# data: {len(data[2]):,} train / {len(data[4]):,} valid rows, {data[2].shape[1]} features, "
        f"prepared in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )

    legs: dict[bool, list[dict]] = {True: [], False: []}
    for i in range(args.repeat):
        order = (True, False) if i % 2 == 0 else (False, True)
        for pruning in order:
            print(f"[{i + 1}/{args.repeat}] pruning={str(pruning).lower()} ...", end=" ", flush=True)
            leg = run_leg(data, on_overrides if pruning else overrides, pruning)
            leg["loadavg"] = C.loadavg()
            legs[pruning].append(leg)
            print(f"{leg['optimize_seconds']:.1f}s, best {leg['best_value']:.5f}", flush=True)

    med = statistics.median

    def agg(pruning: bool, key: str) -> float:
        return med(leg[key] for leg in legs[pruning])

    equal_time = None
    if not args.no_equal_time:
        budget = agg(False, "optimize_seconds")
        print(f"[equal time] pruning=true for {budget:.0f}s (the unpruned study's time) ...", end=" ", flush=True)
        eq_overrides = {**on_overrides, "tune.n_trials": 20 * args.trials, "tune.timeout_seconds": budget}
        equal_time = run_leg(data, eq_overrides, True, name="bench-pruning-equal-time")
        print(f"{equal_time['trials']} trials, best {equal_time['best_value']:.5f}", flush=True)

    higher = legs[True][0]["direction"] == "maximize"
    speedup = agg(True, "trials_per_minute") / agg(False, "trials_per_minute")
    best_on, best_off = agg(True, "best_value"), agg(False, "best_value")
    diff = (best_on - best_off) if higher else (best_off - best_on)  # > 0: pruning found a better score
    score_ok = diff >= -1e-12
    print(
        f"\n== Pruning on vs off ({args.rows:,} rows, {args.trials} trials"
        f"{'' if args.repeat == 1 else f', median of {args.repeat}'})"
    )
    print(f"  {'':<26}{'pruning on':>14}{'pruning off':>14}")
    rows = [
        ("optimize time", "optimize_seconds", "{:13.1f}s"),
        ("trials per minute", "trials_per_minute", "{:14.2f}"),
        ("complete trials", "n_complete", "{:14.0f}"),
        ("pruned trials", "n_pruned", "{:14.0f}"),
        ("boosting rounds (sum)", "rounds", "{:14.0f}"),
        (f"best {legs[True][0]['metric']}", "best_value", "{:14.5f}"),
    ]
    for label, key, fmt in rows:
        print(f"  {label:<26}{fmt.format(agg(True, key))}{fmt.format(agg(False, key))}")
    on0, off0 = legs[True][0], legs[False][0]
    print(f"  {'best trial (number)':<26}{on0['best_trial']:14d}{off0['best_trial']:14d}")
    print(
        f"  {'its learning rate':<26}{on0['best_params']['learning_rate']:14.4f}"
        f"{off0['best_params']['learning_rate']:14.4f}"
    )
    print(f"  {'its trees (early stop)':<26}{on0['best_iteration']:14d}{off0['best_iteration']:14d}")
    print(f"\n  trials/minute ratio on/off  {speedup:6.2f}x   target >= 2x: {'met' if speedup >= 2 else 'MISSED'}")
    print(
        f"  best score on - off         {best_on - best_off:+.5f}  "
        f"({'equal or better' if score_ok else 'WORSE'} with pruning, same number of trials)"
    )
    met = speedup >= 2 and score_ok
    print(f"  target (>= 2x at an equal or better best score): {'met' if met else 'MISSED'}")
    killed = killed_winners(on0, off0, higher)
    if killed:
        print("  pruned trials that, unpruned (same parameters), beat the pruned study's best:")
        for k in killed:
            print(
                f"    trial {k['number']}: lr {k['learning_rate']:.4f}, pruned at round {k['pruned_at']}; "
                f"unpruned {k['value_without_pruning']:.5f} after {k['rounds_without_pruning']} rounds"
            )
    if equal_time is not None:
        e_diff = (equal_time["best_value"] - best_off) if higher else (best_off - equal_time["best_value"])
        print(
            f"\n  equal time ({equal_time['optimize_seconds']:.0f}s): pruning on ran {equal_time['trials']} trials "
            f"({equal_time['n_pruned']} pruned), best {equal_time['best_value']:.5f} "
            f"({equal_time['best_value'] - best_off:+.5f} vs unpruned: "
            f"{'equal or better' if e_diff >= -1e-12 else 'WORSE'})"
        )
    result = {
        "benchmark": "pruning",
        "seed": params.base.seed,
        "machine": m,
        "rows": args.rows,
        "trials": args.trials,
        "repeat": args.repeat,
        "tune": tp.model_dump(),
        "speedup": speedup,
        "best_on": best_on,
        "best_off": best_off,
        "score_equal_or_better": score_ok,
        "target_met": met,
        "killed_winners": killed,
        "legs": {"pruning_on": legs[True], "pruning_off": legs[False]},
        "equal_time": equal_time,
    }
    if json_path:
        C.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
