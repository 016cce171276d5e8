"""``driftloop serve`` as a real process (the Dockerfile's entrypoint) hit over HTTP with httpx: hot swap after
``driftloop promote`` / ``rollback`` in other processes, graceful shutdown on SIGTERM with the prediction log
flushed and every logged row attributed to the version that answered; and the agreement of pyfunc, ``driftloop
score``, ``driftloop serve`` and ``mlflow models serve`` on the same rows. Real SQLite MLflow registry."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import (
    BIN,
    fit_model,
    free_port,
    module_workdir,
    register_model,
    run,
    server_output,
    small_params,
    start_server,
    stop_server,
    write_params,
)

from driftloop import artifacts, tracking
from driftloop.config import load_params
from driftloop.data.simulate import simulate
from driftloop.serve import predlog

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DRIFTLOOP_SERVE_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two registered versions (different data), @champion = 1, params.yaml for the child processes."""
    work, mp = module_workdir(tmp_path_factory, "serve-process")
    raw = small_params(work)
    raw["tune"].update(max_rounds=30, early_stopping_rounds=10, num_threads=1)
    raw["train"]["baselines"] = []
    raw["serve"].update(poll_interval_s=0.3, log_flush_s=0.3, log_dir=str(work / "predictions"))
    raw["alerts"]["log_path"] = str(work / "alerts.jsonl")
    write_params(work / "params.yaml", raw)
    p = load_params(work / "params.yaml")
    client = tracking.connect(p)
    rows = None
    for seed in (7, 8):
        model, parts = fit_model(p, simulate(2000, seed=seed), "binary")
        sample = parts["test"].drop(columns=["default"]).head(100)
        register_model(client, p, model, sample, p.base.model_name, reference=parts["train"].head(300))
        rows = parts["test"].drop(columns=["default"]).head(60).reset_index(drop=True) if rows is None else rows
    client.set_registered_model_alias(p.base.model_name, "champion", "1")
    yield work, p, client, rows
    mp.undo()


@pytest.fixture(scope="module")
def server(project):
    work = project[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(["driftloop", "serve", "--port", str(port)], work, _env(), f"{url}/ready", timeout=90)
    assert proc is not None, "driftloop serve did not become ready in 90 s"
    yield url, proc
    stop_server(proc)


def _records(rows: pd.DataFrame) -> list[dict]:
    return json.loads(rows.to_json(orient="records", date_format="iso"))


def _proba(predictions: list[dict]) -> np.ndarray:
    return np.array([r["proba_1"] for r in predictions], dtype="float64")


def test_pyfunc_score_serve_and_mlflow_serve_agree(project, server, tmp_path):
    work, p, _, rows = project
    url, _ = server
    pyfunc = artifacts.load_model(p.base.model_name, "1", as_pyfunc=True)
    expected = pyfunc.predict(rows)

    batch = tmp_path / "batch.parquet"
    rows.to_parquet(batch, index=False)
    run(["driftloop", "score", str(batch), "--out", str(tmp_path / "scored.parquet")], work)
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert scored["model_version"].eq("1").all()

    r = httpx.post(f"{url}/invocations", json={"dataframe_records": _records(rows)}, timeout=30)
    assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    served = r.json()["predictions"]

    np.testing.assert_array_equal(scored["proba_1"], expected["proba_1"])
    np.testing.assert_allclose(_proba(served), expected["proba_1"], rtol=0, atol=1e-12)
    assert [s["prediction"] for s in served] == expected["prediction"].tolist() == scored["prediction"].tolist()

    # MLflow's own server of the same version (its JSON format; it ignores the contract, see docs/serving.md)
    port = free_port()
    env = _env(MLFLOW_TRACKING_URI=p.base.tracking_uri)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/driftloop/1"]
    cmd += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]
    proc = start_server(cmd, work, env, f"http://127.0.0.1:{port}/ping", timeout=120)
    if proc is None:
        pytest.skip("mlflow models serve did not answer /ping within 120 s on this machine")
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": _records(rows)}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(_proba(r.json()["predictions"]), expected["proba_1"], rtol=0, atol=1e-12)
    finally:
        stop_server(proc)


def test_process_hot_swaps_on_promote_and_rollback_and_shuts_down_gracefully(project, server):
    work, p, _, rows = project
    url, proc = server
    body = {"dataframe_records": _records(rows.head(3))}
    answered: dict[str, str] = {}

    def predict() -> str:
        r = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert r.status_code == 200, r.text
        answered[r.headers["x-request-id"]] = r.headers["x-model-version"]
        return r.headers["x-model-version"]

    def wait_version(version: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predict() == version:
                return
            time.sleep(0.1)
        raise AssertionError(f"the server never served version {version}")

    assert predict() == "1"
    run(["driftloop", "promote", "2", "--reason", "serve process test"], work)
    wait_version("2")
    assert httpx.get(f"{url}/version", timeout=10).json()["version"] == "2"
    run(["driftloop", "rollback", "--reason", "serve process test"], work)
    wait_version("1")
    assert "driftloop_serve_hot_swaps 2.0" in httpx.get(f"{url}/metrics", timeout=10).text

    # SIGTERM: in-flight requests finish, the log is flushed; uvicorn then re-raises the signal (exit -15)
    assert stop_server(proc) in (0, -signal.SIGTERM)
    assert "Traceback" not in server_output(proc)
    logged = predlog.read_log(p.serve.log_dir)
    by_request = logged.groupby("request_id")["model_version"].agg(set)
    assert set(answered) <= set(by_request.index), "every answered request is in the log"
    wrong = {rid for rid, version in answered.items() if by_request[rid] != {version}}
    assert not wrong, f"rows logged under another version than the one that answered: {sorted(wrong)[:5]}"
    assert set(logged["model_version"]) == {"1", "2"}
