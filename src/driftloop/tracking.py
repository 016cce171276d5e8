"""MLflow at the edges: tracking setup, lineage tags, trial logging, the pyfunc model.

Nothing here runs at import; ``connect(params)`` sets the tracking/registry URIs explicitly.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import subprocess
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from driftloop.config import Params, environ

TAG = "driftloop."  # prefix of every tag driftloop writes


def md5_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The MD5 DVC records for a file in dvc.lock (content hash)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(cwd: str | Path = ".") -> tuple[str, bool]:
    """(commit, dirty); ("unknown", False) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def lineage_tags(params: Params, data: dict[str, str | Path]) -> dict[str, str]:
    """Tags every run and model version carries: git commit, data hashes, params hash."""
    commit, dirty = git_commit()
    tags = {
        f"{TAG}git_commit": commit,
        f"{TAG}git_dirty": str(dirty).lower(),
        f"{TAG}params_hash": params.hash(),
        f"{TAG}version": metadata.version("driftloop"),
        "mlflow.source.git.commit": commit,
    }
    for name, path in data.items():
        if Path(path).exists():
            tags[f"{TAG}data.{name}.md5"] = md5_file(path)
            tags[f"{TAG}data.{name}.path"] = str(path)
    return tags


_CONNECT_LOCK = threading.Lock()
_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def connect(params: Params):
    """Point MLflow at the configured store and return a client (the store's tables are created on first use).

    Serialised: two threads opening a new SQLite store at once would both try to create its tables
    (``driftloop run`` warms the store up on a worker thread while the data stages run).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = params.base.tracking_uri
    with _CONNECT_LOCK:
        # MLflow exports the URIs to os.environ for child processes; those are the very variables
        # load_params reads as a user's override, so the next params file loaded in this process (a
        # Prefect flow, a test, the demo) would silently take this one's store. Put the environment back.
        with environ(**{var: os.environ.get(var) for var in _URI_VARS}):
            mlflow.set_tracking_uri(uri)
            # None as well: a registry set for an earlier project in this process must not stick
            mlflow.set_registry_uri(params.base.registry_uri)
        registry = params.base.registry_uri or uri
        with _sqlite_init_lock(uri):
            client = MlflowClient(tracking_uri=uri, registry_uri=registry)
            if uri.startswith("sqlite:///"):
                client.search_experiments(max_results=1)  # tracking tables created here, under the lock
                if registry == uri:
                    client.search_registered_models(max_results=1)  # and the registry's
        return client


@contextlib.contextmanager
def _sqlite_init_lock(uri: str):
    """One process at a time opens a SQLite store: MLflow creates (or migrates) its tables when a client is made,
    and two processes opening a new store at once (tune workers beside the tune stage, two commands on a fresh
    clone) both ran the migrations; one failed (``duplicate column name``). A kernel file lock next to the
    database serialises that; other stores need no lock."""
    import fcntl

    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(client, name: str, params: Params) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not params.base.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = Path(params.base.artifact_location).resolve().as_uri() + f"/{name}"
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently
        return client.get_experiment_by_name(name).experiment_id


def start_run(
    client,
    params: Params,
    *,
    experiment: str | None = None,
    run_name: str,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
):
    exp_id = experiment_id(client, experiment or params.base.experiment, params)
    tags = dict(tags or {})
    tags.setdefault("mlflow.user", getpass.getuser())
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if flow_run_id := os.environ.get("DRIFTLOOP_PREFECT_FLOW_RUN_ID"):  # set by the Prefect training flow
        tags.setdefault(f"{TAG}prefect.flow_run_id", flow_run_id)
    return client.create_run(exp_id, run_name=run_name, tags=tags)


def log_batch(
    client,
    run_id: str,
    *,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    step: int = 0,
) -> None:
    """One call for many values (one round trip on a tracking server)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None and v == v]
    ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    ts = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
    # MLflow's per-call limits: 1000 metrics, 100 params, 100 tags
    while ms or ps or ts:
        client.log_batch(run_id, metrics=ms[:1000], params=ps[:100], tags=ts[:100])
        ms, ps, ts = ms[1000:], ps[100:], ts[100:]


class TrialLogger:
    """Optuna callback: each finished trial becomes a nested MLflow run (3 store calls per trial)."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, tags: dict[str, str]):
        self.client, self.experiment_id, self.parent, self.tags = client, experiment_id, parent_run_id, tags

    def __call__(self, study, trial) -> None:
        from mlflow.entities import Metric, Param, RunStatus

        start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
        end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
        state = trial.state.name
        # the trial's tags go with create_run: one store transaction less per trial than a separate set_tags
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number:03d}",
            start_time=start,
            tags={
                **self.tags,
                "mlflow.parentRunId": self.parent,
                f"{TAG}stage": "tune.trial",
                "optuna.trial_number": str(trial.number),
                "optuna.state": state,
                "optuna.pruned": str(state == "PRUNED").lower(),
                "optuna.study": study.study_name,
            },
        )
        metrics = [Metric("duration_s", (end - start) / 1000 if start and end else 0.0, end or 0, 0)]
        if trial.value is not None:
            metrics.append(Metric("score", float(trial.value), end or 0, 0))
        if "best_iteration" in trial.user_attrs:
            metrics.append(Metric("best_iteration", float(trial.user_attrs["best_iteration"]), end or 0, 0))
        for step, value in sorted(trial.intermediate_values.items()):
            metrics.append(Metric("intermediate_score", float(value), end or 0, int(step)))
        self.client.log_batch(
            run.info.run_id,
            metrics=metrics[:1000],
            params=[Param(k, str(v)) for k, v in trial.params.items()],
        )
        status = RunStatus.to_string(RunStatus.FAILED if state == "FAIL" else RunStatus.FINISHED)
        self.client.set_terminated(run.info.run_id, status=status, end_time=end)


def log_figure(client, run_id: str, fig, name: str) -> None:
    client.log_figure(run_id, fig, name)


def pip_requirements() -> list[str]:
    # no cloudpickle: nothing in the model is pickled. driftloop itself is not listed (it is not on PyPI, and a
    # package of that name there would be someone else's): the loading environment has driftloop installed.
    pkgs = ["lightgbm", "pandas", "numpy", "scikit-learn", "pyarrow", "mlflow"]
    return [f"{p}=={metadata.version(p)}" for p in pkgs]


def model_signature(model, sample):
    """Input: the raw columns the model needs, typed ``Any``; output: inferred from a prediction.

    MLflow's schema enforcement rejects pandas categoricals and int64 data for a ``double``
    column ("can not safely convert"), which real batches (Parquet categoricals, CSV columns
    whose values happen to be whole) hit all the time. The model's own preprocessing coerces
    robustly, so the signature pins names and order; the exact kinds and categories travel in
    the data contract logged with the model (``contract.json`` and the model metadata).
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name, required=True) for name in model.preprocessor.input_columns])
    outputs = infer_signature(None, model.predict_frame(sample)).outputs
    return ModelSignature(inputs=inputs, outputs=outputs), to_plain_frame(sample[model.preprocessor.input_columns])


def to_plain_frame(df):
    """Categoricals -> strings, integers/booleans with missing -> floats: JSON- and schema-friendly."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(s):
            out[col] = s.astype(object).where(s.notna(), None)
        elif pd.api.types.is_integer_dtype(s) or (pd.api.types.is_bool_dtype(s) and s.isna().any()):
            out[col] = s.astype("float64")
    return out


def log_model(client, run_id: str, model, sample, registered_name: str | None = None):
    """Log the pyfunc model (raw rows in) into ``run_id`` with no pickle in it; returns MLflow's ModelInfo.

    The model is MLflow "models from code" (``driftloop/model_code.py``) with two artifacts: ``model.json``
    (preprocessing, label mapping, threshold, ignored columns) and ``booster.txt`` (LightGBM's text model).
    Before logging, the model rebuilt from those files must predict ``sample`` exactly as ``model`` does.

    After logging, the stored files are read back and hashed: the SHA-256 manifest and its digest are set
    as tags on the logged model, and returned on the ModelInfo as ``driftloop_sha256``,
    ``driftloop_manifest`` and ``driftloop_tags`` (the tags to put on the model version it is registered as).
    """
    import tempfile

    import mlflow
    import pandas as pd

    from driftloop import artifacts
    from driftloop.errors import IntegrityError

    signature, example = model_signature(model, sample)
    code_file = str(Path(__file__).resolve().parent / "model_code.py")
    contract = model.contract()
    with tempfile.TemporaryDirectory(prefix="driftloop-log-") as tmp:
        files = artifacts.write_model_files(model, tmp)
        rebuilt = artifacts.read_model_files(*(files[k] for k in ("model_json", "booster")))
        try:
            pd.testing.assert_frame_equal(rebuilt.predict_frame(sample), model.predict_frame(sample), check_exact=True)
        except AssertionError as exc:
            raise IntegrityError(f"the model's JSON/text form does not reproduce its predictions: {exc}") from None
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=code_file,
                artifacts=files,
                signature=signature,
                input_example=example.head(5),
                pip_requirements=pip_requirements(),
                metadata={"contract": contract, "driftloop_version": metadata.version("driftloop")},
            )
            mlflow.log_dict(contract, "contract.json")
        # hash what the artifact store holds (what every load will download), not the local copy
        stored = Path(tmp) / "stored"
        stored.mkdir()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        location = client.get_logged_model(info.model_id).artifact_location
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(stored))
        manifest = artifacts.build_manifest(local)
    tags = artifacts.integrity_tags(manifest)
    client.set_logged_model_tags(info.model_id, tags)
    log_batch(client, run_id, tags={f"{TAG}model_sha256": tags[artifacts.DIGEST_TAG]})
    info.driftloop_sha256 = tags[artifacts.DIGEST_TAG]
    info.driftloop_manifest = manifest
    info.driftloop_tags = tags
    return info


def integrity_tags(model_info) -> dict[str, str]:
    """The integrity tags of a model logged by ``log_model``, to merge into its model version's tags."""
    return dict(getattr(model_info, "driftloop_tags", {}) or {})


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
