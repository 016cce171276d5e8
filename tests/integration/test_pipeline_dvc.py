"""End to end: a tiny `dvc repro` with real DVC, MLflow (SQLite), Optuna and LightGBM."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import copy_project_files, run, small_params, write_params

pytestmark = pytest.mark.slow


def _lock_outs(proj) -> dict[str, str]:
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    return {o["path"]: o.get("md5") for st in lock["stages"].values() for o in st.get("outs", [])}


def _client(proj):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def test_repro_end_to_end_then_noop_then_partial(project):
    first = run(["dvc", "repro"], project)
    for path in (
        "data/raw.parquet",
        "data/split/test.parquet",
        "models/model.pkl",
        "reports/metrics.json",
        "reports/plots/roc.csv",
        "reports/plots/shap_summary.png",
        "reports/register.json",
    ):
        assert (project / path).exists(), path
    assert "version 1 -> @champion" in first.stdout

    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["task"] == "binary"
    assert metrics["test"]["roc_auc"] > metrics["baselines"]["dummy"]["roc_auc"] + 0.15
    assert set(metrics["test"]) >= {"roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1"}

    client = _client(project)
    mv = client.get_model_version_by_alias("driftloop", "champion")
    assert str(mv.version) == "1"
    # lineage: git commit, DVC hash of the training data, params hash
    outs = _lock_outs(project)
    assert mv.tags["driftloop.data.train.md5"] == outs["data/split/train.parquet"]
    assert len(mv.tags["driftloop.git_commit"]) == 40
    assert mv.tags["driftloop.params_hash"]
    # every trial is a nested run under the tune run
    tune_run = json.loads((project / "models/best_params.json").read_text())["tune_run_id"]
    trials = client.search_runs(
        [client.get_run(tune_run).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{tune_run}'"
    )
    assert len(trials) == 4
    assert all("optuna.state" in t.data.tags for t in trials)
    # the registered model scores raw rows of the original file
    import mlflow

    model = mlflow.pyfunc.load_model("models:/driftloop@champion")
    raw = pd.read_parquet(project / "data/raw.parquet").head(50)
    pred = model.predict(raw)
    assert list(pred.columns) == ["prediction", "proba_0", "proba_1"]
    assert pred["proba_1"].between(0, 1).all()

    # nothing changed: no stage runs
    second = run(["dvc", "repro"], project)
    assert "Running stage" not in second.stdout

    # tune.n_trials changed: tune and the stages after it rerun, not ingest/validate/split
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["tune"]["n_trials"] = 5
    write_params(project / "params.yaml", p)
    third = run(["dvc", "repro"], project)
    ran = {line.split("'")[1] for line in third.stdout.splitlines() if line.startswith("Running stage")}
    assert {"tune", "train"} <= ran
    assert not ran & {"ingest", "validate", "split"}
    # evaluate/register rerun only when the refit model differs (DVC compares the model's hash)
    versions = client.search_model_versions("name='driftloop'")
    assert len(versions) == (2 if "register" in ran else 1)
    if "register" in ran:  # the new version is @champion or @challenger, never unaliased
        assert client.get_model_version("driftloop", "2").aliases
    assert client.get_model_version_by_alias("driftloop", "champion")


def test_same_seed_same_data_hashes(tmp_path):
    """Two fresh projects with the same params produce the same data hashes in dvc.lock."""
    hashes = []
    for name in ("a", "b"):
        proj = tmp_path / name
        proj.mkdir()
        copy_project_files(proj)
        write_params(proj / "params.yaml", small_params(proj))
        run(["git", "init", "-q"], proj)
        run(["dvc", "init", "-q"], proj)
        run(["dvc", "repro", "split"], proj)
        hashes.append({k: v for k, v in _lock_outs(proj).items() if k.startswith("data/")})
    assert hashes[0] == hashes[1]
    assert len(hashes[0]) == 5


def test_bad_input_changes_nothing(project):
    run(["dvc", "repro"], project)
    client = _client(project)
    before = {
        "lock": (project / "dvc.lock").read_bytes(),
        "raw": (project / "data/raw.parquet").read_bytes(),
        "versions": [m.version for m in client.search_model_versions("name='driftloop'")],
        "champion": client.get_model_version_by_alias("driftloop", "champion").version,
    }
    bad = project / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5,6\n")  # no target column
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["ingest"].update(source="csv", path=str(bad))
    write_params(project / "params.yaml", p)
    res = run(["dvc", "repro"], project, check=False)
    assert res.returncode != 0
    assert "target column 'default'" in res.stderr + res.stdout
    assert str(bad) in res.stderr + res.stdout

    # an invalid params value fails before any work, naming the key and allowed values
    p["ingest"].update(source="simulate", path=None)
    p["base"]["task"] = "clasification"
    write_params(project / "params.yaml", p)
    res = run(["dvc", "repro"], project, check=False)
    assert res.returncode != 0
    assert "base.task" in res.stderr + res.stdout

    assert (project / "dvc.lock").read_bytes() == before["lock"]
    assert (project / "data/raw.parquet").read_bytes() == before["raw"]
    assert [m.version for m in client.search_model_versions("name='driftloop'")] == before["versions"]
    assert client.get_model_version_by_alias("driftloop", "champion").version == before["champion"]
