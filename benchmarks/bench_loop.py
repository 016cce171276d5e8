"""Benchmark of the closed loop's decisions: false alarms, detection of each drift scenario, and
the value of retraining.

1. **False alarms.** ``--batches`` (default 60) simulated months of ``--rows`` rows (default 5,000,
   labels included) with *no* drift, each with its own simulator seed, are monitored against one
   trained champion. It counts the batches whose decision is ``retrain`` (the costly error: a
   pipeline run and a new model version for nothing) and those that are not ``ok`` at all, with the
   signal that fired. Target: retrain in at most 5 % of them.
2. **Detection.** Each documented drift scenario at magnitude 1 (``covariate_shift``,
   ``new_category``, ``concept_drift``, ``prior_shift``; docs/simulator.md), one batch with labels,
   i.e. the *first* drifted batch the loop sees, for ``--detect-seeds`` seeds (default 10): the
   status of the first one and how often each status came out, with the signals (drift share,
   prediction drift, performance drop, target drift).
3. **The loop's value.** Mean monthly ROC AUC after the drift with retraining vs without, read from
   the demo's ``summary.json`` (``--demo-summary``; ``--run-demo`` runs the demo first).

Parts 1 and 2 call the monitoring engine (``driftloop.monitor``) exactly as ``loop.monitor_batch``
does (schema check, data drift on the champion's reference sample, prediction drift against the
reference's scores, performance and target drift on the labels, ``decide``), without MLflow runs,
HTML reports or alerts, and with no cooldown (every batch is judged on its own). The champion is
trained once with the demo's workspace settings (``demo.initial_rows`` rows of 2024, time split,
``demo.n_trials`` trials) through ``dvc repro``, or taken from an existing demo workspace
(``--workspace reports/demo/workspace``: its version 1, the model trained before any drift).

Usage::

    .venv/bin/python benchmarks/bench_loop.py                              # ~7 min on 2 cores (trains a champion)
    .venv/bin/python benchmarks/bench_loop.py --workspace reports/demo/workspace --json bench_loop.json
    .venv/bin/python benchmarks/bench_loop.py --run-demo                   # + the demo (~6-9 min)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, machine_line, write_json  # noqa: E402

SCENARIOS = ("covariate_shift", "new_category", "concept_drift", "prior_shift")


# ------------------------------------------------------------------------------------------------
# the champion


def champion_from(workspace: Path, version: str | None = "1"):
    """(params, champion) of a trained workspace: model version ``version`` with its reference sample,
    contract and test metric, as ``loop.resolve_champion`` finds them; None = the current @champion."""
    import pandas as pd

    from driftloop import loop, tracking
    from driftloop import register as reg
    from driftloop.config import load_params
    from driftloop.demo import inside_workspace

    with inside_workspace(workspace):
        params = load_params("params.yaml")
        client = tracking.connect(params)
        if version is None:
            return params, loop.resolve_champion(client, params)
        name = params.base.model_name
        mv = client.get_model_version(name, version)
        model = reg.load_version(name, mv.version)
        with tempfile.TemporaryDirectory() as tmp:
            reference = pd.read_parquet(client.download_artifacts(mv.run_id, "reference/reference.parquet", tmp))
        contract = model.contract()
        contract["ignored"] = sorted(
            set(contract["ignored"])
            | {c for c in reference.columns if c not in model.preprocessor.input_columns and c != model.target}
        )
        metric = json.loads(mv.tags.get("driftloop.test_metrics", "{}") or "{}").get("roc_auc")
        return params, loop.Champion(name, str(mv.version), mv.run_id, model, contract, reference, metric)


def train_champion(dest: Path) -> Path:
    """A demo workspace (the repo's dvc.yaml/src, demo sizes, time split) with its first model."""
    import yaml

    from driftloop.config import load_params
    from driftloop.demo import inside_workspace, make_workspace, reproduce

    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    ws = make_workspace(dest / "workspace", raw, params.demo, root=ROOT)
    with inside_workspace(ws):
        reproduce(ws / "dvc.log")
    return ws


# ------------------------------------------------------------------------------------------------
# one batch through the engine


def judge(params, champ, ref_scores, batch) -> dict:
    """The decision ``loop.monitor_batch`` would take (no MLflow, no report, no cooldown)."""
    from driftloop import monitor as mon

    mp, seed = params.monitor, params.base.seed
    schema = mon.check_schema(champ.contract, batch)
    drift = mon.data_drift(champ.reference, batch, champ.contract, mp, seed)
    scores = champ.model.predict_scores(batch)
    pred = mon.prediction_drift(ref_scores, scores, mp, seed)
    y = batch[champ.model.target]
    perf = mon.performance(champ.model.encoder.encode(y), scores, champ.model.task, champ.reference_metric)
    tdrift = mon.target_drift(champ.reference[champ.model.target], y, champ.model.task, mp, seed)
    decision = mon.decide(schema, drift, pred, perf, mp, None)
    return {
        "status": decision.status,
        "reasons": list(decision.reasons),
        "drift_share": drift.drift_share,
        "drifted_columns": drift.drifted_columns,
        "prediction_drift": bool(pred.get("drifted")),
        "prediction_drift_score": pred.get("score"),
        "roc_auc": perf["metrics"].get("roc_auc"),
        "auc_drop": perf.get("drop"),
        "target_drift": bool(tdrift.get("drifted")),
        "target_drift_score": tdrift.get("score"),
        "default_rate": float(y.mean()),
        "new_categories": {k: v for k, v in schema.new_categories.items()},
        "unseen_in_drifted": decision.signals.get("new_category_columns") or [],
    }


def signals_fired(r: dict, mp) -> list[str]:
    out = []
    if r["drift_share"] >= mp.drift_share_warn:
        out.append(f"drift share {r['drift_share']:.2f}")
    if r["prediction_drift"]:
        out.append("prediction drift")
    if r["auc_drop"] is not None and r["auc_drop"] >= mp.performance_drop_retrain:
        out.append(f"AUC drop {r['auc_drop']:.3f}")
    if r["target_drift"]:
        out.append("target drift")
    if r["unseen_in_drifted"]:
        out.append("unseen categories")
    return out


def batch(params, month: int, rows: int, seed: int, **drift):
    from driftloop.loop import simulated_batch

    q = "&".join(f"{k}={v}" for k, v in drift.items() if v)
    return simulated_batch(f"sim://2025-{month:02d}?rows={rows}&seed={seed}" + (f"&{q}" if q else ""), params)[1]


# ------------------------------------------------------------------------------------------------


def false_alarms(params, champ, ref_scores, n: int, rows: int) -> dict:
    mp = params.monitor
    results = []
    t0 = time.perf_counter()
    for i in range(n):
        r = judge(params, champ, ref_scores, batch(params, 1 + i % 12, rows, 50_000 + i))
        r["seed"] = 50_000 + i
        results.append(r)
        fired = signals_fired(r, mp)
        print(
            f"  batch {i + 1:3d}/{n} seed {r['seed']}: {r['status']:7s} drift share {r['drift_share']:.2f}, "
            f"AUC {r['roc_auc']:.3f} (drop {r['auc_drop']:+.3f}){'  <- ' + ', '.join(fired) if fired else ''}",
            flush=True,
        )
    statuses = Counter(r["status"] for r in results)
    fired = Counter(
        s.split(" ")[0] + (" " + s.split(" ")[1] if s.startswith(("drift", "AUC")) else "")
        for r in results
        for s in signals_fired(r, mp)
    )
    drops = [r["auc_drop"] for r in results]
    return {
        "batches": n,
        "rows": rows,
        "statuses": dict(statuses),
        "retrain": statuses.get("retrain", 0),
        "retrain_rate": statuses.get("retrain", 0) / n,
        "not_ok": n - statuses.get("ok", 0),
        "not_ok_rate": (n - statuses.get("ok", 0)) / n,
        "signals": dict(fired),
        "reference_auc": champ.reference_metric,
        "mean_auc": sum(r["roc_auc"] for r in results) / n,
        "auc_drop_mean": sum(drops) / n,
        "auc_drop_max": max(drops),
        "mean_drift_share": sum(r["drift_share"] for r in results) / n,
        "max_drift_share": max(r["drift_share"] for r in results),
        "seconds": time.perf_counter() - t0,
        "batches_detail": results,
    }


def detection(params, champ, ref_scores, seeds: int, rows: int) -> dict:
    out = {}
    for scen in SCENARIOS:
        rs = []
        for k in range(seeds):
            r = judge(params, champ, ref_scores, batch(params, 1 + k % 12, rows, 70_000 + k, **{scen: 1}))
            rs.append(r)
        first = rs[0]
        statuses = Counter(r["status"] for r in rs)
        out[scen] = {
            "first_batch": first,
            "first_status": first["status"],
            "flagged": sum(r["status"] in ("warn", "retrain") for r in rs),
            "retrain": statuses.get("retrain", 0),
            "seeds": seeds,
            "statuses": dict(statuses),
            "mean_drift_share": sum(r["drift_share"] for r in rs) / seeds,
            "mean_auc_drop": sum(r["auc_drop"] for r in rs) / seeds,
            "prediction_drift": sum(r["prediction_drift"] for r in rs),
            "target_drift": sum(r["target_drift"] for r in rs),
        }
        print(
            f"  {scen}: first batch {first['status']} ({'; '.join(first['reasons']) or '-'}); "
            f"flagged {out[scen]['flagged']}/{seeds}",
            flush=True,
        )
    return out


def loop_value(summary_path: Path) -> dict | None:
    if not summary_path.is_file():
        return None
    s = json.loads(summary_path.read_text())
    a = s["mean_auc_after_drift"]
    keys = ("months", "rows_per_month", "initial_rows", "drift_from_month", "n_trials", "drift")
    return {
        "summary": str(summary_path),
        **a,
        "ratio": a["retrained"] / a["never_retrained"],
        "retrains": s.get("retrains"),
        "seconds": s.get("seconds"),
        "settings": {k: s["settings"][k] for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batches", type=int, default=60, help="drift-free batches for the false-alarm count (>= 50)")
    ap.add_argument("--rows", type=int, default=5000, help="rows per batch")
    ap.add_argument("--detect-seeds", type=int, default=10, help="batches per drift scenario")
    ap.add_argument("--workspace", type=Path, help="a trained demo workspace to take the champion from")
    ap.add_argument("--champion-version", default="1", help="'1' (default: the pre-drift model) or 'current'")
    ap.add_argument("--demo-summary", type=Path, default=ROOT / "reports" / "demo" / "summary.json")
    ap.add_argument("--run-demo", action="store_true", help="run the demo (default settings) before part 3")
    ap.add_argument("--skip-monitoring", action="store_true", help="part 3 only")
    ap.add_argument("--json", type=Path, help="write the results to this file")
    args = ap.parse_args(argv)

    m = machine()
    print(f"bench_loop: {machine_line(m)}")
    result: dict = {"machine": m, "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_monitoring:
        with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
            t0 = time.perf_counter()
            if args.workspace:
                ws = args.workspace.resolve()
            else:
                print("training the champion (demo settings, dvc repro) ...", flush=True)
                ws = train_champion(Path(tmp))
            version = None if args.champion_version == "current" else args.champion_version
            params, champ = champion_from(ws, version)
            result["champion"] = {
                "version": champ.version,
                "reference_auc": champ.reference_metric,
                "reference_rows": len(champ.reference),
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"champion v{champ.version}: test ROC AUC {champ.reference_metric:.4f}, "
                f"reference {len(champ.reference)} rows ({time.perf_counter() - t0:.0f} s)"
            )
            ref_scores = champ.reference_scores()
            mp = params.monitor
            print(
                f"\n1. false alarms: {args.batches} drift-free batches of {args.rows} rows (monitor: "
                f"drift_share_warn {mp.drift_share_warn}, drift_share_retrain {mp.drift_share_retrain}, "
                "performance_drop_retrain "
                f"{mp.performance_drop_retrain})"
            )
            fa = false_alarms(params, champ, ref_scores, args.batches, args.rows)
            result["false_alarms"] = fa
            print(
                f"\n2. detection: the first drifted batch ({args.rows} rows, labels), magnitude 1, "
                f"{args.detect_seeds} seeds per scenario"
            )
            det = detection(params, champ, ref_scores, args.detect_seeds, args.rows)
            result["detection"] = det

    if args.run_demo:
        import subprocess

        from _common import env

        print("\n3. running the demo (driftloop demo) ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "driftloop"), "demo", "--out", str(args.demo_summary.parent)],
            cwd=ROOT,
            env=env(),
            check=True,
        )
        print(f"   demo took {time.perf_counter() - t0:.0f} s")
    value = loop_value(args.demo_summary)
    result["loop_value"] = value

    # ---------------------------------------------------------------- report
    print("\n" + "=" * 100)
    if "false_alarms" in result:
        fa = result["false_alarms"]
        print(
            f"1. FALSE ALARMS over {fa['batches']} drift-free batches of {fa['rows']} rows "
            f"(champion v{result['champion']['version']}, test AUC {fa['reference_auc']:.4f}):"
        )
        print(
            f"   retrain decisions: {fa['retrain']}/{fa['batches']} = {fa['retrain_rate']:.1%} "
            f"(target <= 5 %: {'PASS' if fa['retrain_rate'] <= 0.05 else 'FAIL'})"
        )
        print(
            f"   any alert (warn or retrain): {fa['not_ok']}/{fa['batches']} = {fa['not_ok_rate']:.1%}; "
            f"statuses {fa['statuses']}; signals {fa['signals'] or '-'}"
        )
        print(
            f"   mean batch AUC {fa['mean_auc']:.4f}, AUC drop mean {fa['auc_drop_mean']:+.4f}, max "
            f"{fa['auc_drop_max']:+.4f}; drift share mean {fa['mean_drift_share']:.3f}, "
            f"max {fa['max_drift_share']:.2f} ({fa['seconds']:.0f} s)"
        )
        print("\n2. DETECTION (the first drifted batch, magnitude 1):")
        print(
            f"   {'scenario':16s} {'first batch':12s} {'flagged':>8s} {'retrain':>8s} {'drift share':>12s} "
            f"{'AUC drop':>9s} {'pred drift':>10s} {'target drift':>12s}  reasons (first batch)"
        )
        for scen, d in result["detection"].items():
            n = d["seeds"]
            print(
                f"   {scen:16s} {d['first_status']:12s} {d['flagged']:>5d}/{n:<2d} {d['retrain']:>5d}/{n:<2d} "
                f"{d['mean_drift_share']:>12.2f} {d['mean_auc_drop']:>+9.3f} {d['prediction_drift']:>7d}/{n:<2d} "
                f"{d['target_drift']:>9d}/{n:<2d}  {'; '.join(d['first_batch']['reasons'])[:150]}"
            )
    print("\n3. THE LOOP'S VALUE (mean monthly ROC AUC after the drift):")
    if value:
        print(
            f"   with retraining {value['retrained']:.4f} vs never retrained {value['never_retrained']:.4f}: "
            f"difference {value['difference']:+.4f}, ratio {value['ratio']:.3f} over {value['months']} months; "
            f"{len(value['retrains'] or [])} retrain(s); demo run time {value['seconds'].get('total')} s "
            f"({value['summary']})"
        )
    else:
        print(f"   no demo summary at {args.demo_summary}: run `driftloop demo` (or pass --run-demo)")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
