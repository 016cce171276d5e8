"""Registry gate in both directions, alias audit trail, resumable and shared Optuna studies,
SQL ingest — with real MLflow (SQLite), Optuna and PostgreSQL where needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import BIN, run_data_stages, run_model_stages, small_params, write_params

from driftloop import pipeline, tracking
from driftloop import register as reg
from driftloop.config import load_params
from driftloop.errors import DataError, RegistryError
from driftloop.tune import LGBM_DEFAULTS, LOW_COST_STARTS, fixed_params

pytestmark = pytest.mark.slow


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DRIFTLOOP_OPTUNA_STORAGE", raising=False)
    return tmp_path


def _params(workdir, **overrides):
    write_params(workdir / "params.yaml", small_params(workdir, **overrides))
    return load_params(workdir / "params.yaml")


def _data(p):
    run_data_stages(p)


def _train_and_register(p, **lgb_overrides) -> dict:
    tuned = {
        "lgb_params": {**fixed_params("binary", 2, p.tune, p.base.seed), **LGBM_DEFAULTS, **lgb_overrides},
        "tune_run_id": "",
    }
    with open("models_best.json", "w") as f:
        json.dump(tuned, f)
    return run_model_stages(p, "models_best.json")[1]


WEAK = {"num_leaves": 2, "learning_rate": 0.01, "feature_fraction": 0.4}


def test_gate_both_directions_and_audit_trail(workdir):
    p = _params(workdir)
    _data(p)
    client = tracking.connect(p)

    first = _train_and_register(p, **WEAK)
    assert (first["version"], first["alias"]) == ("1", "champion")
    assert "first model" in first["decision"]["reason"]

    better = _train_and_register(p)  # LightGBM defaults: clearly better than the weak stump model
    assert (better["version"], better["alias"]) == ("2", "champion")
    d = better["decision"]
    assert d["improvement"] > 0 and d["ci_low"] <= d["improvement"] <= d["ci_high"]
    assert d["champion_version"] == "1"

    worse = _train_and_register(p, **WEAK)  # worse than v2: challenger, the champion stays
    assert (worse["version"], worse["alias"]) == ("3", "challenger")
    assert worse["decision"]["improvement"] < 0
    assert str(client.get_model_version_by_alias("driftloop", "champion").version) == "2"
    mv2 = client.get_model_version("driftloop", "2")
    assert mv2.tags["driftloop.champion.previous_version"] == "1"
    assert json.loads(mv2.tags["driftloop.champion.evidence"])["metric"] == "roc_auc"

    # people: rollback to the version v2 replaced, then promote v2 again; each move is recorded
    assert reg.rollback(client, p, "bad release")["to_version"] == "1"
    assert str(client.get_model_version_by_alias("driftloop", "champion").version) == "1"
    assert reg.promote(client, p, "2", "fixed")["from_version"] == "1"
    with pytest.raises(RegistryError, match="no version 99"):
        reg.promote(client, p, "99", "typo")
    moves = reg.history(client, p)
    assert [m["action"] for m in moves[:3]] == ["manual_promote", "rollback", "gate"]
    assert moves[0]["reason"] == "fixed" and moves[0]["who"]


def test_min_improvement_blocks_small_gains(workdir):
    p = _params(workdir, **{"register.min_improvement": 0.5})
    _data(p)
    _train_and_register(p, **WEAK)
    second = _train_and_register(p)
    assert second["alias"] == "challenger"
    assert "does not reach register.min_improvement=0.5" in second["decision"]["reason"]


@pytest.mark.parametrize("num_threads", [1, 0], ids=["mlflow-beside-the-fits", "mlflow-in-line"])
def test_warm_start_tries_defaults_then_the_champion(workdir, num_threads):
    """Trials 0-1 are the cheap starting points, trial 2 LightGBM's defaults, trial 3 the current champion's
    parameters (looked up in MLflow while trial 0 fits when a core is free, before it otherwise), then the
    sampler; each trial is a nested run."""
    p = _params(workdir, **{"tune.n_trials": 5, "tune.num_threads": num_threads})
    _data(p)
    champion = {**LGBM_DEFAULTS, "num_leaves": 12, "learning_rate": 0.05, "min_child_samples": 40}
    _train_and_register(p, **champion)
    result = pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    client = tracking.connect(p)
    runs = client.search_runs(
        [client.get_run(result["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'",
    )
    by_number = {int(r.data.tags["optuna.trial_number"]): r.data.params for r in runs}
    assert sorted(by_number) == [0, 1, 2, 3, 4]
    for number, expected in enumerate([*LOW_COST_STARTS, LGBM_DEFAULTS, champion]):
        tried = {k: float(v) for k, v in by_number[number].items() if k in LGBM_DEFAULTS}  # not scale_pos_weight
        assert tried == {k: float(v) for k, v in expected.items()}


def test_file_backed_study_resumes(workdir):
    journal = workdir / "optuna" / "study.journal"
    p = _params(workdir, **{"tune.storage": str(journal), "tune.n_trials": 3})
    _data(p)
    first = pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    assert first["n_complete"] + first["n_pruned"] == 3
    assert journal.exists()

    p = _params(workdir, **{"tune.storage": str(journal), "tune.n_trials": 5})
    second = pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    assert second["study_name"] == first["study_name"]
    assert second["n_complete"] + second["n_pruned"] == 5  # continued: 2 new trials, not 5
    client = tracking.connect(p)
    children = client.search_runs(
        [client.get_run(second["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{second['mlflow_run_id']}'",
    )
    assert len(children) == 2
    assert second["best_value"] >= first["best_value"]


@pytest.mark.postgres
def test_sql_ingest_from_postgres(workdir, pg_url, unique_name):
    import sqlalchemy as sa

    from driftloop.data.simulate import simulate

    df = simulate(1500, 3).rename(columns={"annual_income": "annual income ($)", "state": "état"})
    engine = sa.create_engine(pg_url)
    df.astype({c: object for c in df.select_dtypes("category").columns}).to_sql(unique_name, engine, index=False)
    try:
        p = _params(
            workdir, **{"ingest.source": "sql", "ingest.sql": {"url": pg_url, "table": unique_name, "query": None}}
        )
        out = pipeline.run_ingest(p, "data/raw.parquet")
        assert out["rows"] == 1500
        raw = pd.read_parquet("data/raw.parquet")
        assert {"annual income ($)", "état", "default"} <= set(raw.columns)
        p = _params(
            workdir,
            **{
                "ingest.source": "sql",
                "ingest.sql": {
                    "url": pg_url,
                    "query": f'SELECT * FROM "{unique_name}" WHERE "default" = 1',
                    "table": None,
                },
            },
        )
        with pytest.raises(DataError, match="at least two classes"):
            pipeline.run_ingest(p, "data/raw.parquet")
        assert len(pd.read_parquet("data/raw.parquet")) == 1500  # the failed ingest left the data alone
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{unique_name}"'))
        engine.dispose()


def test_unreachable_sql_url_is_a_clear_error(workdir):
    url = "postgresql+psycopg://driftloop:s3cret@127.0.0.1:1/nowhere"
    p = _params(workdir, **{"ingest.source": "sql", "ingest.sql": {"url": url, "table": "loans", "query": None}})
    with pytest.raises(DataError) as exc:
        pipeline.run_ingest(p, "data/raw.parquet")
    assert "cannot connect" in str(exc.value) and "127.0.0.1:1" in str(exc.value)
    assert "s3cret" not in str(exc.value)
    assert not (workdir / "data/raw.parquet").exists()


@pytest.mark.postgres
def test_parallel_workers_share_one_postgres_study(workdir, pg_url):
    import optuna

    p = _params(workdir, **{"tune.storage": pg_url, "tune.n_trials": 6})
    _data(p)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "driftloop.cli", "tune-worker", "--split-dir", "data/split"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    name = pipeline.study_name(p, workdir / "data/split/train.parquet")
    try:
        study = optuna.load_study(study_name=name, storage=pg_url)
        finished = [t for t in study.trials if t.state.is_finished()]
        assert 6 <= len(finished) <= 7  # MaxTrialsCallback stops both workers at the shared budget
        # the tune stage on the same storage finds the study complete and runs nothing more
        result = pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
        assert result["n_complete"] + result["n_pruned"] == len(finished)
    finally:
        optuna.delete_study(study_name=name, storage=pg_url)
