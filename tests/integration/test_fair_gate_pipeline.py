"""The fair gate and the recent drift reference through the real register stage (in-process stages, SQLite
MLflow): a retrain on old + new data re-split at random is judged only on rows neither model trained or
validated on, the audit of the alias move records those rows and the no-overlap check, and the new version's
drift reference is the data its predecessor never had."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import module_workdir, run_data_stages, run_model_stages, small_params, write_params

from driftloop import pipeline, tracking
from driftloop import register as reg
from driftloop.config import DriftParams, load_params
from driftloop.data.simulate import simulate

pytestmark = pytest.mark.slow

NEW_IDS = 50_000_000


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    work, mp = module_workdir(tmp_path_factory, "fairgate")
    write_params(
        work / "params.yaml",
        small_params(work, **{"tune.n_trials": 2, "simulate.n_rows": 4000, "monitor.reference_rows": 2000}),
    )
    p = load_params(work / "params.yaml")
    run_data_stages(p)
    pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    _, first = run_model_stages(p)
    # a labeled production batch (drifted), appended by ingest from ingest.labeled_dir
    batch = simulate(2000, 77, start_date="2025-02-01", months=1, drift=DriftParams(covariate_shift=1.5),
                     id_offset=NEW_IDS)  # fmt: skip
    Path(p.ingest.labeled_dir).mkdir(parents=True, exist_ok=True)
    batch.to_parquet(Path(p.ingest.labeled_dir) / "2025-02.parquet", index=False)
    run_data_stages(p)
    _, second = run_model_stages(p)
    yield p, tracking.connect(p), first, second
    mp.undo()


def _artifact(client, run_id: str, path: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(run_id, path, tmp))


def test_each_version_logs_its_lineage_keys(retrained):
    _, client, first, second = retrained
    for result in (first, second):
        keys = _artifact(client, result["run_id"], reg.SEEN_ROWS_ARTIFACT)
        assert set(keys["split"]) == {"trained", "test"} and keys["key"].is_unique
    assert first["decision"]["gate_rows"]["provenance"] == "the full test split"  # the first model: no champion


def test_the_retrain_is_gated_on_unseen_rows_and_the_audit_says_so(retrained):
    p, client, first, second = retrained
    test = pd.read_parquet("data/split/test.parquet")
    rows = second["decision"]["gate_rows"]
    assert rows["test_rows"] == len(test)
    assert rows["seen_by_champion"] > 0  # the random re-split put some of v1's training rows in the test split
    assert rows["rows"] == len(test) - rows["seen_by_champion"] == second["decision"]["test_rows"]
    assert rows["overlap_champion"] == 0 and rows["overlap_challenger"] == 0
    assert rows["champion_check"] == f"run {first['run_id']}: {reg.SEEN_ROWS_ARTIFACT}"
    # the committed audit record of the alias move carries the same evidence
    record = reg.gate_record(client, p, second["version"])
    assert record["evidence"]["gate_rows"] == rows
    mv = client.get_model_version(p.base.model_name, second["version"])
    assert json.loads(mv.tags["driftloop.gate"])["gate_rows"]["rows"] == rows["rows"]


def test_the_new_versions_drift_reference_is_the_data_since_its_predecessor(retrained):
    _, client, first, second = retrained
    ref1 = _artifact(client, first["run_id"], "reference/reference.parquet")
    ref2 = _artifact(client, second["run_id"], "reference/reference.parquet")
    new = pd.Timestamp("2025-02-01")  # the labeled batch's month; the initial data is 2024
    assert (pd.to_datetime(ref1["application_date"]) < new).all()
    assert (pd.to_datetime(ref2["application_date"]) >= new).all() and len(ref2) >= 1000
