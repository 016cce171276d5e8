"""The fair gate: champion and challenger are compared only on test rows neither trained or validated on.

The leaking case of issue 12: a retrain re-splits old + new data at random, so part of the new test split is
rows the champion trained on. There the champion looks better than it is; on unseen rows (and on the future)
the challenger, trained on the drifted data too, is better. Real LightGBM models, real splits, in-process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop import register as reg
from driftloop.config import DriftParams, Params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.evaluate import metric_value
from driftloop.train import train

LGB = {
    "objective": "binary",
    "num_leaves": 127,
    "min_data_in_leaf": 3,
    "learning_rate": 0.05,
    "verbose": -1,
    "seed": 0,
    "num_threads": 1,
}
DRIFT = DriftParams(concept_drift=1.5, covariate_shift=1.0)


def _params(seed: int = 42) -> Params:
    return Params.model_validate(
        {
            "base": {"seed": seed},
            "register": {"n_bootstrap": 200},
            "tune": {"max_rounds": 300, "early_stopping_rounds": 30, "num_threads": 1},
            "train": {"candidates": []},  # the scenarios are LightGBM models (a linear one memorizes nothing)
        }
    )


def _auc(model, df: pd.DataFrame) -> float:
    return metric_value("binary", "roc_auc", model.encoder.encode(df["default"]), model.predict_scores(df))


@pytest.fixture(scope="module")
def leak():
    """Champion on old data; challenger on a random re-split of old + drifted data (another split seed)."""
    old = simulate(5000, 1, start_date="2024-01-01", months=6)
    new = simulate(3000, 2, start_date="2024-07-01", months=1, drift=DRIFT, id_offset=1_000_000)
    future = simulate(3000, 3, start_date="2024-08-01", months=1, drift=DRIFT, id_offset=2_000_000)
    p0, p1 = _params(42), _params(7)
    s0 = split(old, p0, "binary")
    champion = train(s0["train"], s0["valid"], p0, "binary", LGB).model
    s1 = split(pd.concat([old, new], ignore_index=True), p1, "binary")
    challenger = train(s1["train"], s1["valid"], p1, "binary", LGB).model
    # a truly worse challenger: the same rows, but 70 % of their labels shuffled
    rng = np.random.default_rng(0)

    def noisy(df: pd.DataFrame) -> pd.DataFrame:
        y = df["default"].to_numpy().copy()
        idx = rng.choice(len(y), int(0.7 * len(y)), replace=False)
        y[idx] = rng.permutation(y[idx])
        return df.assign(default=y)

    worse = train(noisy(s1["train"]), noisy(s1["valid"]), p1, "binary", LGB).model
    return {
        "champion": champion,
        "challenger": challenger,
        "worse": worse,
        "test": s1["test"],
        "future": future,
        "champion_seen": reg.SeenRows.of([s0["train"], s0["valid"]], "champion run: lineage/seen_rows.parquet"),
        "challenger_seen": reg.SeenRows.of([s1["train"], s1["valid"]], "this run's train+valid splits"),
        "params": p0,
    }


def test_the_random_resplit_leaks_and_biases_the_old_gate(leak):
    champion, test = leak["champion"], leak["test"]
    seen = leak["champion_seen"].overlap(test)
    assert 0.2 < seen.mean() < 0.6  # a good part of the test rows were the champion's training rows
    # the champion scores far better on the rows it memorized than on the rest: the leak
    assert _auc(champion, test[seen]) > _auc(champion, test[~seen]) + 0.05
    # the challenger is truly better: on the next month (all unseen) by a clear margin
    assert _auc(leak["challenger"], leak["future"]) > _auc(champion, leak["future"]) + 0.02
    # judged on the whole test split (no lineage keys), the gate keeps the old model
    d = reg.decide(leak["challenger"], champion, "1", test, leak["params"])
    assert d.decision != reg.PROMOTED
    assert "may favour it" in d.gate_rows["provenance"] or d.gate_rows["rows"] == len(test)


def test_the_fair_gate_promotes_the_truly_better_challenger_on_unseen_rows_only(leak):
    test = leak["test"]
    d = reg.decide(
        leak["challenger"],
        leak["champion"],
        "1",
        test,
        leak["params"],
        champion_seen=leak["champion_seen"],
        challenger_seen=leak["challenger_seen"],
    )
    assert d.decision == reg.PROMOTED and d.alias == reg.CHAMPION
    assert d.ci_low > 0  # significantly better on the unseen rows
    rows = d.gate_rows
    n_seen = int(leak["champion_seen"].overlap(test).sum())
    assert rows["test_rows"] == len(test) and rows["seen_by_champion"] == n_seen
    assert rows["seen_by_challenger"] == 0  # the split never puts a training row in test
    assert rows["rows"] == d.test_rows == len(test) - n_seen
    assert rows["overlap_champion"] == 0 and rows["overlap_challenger"] == 0  # the no-overlap check
    assert "champion run" in rows["champion_check"] and "neither" not in rows["provenance"]
    # the audit carries it: the evidence of the alias move is Decision.to_dict()
    assert d.to_dict()["gate_rows"]["rows"] == rows["rows"]


def test_the_fair_gate_keeps_the_champion_against_a_truly_worse_challenger(leak):
    assert _auc(leak["worse"], leak["future"]) < _auc(leak["champion"], leak["future"]) - 0.02
    d = reg.decide(
        leak["worse"],
        leak["champion"],
        "1",
        leak["test"],
        leak["params"],
        champion_seen=leak["champion_seen"],
        challenger_seen=leak["challenger_seen"],  # the same rows as the clean challenger's train+valid
    )
    assert d.decision == reg.NOT_BETTER and d.alias == reg.CHALLENGER
    assert d.gate_rows["overlap_champion"] == 0


def test_no_unseen_row_is_insufficient_evidence_and_a_schema_change_is_recorded(leak):
    seen_rows = leak["test"][leak["champion_seen"].overlap(leak["test"])]
    d = reg.decide(
        leak["challenger"], leak["champion"], "1", seen_rows, leak["params"], champion_seen=leak["champion_seen"]
    )
    assert d.decision == reg.INSUFFICIENT_EVIDENCE and d.alias == reg.CHALLENGER
    assert "unseen by both models" in d.reason
    # the champion's key columns are not all in the test split: the check cannot be made, and the audit says so
    lost = reg.SeenRows(leak["champion_seen"].keys, [*leak["champion_seen"].columns, "gone"], "old run")
    keep, audit = reg.unseen_rows(leak["test"], lost, leak["challenger_seen"])
    assert keep.all() and audit["seen_by_champion"] is None
    assert "lacks its key columns" in audit["champion_check"] and "may favour it" in audit["provenance"]


def test_lineage_keys_ignore_dtype_changes_between_runs():
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [True, False, True]})
    other = df.astype({"a": "float64", "b": "category"})
    assert (reg.lineage_keys(df, ["a", "b", "c"]) == reg.lineage_keys(other, ["a", "b", "c"])).all()
    assert len(set(reg.lineage_keys(df, ["a", "b", "c"]))) == 3
