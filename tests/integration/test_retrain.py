"""A retraining run that fails changes nothing (real DVC, MLflow): the labeled batch is withdrawn,
``dvc.lock`` and the pipeline's outputs are restored, the registry is untouched, and the next run does
not meet the batch again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import BIN, dvc_clean, run

from driftloop import loop, pipeline, tracking
from driftloop.config import load_params
from driftloop.data.simulate import simulate
from driftloop.errors import DataError

pytestmark = pytest.mark.slow

OUTPUTS = (
    "dvc.lock",
    "data/raw.parquet",
    "data/validated.parquet",
    "data/split/train.parquet",
    "reports/validation.json",
    "models/model.pkl",
    "reports/metrics.json",
)


def _state(proj: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    return {
        "files": {p: hashlib.md5((proj / p).read_bytes()).hexdigest() for p in OUTPUTS},
        "labeled": sorted(p.name for p in (proj / "data/labeled").iterdir()),
        "versions": sorted(int(v.version) for v in client.search_model_versions("name = 'driftloop'")),
        "aliases": dict(client.get_registered_model("driftloop").aliases),
    }


def client_champion(params) -> str:
    return str(tracking.connect(params).get_model_version_by_alias(params.base.model_name, "champion").version)


def _batch(seed: int = 5):
    return simulate(1500, seed, start_date="2025-02-01", months=1)


def test_a_failed_retraining_is_rolled_back(project, monkeypatch, capfd):
    run(["driftloop", "run"], project)
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))  # DVC runs `driftloop <stage>`
    params = load_params("params.yaml")
    before = _state(project)
    assert before["versions"] == [1] and before["aliases"] == {"champion": 1}

    # 1. the batch lacks a column: ingest rejects it, naming the batch and the column
    with pytest.raises(Exception, match="ingest"):
        pipeline.retrain_on(params, "2025-02", _batch().drop(columns=["credit_score"]), project=".")
    assert _state(project) == before

    # 2. a good batch, but the MLflow store is unreachable: ingest, validate and split succeed with the
    # batch (dvc.lock and their outputs change), then tune fails: all of it is put back
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'params.yaml' / 'mlflow.db'}")  # not a dir
    with pytest.raises(Exception, match="tune"):
        pipeline.retrain_on(params, "2025-03", _batch(6), project=".")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert _state(project) == before
    status = run(["dvc", "status"], project)
    assert dvc_clean(status.stdout), status.stdout

    # 3. the same batch once the store is back: retraining works, and only then is the batch kept, under its
    # unique id (label + content hash), with its outcome
    result = pipeline.retrain_on(params, "2025-03", _batch(6), project=".")
    assert result["registered"]
    bid = loop.make_batch_id("2025-03", _batch(6))
    assert result["batch_id"] == bid and bid.startswith("2025-03-")
    assert result["retrain"]["status"] == "registered" and result["retrain"]["version"] == "2"
    outcome, champion = result["retrain"], client_champion(params)
    assert outcome["champion_version"] == champion  # the working tree says which version it holds
    assert outcome["working_tree"].startswith("models/ and reports/metrics.json hold version 2")
    assert ("(@champion)" in outcome["working_tree"]) == (champion == "2") == outcome["promoted"]
    after = _state(project)
    assert after["labeled"] == sorted([*before["labeled"], f"{bid}.parquet", f"{bid}.parquet.dvc", ".gitignore"])
    assert after["versions"] == [1, 2]
    assert not loop.intent_path(project).exists()


def test_labeled_batches_never_collide_nor_are_overwritten(project, monkeypatch):
    """`A/2025-03.parquet` and `B/2025-03.parquet` are two batches (two files); the same rows twice are refused."""
    monkeypatch.chdir(project)
    params = load_params("params.yaml")
    a, b = _batch(7), _batch(8)
    pa = loop.add_labeled_batch(params, "2025-03", a, ".")
    pb = loop.add_labeled_batch(params, "2025-03", b, ".")
    assert pa != pb and pa.exists() and pb.exists()
    assert pa.with_name(pa.name + ".dvc").exists() and pb.with_name(pb.name + ".dvc").exists()
    with pytest.raises(DataError, match="already in the training data"):
        loop.add_labeled_batch(params, "2025-03", a.copy(), ".")
    dots = loop.add_labeled_batch(params, "..", _batch(9).head(50), ".")  # a file named `...csv`
    assert dots.resolve().parent == (project / "data/labeled").resolve() and dots.name.startswith("batch-")


def test_every_labeled_batch_joins_the_training_data_not_only_the_triggering_ones(project, monkeypatch):
    """retrain.keep_labeled_batches: an ok or warn batch (a retrain held back by the cooldown is a warn) with labels
    becomes a DVC data version; a schema violation, an unlabeled batch or the setting off keep nothing."""
    monkeypatch.chdir(project)
    params = load_params("params.yaml")
    labeled = project / "data/labeled"

    def result(status, df):
        return {"status": status, "batch_id": loop.make_batch_id(f"2025-{status}", df)}

    ok, warn = _batch(11), _batch(12)
    r_ok, r_warn = result("ok", ok), result("warn", warn)
    kept = loop.keep_labeled_batch(params, r_ok, ok, ".")
    assert kept.exists() and kept.with_name(kept.name + ".dvc").exists() and r_ok["labeled_batch"]["kept"]
    assert loop.keep_labeled_batch(params, r_warn, warn, ".").exists()
    assert loop.keep_labeled_batch(params, r_ok, ok, ".") == kept  # idempotent: monitored twice, kept once
    bad, unlabeled = _batch(13), _batch(14).drop(columns=["default"])
    assert loop.keep_labeled_batch(params, result("schema_violation", bad), bad, ".") is None
    r_un = result("ok", unlabeled)
    assert loop.keep_labeled_batch(params, r_un, unlabeled, ".") is None and not r_un["labeled_batch"]["kept"]
    off = params.model_copy(update={"retrain": params.retrain.model_copy(update={"keep_labeled_batches": False})})
    other = _batch(15)
    assert loop.keep_labeled_batch(off, result("ok", other), other, ".") is None
    assert len(list(labeled.glob("*.parquet"))) == 2
    # the ingest stage reads them: the next retrain trains on both
    from driftloop.data.ingest import labeled_batches

    assert len(labeled_batches(params)) == 2


def test_a_retrain_gets_the_smaller_budget_and_the_training_data_setting(project, monkeypatch):
    """retrain.n_trials applies once a champion exists; retrain.training_data reaches the tune and train runs."""
    import json

    import yaml

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["retrain"].update(n_trials=2, training_data="recency", half_life_days=60)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(["driftloop", "run"], project)
    first = json.loads((project / "reports/tune.json").read_text())
    assert first["n_complete"] + first["n_pruned"] == p["tune"]["n_trials"]  # no champion yet: the full budget
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # an earlier test in this process may set it
    params = load_params("params.yaml")
    loop.add_labeled_batch(params, "2025-02", _batch(21), ".")
    run(["driftloop", "run"], project)
    second = json.loads((project / "reports/tune.json").read_text())
    assert second["n_complete"] + second["n_pruned"] == 2  # a retrain: warm start + retrain.n_trials
    client = tracking.connect(params)
    info = json.loads((project / "models/run.json").read_text())
    logged = client.get_run(info["run_id"]).data.params
    assert logged["training_data.training_data"] == "recency"
    assert logged["training_data.time_column"] == "application_date"  # the data's one datetime column
    assert float(logged["training_data.effective_rows_train"]) < float(logged["rows.train"])
    tune_params = client.get_run(info["tune_run_id"]).data.params
    assert tune_params["n_trials"] == "2" and tune_params["training_data.training_data"] == "recency"


def test_a_retrain_after_concept_drift_is_adapted_and_says_why(project, monkeypatch):
    """retrain.adapt (real DVC, MLflow): with a time split that fits half of the newest period, the retrain after a
    concept-drifted batch revises the older model on it; the train run, its evidence and the model record it."""
    import json

    import yaml

    from driftloop.config import DriftParams

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["split"].update(time_column="application_date", test_size=0.25, valid_size=0.1, time_test_share=0.5)
    p["retrain"].update(n_trials=2, adapt_min_rows=300)
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run(["driftloop", "run"], project)
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = load_params("params.yaml")
    client = tracking.connect(params)

    def train_run():
        info = json.loads((project / "models/run.json").read_text())
        return info["run_id"], client.get_run(info["run_id"]).data.params

    run_id, logged = train_run()
    assert logged["adapted"] == "False"  # the first model: no change in P(y | x) within 2024, the plain model
    drifted = simulate(1500, 21, start_date="2025-02-01", months=1, drift=DriftParams(concept_drift=1.0))
    loop.add_labeled_batch(params, "2025-02", drifted, ".")
    run(["driftloop", "run"], project)
    run_id, logged = train_run()
    assert logged["adapted"] == "True"
    evidence = json.loads(Path(client.download_artifacts(run_id, "adaptation.json", str(project))).read_text())
    assert evidence["adopted"] and evidence["z"] >= 1.645 and evidence["rows"] >= 300
    assert evidence["log_loss_revised_oof"] < evidence["log_loss_base"]
    model = pipeline.load_pickle(project / "models/model.pkl")
    assert model.revised and model.to_dict()["adaptation"]["delta"]  # the record travels in model.json
