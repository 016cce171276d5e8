"""Benchmark: driftloop's model quality against FLAML (LightGBM only) at the same wall time (issue 14).

For each table and seed, on driftloop's own validated and split data (``driftloop.data.validate`` and
``driftloop.data.split`` with ``base.seed`` = the seed; the same preprocessing for every system):

- **driftloop**: the tune stage's study (``driftloop.tune.tune``: params.yaml's defaults: ``cv_folds: auto``,
  the frugal space, the time budget) and the train stage (``driftloop.train.train``: refit on train+valid),
  timed together (MLflow's logging is left out: it runs beside the trials in the pipeline); also the same
  tuned configuration without the refit (``train.refit: false``), to show what the refit buys;
- **FLAML** 2.7.0 (``estimator_list=["lgbm"]``), ``time_budget`` = driftloop's measured wall time, fitted on
  train+valid (it picks its own holdout/CV), ``seed`` = the seed; run right after driftloop's leg, so the two
  systems alternate and see the same machine state;
- **LightGBM defaults** (``LGBMClassifier``/``LGBMRegressor()``) fitted on train+valid;
- the **baselines** of the train stage (logistic regression or Ridge, refit on train+valid).

Every system is scored on the same test split: ROC AUC (binary, higher is better) or RMSE (regression).
Tables: datasets shipped inside installed packages that no driftloop code was written against
(scikit-learn's breast cancer and diabetes, statsmodels' ``fair`` and ``randhie``) and the built-in simulator
at two sizes. Needs the ``bench`` extra (``pip install -e ".[bench]"``: flaml).

``--imbalance RATE[,RATE...]`` runs another comparison instead: the simulator at ``RATE`` positives (e.g. 0.03),
driftloop with ``train.class_weight: auto`` (``scale_pos_weight`` chosen by the train stage from 1, sqrt(neg/pos) and
neg/pos on held-out PR AUC) vs ``none``, the same split and seed, PR AUC and ROC AUC on the test split (target: PR
AUC at least the unweighted model's, in the mean over seeds at every rate).

Usage::

    .venv/bin/python benchmarks/bench_quality.py --seeds 42,7,1        # every table, three seeds
    .venv/bin/python benchmarks/bench_quality.py --tables cancer,fair --seeds 42 --json out.json
    .venv/bin/python benchmarks/bench_quality.py --imbalance 0.01,0.03,0.05 --rows 20000 --seeds 42,7,1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _statsmodels_csv(name: str) -> pd.DataFrame:
    import statsmodels

    return pd.read_csv(Path(statsmodels.__file__).parent / "datasets" / name / f"{name}.csv")


def load_table(name: str, seed: int) -> tuple[pd.DataFrame, str, str]:
    """(raw frame, target column, task) of a bench table."""
    from sklearn import datasets

    if name == "cancer":  # 569 rows, 30 numeric columns
        d = datasets.load_breast_cancer(as_frame=True)
        return d.frame.rename(columns={"target": "y"}), "y", "binary"
    if name == "diabetes":  # 442 rows, 10 columns
        d = datasets.load_diabetes(as_frame=True, scaled=False)
        return d.frame.rename(columns={"target": "y"}), "y", "regression"
    if name == "fair":  # 6,366 rows: did the respondent have an affair
        df = _statsmodels_csv("fair")
        return df.assign(y=(df.pop("affairs") > 0).astype(int)), "y", "binary"
    if name == "randhie":  # 20,190 rows: doctor visits (count, as regression)
        return _statsmodels_csv("randhie").rename(columns={"mdvis": "y"}), "y", "regression"
    if name.startswith("sim"):  # sim5k, sim50k: the built-in credit simulator
        from driftloop.data.simulate import simulate

        n = int(name[3:].replace("k", "000"))
        return simulate(n, seed=seed), "default", "binary"
    raise SystemExit(f"unknown table {name!r}")


def _score(task: str, y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import mean_squared_error, roc_auc_score

    if task == "binary":
        return float(roc_auc_score(y, scores))
    return float(np.sqrt(mean_squared_error(y, scores)))


def one(table: str, seed: int, n_trials: int | None, extra: dict | None = None) -> dict:
    import lightgbm as lgb
    from flaml import AutoML

    from driftloop.config import Params
    from driftloop.data.split import split
    from driftloop.data.validate import validate
    from driftloop.pipeline import _prepared, fold_keys
    from driftloop.train import baseline_scores, train
    from driftloop.tune import effective_threads, tune

    raw, target, task = load_table(table, seed)
    overrides = {"base.target": target, "base.task": task, "base.seed": seed, "validate.on_leakage": "warn"}
    if n_trials:
        overrides["tune.n_trials"] = n_trials
    params = Params.model_validate(C.derived_params({**overrides, **(extra or {})}))
    clean, _ = validate(raw, params, source=table)
    parts = split(clean, params, task)
    test = parts["test"]
    splits = {"train": parts["train"], "valid": parts["valid"]}

    # driftloop: the tune stage's study + the train stage (refit on train+valid)
    t0 = time.perf_counter()
    task_, enc, X_tr, y_tr, X_va, y_va = _prepared(params, splits)
    res = tune(X_tr, y_tr, X_va, y_va, task, len(enc.classes), params, study_name="q", **fold_keys(params, splits))
    cv = (res.metric, res.best_value) if "CV" in res.validation else None  # as the pipeline's train stage passes it
    fitted = train(
        parts["train"], parts["valid"], params, task, res.lgb_params, refit_rounds=res.refit_rounds, tuned_cv=cv
    )
    seconds = time.perf_counter() - t0
    model = fitted.model
    y_test = model.encoder.encode(test[target])
    X_test = model.features(test)
    out = {
        "table": table,
        "rows": len(clean),
        "task": task,
        "seed": seed,
        "seconds": round(seconds, 1),
        "validation": res.validation,
        "trials": res.n_complete + res.n_pruned,
        "pruned": res.n_pruned,
        "driftloop": _score(task, y_test, model.scores_from_features(X_test)),
        "algorithm": model.algorithm,  # the train stage's selection: lightgbm or linear
    }
    no_refit = params.model_copy(update={"train": params.train.model_copy(update={"refit": False})})
    plain = train(parts["train"], parts["valid"], no_refit, task, res.lgb_params, tuned_cv=cv)
    out["driftloop_no_refit"] = _score(task, y_test, plain.model.scores_from_features(X_test))

    # FLAML, LightGBM only, the same wall time, on train+valid (the same preprocessed columns)
    X_all = pd.concat([X_tr, X_va], ignore_index=True)
    y_all = np.concatenate([y_tr, y_va])
    threads = effective_threads(params.tune, len(y_all))  # the same threads for every system
    n_jobs = threads or -1
    automl = AutoML()
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        automl.fit(
            X_all,
            y_all,
            task="classification" if task == "binary" else "regression",
            metric="roc_auc" if task == "binary" else "rmse",
            estimator_list=["lgbm"],
            time_budget=seconds,
            seed=seed,
            n_jobs=n_jobs,
            verbose=0,
        )
    out["flaml_seconds"] = round(time.perf_counter() - t1, 1)
    flaml_scores = automl.predict_proba(X_test)[:, 1] if task == "binary" else automl.predict(X_test)
    out["flaml"] = _score(task, y_test, flaml_scores)

    # LightGBM's defaults on train+valid
    est = (lgb.LGBMClassifier if task == "binary" else lgb.LGBMRegressor)(
        random_state=seed, verbosity=-1, n_jobs=n_jobs
    )
    est.fit(X_all, y_all)
    lgb_scores = est.predict_proba(X_test)[:, 1] if task == "binary" else est.predict(X_test)
    out["lgbm_defaults"] = _score(task, y_test, lgb_scores)
    for name, b in fitted.baselines.items():
        if name != "dummy":
            out[name] = _score(task, y_test, baseline_scores(b["estimator"], X_test, task))
    return out


def imbalance(rate: float, rows: int, seed: int) -> dict:
    """driftloop with train.class_weight auto vs none on a simulated table with ``rate`` positives."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from driftloop.config import Params
    from driftloop.data.simulate import simulate
    from driftloop.data.split import split
    from driftloop.data.validate import validate
    from driftloop.pipeline import _prepared, fold_keys
    from driftloop.train import train
    from driftloop.tune import tune

    raw = simulate(rows, seed=seed, default_rate=rate)
    out = {"rows": rows, "rate": rate, "seed": seed, "positives": int(raw["default"].sum())}
    for weighting in ("auto", "none"):
        params = Params.model_validate(C.derived_params({"base.seed": seed, "train.class_weight": weighting}))
        clean, _ = validate(raw, params, source="simulate")
        parts = split(clean, params, "binary")
        splits = {"train": parts["train"], "valid": parts["valid"]}
        t0 = time.perf_counter()
        _, enc, X_tr, y_tr, X_va, y_va = _prepared(params, splits)
        res = tune(X_tr, y_tr, X_va, y_va, "binary", 2, params, study_name="imb", **fold_keys(params, splits))
        cv = (res.metric, res.best_value) if "CV" in res.validation else None
        model = train(
            parts["train"], parts["valid"], params, "binary", res.lgb_params, refit_rounds=res.refit_rounds, tuned_cv=cv
        )
        y = model.model.encoder.encode(parts["test"]["default"])
        scores = model.model.predict_scores(parts["test"])
        out[weighting] = {
            "pr_auc": float(average_precision_score(y, scores)),
            "roc_auc": float(roc_auc_score(y, scores)),
            "scale_pos_weight": model.lgb_params.get("scale_pos_weight", 1.0),
            "class_weight": model.class_weight,
            "algorithm": model.model.algorithm,
            "seconds": round(time.perf_counter() - t0, 1),
            "trials": res.n_complete + res.n_pruned,
        }
    return out


COLUMNS = ["driftloop", "driftloop_no_refit", "flaml", "lgbm_defaults", "logistic", "ridge"]


def report(rows: list[dict]) -> str:
    lines = []
    head = f"{'table':<10}{'rows':>7} {'metric':<8}{'seed':>5}{'sec':>7}{'trials':>7}  " + "".join(
        f"{c:>20}" for c in COLUMNS
    )
    lines.append(head)
    for r in rows:
        metric = "ROC AUC" if r["task"] == "binary" else "RMSE"
        vals = "".join(f"{r[c]:>20.4f}" if c in r else f"{'':>20}" for c in COLUMNS)
        lines.append(
            f"{r['table']:<10}{r['rows']:>7} {metric:<8}{r['seed']:>5}{r['seconds']:>7.1f}{r['trials']:>7}  {vals}"
            f"  {r.get('algorithm', '')}"
        )
    lines.append("")
    lines.append("per table (mean over seeds): driftloop vs FLAML, vs the best of LightGBM defaults and the baselines")
    by_table: dict[str, list[dict]] = {}
    for r in rows:
        by_table.setdefault(r["table"], []).append(r)
    wins = 0
    for table, rs in by_table.items():
        higher = rs[0]["task"] == "binary"
        mean = {c: float(np.mean([r[c] for r in rs])) for c in COLUMNS if c in rs[0]}
        d, f = mean["driftloop"], mean["flaml"]
        gap = d - f if higher else (f - d) / f  # > 0: driftloop better (AUC points, or relative RMSE)
        ref = max if higher else min
        best_other = ref(mean[c] for c in ("lgbm_defaults", "logistic", "ridge") if c in mean)
        beats_ref = d >= best_other if higher else d <= best_other
        wins += gap >= 0
        unit = "AUC" if higher else "rel. RMSE"
        lines.append(
            f"  {table:<10} driftloop {d:.4f}  FLAML {f:.4f}  ({gap:+.4f} {unit})  refit {mean['driftloop']:.4f} vs "
            f"none {mean['driftloop_no_refit']:.4f};  best of defaults/baselines {best_other:.4f}: "
            f"{'met' if beats_ref else 'MISSED'}"
        )
    lines.append(f"driftloop >= FLAML on {wins}/{len(by_table)} tables")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables", default="cancer,diabetes,fair,randhie,sim5k,sim50k")
    ap.add_argument("--seeds", default="42,7")
    ap.add_argument("--trials", type=int, default=None, help="tune.n_trials (default: params.yaml's)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="a params override for driftloop, e.g. tune.cv_folds=0")
    ap.add_argument("--imbalance", default=None, help="positive rate(s), e.g. 0.01,0.03: class_weight auto vs none")
    ap.add_argument("--rows", type=int, default=20000, help="--imbalance: simulated rows")
    args = ap.parse_args()
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    m = C.machine()
    print(C.machine_line(m), flush=True)
    if args.imbalance:
        rows = []
        for rate in (float(x) for x in str(args.imbalance).split(",")):
            for s in args.seeds.split(","):
                r = imbalance(rate, args.rows, int(s))
                r["load"] = C.loadavg()
                rows.append(r)
                a, n = r["auto"], r["none"]
                tried = ", ".join(
                    f"{c['scale_pos_weight']:.3g}: {c['pr_auc']:.4f}" for c in a["class_weight"].get("candidates", [])
                )
                print(
                    f"rate {r['rate']}, {r['rows']} rows ({r['positives']} positives), seed {r['seed']}: PR AUC "
                    f"auto {a['pr_auc']:.4f} vs none {n['pr_auc']:.4f} ({a['pr_auc'] - n['pr_auc']:+.4f}); ROC AUC "
                    f"{a['roc_auc']:.4f} vs {n['roc_auc']:.4f}; scale_pos_weight {a['scale_pos_weight']} (held-out "
                    f"PR AUC {tried}); models {a['algorithm']} / {n['algorithm']}; {a['seconds']} s / "
                    f"{n['seconds']} s; load {r['load']}",
                    flush=True,
                )
        print("\nmean over seeds: rate, PR AUC auto vs none, ROC AUC auto vs none")
        for rate in sorted({r["rate"] for r in rows}):
            rs = [r for r in rows if r["rate"] == rate]
            mean = {
                k: {m: float(np.mean([r[k][m] for r in rs])) for m in ("pr_auc", "roc_auc")} for k in ("auto", "none")
            }
            print(
                f"  {rate}: PR AUC {mean['auto']['pr_auc']:.4f} vs {mean['none']['pr_auc']:.4f} "
                f"({mean['auto']['pr_auc'] - mean['none']['pr_auc']:+.4f}); ROC AUC {mean['auto']['roc_auc']:.4f} vs "
                f"{mean['none']['roc_auc']:.4f}  ({len(rs)} seeds)"
            )
        print(C.machine_line(C.machine()))
        C.write_json(args.json, {"machine": m, "imbalance": rows})
        return
    rows = []
    for table in args.tables.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = one(table, seed, args.trials, extra)
            r["load"] = C.loadavg()
            rows.append(r)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    print()
    print(report(rows))
    print(C.machine_line(C.machine()))
    C.write_json(args.json, {"machine": m, "rows": rows})


if __name__ == "__main__":
    main()
