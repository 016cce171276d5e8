"""After a retrain the drift reference is the new model's recent training data (the rows the previous champion
never saw), so drift the model has absorbed stops warning; real splits, real Evidently."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop import register as reg
from driftloop.config import DriftParams, Params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.features import Preprocessor
from driftloop.monitor import data_drift
from driftloop.pipeline import drift_reference

DRIFT = DriftParams(covariate_shift=1.5)


@pytest.fixture(scope="module")
def retrain():
    p = Params.model_validate({"monitor": {"reference_rows": 3000, "reference_min_rows": 500}})
    old = simulate(6000, 1, start_date="2024-01-01", months=6)
    new = simulate(2500, 2, start_date="2024-07-01", months=1, drift=DRIFT, id_offset=1_000_000)
    s0 = split(old, p, "binary")
    s1 = split(pd.concat([old, new], ignore_index=True), p, "binary")
    seen0 = reg.SeenRows.of([s0["train"], s0["valid"]], "champion", s0["test"])
    return p, s0, s1, seen0


def test_first_model_and_all_take_a_sample_of_all_training_rows(retrain):
    p, s0, s1, seen0 = retrain
    first = drift_reference(p, s0["train"], None)
    assert len(first) == 3000 and first.index.isin(s0["train"].index).all()
    every = drift_reference(p.model_copy(update={"monitor": p.monitor.model_copy(update={"reference": "all"})}),
                            s1["train"], seen0)  # fmt: skip
    assert (every["application_id"] < 1_000_000).mean() > 0.6  # mostly the old data


def test_after_a_retrain_the_reference_is_the_absorbed_drift_and_stops_warning(retrain):
    p, s0, s1, seen0 = retrain
    recent = drift_reference(p, s1["train"], seen0)
    assert (recent["application_id"] >= 1_000_000).all()  # only rows that were not in the old champion's data
    assert len(recent) == int((s1["train"]["application_id"] >= 1_000_000).sum())
    # the next month drifts on like the triggering one: against the old reference it warns, not any more
    nxt = simulate(2500, 3, start_date="2024-08-01", months=1, drift=DRIFT, id_offset=2_000_000)
    contract = Preprocessor(p.features).fit(s1["train"].drop(columns=["default"])).contract("default", "binary")
    old_ref = drift_reference(p, s1["train"], None).pipe(lambda d: d[d["application_id"] < 1_000_000])
    before = data_drift(old_ref, nxt, contract, p.monitor, 0)
    after = data_drift(recent, nxt, contract, p.monitor, 0)
    assert before.drift_share >= p.monitor.drift_share_warn
    assert after.drift_share < p.monitor.drift_share_warn


def test_lineage_keys_round_trip_through_their_artifact_frame(retrain):
    _, s0, _, seen0 = retrain
    again = reg.SeenRows.from_frame(seen0.to_frame(), seen0.columns, "artifact")
    assert (again.keys == seen0.keys).all() and (again.tested == seen0.tested).all()
    assert again.overlap(s0["test"]).sum() == 0 and again.overlap(s0["test"], known=True).all()


def test_too_few_new_rows_fall_back_to_all(retrain):
    p, s0, _, seen0 = retrain
    new = simulate(100, 9, start_date="2024-07-01", months=1, id_offset=3_000_000)
    few = pd.concat([s0["train"], new], ignore_index=True)  # 100 rows the champion never saw
    ref = drift_reference(p, few, seen0)
    assert len(ref) == 3000
