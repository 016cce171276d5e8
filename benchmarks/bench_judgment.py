"""Benchmark of the loop's judgment (issue 12): the fair gate, retraining recovery, the label-free estimate,
false retrains on noise. In process, small sizes (the machine is shared), every figure side by side in one run.

Per seed, a champion is trained on ``--old-rows`` pre-drift rows (simulator months 1-6, a random split, fixed
LightGBM parameters: no tuning, so that many retrains fit in a few minutes). For each drift kind (covariate shift,
concept drift; magnitude 1, docs/simulator.md) the drifted month that triggers the retrain has ``--rows`` rows and
the month after it (``--rows`` too) is where quality is read.

1. **Recovery.** ROC AUC in the month after the first retrain for: never retraining (the champion), the retrain on
   old + triggering batch (re-split at random, as the pipeline does) under each ``retrain.training_data`` setting
   (``all``; ``window`` with each ``--windows`` size; ``recency`` with each ``--half-lives`` half-life, weights by
   ``application_date``: ``driftloop.training_data.select``, the code the tune and train stages run), and the oracle
   (a model trained on ``--oracle-rows`` post-drift rows). Gap closed = (policy - never) / (oracle - never), per seed
   and kind, then averaged. Also without drift (kind ``none``): what each setting costs when the old rows are right.
   ``application_id`` is dropped, as the validate stage drops it (ID-like): no model reads the period off the ids.
2. **Gate.** Every retrain is gated twice on its own test split: as before (all test rows) and fairly (rows
   neither model trained or validated on: ``register.unseen_rows``). Truly better = the retrain above; truly
   worse = the same retrain with 70 % of its labels shuffled; "truly" is checked on the month after.
3. **Label-free estimate.** The champion's CBPE estimate of ROC AUC (``driftloop.calibration``) vs the realized
   AUC on a month of each scenario (none, covariate, concept, new category, prior shift): absolute error, and
   whether the estimated drop flags the concept-drift month before its labels (interval above 0).
5. **Warnings after a retrain.** The month after a retrain on covariate drift, drift share against the new
   model's reference: all its training rows (``monitor.reference: all``) vs the rows new since the champion
   (``recent``), for ``--drift-seeds`` seeds.
4. **False retrains.** ``--clean-batches`` drift-free labeled batches of ``--clean-rows`` rows through the
   performance rules of ``monitor.decide`` (the measured drop with its interval vs the size-only rule, and the
   estimated drop): how often each would retrain. (Drift-share rules: ``bench_loop.py`` part 1.)

Usage::

    .venv/bin/python benchmarks/bench_judgment.py --seeds 5            # 2,908 s on 2 cores at load 4-16
    .venv/bin/python benchmarks/bench_judgment.py --seeds 5 --half-lives 14,30,60 --windows 2000,4000
    .venv/bin/python benchmarks/bench_judgment.py --seeds 10 --json bench_judgment.json
    .venv/bin/python benchmarks/bench_judgment.py --seeds 10 --gate-only    # part 2 alone: 20 + 20 retrains
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_line, write_json  # noqa: E402

LGB = {
    "objective": "binary",
    "num_leaves": 31,
    "learning_rate": 0.05,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "verbose": -1,
    "num_threads": 1,  # one thread: on a shared 2-core machine a waiting OpenMP thread spins (docs/demo.md)
}
ID = "application_id"
KINDS = {"covariate": {"covariate_shift": 1.0}, "concept": {"concept_drift": 1.0}}
# recovery is also measured where nothing drifted: what a policy costs when the old rows are still right
RECOVERY_KINDS = {**KINDS, "none": {}}
SCENARIOS = {
    "none": {},
    "covariate": {"covariate_shift": 1.0},
    "concept": {"concept_drift": 1.0},
    "new_category": {"new_category": 1.0},
    "prior_shift": {"prior_shift": 1.0},
}


def _month(rows: int, seed: int, month: int, **drift):
    from driftloop.config import DriftParams
    from driftloop.data.simulate import simulate

    d = DriftParams(**drift) if drift else None
    df = simulate(rows, seed, start_date=f"2024-{month:02d}-01", months=1, drift=d, id_offset=seed * 100_000 + month)
    return df.drop(columns=[ID])  # the validate stage drops this ID-like column: no model may read the period off it


def _train(df, params, seed: int, policy: dict | None = None):
    """Split, apply ``retrain.training_data`` (``policy``: the retrain section's keys), fit fixed LightGBM params."""
    from driftloop.data.split import split
    from driftloop.train import train
    from driftloop.training_data import select

    s = split(df.reset_index(drop=True), params, "binary")
    p = params.model_copy(update={"retrain": params.retrain.model_copy(update=policy or {})})
    chosen = select(s["train"], s["valid"], p)
    lgb = {**LGB, "seed": seed}
    model = train(
        chosen.train, chosen.valid, p, "binary", lgb, weight=chosen.train_weight, valid_weight=chosen.valid_weight
    ).model
    return model, s


def policies(args) -> dict[str, dict]:
    """The retrain.training_data settings compared: all, each window size, each half-life."""
    out: dict[str, dict] = {"all": {"training_data": "all"}}
    for w in args.windows:
        out[f"window {w}"] = {"training_data": "window", "window_rows": w}
    for h in args.half_lives:
        out[f"recency {h:g}d"] = {"training_data": "recency", "half_life_days": h}
    return out


def _auc(model, df) -> float:
    from driftloop.evaluate import metric_value

    return metric_value("binary", "roc_auc", model.encoder.encode(df["default"]), model.predict_scores(df))


def _gate(seed: int, kind: str, params, champion, seen0, retrained, s1, after, never: float) -> list[dict]:
    """The retrain and a truly worse one (the same rows, 70 % of the labels shuffled), each gated on the retrain's
    test split twice: on all its rows (as before) and fairly (rows neither model trained or validated on)."""
    import numpy as np

    from driftloop import register as reg
    from driftloop.train import train

    rng = np.random.default_rng(seed)

    def noisy(df):
        y = df["default"].to_numpy().copy()
        idx = rng.choice(len(y), int(0.7 * len(y)), replace=False)
        y[idx] = rng.permutation(y[idx])
        return df.assign(default=y)

    worse = train(noisy(s1["train"]), noisy(s1["valid"]), params, "binary", {**LGB, "seed": seed}).model
    seen1 = reg.SeenRows.of([s1["train"], s1["valid"]], "challenger")
    out = []
    for truth, model in (("better", retrained), ("worse", worse)):
        real = "better" if _auc(model, after) > never else "worse"
        leaky = reg.decide(model, champion, "1", s1["test"], params)
        fair = reg.decide(model, champion, "1", s1["test"], params, champion_seen=seen0, challenger_seen=seen1)
        out.append(
            {
                "seed": seed,
                "kind": kind,
                "truth": truth,
                "checked": real,
                "leaky": leaky.decision == reg.PROMOTED,
                "fair": fair.decision == reg.PROMOTED,
                "fair_rows": fair.gate_rows.get("rows"),
                "seen_by_champion": fair.gate_rows.get("seen_by_champion"),
            }
        )
    return out


def run_gate(args) -> list[dict]:
    """``--gate-only``: part 2 alone (no oracle, settings, estimate or false-retrain parts), for many retrains."""
    import pandas as pd

    from driftloop import register as reg
    from driftloop.config import Params
    from driftloop.data.simulate import simulate

    params = Params.model_validate(
        {"register": {"n_bootstrap": 200}, "tune": {"max_rounds": 400, "early_stopping_rounds": 30}}
    )
    gate = []
    for seed in range(args.seeds):
        old = simulate(args.old_rows, 1000 + seed, start_date="2024-01-01", months=6).drop(columns=[ID])
        champion, s0 = _train(old, params, seed)
        seen0 = reg.SeenRows.of([s0["train"], s0["valid"]], "champion")
        for kind, drift in KINDS.items():
            trigger = _month(args.rows, 2000 + seed, 7, **drift)
            after = _month(args.rows, 3000 + seed, 8, **drift)
            retrained, s1 = _train(pd.concat([old, trigger], ignore_index=True), params, seed)
            gate += _gate(seed, kind, params, champion, seen0, retrained, s1, after, _auc(champion, after))
        print(f"  seed {seed} done", flush=True)
    return gate


def run(args) -> dict:
    import pandas as pd

    from driftloop import loop
    from driftloop import register as reg
    from driftloop.calibration import Calibration, estimate
    from driftloop.config import Params
    from driftloop.data.simulate import simulate
    from driftloop.monitor import auc_se_hanley_mcneil, data_drift, decide, performance
    from driftloop.pipeline import drift_reference

    params = Params.model_validate(
        {"register": {"n_bootstrap": 200}, "tune": {"max_rounds": 400, "early_stopping_rounds": 30}}
    )
    mp = params.monitor
    recovery, gate, est_rows, flags, clean = [], [], [], [], {"measured": 0, "size_only": 0, "estimated": 0, "n": 0}
    warnings_after: dict[str, list[bool]] = {"all": [], "recent": []}
    pol = policies(args)
    for seed in range(args.seeds):
        old = simulate(args.old_rows, 1000 + seed, start_date="2024-01-01", months=6).drop(columns=[ID])
        champion, s0 = _train(old, params, seed)
        seen0 = reg.SeenRows.of([s0["train"], s0["valid"]], "champion")
        ref = _auc(champion, s0["test"])
        y_test = champion.encoder.encode(s0["test"]["default"])
        ref_se = auc_se_hanley_mcneil(ref, int(y_test.sum()), int(len(y_test) - y_test.sum()))
        cal = Calibration.from_dict(champion.calibration)
        for kind, drift in RECOVERY_KINDS.items():
            trigger = _month(args.rows, 2000 + seed, 7, **drift)
            after = _month(args.rows, 3000 + seed, 8, **drift)
            history = pd.concat([old, trigger], ignore_index=True)
            retrained, s1 = _train(history, params, seed)
            oracle, _ = _train(_month(args.oracle_rows, 4000 + seed, 7, **drift), params, seed)
            row = {"seed": seed, "kind": kind, "never": _auc(champion, after), "oracle": _auc(oracle, after)}
            row["all"] = _auc(retrained, after)
            for name, policy in pol.items():
                if name != "all":
                    row[name] = _auc(_train(history, params, seed, policy)[0], after)
            recovery.append(row)
            if kind not in KINDS:
                continue
            if kind == "covariate" and seed < args.drift_seeds:  # 5. does the absorbed drift stop warning?
                known = reg.SeenRows.of([s0["train"], s0["valid"]], "champion", s0["test"])
                contract = retrained.contract()
                for how in ("all", "recent"):
                    p_how = params.model_copy(update={"monitor": mp.model_copy(update={"reference": how})})
                    ref_rows = drift_reference(p_how, s1["train"], known)
                    share = data_drift(ref_rows, after, contract, mp, seed).drift_share
                    warnings_after[how].append(share >= mp.drift_share_warn)
            gate += _gate(seed, kind, params, champion, seen0, retrained, s1, after, row["never"])
        # 3. the label-free estimate on one month of each scenario
        for name, drift in SCENARIOS.items():
            df = _month(args.rows, 5000 + seed, 9, **drift)
            scores = champion.predict_scores(df)
            e = estimate(cal, scores, champion.threshold, reference=ref, reference_se=ref_se, seed=seed)
            real = _auc(champion, df)
            est_rows.append({"seed": seed, "scenario": name, "estimated": e["roc_auc"], "realized": real})
            if name == "concept":
                flags.append(bool(e["drop"] >= mp.estimated_drop_retrain and e["drop_low"] > 0))
        # 4. false retrains on drift-free batches (performance rules only)
        old_rule = mp.model_copy(update={"performance_drop_significant": False})
        schema = type("S", (), {"ok": True, "notes": [], "messages": [], "n_rows": args.clean_rows})()
        schema.new_categories = {}
        for i in range(args.clean_batches // args.seeds + (seed < args.clean_batches % args.seeds)):
            df = _month(args.clean_rows, 6000 + seed * 1000 + i, 1 + i % 6)
            scores = champion.predict_scores(df)
            perf = performance(champion.encoder.encode(df["default"]), scores, "binary", ref, reference_se=ref_se)
            e = estimate(cal, scores, champion.threshold, reference=ref, reference_se=ref_se, seed=i)
            clean["n"] += 1
            clean["measured"] += decide(schema, None, None, perf, mp, None).status == "retrain"
            clean["size_only"] += decide(schema, None, None, perf, old_rule, None).status == "retrain"
            clean["estimated"] += decide(schema, None, None, None, mp, None, estimate=e).status == "retrain"
        print(f"  seed {seed} done", flush=True)
    del loop
    return {
        "recovery": recovery,
        "policies": list(pol),
        "gate": gate,
        "estimate": est_rows,
        "concept_flags": flags,
        "clean": clean,
        "warnings_after_retrain": warnings_after,
    }


def run_months(args) -> dict:
    """``--labeled-months K``: the retrain (``all``) fitted on the old rows + the first k drifted months (k = 1..K,
    ``--rows`` each: what ``retrain.keep_labeled_batches`` accumulates), ROC AUC on the month after them, gap closed
    vs never and the oracle; per seed and drift kind."""
    import numpy as np
    import pandas as pd

    from driftloop.config import Params
    from driftloop.data.simulate import simulate

    params = Params.model_validate({"tune": {"max_rounds": 400, "early_stopping_rounds": 30}})
    out: dict[str, dict[int, list[float]]] = {kind: {} for kind in KINDS}
    for seed in range(args.seeds):
        old = simulate(args.old_rows, 1000 + seed, start_date="2024-01-01", months=6).drop(columns=[ID])
        champion, _ = _train(old, params, seed)
        for kind, drift in KINDS.items():
            oracle, _ = _train(_month(args.oracle_rows, 4000 + seed, 7, **drift), params, seed)
            drifted = [_month(args.rows, 2000 + seed * 10 + m, 7 + m, **drift) for m in range(args.labeled_months)]
            for k in range(1, args.labeled_months + 1):
                after = _month(args.rows, 3000 + seed * 10 + k, min(7 + k, 12), **drift)
                model, _ = _train(pd.concat([old, *drifted[:k]], ignore_index=True), params, seed)
                never, orc, got = _auc(champion, after), _auc(oracle, after), _auc(model, after)
                if orc - never > 1e-3:
                    out[kind].setdefault(k, []).append((got - never) / (orc - never))
        print(f"  seed {seed} done", flush=True)
    return {kind: {k: float(np.mean(v)) for k, v in by.items()} for kind, by in out.items()}


def summarize(raw: dict) -> dict:
    import numpy as np

    rec = raw["recovery"]
    cols = ["never", *raw["policies"], "oracle"]

    def closed(key, kinds=tuple(KINDS)):
        """Mean over seeds and drift kinds of (policy - never) / (oracle - never): per row, then averaged."""
        rows = [r for r in rec if r["kind"] in kinds and r["oracle"] - r["never"] > 1e-3]
        return float(np.mean([(r[key] - r["never"]) / (r["oracle"] - r["never"]) for r in rows])) if rows else None

    out = {"recovery": {}, "gap_closed": {}, "gap_closed_by_kind": {}}
    for kind in RECOVERY_KINDS:
        rows = [r for r in rec if r["kind"] == kind]
        out["recovery"][kind] = {k: float(np.mean([r[k] for r in rows])) for k in cols}
    for name in raw["policies"]:
        out["gap_closed"][name] = closed(name)
        out["gap_closed_by_kind"][name] = {kind: closed(name, (kind,)) for kind in KINDS}
    out["cost_without_drift"] = {  # AUC vs all history when nothing drifted (negative: the policy costs)
        name: out["recovery"]["none"][name] - out["recovery"]["none"]["all"] for name in raw["policies"]
    }
    g = raw["gate"]
    for truth in ("better", "worse"):
        rows = [r for r in g if r["checked"] == truth]
        out[f"gate_{truth}"] = {
            "n": len(rows),
            "promoted_fair": float(np.mean([r["fair"] for r in rows])) if rows else None,
            "promoted_leaky": float(np.mean([r["leaky"] for r in rows])) if rows else None,
        }
    out["gate_mean_fair_rows"] = float(np.mean([r["fair_rows"] for r in g]))
    out["gate_mean_seen_by_champion"] = float(np.mean([r["seen_by_champion"] for r in g]))
    out["gate_truth_mismatch"] = sum(r["truth"] != r["checked"] for r in g)
    est = raw["estimate"]
    out["estimate_mae"] = {
        s: float(np.mean([abs(r["estimated"] - r["realized"]) for r in est if r["scenario"] == s])) for s in SCENARIOS
    }
    seeable = [r for r in est if r["scenario"] != "concept"]
    out["estimate_mae_without_concept"] = float(np.mean([abs(r["estimated"] - r["realized"]) for r in seeable]))
    out["estimate_mae_all"] = float(np.mean([abs(r["estimated"] - r["realized"]) for r in est]))
    out["concept_flagged"] = f"{sum(raw['concept_flags'])}/{len(raw['concept_flags'])}"
    c = raw["clean"]
    out["false_retrains"] = {k: c[k] / c["n"] for k in ("measured", "size_only", "estimated")} | {"batches": c["n"]}
    w = raw["warnings_after_retrain"]
    out["warnings_after_retrain"] = {k: f"{sum(v)}/{len(v)}" for k, v in w.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--old-rows", type=int, default=8000, help="pre-drift rows the champion trains on")
    ap.add_argument("--rows", type=int, default=3000, help="rows of the triggering month and of the month after")
    ap.add_argument("--windows", type=lambda v: [int(x) for x in v.split(",") if x], default=[2000, 4000],
                    help="retrain.window_rows values compared (comma-separated)")  # fmt: skip
    ap.add_argument("--half-lives", type=lambda v: [float(x) for x in v.split(",") if x], default=[7.0, 14.0, 30.0],
                    help="retrain.half_life_days values compared (comma-separated)")  # fmt: skip
    ap.add_argument("--oracle-rows", type=int, default=20000, help="post-drift rows the oracle trains on")
    ap.add_argument("--clean-batches", type=int, default=60, help="drift-free batches for the false-retrain count")
    ap.add_argument("--clean-rows", type=int, default=1000, help="rows per drift-free batch (small on purpose)")
    ap.add_argument("--drift-seeds", type=int, default=3, help="seeds of part 5 (Evidently runs: slower)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--gate-only", action="store_true", help="part 2 alone (the gate), for 20+ retrains per truth")
    ap.add_argument("--labeled-months", type=int, default=0,
                    help="instead: gap closed by `all` with 1..K drifted months in the fit")  # fmt: skip
    args = ap.parse_args(argv)
    m = machine()
    t0 = time.perf_counter()
    if args.labeled_months:
        months = run_months(args)
        seconds = time.perf_counter() - t0
        print(f"\nbench_judgment --labeled-months: {args.seeds} seeds, {seconds:.0f} s; {machine_line(m)}")
        for k in range(1, args.labeled_months + 1):
            by = {kind: months[kind].get(k) for kind in KINDS}
            vals = [v for v in by.values() if v is not None]
            print(f"   {k} drifted month(s) in the fit: gap closed {np.mean(vals):.0%} "
                  f"(covariate {by['covariate']:.0%}, concept {by['concept']:.0%})")  # fmt: skip
        write_json(args.json, {"machine": m, "args": vars(args) | {"json": None}, "labeled_months": months})
        return 0
    if args.gate_only:
        gate = run_gate(args)
        seconds = time.perf_counter() - t0
        print(f"\nbench_judgment --gate-only: {args.seeds} seeds, {seconds:.0f} s; {machine_line(m)}")
        for truth in ("better", "worse"):
            g = [r for r in gate if r["truth"] == truth]
            print(f"   truly {truth:6} ({len(g)} retrains): promoted fair {sum(r['fair'] for r in g)}/{len(g)}, "
                  f"on all test rows {sum(r['leaky'] for r in g)}/{len(g)}; truth contradicted on the next month "
                  f"{sum(r['checked'] != truth for r in g)}")  # fmt: skip
        print(f"   mean gate rows {np.mean([r['fair_rows'] for r in gate]):.0f}, test rows the champion had seen "
              f"(excluded) {np.mean([r['seen_by_champion'] for r in gate]):.0f}")  # fmt: skip
        write_json(args.json, {"machine": m, "seconds": seconds, "args": vars(args) | {"json": None}, "gate": gate})
        return 0
    raw = run(args)
    s = summarize(raw)
    seconds = time.perf_counter() - t0
    print(f"\nbench_judgment: {args.seeds} seeds, {seconds:.0f} s; {machine_line(m)}")
    r = s["recovery"]
    cols = ["never", *raw["policies"], "oracle"]
    print("1. recovery (ROC AUC in the month after the first retrain; mean over seeds; retrain.training_data)")
    print(f"   {'kind':10} " + " ".join(f"{c:>12}" for c in cols))
    for kind in RECOVERY_KINDS:
        print(f"   {kind:10} " + " ".join(f"{r[kind][c]:12.4f}" for c in cols))
    print("   gap closed (policy - never) / (oracle - never), mean over seeds x {covariate, concept} (target >= 80 %):")
    for name in raw["policies"]:
        by = s["gap_closed_by_kind"][name]
        print(
            f"   {name:14} {s['gap_closed'][name]:6.0%}   (covariate {by['covariate']:.0%}, concept "
            f"{by['concept']:.0%}; without drift {s['cost_without_drift'][name]:+.4f} AUC vs all)"
        )
    gb, gw = s["gate_better"], s["gate_worse"]
    print("2. gate: promotion rate, fair (unseen rows) vs as before (all test rows)")
    print(f"   truly better ({gb['n']} retrains): fair {gb['promoted_fair']:.0%}, before {gb['promoted_leaky']:.0%}"
          "   (target >= 90 %)")  # fmt: skip
    print(f"   truly worse  ({gw['n']} retrains): fair {gw['promoted_fair']:.0%}, before {gw['promoted_leaky']:.0%}"
          "   (target <= 5 %)")  # fmt: skip
    print(
        f"   mean gate rows {s['gate_mean_fair_rows']:.0f}; test rows the champion had seen (excluded): "
        f"{s['gate_mean_seen_by_champion']:.0f}; by-construction truth contradicted on the next month: "
        f"{s['gate_truth_mismatch']}"
    )
    print("3. label-free estimate (CBPE): mean |estimated - realized| ROC AUC per scenario")
    print("   " + ", ".join(f"{k} {v:.4f}" for k, v in s["estimate_mae"].items()))
    print(
        f"   all scenarios {s['estimate_mae_all']:.4f}; without pure concept drift "
        f"{s['estimate_mae_without_concept']:.4f}   (target <= 0.02); concept-drift month flagged before its "
        f"labels: {s['concept_flagged']}"
    )
    f = s["false_retrains"]
    print(
        f"4. false retrains over {f['batches']} drift-free batches: measured drop with interval {f['measured']:.1%}, "
        f"size-only rule {f['size_only']:.1%}, estimated drop {f['estimated']:.1%}   (target <= 5 %)"
    )
    w = s["warnings_after_retrain"]
    print(
        "5. the month after a retrain on covariate drift (the drift continues unchanged), warned by data drift: "
        f"reference = all training rows {w['all']}, the rows new since the champion {w['recent']}"
    )
    write_json(args.json, {"machine": m, "seconds": seconds, "args": vars(args) | {"json": None}, **s, "raw": raw})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
