"""The training flow: the DVC pipeline of ``dvc.yaml``, one Prefect task per DVC stage.

The stages and their order are read from the DVC repository (``dvc.yaml`` stays the one
declaration of the DAG); every task reproduces its stage through DVC's Python API, so an
unchanged stage is skipped exactly as by ``dvc repro``. Transient failures are retried; bad
input (a driftloop ``DataError``/``ConfigError`` raised by a stage) is not. One training run per
project at a time (a Prefect global concurrency limit, created on first use). The MLflow runs a
stage creates carry the tag ``driftloop.prefect.flow_run_id``; the registered model version gets
it too, and the flow run gets tags and a markdown artifact naming the MLflow run, version and alias.

Nothing runs at import: ``training_flow(...)``, ``python flows/serve.py`` or a deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from driftloop.config import environ
from driftloop.errors import DriftloopError
from driftloop.runner import StageProgress

FLOW_RUN_ENV = "DRIFTLOOP_PREFECT_FLOW_RUN_ID"  # read by driftloop.tracking.start_run in the stage processes
ERROR_FILE_ENV = "DRIFTLOOP_ERROR_FILE"  # the CLI writes a bad-input error there (driftloop.cli.handle_errors)
MLFLOW_TAG = "driftloop.prefect.flow_run_id"
REGISTER_STAGE = "register"
RETRY_DELAYS = [30, 120]  # seconds before the 1st and 2nd retry of a stage


# --------------------------------------------------------------------------- helpers shared by the flows
def retry_unless_bad_input(task, task_run, state) -> bool:
    """``retry_condition_fn``: retry transient failures, never bad input (a ``DriftloopError``)."""
    exc = state.data
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # the result cannot be read: assume transient
            return True
    return not isinstance(exc, DriftloopError)


def load_project_params(project: Path, params_path: str | Path):
    """params.yaml of the project (a relative path is relative to the project); ConfigError if invalid."""
    from driftloop.config import load_params

    path = Path(params_path)
    return load_params(path if path.is_absolute() else project / path)


def _stage_path() -> str:
    """PATH for the stage commands: the environment running this flow first (its ``driftloop``)."""
    path = os.environ.get("PATH", "")
    bindir = str(Path(sys.executable).parent)
    if (Path(bindir) / "driftloop").exists() and bindir not in path.split(os.pathsep):
        return bindir + os.pathsep + path if path else bindir
    return path


# --------------------------------------------------------------------------- the DVC pipeline
def pipeline_stages(project: str | Path) -> list[tuple[str, str]]:
    """``(name, target)`` of every stage ``dvc repro`` runs for the project's dvc.yaml, upstream first.

    Read from DVC's stage graph; ties are broken by the declaration order. Data sources (``.dvc``
    files such as the labeled batches) have no command and are hashed as dependencies instead.
    """
    import networkx as nx
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo import Repo

    root = Path(project).resolve()
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        declared = {stage: i for i, stage in enumerate(repo.index.stages)}
        wanted: set = set()
        for stage in repo.stage.collect(str(root / PROJECT_FILE)):
            wanted.update(nx.dfs_postorder_nodes(graph, stage))
        order = nx.lexicographical_topological_sort(
            graph.subgraph(wanted).reverse(copy=True), key=lambda s: declared.get(s, len(declared))
        )
        return [(s.addressing, f"{s.path}:{s.name}") for s in order if getattr(s, "cmd", None)]


def _bad_input(report: Path, stage: str) -> DriftloopError | None:
    """The driftloop error a stage command reported (bad input), or None."""
    if not report.exists():
        return None
    from driftloop import errors
    from driftloop.config import ConfigError

    try:
        info = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = {c.__name__: c for c in (ConfigError, errors.DataError, errors.RegistryError)}
    return kinds.get(info.get("type"), DriftloopError)(f"stage '{stage}': {info.get('message')}")


@task(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def reproduce_stage(project: str, stage: str, target: str, force: bool = False) -> dict[str, Any]:
    """``dvc repro --single-item <stage>``: runs the stage's command only if a dependency changed."""
    from dvc.repo import Repo

    logger = get_run_logger()
    with tempfile.TemporaryDirectory(prefix="driftloop-stage-") as tmp:
        report = Path(tmp) / "error.json"
        with environ(**{ERROR_FILE_ENV: str(report)}), Repo(project) as repo:
            try:
                done = repo.reproduce(target, single_item=True, force=force)
            except Exception as exc:
                bad = _bad_input(report, stage)
                if bad is not None:  # not retried (retry_unless_bad_input)
                    raise bad from exc
                raise
    # an always_changed stage (the source fingerprint) runs every time and changes nothing of its own: it is
    # not counted as run, as in `driftloop run` (what it found changed shows as ingest running)
    ran = any(not getattr(s, "always_changed", False) for s in done or [])
    checked = bool(done) and not ran
    logger.info("stage %s: %s", stage, "ran" if ran else "checked" if checked else "unchanged, skipped")
    return {"stage": stage, "ran": ran, "checked": checked}


# --------------------------------------------------------------------------- one training run per project
def concurrency_limit_name(project: str | Path) -> str:
    digest = hashlib.sha256(str(Path(project).resolve()).encode()).hexdigest()[:12]
    return f"driftloop-training-{digest}"


def ensure_concurrency_limit(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit if missing: without one, ``concurrency()`` would not limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # created concurrently
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            return
    if existing.limit != limit or not existing.active:
        get_run_logger().warning(
            "concurrency limit %s: limit %s, active %s (changed by hand; expected %s, active)",
            name,
            existing.limit,
            existing.active,
            limit,
        )


# --------------------------------------------------------------------------- MLflow <-> Prefect
def register_output(project: Path) -> dict[str, Any]:
    from driftloop.pipeline import _register_out

    path = project / _register_out(project)
    if not path.exists():
        return {"registered": False, "reason": f"{path} not found"}
    return json.loads(path.read_text(encoding="utf-8"))


def _link_mlflow(params, result: dict, flow_run_id: str, flow_run_url: str | None) -> None:
    """The registered version and its run name the flow run that produced them."""
    from driftloop import tracking

    client = tracking.connect(params)
    client.set_model_version_tag(result["model"], result["version"], MLFLOW_TAG, flow_run_id)
    if flow_run_url:
        client.set_model_version_tag(result["model"], result["version"], "driftloop.prefect.flow_run_url", flow_run_url)
    run = client.get_run(result["run_id"])
    if MLFLOW_TAG not in run.data.tags:  # the train run of an earlier flow run keeps its own id
        client.set_tag(result["run_id"], MLFLOW_TAG, flow_run_id)


def _tag_flow_run(flow_run_id: str, tags: set[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run_id).tags or []
        client.update_flow_run(flow_run_id, tags=sorted(set(current) | tags))


def _markdown(result: dict, ran: list[str], skipped: list[str], registered_now: bool, tracking_uri: str) -> str:
    rows = [
        ("Stages run", ", ".join(ran) or "none (everything up to date)"),
        ("Stages skipped", ", ".join(skipped) or "-"),
    ]
    if result.get("registered"):
        version = f"{result['version']}" + ("" if registered_now else " (registered by an earlier run)")
        if tracking_uri.startswith(("http://", "https://")):
            version = f"[{version}]({tracking_uri.rstrip('/')}/#/models/{result['model']}/versions/{result['version']})"
        rows += [
            ("MLflow run", f"`{result['run_id']}`"),
            ("Model", result["model"]),
            ("Version", version),
            ("Alias", f"@{result.get('alias')}"),
            ("Gate", str(result.get("decision", {}).get("reason", "-"))),
        ]
    else:
        rows.append(("Registered", f"no: {result.get('reason', '-')}"))
    body = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return f"# driftloop training\n\n| | |\n|---|---|\n{body}\n"


# --------------------------------------------------------------------------- the flow
@flow(name="driftloop-training", log_prints=True)
def training_flow(params_path: str = "params.yaml", project: str = ".", force: bool = False) -> dict[str, Any]:
    """Reproduce the DVC pipeline (only changed stages run, or all with ``force``); returns the
    register stage's result (``reports/register.json``) plus ``pipeline`` (stages run/skipped)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.concurrency.sync import concurrency
    from prefect.runtime import flow_run

    from driftloop.config import ConfigError

    logger = get_run_logger()
    root = Path(project).resolve()
    with contextlib.chdir(root):
        declared = (root / "params.yaml").resolve()
        if (root / params_path).resolve() != declared:
            raise ConfigError(
                f"{params_path}: the DVC stages read {declared} (dvc.yaml); "
                "the training flow cannot use another params file"
            )
        params = load_project_params(root, params_path)  # bad params fail here, before any stage
        flow_run_id = str(flow_run.get_id())
        stages = pipeline_stages(root)
        limit = concurrency_limit_name(root)
        ensure_concurrency_limit(limit)
        ran: list[str] = []
        skipped: list[str] = []
        checked: list[str] = []  # always_changed stages (the source fingerprint): run every time, change nothing
        logger.info("acquiring the training slot %s (one training run per project)", limit)
        with (
            concurrency(limit, occupy=1, strict=True, raise_on_lease_renewal_failure=False),
            environ(**{FLOW_RUN_ENV: flow_run_id, "PATH": _stage_path()}),
        ):
            # the lines of `driftloop run`: stage k of N, time since the start, each stage's duration
            progress = StageProgress([name for name, _ in stages], echo=logger.info)
            for name, target in stages:
                stage_task = reproduce_stage.with_options(name=f"dvc-{name}", task_run_name=name)
                with progress.stage(name, f"Prefect task dvc-{name}") as running:
                    out = stage_task(str(root), name, target, force)
                    if not out["ran"]:
                        running.skip()
                (ran if out["ran"] else checked if out.get("checked") else skipped).append(name)

        result = register_output(root)
        registered_now = REGISTER_STAGE in ran and bool(result.get("registered"))
        if registered_now:
            _link_mlflow(params, result, flow_run_id, flow_run.get_flow_run_ui_url())
            _tag_flow_run(
                flow_run_id,
                {
                    f"mlflow-run:{result['run_id']}",
                    f"model:{result['model']}",
                    f"model-version:{result['version']}",
                    f"alias:{result['alias']}",
                },
            )
        elif not ran:
            _tag_flow_run(flow_run_id, {"dvc:up-to-date"})
        create_markdown_artifact(
            key="driftloop-training",
            description="MLflow run, model version and alias",
            markdown=_markdown(result, ran, skipped, registered_now, params.base.tracking_uri),
        )
        registered = f"version {result.get('version')} -> @{result.get('alias')}" if registered_now else "none"
        logger.info("stages run: %s; skipped: %s; register: %s", ran or "none", skipped or "none", registered)
        return {
            **result,
            "pipeline": {
                "flow_run_id": flow_run_id,
                "ran": ran,
                "skipped": skipped,
                "checked": checked,
                "registered_now": registered_now,
            },
        }


if __name__ == "__main__":  # pragma: no cover
    training_flow()
