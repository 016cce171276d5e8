"""Multiclass and regression targets from a CSV, through every stage with real MLflow, and the registered
model scoring raw rows of the original file."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_data_stages, run_model_stages, small_params, write_params

from driftloop import pipeline
from driftloop.config import load_params

pytestmark = pytest.mark.slow


def _csv(path, task: str, n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.uniform(-2, 2, size=n)
    region = rng.choice(["nörd", "süd", "east west"], size=n)
    df = pd.DataFrame(
        {
            "x 1": x1,
            'quote"d': x2,
            "région": region,
            "signup": pd.date_range("2024-01-01", periods=n, freq="h"),
            "flag": rng.random(n) > 0.5,
            "cnt": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        }
    )
    signal = np.sin(2 * x1) + x2**2 * (region == "süd") + 0.3 * rng.normal(size=n)
    if task == "multiclass":
        df["segment"] = np.select([signal < 0, signal < 1.2], ["bronze", "silver"], "gold")
    else:
        df["segment"] = 100 + 10 * signal
    df.to_csv(path, index=False)
    return df


@pytest.mark.parametrize("task, metric", [("multiclass", "macro_f1"), ("regression", "r2")])
def test_task_end_to_end_from_csv(tmp_path, monkeypatch, task, metric):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = _csv(tmp_path / "data.csv", task)
    write_params(
        tmp_path / "params.yaml",
        small_params(
            tmp_path,
            **{
                "ingest.source": "csv",
                "ingest.path": str(tmp_path / "data.csv"),
                "base.target": "segment",
                "validate.date_columns": ["signup"],
            },
        ),
    )
    p = load_params(tmp_path / "params.yaml")
    report = run_data_stages(p)
    assert report["task"] == task  # base.task: auto
    pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    result, reg = run_model_stages(p)
    assert result["test"][metric] > result["baselines"]["dummy"][metric] + 0.2
    assert reg["alias"] == "champion"
    model = mlflow.pyfunc.load_model("models:/driftloop@champion")
    pred = model.predict(pd.read_csv(tmp_path / "data.csv").head(20))  # raw rows of the original file
    if task == "multiclass":
        assert set(pred["prediction"]) <= {"bronze", "silver", "gold"}
        assert np.allclose(pred[[f"proba_{c}" for c in ("bronze", "gold", "silver")]].sum(axis=1), 1)
    else:
        assert np.corrcoef(pred["prediction"], raw["segment"].head(20))[0, 1] > 0.5
    assert json.loads((tmp_path / "reports/metrics.json").read_text())["task"] == task
