"""What the validate stage sees that users miss, and what it costs (issue 14, item 8).

Side by side in one run, per seed:

- **leaks planted through a combination of columns** (each column weak alone): a flights-like delay flag
  (``arr_time - sched_arr_time > 15``), a loans-like grade (a band of ``installment / amount``, multiclass; and
  the same with an amortized installment, which gives the rate only with ``term``: three columns), an
  orders-like total (``qty * unit_price``, regression): caught by the single-column check, and by the
  combination check;
- **false alarms**: the simulator at several sizes and seeds, scikit-learn's bundled honest tables;
- **cost**: the leakage check's time with and without the pair check (the simulator's 66 pairs);
- **the positive class**: on a table whose minority label sorts first, the old default (the last in sorted order)
  and the new one (the minority), with the PR AUC each describes;
- **the calibration check**: how often a calibrated model is called poorly calibrated (false alarms) at several
  test sizes, and how often a miscalibrated one is caught.

``.venv/bin/python benchmarks/bench_validation.py --seeds 0,1,2 --rows 20000,100000``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import machine, machine_line, write_json

from driftloop.config import Params
from driftloop.data.leakage import combination_scores, single_feature_scores


def flights(n: int, seed: int) -> tuple[pd.DataFrame, str, str, tuple[str, str]]:
    rng = np.random.default_rng(seed)
    sched = rng.integers(360, 1380, n).astype(float)
    delay = rng.exponential(14, n) - 5
    df = pd.DataFrame(
        {
            "sched_arr_time": sched,
            "arr_time": sched + delay,
            "distance": rng.gamma(3, 300, n),
            "month": rng.integers(1, 13, n),
            "dep_delay": delay + rng.normal(0, 12, n),
            "y": (delay > 15).astype(int),
        }
    )
    return df, "binary", "arr_time - sched_arr_time > 15", ("sched_arr_time", "arr_time")


def loans(n: int, seed: int):
    rng = np.random.default_rng(seed)
    amount, rate = rng.uniform(1000, 40000, n), rng.uniform(0.05, 0.30, n)
    df = pd.DataFrame(
        {
            "amount": amount,
            "installment": amount * rate / 12,
            "income": rng.lognormal(11, 0.5, n),
            "term": rng.choice([36, 60], n),
            "y": np.digitize(rate, [0.10, 0.15, 0.20, 0.25]),
        }
    )
    return df, "multiclass", "grade = band of installment / amount", ("amount", "installment")


def amortized(n: int, seed: int):
    rng = np.random.default_rng(seed)
    amount, rate, term = rng.uniform(1000, 40000, n).round(-2), rng.uniform(0.05, 0.30, n), rng.choice([36, 60], n)
    i = rate / 12
    df = pd.DataFrame(
        {
            "amount": amount,
            "term": term,
            "installment": (amount * i / (1 - (1 + i) ** -term)).round(2),
            "income": rng.lognormal(11, 0.5, n),
            "y": np.digitize(rate, [0.10, 0.15, 0.20, 0.25]),
        }
    )
    what = "grade = band of the rate that installment, amount and term give"
    return df, "multiclass", what, ("amount", "term", "installment")


def orders(n: int, seed: int):
    rng = np.random.default_rng(seed)
    qty, price = rng.integers(1, 50, n).astype(float), rng.lognormal(3, 0.6, n)
    df = pd.DataFrame({"qty": qty, "unit_price": price, "weight": rng.normal(size=n), "y": qty * price})
    return df, "regression", "total = qty * unit_price", ("qty", "unit_price")


def leak_check(df: pd.DataFrame, task: str, p: Params) -> tuple[dict, list, float, float]:
    X, y = df.drop(columns="y"), df["y"]
    t0 = time.perf_counter()
    single = single_feature_scores(X, y, task, p)
    t1 = time.perf_counter()
    pairs = combination_scores(X, y, task, p, single)
    return single, pairs, t1 - t0, time.perf_counter() - t1


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default="20000,100000", help="simulator sizes")
    ap.add_argument("--planted-rows", type=int, default=5000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sizes = [int(s) for s in a.rows.split(",")]
    result: dict = {"machine_before": machine()}
    print(machine_line(result["machine_before"]))
    p = Params.model_validate({"base": {"target": "y"}})
    threshold = p.validate_params.leakage_threshold

    print("\n== planted pair leaks (each column weak alone) ==")
    planted = []
    for make in (flights, loans, amortized, orders):
        for seed in seeds:
            df, task, what, cols = make(a.planted_rows, seed)
            single, pairs, ts, tp = leak_check(df, task, p)
            caught_single = any(single.get(c, 0) >= threshold for c in cols)
            caught_pair = any(set(found) == set(cols) for _, found in pairs)
            others = [found for _, found in pairs if set(found) != set(cols)]
            planted.append({"table": make.__name__, "seed": seed, "leak": what, "single": caught_single,
                            "pair": caught_pair, "other_pairs": others, "best_alone": max(single[c] for c in cols),
                            "s_single": ts, "s_pairs": tp})  # fmt: skip
    tab = pd.DataFrame(planted)
    print(tab[["table", "seed", "best_alone", "single", "pair", "other_pairs", "s_single", "s_pairs"]].round(3))
    result["planted"] = planted

    print("\n== false alarms and cost on the simulator (default: 12 columns -> 66 pairs) ==")
    from driftloop.data.simulate import DATE_COLUMN, ID_COLUMN, TARGET, simulate

    q = Params.model_validate({"base": {"target": TARGET}})
    sim = []
    for n in sizes:
        for seed in seeds:
            df = simulate(n, seed + 42).drop(columns=[ID_COLUMN, DATE_COLUMN]).rename(columns={TARGET: "y"})
            single, pairs, ts, tp = leak_check(df, "binary", q)
            sim.append({"rows": n, "seed": seed, "suspects": len(pairs) + sum(s >= threshold for s in single.values()),
                        "s_single": ts, "s_pairs": tp, "ratio": (ts + tp) / ts})  # fmt: skip
    tab = pd.DataFrame(sim)
    print(tab.round(3))
    result["simulator"] = sim

    print("\n== false alarms on scikit-learn's bundled tables ==")
    from sklearn import datasets

    honest = []
    for name in ("load_breast_cancer", "load_iris", "load_wine", "load_diabetes", "load_digits"):
        df = getattr(datasets, name)(as_frame=True).frame.rename(columns={"target": "y"})
        task = "regression" if name == "load_diabetes" else ("binary" if df["y"].nunique() == 2 else "multiclass")
        single, pairs, ts, tp = leak_check(df, task, p)
        n_suspects = len(pairs) + sum(s >= threshold for s in single.values())
        honest.append({"table": name, "rows": len(df), "best_alone": max(single.values()), "suspects": n_suspects,
                       "s": ts + tp})  # fmt: skip
    print(pd.DataFrame(honest).round(3))
    result["honest"] = honest

    print("\n== the positive class on a table whose minority label ('bad', 14 %) sorts first ==")
    from sklearn.metrics import average_precision_score

    from driftloop.model import TargetEncoder

    rng = np.random.default_rng(seeds[0])
    yl = np.where(rng.random(20000) < 0.14, "bad", "good")
    score_bad = rng.normal(size=20000) + (yl == "bad") * 1.2  # a model's score for 'bad'
    old_positive = sorted(set(yl))[-1]
    new_positive = TargetEncoder.fit(pd.Series(yl), "binary").positive_class
    base = {c: float((yl == c).mean()) for c in ("bad", "good")}
    pos = {"old_default": str(old_positive), "new_default": str(new_positive),
           "old_base_rate": base[old_positive], "new_base_rate": base[new_positive],
           "pr_auc_old": average_precision_score(yl == old_positive, -score_bad),
           "pr_auc_new": average_precision_score(yl == new_positive, score_bad)}  # fmt: skip
    pos["lift_old"], pos["lift_new"] = pos["pr_auc_old"] / base[old_positive], pos["pr_auc_new"] / base[new_positive]
    print(pos)
    result["positive_class"] = pos

    print("\n== the calibration check (100 seeded tables each) ==")
    from driftloop.evaluate import calibration_check

    cal = []
    for n in (200, 1000, 5000, 20000):
        false_alarm = caught = 0
        for r in range(100):
            g = np.random.default_rng(1000 * n + r)
            prob = g.beta(1, 5, n)
            y = (g.random(n) < prob).astype(int)
            false_alarm += calibration_check("binary", y, prob, bins=10, max_ece=0.05, seed=r)["poor"]
            caught += calibration_check("binary", y, np.clip(prob * 1.8, 0, 1), bins=10, max_ece=0.05, seed=r)["poor"]
        cal.append({"rows": n, "false_alarms": false_alarm / 100, "overconfident_x1.8_caught": caught / 100})
    print(pd.DataFrame(cal))
    result["calibration"] = cal
    result["machine_after"] = machine()
    print("\n" + machine_line(result["machine_after"]))
    write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
