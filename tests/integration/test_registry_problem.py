"""The registry refuses to gate a model of another target, task or classes against @champion (nothing written, a
message naming the difference and base.model_name), warm start takes only a champion of the same problem, and a
new base.model_name starts a new registered model (in-process stages, SQLite MLflow)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import module_workdir, run_data_stages, run_model_stages, small_params, write_params

from driftloop import pipeline, tracking
from driftloop import register as reg
from driftloop.config import load_params
from driftloop.errors import RegistryError

pytestmark = pytest.mark.slow


def churn_table(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    charges = rng.uniform(20, 120, n)
    logit = -1.0 - 0.04 * tenure + 0.02 * charges
    churn = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"tenure": tenure, "monthly_charges": charges, "contract": rng.choice(["m", "y"], n),
                         "churn": churn})  # fmt: skip


def versions(client, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'"))


def churn_params(work, **more) -> dict:
    csv = {"ingest.source": "csv", "ingest.path": str(work / "churn.csv"), "base.target": "churn"}
    return small_params(work, **{"tune.n_trials": 2, **csv, **more})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    work, mp = module_workdir(tmp_path_factory, "problem")
    credit = small_params(work, **{"tune.n_trials": 2})
    write_params(work / "params.yaml", credit)
    p = load_params(work / "params.yaml")
    run_data_stages(p)
    pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    _, first = run_model_stages(p)
    churn_table().to_csv(work / "churn.csv", index=False)
    write_params(work / "churn.yaml", churn_params(work))
    yield work, p, load_params(work / "churn.yaml"), tracking.connect(p), first
    mp.undo()


def test_each_version_records_its_problem(project):
    _, p, _, client, first = project
    mv = client.get_model_version(p.base.model_name, first["version"])
    assert json.loads(mv.tags[reg.PROBLEM_TAG]) == {"target": "default", "task": "binary", "classes": ["0", "1"]}
    assert first["alias"] == reg.CHAMPION


def test_another_target_is_refused_leaving_the_registry_as_it_was(project):
    work, p, churn, client, first = project
    run_data_stages(churn)
    pipeline.run_tune(churn, "data/split", "models/best_params.json", "reports/tune.json")
    before = versions(client, p.base.model_name)
    with pytest.raises(RegistryError) as exc:
        run_model_stages(churn)
    msg = str(exc.value)
    assert "target 'default' vs 'churn'; classes ['0', '1'] vs ['no', 'yes']" in msg
    assert "set base.model_name to a new name" in msg and "'driftloop-churn'" in msg
    assert "Nothing was registered" in msg
    assert versions(client, p.base.model_name) == before
    assert str(reg.current_version(client, p.base.model_name, reg.CHAMPION).version) == first["version"]
    assert reg.current_version(client, p.base.model_name, reg.CHALLENGER) is None


def test_warm_start_only_from_a_champion_of_the_same_problem(project):
    _, p, churn, client, _ = project
    same = {"target": "default", "task": "binary", "classes": ["0", "1"]}
    warm = pipeline.champion_params(client, p, same)
    assert warm and "num_leaves" in warm[0]
    churn_problem = {"target": "churn", "task": "binary", "classes": ["no", "yes"]}
    assert pipeline.champion_params(client, churn, churn_problem) == []
    flipped = {**same, "classes": ["1", "0"]}  # another positive class
    assert pipeline.champion_params(client, p, flipped) == []
    assert pipeline.champion_params(client, p, {**same, "task": "multiclass"}) == []


def test_a_new_model_name_starts_a_new_registered_model(project):
    work, p, churn, client, first = project
    write_params(work / "renamed.yaml", churn_params(work, **{"base.model_name": "driftloop-churn"}))
    q = load_params(work / "renamed.yaml")
    result = pipeline.run_register(
        q, "data/split", "models/model.pkl", "models/run.json", "reports/metrics.json", "reports/register.json"
    )
    assert result["model"] == "driftloop-churn" and result["alias"] == reg.CHAMPION and result["version"] == "1"
    assert str(reg.current_version(client, p.base.model_name, reg.CHAMPION).version) == first["version"]
