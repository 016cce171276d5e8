"""Benchmark of compact weighted subset retraining (issue 12, item 3: ``retrain.coreset_rows``).

For each size in ``--sizes`` (simulator rows, no drift, a random 60/20/20 split), three fits of the same fixed
LightGBM parameters with early stopping on the full validation split, timed in one run side by side:

- **full**: every training row;
- **coreset**: ``driftloop.training_data.select`` with ``retrain.coreset_rows`` = ``--fraction`` of the training
  rows: a pilot model's scores, strata by target x score bin, Neyman allocation, inverse-probability weights (the
  time includes the pilot fit, scoring every training row and the sampling);
- **uniform**: a seeded uniform sample of the same size, equal weights (the control: does the stratification help?).

Reported: seconds, speed-up (full / coreset), ROC AUC on the test split and the difference to full (target: >= 5x
faster within 0.005 AUC on 1M+ rows). The baselines (dummy, logistic) are not fitted: LightGBM's time only. A retrain
fits ``--fits`` times on one coreset (its trials and the refit; the tune and train stages each select it, the same
seeded rows): the retrain's speed-up is computed from the measured parts, the selection counted twice.

Usage::

    .venv/bin/python benchmarks/bench_coreset.py --sizes 250000,1000000
    .venv/bin/python benchmarks/bench_coreset.py --sizes 1000000 --fraction 0.05 --json bench_coreset.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_line, write_json  # noqa: E402
from bench_judgment import LGB as JUDGMENT_LGB  # noqa: E402

LGB = {**JUDGMENT_LGB, "num_leaves": 63, "learning_rate": 0.1}  # num_threads: --num-threads


def run_size(n: int, args) -> dict:
    import numpy as np

    from driftloop.config import Params
    from driftloop.data.simulate import simulate
    from driftloop.data.split import split
    from driftloop.evaluate import metric_value
    from driftloop.train import train
    from driftloop.training_data import select

    df = simulate(n, args.seed, start_date="2024-01-01", months=12).drop(columns=["application_id"])
    base = {
        "base": {"seed": args.seed},
        "train": {"baselines": []},
        "tune": {"max_rounds": args.max_rounds, "early_stopping_rounds": 30, "num_threads": args.num_threads},
    }
    params = Params.model_validate(base)
    s = split(df, params, "binary")
    n_core = max(1000, int(args.fraction * len(s["train"])))
    lgb = {**LGB, "seed": args.seed, "num_threads": args.num_threads}
    out = {"rows": n, "train_rows": len(s["train"]), "coreset_rows": n_core}

    def auc(model) -> float:
        return metric_value(
            "binary", "roc_auc", model.encoder.encode(s["test"]["default"]), model.predict_scores(s["test"])
        )

    t0 = time.perf_counter()
    full = train(s["train"], s["valid"], params, "binary", lgb).model
    out["full_s"] = time.perf_counter() - t0
    out["full_auc"] = auc(full)

    p_core = Params.model_validate({**base, "retrain": {"coreset_rows": n_core, "coreset_bins": args.bins}})
    t0 = time.perf_counter()
    chosen = select(s["train"], s["valid"], p_core)
    out["coreset_select_s"] = time.perf_counter() - t0
    core = train(chosen.train, chosen.valid, p_core, "binary", lgb, weight=chosen.train_weight).model
    out["coreset_s"] = time.perf_counter() - t0
    out["coreset_auc"] = auc(core)
    out["coreset_effective_rows"] = chosen.info.get("effective_rows_train")

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(s["train"]), n_core, replace=False))
    uni = train(s["train"].iloc[idx].reset_index(drop=True), s["valid"], params, "binary", lgb).model
    out["uniform_s"] = time.perf_counter() - t0
    out["uniform_auc"] = auc(uni)
    out["speedup"] = out["full_s"] / out["coreset_s"]
    # a retrain fits n_trials + 1 times (the study, then the refit) on the same coreset, selected twice (the tune
    # stage and the train stage each select it: the same seeded rows)
    fit_core = out["coreset_s"] - out["coreset_select_s"]
    k = args.fits
    out["retrain_fits"] = k
    out["retrain_speedup"] = k * out["full_s"] / (2 * out["coreset_select_s"] + k * fit_core)
    out["coreset_auc_diff"] = out["coreset_auc"] - out["full_auc"]
    out["uniform_auc_diff"] = out["uniform_auc"] - out["full_auc"]
    out["trees"] = {
        "full": full.booster.num_trees(),
        "coreset": core.booster.num_trees(),
        "uniform": uni.booster.num_trees(),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[250_000, 1_000_000])
    ap.add_argument("--fraction", type=float, default=0.1, help="coreset rows as a fraction of the training rows")
    ap.add_argument("--bins", type=int, default=10, help="retrain.coreset_bins")
    ap.add_argument("--max-rounds", type=int, default=500)
    ap.add_argument("--num-threads", type=int, default=1, help="LightGBM threads (1: robust on a loaded machine)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fits", type=int, default=11, help="fits of a retrain: retrain.n_trials (10) + the refit")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    m = machine()
    rows = []
    for n in args.sizes:
        r = run_size(n, args)
        rows.append(r)
        print(
            f"{n:>9} rows (train {r['train_rows']}, coreset {r['coreset_rows']}): full {r['full_s']:.1f} s "
            f"AUC {r['full_auc']:.4f} | coreset {r['coreset_s']:.1f} s (select {r['coreset_select_s']:.1f} s) "
            f"AUC {r['coreset_auc']:.4f} ({r['coreset_auc_diff']:+.4f}), {r['speedup']:.1f}x | uniform "
            f"{r['uniform_s']:.1f} s AUC {r['uniform_auc']:.4f} ({r['uniform_auc_diff']:+.4f}); trees {r['trees']}; "
            f"a retrain of {r['retrain_fits']} fits (computed from these parts): {r['retrain_speedup']:.1f}x",
            flush=True,
        )
    print(f"bench_coreset: {machine_line(m)}; target >= 5x faster within 0.005 AUC on 1M+ rows")
    write_json(args.json, {"machine": m, "args": vars(args) | {"json": None}, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
