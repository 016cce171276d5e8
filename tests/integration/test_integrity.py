"""Model artifacts: no pickle in the logged model, a SHA-256 manifest on every version, and every driftloop load
path refusing a tampered artifact (naming the file) before any code from it runs. Real MLflow (SQLite + local
artifact folder), real LightGBM models."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import fit_model as _fit
from conftest import module_workdir, run, small_params, write_params
from conftest import register_model as _register

from driftloop import artifacts, loop, tracking
from driftloop import register as reg
from driftloop.config import load_params
from driftloop.data.simulate import simulate
from driftloop.errors import IntegrityError

pytestmark = pytest.mark.slow

TUNE = {"max_rounds": 40, "early_stopping_rounds": 10, "num_threads": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    work, mp = module_workdir(tmp_path_factory, "integrity")
    raw = small_params(work)
    raw["tune"].update(TUNE)
    raw["train"]["baselines"] = []
    write_params(work / "params.yaml", raw)
    p = load_params(work / "params.yaml")
    client = tracking.connect(p)
    yield work, p, client
    mp.undo()


# --------------------------------------------------------------------------- the safe format, same predictions
def _task_data(task: str) -> tuple[pd.DataFrame, str]:
    df = simulate(2500, seed=5).drop(columns=["application_id"])
    if task == "binary":
        return df, "default"
    if task == "multiclass":
        grade = pd.cut(df["credit_score"], [0, 640, 720, 2000], labels=["C", "B", "A"]).astype(str)
        return df.drop(columns=["credit_score", "default"]).assign(grade=grade), "grade"
    return df.drop(columns=["default"]), "interest_rate"


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_logged_model_has_no_pickle_and_scores_raw_rows_as_before(store, task):
    _, p0, client = store
    df, target = _task_data(task)
    p = p0.model_copy(update={"base": p0.base.model_copy(update={"target": target})})
    model, parts = _fit(p, df, task)
    raw = parts["test"].drop(columns=[target]).head(300)
    name = f"integrity-{task}"
    info, mv = _register(client, p, model, raw.head(200), name)

    files = set(info.driftloop_manifest)
    assert {"model_code.py", "artifacts/model.json", "artifacts/booster.txt", "MLmodel"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle")) or f.startswith("code/")]
    assert mv.tags[artifacts.DIGEST_TAG] == info.driftloop_sha256 == artifacts.manifest_digest(info.driftloop_manifest)

    expected = model.predict_frame(raw)
    plain = mlflow.pyfunc.load_model(f"models:/{name}@champion")  # the README's way
    pd.testing.assert_frame_equal(plain.predict(raw), expected, check_exact=True)
    assert isinstance(plain.unwrap_python_model().model, type(model))
    verified = artifacts.load_model(name, "champion", client)
    pd.testing.assert_frame_equal(verified.predict_frame(raw), expected, check_exact=True)
    served = artifacts.load_model(name, mv.version, client, as_pyfunc=True)
    pd.testing.assert_frame_equal(served.predict(raw), expected, check_exact=True)


# --------------------------------------------------------------------------- tampering
MARKER_CODE = "open({marker!r}, 'w').write('ran')\n"


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (MARKER_CODE.format(marker=self.marker),))


def _tamper(kind: str, root: Path, marker: Path) -> str:
    """Change the stored model the way an attacker with write access to the artifact store would."""
    if kind == "booster":
        with open(root / "artifacts/booster.txt", "ab") as f:
            f.write(b"\nTree=999\n")
        return "artifacts/booster.txt"
    if kind == "json":
        data = json.loads((root / "artifacts/model.json").read_text())
        data["threshold"] = 0.01
        (root / "artifacts/model.json").write_text(json.dumps(data))
        return "artifacts/model.json"
    if kind == "code":
        code = (root / "model_code.py").read_text()
        (root / "model_code.py").write_text(MARKER_CODE.format(marker=str(marker)) + code)
        return "model_code.py"
    if kind == "mlmodel":
        text = (root / "MLmodel").read_text()
        evil = text.replace("loader_module: mlflow.pyfunc.loaders.code_model", "loader_module: evil\n    code: .")
        assert evil != text
        (root / "MLmodel").write_text(evil)
        (root / "evil.py").write_text(MARKER_CODE.format(marker=str(marker)) + "def _load_pyfunc(p):\n    pass\n")
        return "MLmodel"
    if kind == "extra":
        (root / "python_model.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
        return "python_model.pkl"
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def champion(store):
    work, p, client = store
    df = simulate(2500, seed=7)
    model, parts = _fit(p, df.drop(columns=["application_id"]), "binary")
    info, mv = _register(
        client,
        p,
        model,
        parts["test"].drop(columns=["default"]).head(200),
        p.base.model_name,
        reference=parts["train"].head(500),
    )
    root = Path(client.get_logged_model(info.model_id).artifact_location.removeprefix("file://"))
    return work, p, client, mv, root


KINDS = ["booster", "json", "code", "mlmodel", "extra"]
ATTEMPTS: list[tuple[str, str, bool]] = []


def _load_paths(work: Path, p, client, name: str, version: str):
    """Every driftloop load path: (label, callable raising on refusal)."""

    def score():
        res = run(
            ["driftloop", "score", "sim://2025-02?rows=200&seed=3", "--out", str(work / "scored.parquet")],
            work,
            check=False,
        )
        if res.returncode != 0:
            raise IntegrityError(res.stdout + res.stderr)

    return [
        ("artifacts.load_model", lambda: artifacts.load_model(name, "champion", client)),
        ("serve (as_pyfunc)", lambda: artifacts.load_model(name, version, client, as_pyfunc=True)),
        ("gate register.load_version", lambda: reg.load_version(name, version)),
        ("monitor loop.resolve_champion", lambda: loop.resolve_champion(client, p)),
        ("driftloop score (CLI)", score),
    ]


def test_untampered_champion_loads_on_every_path(champion):
    work, p, client, mv, _ = champion
    for _, load in _load_paths(work, p, client, p.base.model_name, str(mv.version)):
        load()
    assert pd.read_parquet(work / "scored.parquet")["model_version"].eq(str(mv.version)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_artifact_is_refused_on_every_path_and_runs_nothing(champion, kind, tmp_path):
    work, p, client, mv, root = champion
    backup = tmp_path / "backup"
    shutil.copytree(root, backup)
    marker = tmp_path / "marker"
    try:
        named = _tamper(kind, root, marker)
        for label, load in _load_paths(work, p, client, p.base.model_name, str(mv.version)):
            with pytest.raises(IntegrityError) as exc:
                load()
            refused = f"'{named}'" in str(exc.value) or named in str(exc.value)
            ATTEMPTS.append((kind, label, refused))
            assert refused, f"{label}: {exc.value}"
            assert not marker.exists(), f"{label}: code from the tampered artifact ran"
    finally:
        shutil.rmtree(root)
        shutil.copytree(backup, root)


def test_refusal_rate_is_100_percent():
    if not ATTEMPTS:
        pytest.skip("run with the tampering tests")
    refused = sum(r for *_, r in ATTEMPTS)
    print(f"\ntampered artifacts refused: {refused}/{len(ATTEMPTS)} = {100 * refused / len(ATTEMPTS):.0f} %")
    assert refused == len(ATTEMPTS) == len(KINDS) * 5


def test_manifest_tag_that_does_not_match_its_digest_is_refused(champion):
    _, p, client, mv, _ = champion
    name = p.base.model_name
    manifest = json.loads(mv.tags[artifacts.MANIFEST_TAG])
    forged = {**manifest, "artifacts/booster.txt": "0" * 64}
    client.set_model_version_tag(name, mv.version, artifacts.MANIFEST_TAG, json.dumps(forged))
    try:
        with pytest.raises(IntegrityError, match="does not match tag 'driftloop.sha256'"):
            artifacts.load_model(name, mv.version, client)
    finally:
        client.set_model_version_tag(name, mv.version, artifacts.MANIFEST_TAG, mv.tags[artifacts.MANIFEST_TAG])


def test_version_without_manifest_is_refused_unless_allowed(store):
    """A model logged the old way (a cloudpickled wrapper, no hash recorded)."""
    _, p, client = store
    from driftloop.pyfunc import DriftloopPyfunc

    df = simulate(1500, seed=9).drop(columns=["application_id"])
    model, parts = _fit(p, df, "binary")
    run_id = tracking.start_run(client, p, run_name="legacy").info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=DriftloopPyfunc(model), pip_requirements=[])
    name = "integrity-legacy"
    client.create_registered_model(name)
    mv = client.create_model_version(name, info.model_uri, run_id=run_id, model_id=info.model_id)
    with pytest.raises(IntegrityError, match="no recorded SHA-256 manifest"):
        artifacts.load_model(name, mv.version, client)
    loaded = artifacts.load_model(name, mv.version, client, allow_unverified=True)
    raw = parts["test"].head(50)
    pd.testing.assert_frame_equal(loaded.predict_frame(raw), model.predict_frame(raw))
