"""prefect.yaml: one deployment per flow (the monitoring flow twice: landed batches, the prediction log),
entrypoints that import and name a Prefect flow, cron
schedules, shared definitions; flows/serve.py serves the same deployments and schedules."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FLOWS = {
    "training": "flows/training.py:training_flow",
    "monitoring": "flows/monitoring.py:monitoring_flow",
    "monitoring-predictions": "flows/monitoring.py:monitoring_flow",  # the same flow on the prediction log
    "scoring": "flows/scoring.py:scoring_flow",
}
PULL_STEP = "prefect.deployments.steps.set_working_directory"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def deployments(spec) -> dict[str, dict]:
    return {d["name"]: d for d in spec["deployments"]}


def _load_flow(entrypoint: str, monkeypatch):
    """Import the entrypoint's file by path, as Prefect does, and return the named object."""
    path, name = entrypoint.split(":")
    monkeypatch.syspath_prepend(str(ROOT))
    module_name = f"_prefect_yaml_check_{Path(path).stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, ROOT / path)
    module = importlib.util.module_from_spec(module_spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    module_spec.loader.exec_module(module)
    return getattr(module, name)


def test_one_deployment_per_flow(spec, deployments):
    assert len(spec["deployments"]) == len(deployments) == len(FLOWS)  # unique names
    assert sorted(d["entrypoint"] for d in deployments.values()) == sorted(FLOWS.values())
    assert {name: d["entrypoint"] for name, d in deployments.items()} == FLOWS


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_entrypoint_imports_and_names_a_flow(name, deployments, monkeypatch):
    from prefect import Flow

    flow = _load_flow(deployments[name]["entrypoint"], monkeypatch)
    assert isinstance(flow, Flow)
    # the deployment's parameters exist in the flow's signature; required ones are given or asked at run time
    signature = inspect.signature(flow.fn)
    assert set(deployments[name].get("parameters") or {}) <= set(signature.parameters)


def test_schedules_parse_as_cron(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    crons = {}
    for name, d in deployments.items():
        for s in d.get("schedules") or []:
            schedule = CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
            assert schedule.cron == s["cron"]
            crons.setdefault(name, []).append(s["cron"])
    assert crons["monitoring"] == ["0 6 * * *"]  # daily at 06:00
    assert crons["monitoring-predictions"] == ["15 * * * *"]  # hourly: the served rows since the last period
    assert crons["training"] == ["0 3 * * 1"]  # Mondays at 03:00 (and on demand)
    assert "scoring" not in crons  # on demand only


def test_the_scheduled_prediction_log_monitoring_reads_the_log(deployments):
    from driftloop.loop import PREDICTIONS_SPEC

    assert deployments["monitoring-predictions"]["parameters"]["batch"] == PREDICTIONS_SPEC


def test_shared_definitions_pool_and_pull_step(spec, deployments):
    pool = spec["definitions"]["work_pools"]["local"]
    assert all(d["work_pool"] == pool for d in deployments.values())  # the anchor, not copies
    schedules = spec["definitions"]["schedules"].values()
    assert all(s in list(schedules) for d in deployments.values() for s in d.get("schedules") or [])
    steps = spec["pull"]
    assert any(PULL_STEP in step and step[PULL_STEP]["directory"] for step in steps)


def test_prefect_accepts_the_file(spec):
    models = pytest.importorskip("prefect.cli.deploy._models")  # Prefect's own schema of prefect.yaml (internal)
    parsed = models.PrefectYamlModel.model_validate(spec)
    assert [d.entrypoint for d in parsed.deployments] == [d["entrypoint"] for d in spec["deployments"]]


def test_serve_builds_the_same_deployments(deployments, monkeypatch):
    from prefect.client.schemas.schedules import CronSchedule

    monkeypatch.chdir(ROOT)  # python flows/serve.py does this
    serve = _load_flow("flows/serve.py:to_deployments", monkeypatch)
    built = {d.name: d for d in serve()}
    assert set(built) == set(deployments)
    for name, d in built.items():
        assert d.entrypoint == deployments[name]["entrypoint"]
        assert d.parameters == (deployments[name].get("parameters") or {})
        crons = [s.schedule.cron for s in d.schedules if isinstance(s.schedule, CronSchedule)]
        assert crons == [s["cron"] for s in deployments[name].get("schedules") or []]
