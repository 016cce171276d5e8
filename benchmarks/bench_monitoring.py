"""Benchmark of the monitoring engine (``driftloop.monitor``): speed and detection power.

What it measures, in one run:

1. **Speed.** End-to-end monitoring of a ``--rows`` x 30-column batch (20 numeric + 10 categorical,
   plus a label column) against a reference of the same size: schema check, data drift (sampled
   to ``MonitorParams.sample_rows`` rows, Evidently ``DataDriftPreset``, HTML report written),
   prediction drift, performance on the labels, decision. Compared with a stock Evidently
   ``Report([DataDriftPreset()])`` on the full frames (``--skip-stock`` to leave it out: at 1M vs 1M
   rows it takes about 3 minutes on 2 cores). The Evidently import (several seconds, paid once per
   process) is reported separately.

2. **Detection power with vs without sampling.** The monitored batch carries drift of small,
   documented sizes (see ``DRIFT``): additive mean shifts of 0.05 / 0.10 / 0.10 / 0.10 / 0.20
   standard deviations in five numeric columns and 10-percentage-point frequency moves in two
   categorical columns (between the two most frequent categories, and from the most frequent one
   into a rare one). For every column it prints the score and flag of full-data Evidently (the
   stock run; with ``--skip-stock``, the same Evidently stat tests called directly on the full
   columns) and of the sampled engine over ``--seeds`` sampling seeds (mean score, flag rate).

3. **False alarms.** ``--fa-batches`` batches drawn from the reference distribution (different
   generator seeds) go through the same end-to-end engine; it counts decisions that are not "ok",
   drifted columns and prediction-drift flags.

Synthetic data comes from the generator below (self-contained and documented, so the drift sizes
are exact). The champion's score is a fixed logistic function of a few features (computed outside
the timed section: scoring is not part of the monitoring engine); labels are drawn from it, so there
is no concept drift and the performance drop should be about 0.

Usage::

    .venv/bin/python benchmarks/bench_monitoring.py --quick                # 100k rows, ~1-2 minutes
    .venv/bin/python benchmarks/bench_monitoring.py                        # 1M rows, stock leg ~3 min
    .venv/bin/python benchmarks/bench_monitoring.py --skip-stock --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from driftloop import monitor  # noqa: E402
from driftloop.config import MonitorParams  # noqa: E402

N_NUM, N_CAT = 20, 10
TARGET = "default"

# Drift injected into the monitored batch (everything else is drawn from the reference distribution).
# numeric: column -> mean shift in units of that column's standard deviation (additive, shape unchanged)
# categorical: column -> (from category, to category, probability moved)
DRIFT_NUM = {"num_00": 0.05, "num_01": 0.10, "num_02": 0.10, "num_03": 0.10, "num_04": 0.20}
DRIFT_CAT = {"cat_00": ("c0", "c1", 0.10), "cat_01": ("c0", "c5", 0.10)}
DRIFT = (
    "numeric mean shifts (x std): "
    + ", ".join(f"{k} +{v:.2f}" for k, v in DRIFT_NUM.items())
    + "; categorical moves: "
    + ", ".join(f"{k} {a}->{b} {p * 100:.0f}pp" for k, (a, b, p) in DRIFT_CAT.items())
)


# ------------------------------------------------------------------------------------------------
# synthetic data


def _num_spec(i: int) -> tuple[str, tuple, float]:
    """(distribution, args, std) of numeric column i; a mix of shapes like real tabular data."""
    kinds = [
        ("normal", (45.0, 12.0), 12.0),  # age-like
        ("lognormal", (10.5, 0.6), None),  # income-like, skewed
        ("gamma", (2.0, 3.0), None),  # skewed positive
        ("normal", (0.0, 1.0), 1.0),
        ("uniform", (0.0, 100.0), None),
    ]
    kind, args, std = kinds[i % len(kinds)]
    if std is None:
        if kind == "lognormal":
            m, s = args
            std = float(np.sqrt((np.exp(s**2) - 1) * np.exp(2 * m + s**2)))
        elif kind == "gamma":
            std = float(np.sqrt(args[0]) * args[1])
        else:
            std = (args[1] - args[0]) / np.sqrt(12)
    return kind, args, std


def _cat_probs(j: int) -> np.ndarray:
    k = [8, 6, 4, 12, 3, 20, 5, 10, 7, 50][j]
    if j == 0:
        return np.array([0.30, 0.20, 0.15, 0.10, 0.10, 0.07, 0.05, 0.03])
    if j == 1:
        return np.array([0.40, 0.25, 0.15, 0.10, 0.05, 0.05])
    w = 1.0 / np.arange(1, k + 1) ** 0.8  # Zipf-like frequencies
    return w / w.sum()


def make_frame(n: int, seed: int, drift: bool) -> pd.DataFrame:
    """n rows, 20 numeric + 10 categorical features and a binary label; ``drift`` applies ``DRIFT``."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray | pd.Categorical] = {}
    for i in range(N_NUM):
        name = f"num_{i:02d}"
        kind, args, std = _num_spec(i)
        x = getattr(rng, kind)(*args, size=n)
        if drift and name in DRIFT_NUM:
            x = x + DRIFT_NUM[name] * std
        cols[name] = x.astype("float64")
    for j in range(N_CAT):
        name = f"cat_{j:02d}"
        p = _cat_probs(j).copy()
        cats = [f"c{k}" for k in range(len(p))]
        if drift and name in DRIFT_CAT:
            a, b, move = DRIFT_CAT[name]
            p[cats.index(a)] -= move
            p[cats.index(b)] += move
        codes = rng.choice(len(p), size=n, p=p)
        cols[name] = pd.Categorical.from_codes(codes, categories=cats)
    df = pd.DataFrame(cols)
    score = champion_score(df)
    df[TARGET] = (rng.random(n) < score).astype("int64")
    return df


def champion_score(df: pd.DataFrame) -> np.ndarray:
    """A fixed 'champion': P(default) from a logistic function of a few features."""
    z = (
        -2.0
        + 0.6 * (df["num_00"].to_numpy() - 45.0) / 12.0
        - 0.5 * (np.log(df["num_01"].to_numpy()) - 10.5) / 0.6
        + 0.3 * (df["num_02"].to_numpy() - 6.0) / 4.24
        + 0.4 * df["num_04"].to_numpy() / 28.9
        + 0.5 * (df["cat_00"].cat.codes.to_numpy() == 0)
        - 0.3 * (df["cat_01"].cat.codes.to_numpy() == 5)
    )
    return 1.0 / (1.0 + np.exp(-z))


def population_score(col: str) -> float:
    """The drift score the default test would give with infinite data: a pure location shift of d std
    has normed Wasserstein distance d; a categorical move has the Jensen-Shannon distance (base e,
    as Evidently computes it) between the two frequency vectors."""
    if col in DRIFT_NUM:
        return DRIFT_NUM[col]
    if col in DRIFT_CAT:
        from scipy.spatial.distance import jensenshannon

        p = _cat_probs(int(col.split("_")[1]))
        q = p.copy()
        a, b, move = DRIFT_CAT[col]
        q[int(a[1:])] -= move
        q[int(b[1:])] += move
        return float(jensenshannon(p, q))
    return 0.0


def make_contract() -> dict:
    columns: dict[str, dict] = {f"num_{i:02d}": {"kind": "numeric", "dtype": "float64"} for i in range(N_NUM)}
    for j in range(N_CAT):
        cats = [f"c{k}" for k in range(len(_cat_probs(j)))]
        columns[f"cat_{j:02d}"] = {"kind": "categorical", "dtype": "category", "categories": cats}
    return {"target": TARGET, "task": "binary", "columns": columns, "ignored": []}


# ------------------------------------------------------------------------------------------------
# legs


def run_engine(ref, cur, ref_scores, cur_scores, contract, params, seed, html_path, reference_auc, since=None):
    """The monitoring engine end to end; returns (timings, drift, pred, perf, decision)."""
    t = {}
    t0 = time.perf_counter()
    schema = monitor.check_schema(contract, cur)
    t["schema_check"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    drift = monitor.data_drift(ref, cur, contract, params, seed=seed, html_path=html_path)
    t["data_drift"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    pred = monitor.prediction_drift(ref_scores, cur_scores, params, seed=seed)
    t["prediction_drift"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    perf = monitor.performance(cur[TARGET].to_numpy(), cur_scores, "binary", reference_auc)
    t["performance"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    decision = monitor.decide(schema, drift, pred, perf, params, since)
    t["decide"] = time.perf_counter() - t1
    t["total"] = time.perf_counter() - t0
    return t, schema, drift, pred, perf, decision


def run_stock(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[float, dict[str, dict]]:
    """Stock Evidently on the full frames: Report([DataDriftPreset()]) (tests on, to read per-column flags)."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    t0 = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(cur, ref)
    elapsed = time.perf_counter() - t0
    by_col = monitor._read_value_drift(snapshot)
    return elapsed, by_col


def run_full_stattests(ref: pd.DataFrame, cur: pd.DataFrame, params: MonitorParams) -> tuple[float, dict[str, dict]]:
    """The same Evidently stat tests DataDriftPreset would pick, called directly on the full columns."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    t0 = time.perf_counter()
    out = {}
    for name in [c for c in ref.columns if c != TARGET]:
        ctype = ColumnType.Numerical if name.startswith("num_") else ColumnType.Categorical
        method = params.num_stattest if ctype == ColumnType.Numerical else params.cat_stattest
        threshold = params.num_threshold if ctype == ColumnType.Numerical else params.cat_threshold
        r, c = ref[name], cur[name]
        if ctype == ColumnType.Categorical:
            r, c = r.astype(object), c.astype(object)
        test = get_stattest(r, c, ctype, method)
        res = test(r, c, ctype, threshold)
        out[name] = {
            "stattest": test.display_name,
            "score": float(res.drift_score),
            "threshold": res.actual_threshold,
            "drifted": bool(res.drifted),
        }
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------------


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:7.2f}s"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the batch and in the reference")
    ap.add_argument("--quick", action="store_true", help="100k rows, fewer seeds and false-alarm batches")
    ap.add_argument(
        "--skip-stock",
        action="store_true",
        help="skip the stock full-data Evidently run (about 3 minutes at 1M vs 1M rows);\n"
        "full-data detection then uses Evidently's stat tests called directly",
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="sampling seeds for the detection table (default 5, quick 3)"
    )
    ap.add_argument(
        "--fa-batches", type=int, default=None, help="no-drift batches for false alarms (default 20, quick 10)"
    )
    ap.add_argument("--sample-rows", type=int, default=None, help="override MonitorParams.sample_rows")
    ap.add_argument("--num-stattest", default=None, help="MonitorParams.num_stattest (default: Evidently's choice)")
    ap.add_argument("--cat-stattest", default=None, help="MonitorParams.cat_stattest (default: Evidently's choice)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    rows = 100_000 if args.quick and args.rows == 1_000_000 else args.rows
    n_seeds = args.seeds or (3 if args.quick else 5)
    n_fa = args.fa_batches if args.fa_batches is not None else (10 if args.quick else 20)
    overrides = {"num_stattest": args.num_stattest, "cat_stattest": args.cat_stattest}
    if args.sample_rows:
        overrides["sample_rows"] = args.sample_rows
    params = MonitorParams(**{k: v for k, v in overrides.items() if v is not None})
    contract = make_contract()
    print(
        f"# bench_monitoring: {rows:,} rows x {N_NUM + N_CAT} features (+label) per frame; "
        f"sample_rows={params.sample_rows:,}; cpus={os.cpu_count()}; python {platform.python_version()}"
    )
    print(f"# injected drift: {DRIFT}")

    t0 = time.perf_counter()
    ref = make_frame(rows, args.seed, drift=False)
    cur = make_frame(rows, args.seed + 1, drift=True)
    ref_scores, cur_scores = champion_score(ref), champion_score(cur)
    gen_s = time.perf_counter() - t0
    from sklearn.metrics import roc_auc_score

    reference_auc = float(roc_auc_score(ref[TARGET], ref_scores))
    print(f"# data generated in {gen_s:.1f}s; reference AUC of the champion = {reference_auc:.4f}")

    t0 = time.perf_counter()
    import evidently  # noqa: F401
    from evidently import Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    import_s = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="bench_monitoring_"))
    # 1) engine, end to end, on the drifted batch; further sampling seeds for the detection table
    runs = []
    for k in range(n_seeds):
        html = tmp / f"drift_{k}.html" if k == 0 else None
        runs.append(run_engine(ref, cur, ref_scores, cur_scores, contract, params, args.seed + k, html, reference_auc))
    timing, schema, drift0, pred0, perf0, decision0 = runs[0]
    html_kb = (tmp / "drift_0.html").stat().st_size / 1024

    # 2) full data
    if args.skip_stock:
        stock_s = None
        full_label = "full data, Evidently stat tests called directly (stock run skipped)"
        full_s, full = run_full_stattests(ref.drop(columns=[TARGET]), cur.drop(columns=[TARGET]), params)
    else:
        full_label = "full data, stock Report([DataDriftPreset()])"
        stock_s, full = run_stock(ref.drop(columns=[TARGET]), cur.drop(columns=[TARGET]))
        full_s = stock_s

    # 3) false alarms: no-drift batches through the same engine
    fa = []
    for b in range(n_fa):
        clean = make_frame(rows, args.seed + 1000 + b, drift=False)
        _, _, d, p, pf, dec = run_engine(
            ref, clean, ref_scores, champion_score(clean), contract, params, args.seed + b, None, reference_auc
        )
        fa.append(
            {
                "status": dec.status,
                "n_drifted": d.n_drifted,
                "drifted": d.drifted_columns,
                "prediction_drift": p["drifted"],
                "perf_drop": pf["drop"],
            }
        )

    # ---------------------------------------------------------------------------- report
    print("\n## speed")
    print(f"evidently import (once per process)      {_fmt_s(import_s)}")
    for k, v in timing.items():
        print(f"engine {k:<34}{_fmt_s(v)}")
    print(f"engine total + import                    {_fmt_s(timing['total'] + import_s)}")
    if stock_s is not None:
        print(f"stock Report([DataDriftPreset()]) full  {_fmt_s(stock_s)}")
        print(f"ratio stock / engine                     {stock_s / timing['total']:7.1f}x")
        print(f"ratio stock / (engine + import)          {stock_s / (timing['total'] + import_s):7.1f}x")
    else:
        print(f"(stock leg skipped; direct full-data stat tests took {full_s:.1f}s)")
    print(f"HTML report: {html_kb:.0f} KiB; engine decision on the drifted batch: {decision0.status}")

    print(f"\n## detection: {full_label} vs sampled engine ({n_seeds} seeds, {drift0.current_sample_rows:,} rows)")
    header = f"{'column':<8} {'true drift':<16} {'stattest':<30} {'thr':>5} {'pop.':>6} {'full score':>10} {'full':>5}"
    header += f" {'sampled score (mean±sd)':>24} {'flag rate':>9}"
    print(header)
    table = []
    sampled = {c: [r[2].column(c) for r in runs] for c in (x.column for x in drift0.columns)}
    for col in [*[f"num_{i:02d}" for i in range(N_NUM)], *[f"cat_{j:02d}" for j in range(N_CAT)]]:
        truth = (
            f"+{DRIFT_NUM[col]:.2f} std"
            if col in DRIFT_NUM
            else (f"{DRIFT_CAT[col][0]}->{DRIFT_CAT[col][1]} 10pp" if col in DRIFT_CAT else "none")
        )
        f = full.get(col, {})
        s = sampled.get(col, [])
        scores = np.array([x.score for x in s])
        flags = sum(x.drifted for x in s)
        row = {
            "column": col,
            "true_drift": truth,
            "stattest": s[0].stattest if s else None,
            "threshold": s[0].threshold if s else None,
            "population_score": population_score(col),
            "full_score": f.get("score"),
            "full_drifted": f.get("drifted"),
            "full_stattest": f.get("stattest"),
            "sampled_score_mean": float(scores.mean()) if len(scores) else None,
            "sampled_score_sd": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "sampled_flag_rate": f"{flags}/{len(s)}",
        }
        table.append(row)
        if truth == "none" and not f.get("drifted") and flags == 0 and col not in ("num_05", "cat_02"):
            continue  # keep the table short: drifted columns, any flag, and two undrifted examples
        print(
            f"{col:<8} {truth:<16} {str(row['stattest']):<30} {row['threshold'] or 0:5.2f} "
            f"{row['population_score']:6.4f} "
            f"{row['full_score'] if row['full_score'] is not None else float('nan'):10.4f} "
            f"{'yes' if row['full_drifted'] else 'no':>5} "
            f"{row['sampled_score_mean']:>14.4f} ± {row['sampled_score_sd']:<7.4f} {row['sampled_flag_rate']:>9}"
        )
    full_flagged = sorted(c for c, v in full.items() if v.get("drifted"))
    sampled_flagged = drift0.drifted_columns
    true_cols = set(DRIFT_NUM) | set(DRIFT_CAT)
    print("(pop. = the score with infinite data, i.e. the drift's true size on the test's scale)")
    print(f"flagged, full data     : {full_flagged}")
    print(f"flagged, sampled seed 0: {sampled_flagged}")
    n_rest = N_NUM + N_CAT - len(true_cols)
    fa_full = len(set(full_flagged) - true_cols)
    fa_sampled = len(set(sampled_flagged) - true_cols)
    print(f"false column flags on this batch (undrifted {n_rest} columns): full {fa_full}, sampled {fa_sampled}")
    agree = np.mean([bool(full.get(c, {}).get("drifted")) == x.drifted for c in sampled for x in sampled[c]])
    print(f"per-column agreement full vs sampled (all columns x seeds): {agree * 100:.1f}%")
    print(
        f"prediction drift on the drifted batch: score {pred0['score']:.4f} ({pred0['stattest']}), "
        f"drifted={pred0['drifted']}; performance drop {perf0['drop']:+.4f} AUC"
    )

    print(f"\n## false alarms: {n_fa} no-drift batches of {rows:,} rows through the engine")
    statuses = pd.Series([f["status"] for f in fa]).value_counts().to_dict() if fa else {}
    n_alarm = sum(f["status"] != "ok" for f in fa)
    col_flags = sum(f["n_drifted"] for f in fa)
    pred_flags = sum(bool(f["prediction_drift"]) for f in fa)
    max_drop = max((f["perf_drop"] for f in fa if f["perf_drop"] is not None), default=None)
    print(f"decisions: {statuses}; false alarms (status != ok): {n_alarm}/{n_fa}")
    print(f"drifted columns flagged: {col_flags} of {n_fa * (N_NUM + N_CAT)} column tests")
    drop_txt = "-" if max_drop is None else f"{max_drop:+.4f}"
    print(f"prediction drift flags: {pred_flags}/{n_fa}; largest AUC drop {drop_txt}")

    result = {
        "rows": rows,
        "sample_rows": params.sample_rows,
        "cpus": os.cpu_count(),
        "drift": DRIFT,
        "timing": {"import_s": import_s, "engine": timing, "stock_s": stock_s, "full_data_s": full_s},
        "ratio_stock_over_engine": None if stock_s is None else stock_s / timing["total"],
        "detection": table,
        "full_flagged": full_flagged,
        "sampled_flagged": sampled_flagged,
        "agreement": float(agree),
        "decision_drifted_batch": decision0.to_dict(),
        "prediction_drift_drifted_batch": pred0,
        "false_alarms": {"batches": n_fa, "alarms": n_alarm, "statuses": statuses, "column_flags": col_flags},
        "schema_status": schema.status,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
