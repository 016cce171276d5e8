"""What one drifted month can buy: retraining strategies side by side, against never retraining and the oracle
(issue 12's recovery target, ≥ 80 % of the never → oracle gap in the month after the first retrain).

Plain LightGBM with fixed parameters (as ``bench_judgment.py``'s recovery part), so that only the strategy differs.
Per seed: a champion on ``--old-rows`` pre-drift rows (simulator months 1-6); per drift kind (covariate shift,
concept drift; magnitude 1) one drifted month of ``--new-rows`` rows joins them; quality is read on the month after
(``--new-rows`` rows); the oracle is trained on ``--oracle-rows`` post-drift rows. Every strategy splits at random
60/20/20, early-stops on the validation rows and is refit on train + valid with the rounds × 1.25 (as driftloop's
``train.refit``). Strategies:

- ``all``: old + new rows, equal weights (driftloop's ``retrain.training_data: all``);
- ``new x0.5``: the new rows weighted up to half the total weight;
- ``regime``: ``all`` plus a 0/1 column "row is from the new month", scored with 1 (the trees may split on the
  regime: driftloop's date parts can play that role);
- ``regime, regularized``: the same with 15 leaves, 50 rows a leaf, L2 5 (what tuning on the new rows could pick);
- ``new only``: the drifted month alone;
- ``continued``: the champion's trees continued on the new rows (LightGBM ``init_model``);
- ``ensemble``: the sum of the raw scores of ``regime`` and ``new only``;
- ``revised``: the champion's per-feature path contributions re-weighted on the new rows (``driftloop.adapt``:
  model revision, the penalty chosen by 5-fold CV);
- ``revised + all``: the mean log-odds of ``revised`` and ``all`` (driftloop's ``retrain.adapt: revise``, which
  revises the model fitted on the older rows when the revision is adopted; here it always is).

Gap closed = (strategy - never) / (oracle - never), per seed and kind, then averaged.

Usage::

    .venv/bin/python benchmarks/bench_adaptation.py --seeds 5                    # ~1-2 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_adaptation.py --seeds 5 --new-rows 9000    # three drifted months
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, machine_line, write_json  # noqa: E402
from bench_judgment import LGB  # noqa: E402  (the same fixed LightGBM parameters as the judgment's recovery part)

TARGET, ID, NEW = "default", "application_id", "_new"
REGULARIZED = {**LGB, "num_leaves": 15, "min_data_in_leaf": 50, "lambda_l2": 5.0}
KINDS = {"covariate": {"covariate_shift": 1.0}, "concept": {"concept_drift": 1.0}}


def _month(rows: int, seed: int, month: int, drift: dict):
    from driftloop.config import DriftParams
    from driftloop.data.simulate import simulate

    d = DriftParams(**drift) if drift else None
    df = simulate(rows, seed, start_date=f"2024-{month:02d}-01", months=1, drift=d, id_offset=seed * 100_000 + month)
    return df.drop(columns=[ID])


def _xy(df):
    import pandas as pd

    X = df.drop(columns=[TARGET]).select_dtypes(exclude=["datetime", "datetimetz"])
    X = X.apply(lambda c: c.astype("category") if c.dtype == object else c)
    return pd.DataFrame(X), df[TARGET].astype(int).to_numpy()


def _split(df, seed: int):
    import numpy as np

    idx = np.random.default_rng(seed).permutation(len(df))
    n = len(df)
    return df.iloc[idx[int(0.4 * n) :]], df.iloc[idx[int(0.2 * n) : int(0.4 * n)]], df.iloc[idx[: int(0.2 * n)]]


def _fit(train, valid, seed: int, params=LGB, weight=None, valid_weight=None, init=None):
    """Early stopping on ``valid``, then the refit on train + valid with the new rounds x 1.25."""
    import lightgbm as lgb
    import numpy as np
    import pandas as pd

    (Xt, yt), (Xv, yv) = _xy(train), _xy(valid)
    p = {**params, "seed": seed}
    dt = lgb.Dataset(Xt, yt, weight=weight, free_raw_data=False)
    dv = lgb.Dataset(Xv, yv, weight=valid_weight, reference=dt)
    stop = [lgb.early_stopping(30, verbose=False)]
    b = lgb.train(p, dt, 1000, valid_sets=[dv], init_model=init, callbacks=stop)
    rounds = max(1, round((b.best_iteration - (init.current_iteration() if init else 0)) * 1.25))
    w = None if weight is None else np.concatenate([weight, valid_weight])
    return lgb.train(p, lgb.Dataset(pd.concat([Xt, Xv]), np.concatenate([yt, yv]), weight=w), rounds, init_model=init)


def _raw(model, df):
    return model.predict(_xy(df)[0], raw_score=True)


def _auc(model, df) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(_xy(df)[1], _raw(model, df)))


def _up(is_new, share: float = 0.5):
    """Weights giving the new rows ``share`` of the total weight."""
    import numpy as np

    n_new = int(is_new.sum())
    w = np.ones(len(is_new))
    w[is_new] = share / (1 - share) * (len(is_new) - n_new) / max(n_new, 1)
    return w


def run(args) -> list[dict]:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from driftloop.adapt import PathTables, fit_revision
    from driftloop.data.simulate import simulate

    rows = []
    for seed in range(args.seeds):
        old = simulate(args.old_rows, 1000 + seed, start_date="2024-01-01", months=6).drop(columns=[ID])
        o_train, o_valid, _ = _split(old, seed)
        champion = _fit(o_train, o_valid, seed)
        for kind, drift in KINDS.items():
            new = _month(args.new_rows, 2000 + seed, 7, drift)
            after = _month(args.rows_after, 3000 + seed, 8, drift)
            o_tr, o_va, _ = _split(_month(args.oracle_rows, 4000 + seed, 7, drift), seed)
            oracle = _fit(o_tr, o_va, seed)
            both = pd.concat([old.assign(**{NEW: 0}), new.assign(**{NEW: 1})], ignore_index=True)
            tr, va, _ = _split(both, seed + 1)  # the gate's test rows (20 %) are left out, as in the loop
            n_tr, n_va = tr[NEW].to_numpy() == 1, va[NEW].to_numpy() == 1
            plain = (tr.drop(columns=NEW), va.drop(columns=NEW))
            flagged = after.assign(**{NEW: 1})
            row = {"seed": seed, "kind": kind, "never": _auc(champion, after), "oracle": _auc(oracle, after)}
            all_rows = _fit(*plain, seed)
            row["all"] = _auc(all_rows, after)
            row["new x0.5"] = _auc(_fit(*plain, seed, weight=_up(n_tr), valid_weight=_up(n_va)), after)
            regime = _fit(tr, va, seed)
            row["regime"] = _auc(regime, flagged)
            row["regime, regularized"] = _auc(_fit(tr, va, seed, params=REGULARIZED), flagged)
            new_only = _fit(plain[0][n_tr], plain[1][n_va], seed)
            row["new only"] = _auc(new_only, after)
            row["continued"] = _auc(_fit(plain[0][n_tr], plain[1][n_va], seed, init=champion), after)
            y_after = _xy(after)[1]
            row["ensemble"] = float(roc_auc_score(y_after, _raw(regime, flagged) + _raw(new_only, after)))
            X_new, y_new = _xy(pd.concat([plain[0][n_tr], plain[1][n_va]]))
            paths = PathTables.of(champion)  # the champion's path contributions, as driftloop.adapt revises them
            revision, _ = fit_revision(paths.contributions(champion, X_new), y_new, seed)
            revised = revision.raw(paths.contributions(champion, _xy(after)[0]))
            row["revised"] = float(roc_auc_score(y_after, revised))
            row["revised + all"] = float(roc_auc_score(y_after, revised + _raw(all_rows, after)))
            rows.append(row)
        print(f"  seed {seed} done  [load {machine()['loadavg']}]", flush=True)
    return rows


STRATEGIES = (
    "all",
    "new x0.5",
    "regime",
    "regime, regularized",
    "new only",
    "continued",
    "ensemble",
    "revised",
    "revised + all",
)


def report(rows: list[dict]) -> dict:
    import pandas as pd

    df = pd.DataFrame(rows)
    out = {}
    print(
        f"\n{'strategy':<22} {'covariate':>10} {'concept':>10} {'both':>8}   (share of the never -> oracle gap closed)"
    )
    for s in STRATEGIES:
        gap = (df[s] - df["never"]) / (df["oracle"] - df["never"])
        by = gap.groupby(df["kind"]).mean()
        out[s] = {"covariate": by["covariate"], "concept": by["concept"], "mean": gap.mean()}
        print(f"{s:<22} {by['covariate']:>10.0%} {by['concept']:>10.0%} {gap.mean():>8.0%}")
    for kind in KINDS:
        k = df[df["kind"] == kind]
        print(f"{kind}: never {k['never'].mean():.4f}, oracle {k['oracle'].mean():.4f}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--old-rows", type=int, default=8000, help="pre-drift rows the champion trains on")
    ap.add_argument("--new-rows", type=int, default=3000, help="drifted rows the retrain adds (one month)")
    ap.add_argument("--rows-after", type=int, default=3000, help="rows of the month where quality is read")
    ap.add_argument("--oracle-rows", type=int, default=20000, help="post-drift rows the oracle trains on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    m = machine()
    print(f"bench_adaptation: {machine_line(m)}", flush=True)
    rows = run(args)
    summary = report(rows)
    write_json(args.json, {"machine": m, "args": vars(args) | {"json": None}, "rows": rows, "gap_closed": summary})


if __name__ == "__main__":
    main()
