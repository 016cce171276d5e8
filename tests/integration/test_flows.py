"""End to end through Prefect (test harness: a temporary local server and database): the training
flow over the DVC pipeline, monitoring (ok, retrain with the training subflow, bad batches) and scoring.

The pipeline is trained once per module in a throw-away project (the ``project`` fixture of
conftest.py, built once for the module); the tests then run in file order on that project.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, run, small_params, write_params

pytestmark = pytest.mark.slow

_DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ALWAYS = [s for s, d in _DVC_STAGES.items() if d.get("always_changed")]  # the source fingerprint: checked each run
STAGES = [s for s in _DVC_STAGES if s not in ALWAYS]
MODEL = "driftloop"


def _make_project(tmp: Path) -> Path:
    """What the ``project`` fixture of conftest.py builds (function-scoped there), for one module."""
    import shutil

    proj = tmp / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # the ingest stage depends on the labeled-batch folder, which a clone of the repo has
    (proj / "data" / "labeled").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "labeled" / "README.md", proj / "data" / "labeled" / "README.md")
    write_params(proj / "params.yaml", small_params(proj))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.invalid"],
        ["git", "config", "user.name", "ci"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "init"],
    ):
        run(cmd, proj)
    return proj


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def flows(prefect_server):
    """The flows package of the repo (the tests run with the project, not the repo, as cwd)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        from flows import monitoring, scoring, training

        yield {"training": training, "monitoring": monitoring, "scoring": scoring}


@pytest.fixture(scope="module")
def trained(flows, tmp_path_factory):
    """The project after one training flow run: (project, register result, flow run id)."""
    proj = _make_project(tmp_path_factory.mktemp("flows"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(proj)
        state = flows["training"].training_flow(return_state=True)
        yield proj, state.result(), str(state.state_details.flow_run_id)


def _client(proj: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _aliases(client) -> dict[str, str]:
    return dict(client.get_registered_model(MODEL).aliases)


def _n_versions(client) -> int:
    return len(client.search_model_versions(f"name='{MODEL}'"))


def _prefect_flow_run(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id))


def _artifacts(flow_run_id: str) -> list[dict]:
    """The artifacts of a flow run. A raw request: on 3.8.8 the client sends nulls the server rejects (422)."""
    from prefect.client.orchestration import get_client

    body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC", "limit": 10, "offset": 0}
    with get_client(sync_client=True) as client:
        return client.request("POST", "/artifacts/filter", json=body).json()


def test_retry_condition_retries_transient_failures_not_bad_input(flows):
    from prefect import flow, task

    from driftloop.errors import DataError

    retry_unless_bad_input = flows["training"].retry_unless_bad_input
    calls = {"bad": 0, "flaky": 0}

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_bad_input)
    def bad_input():
        calls["bad"] += 1
        raise DataError("batch.csv: empty")

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_bad_input)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise OSError("database is locked")
        return "ok"

    @flow
    def both():
        with pytest.raises(DataError):
            bad_input()
        return flaky()

    assert both() == "ok"
    assert calls == {"bad": 1, "flaky": 3}


def test_training_flow_runs_every_stage_registers_and_links_then_skips(flows, trained, monkeypatch):
    from prefect.client.orchestration import get_client

    proj, first, flow_run_id = trained
    monkeypatch.chdir(proj)
    assert first["pipeline"]["ran"] == STAGES
    assert first["pipeline"]["skipped"] == []
    assert first["pipeline"]["checked"] == ALWAYS == ["source"]
    assert first["pipeline"]["flow_run_id"] == flow_run_id
    assert (first["registered"], first["model"], first["version"], first["alias"]) == (True, MODEL, "1", "champion")
    assert first == {**json.loads((proj / "reports/register.json").read_text()), "pipeline": first["pipeline"]}

    client = _client(proj)
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert str(mv.version) == "1"
    assert mv.tags["driftloop.prefect.flow_run_id"] == flow_run_id
    train_run = client.get_run(first["run_id"])
    assert train_run.data.tags["driftloop.prefect.flow_run_id"] == flow_run_id
    tune_run_id = json.loads((proj / "models/best_params.json").read_text())["tune_run_id"]
    assert client.get_run(tune_run_id).data.tags["driftloop.prefect.flow_run_id"] == flow_run_id

    fr = _prefect_flow_run(flow_run_id)
    assert {f"mlflow-run:{first['run_id']}", "model-version:1", "alias:champion", f"model:{MODEL}"} <= set(fr.tags)
    (artifact,) = _artifacts(flow_run_id)
    assert artifact["key"] == "driftloop-training" and artifact["type"] == "markdown"
    assert first["run_id"] in artifact["data"] and "@champion" in artifact["data"]
    with get_client(sync_client=True) as pc:
        limit = pc.read_global_concurrency_limit_by_name(flows["training"].concurrency_limit_name(proj))
    assert limit.limit == 1

    second = flows["training"].training_flow()
    assert second["pipeline"]["ran"] == []
    assert second["pipeline"]["skipped"] == STAGES
    assert second["pipeline"]["checked"] == ALWAYS
    assert second["version"] == "1" and not second["pipeline"]["registered_now"]
    assert _n_versions(client) == 1
    assert "dvc:up-to-date" in _prefect_flow_run(second["pipeline"]["flow_run_id"]).tags


def test_one_training_run_per_project(flows, trained, monkeypatch):
    """While another run holds the project's training slot, the training flow waits."""
    import threading

    from prefect.concurrency.sync import concurrency

    proj, _, _ = trained
    monkeypatch.chdir(proj)
    training = flows["training"]
    done: list[dict] = []
    with concurrency(training.concurrency_limit_name(proj), occupy=1, strict=True):
        waiting = threading.Thread(target=lambda: done.append(training.training_flow(project=str(proj))))
        waiting.start()
        waiting.join(timeout=20)
        assert waiting.is_alive() and not done  # blocked on the slot, no stage started
    waiting.join(timeout=300)
    assert done and done[0]["pipeline"]["ran"] == []


def test_monitoring_flow_no_drift_is_ok_and_moves_nothing(flows, trained, monkeypatch):
    proj, _, _ = trained
    monkeypatch.chdir(proj)
    client = _client(proj)
    before, n_before = _aliases(client), _n_versions(client)

    result = flows["monitoring"].monitoring_flow("sim://2025-03?rows=3000")
    assert result["status"] == "ok", result["decision"]
    assert Path(result["report_html"]).exists()
    assert Path(result["summary_json"]).exists()
    assert "retrain" not in result
    # retrain.keep_labeled_batches: its labels join the training data (a DVC data version) for the next retrain
    assert result["labeled_batch"]["kept"] and Path(result["labeled_batch"]["path"] + ".dvc").exists()
    assert client.get_run(result["mlflow_run_id"]).data.tags["driftloop.status"] == "ok"
    tags = client.get_run(result["mlflow_run_id"]).data.tags
    assert tags["driftloop.prefect.flow_run_id"] == result["prefect_flow_run_id"]
    (artifact,) = _artifacts(result["prefect_flow_run_id"])
    assert artifact["key"] == "driftloop-monitoring"
    assert "**ok**" in artifact["data"] and result["report_html"] in artifact["data"]
    assert _aliases(client) == before
    assert _n_versions(client) == n_before


def test_monitoring_flow_heavy_drift_retrains_through_the_training_subflow(flows, trained, monkeypatch):
    proj, _, _ = trained
    monkeypatch.chdir(proj)
    client = _client(proj)
    n_before = _n_versions(client)

    result = flows["monitoring"].monitoring_flow("sim://2025-08?rows=3000&covariate_shift=2&concept_drift=2")
    assert result["status"] == "retrain", result["decision"]
    retrain = result["retrain"]
    assert retrain["registered"], retrain
    assert (proj / "data/labeled" / f"{result['batch_id']}.parquet").exists()
    assert (proj / "data/labeled" / f"{result['batch_id']}.parquet.dvc").exists()

    # the training flow ran as a subflow of this monitoring run
    sub = _prefect_flow_run(retrain["training_flow_run_id"])
    assert sub.parent_task_run_id is not None
    assert sub.state.is_completed()

    assert _n_versions(client) == n_before + 1
    mv = client.get_model_version(MODEL, retrain["version"])
    assert mv.tags["driftloop.trigger.batch_id"] == result["batch_id"]
    assert mv.tags["driftloop.trigger.monitor_run_id"] == result["mlflow_run_id"]
    assert mv.tags["driftloop.prefect.flow_run_id"] == retrain["training_flow_run_id"]
    assert mv.aliases  # @champion or @challenger, moved by the register gate only
    monitor_tags = client.get_run(result["mlflow_run_id"]).data.tags
    assert monitor_tags["driftloop.retrain.version"] == retrain["version"]


def test_monitoring_flow_bad_batches_give_a_status_not_an_exception(flows, trained, monkeypatch, tmp_path):
    from driftloop import loop
    from driftloop.config import load_params

    proj, _, _ = trained
    monkeypatch.chdir(proj)
    client = _client(proj)
    before, n_before = _aliases(client), _n_versions(client)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _, df = loop.read_batch("sim://2025-04?rows=400", load_params(proj / "params.yaml"))
    missing = tmp_path / "missing_column.csv"
    df.drop(columns=["annual_income"]).to_csv(missing, index=False)

    results = {
        name: flows["monitoring"].monitoring_flow(str(path))
        for name, path in [("empty", empty), ("missing", missing), ("absent", tmp_path / "nope.parquet")]
    }
    for name, result in results.items():
        assert result["status"] in ("error", "schema_violation"), (name, result)
        assert Path(result["summary_json"]).exists(), name
        assert "retrain" not in result
    assert results["missing"]["status"] == "schema_violation"
    assert "annual_income" in json.dumps(results["missing"]["decision"])
    assert results["absent"]["status"] == "error"
    assert _aliases(client) == before
    assert _n_versions(client) == n_before


def test_scoring_flow_writes_predictions_with_the_model_version(flows, trained, monkeypatch):
    proj, _, _ = trained
    monkeypatch.chdir(proj)
    champion = str(_client(proj).get_model_version_by_alias(MODEL, "champion").version)

    result = flows["scoring"].scoring_flow("sim://2025-05?rows=200", "scores/2025-05.parquet")
    assert result["version"] == champion and result["rows"] == 200
    scored = pd.read_parquet(proj / "scores/2025-05.parquet")
    assert len(scored) == 200
    assert (scored["model_version"] == champion).all()
    assert "prediction" in scored.columns
