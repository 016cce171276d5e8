"""The closed loop at the edges: resolve the champion through its lineage, read a production
batch, monitor it (schema, drift, prediction drift, performance), alert, score, retrain.

``driftloop.monitor`` holds the pure engine; this module adds MLflow, files and alerts. Nothing
here ever moves a registry alias: only the register stage (through the gate) and people do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import html
import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import DriftParams, Params
from driftloop.errors import DataError, DriftloopError
from driftloop.model import DriftloopModel

SIM_PREFIX = "sim://"
SQL_PREFIX = "sql:"


@dataclass
class Champion:
    name: str
    version: str
    run_id: str
    model: DriftloopModel
    contract: dict
    reference: pd.DataFrame
    reference_metric: float | None

    def reference_scores(self) -> np.ndarray:
        return self.model.predict_scores(self.reference)


def resolve_champion(client, params: Params) -> Champion:
    """The @champion, its training reference sample and contract, found through its lineage."""
    from driftloop import register as reg

    name = params.base.model_name
    mv = reg.current_version(client, name, reg.CHAMPION)
    if mv is None:
        raise DriftloopError(f"model '{name}' has no @champion yet: run the training pipeline first (`make run`)")
    model = reg.load_version(name, mv.version)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(mv.run_id, "reference/reference.parquet", tmp)
        reference = pd.read_parquet(path)
    contract = model.contract()
    contract["ignored"] = sorted(
        set(contract["ignored"])
        | {c for c in reference.columns if c not in model.preprocessor.input_columns and c != model.target}
    )
    metric = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[model.task]
    test_metrics = json.loads(mv.tags.get("driftloop.test_metrics", "{}") or "{}")
    return Champion(name, str(mv.version), mv.run_id, model, contract, reference, test_metrics.get(metric))


# --------------------------------------------------------------------------- batches
def _safe_id(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "-", text).strip("-")[:80] or "batch"


def simulated_batch(spec: str, params: Params) -> tuple[str, pd.DataFrame]:
    """``sim://2025-03?rows=5000&seed=7&covariate_shift=1&concept_drift=1`` -> one simulated month."""
    from driftloop.data.simulate import simulate

    parsed = urllib.parse.urlparse(spec)
    month = parsed.netloc or parsed.path.strip("/")
    q = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
    try:
        start = pd.Timestamp(f"{month}-01") if len(month) == 7 else pd.Timestamp(month)
        rows = int(q.pop("rows", 5000))
        seed = int(q.pop("seed", params.base.seed + start.year * 12 + start.month))
        months = int(q.pop("months", 1))
        drift = DriftParams(**{k: float(v) for k, v in q.items()})
    except (ValueError, TypeError) as exc:
        raise DataError(f"batch {spec!r}: invalid simulated batch ({exc})") from None
    df = simulate(
        rows,
        seed,
        start_date=start.strftime("%Y-%m-%d"),
        months=months,
        default_rate=params.simulate.default_rate,
        drift=drift if any(drift.model_dump().values()) else None,
        id_offset=10_000_000 + seed * 100_000,
    )
    tag = "-".join(f"{k[:3]}{v:g}" for k, v in drift.model_dump().items() if v)
    return _safe_id(f"sim-{start:%Y-%m}-{seed}" + (f"-{tag}" if tag else "")), df


def read_batch(spec: str, params: Params) -> tuple[str, pd.DataFrame]:
    """A batch from a file or glob (CSV/Parquet), a SQL query (``sql:SELECT ...``) or the simulator."""
    from driftloop.data import ingest as ing

    if spec.startswith(SIM_PREFIX):
        return simulated_batch(spec, params)
    if spec.startswith(SQL_PREFIX):
        query = spec[len(SQL_PREFIX) :].strip()
        p = params.model_copy(
            update={
                "ingest": params.ingest.model_copy(
                    update={
                        "source": "sql",
                        "sql": params.ingest.sql.model_copy(update={"query": query, "table": None}),
                    }
                )
            }
        )
        df, _ = ing.read_sql(p)
        return _safe_id("sql-" + hashlib.sha1(query.encode()).hexdigest()[:10]), df
    paths = sorted(glob.glob(spec)) if any(ch in spec for ch in "*?[") else [spec]
    if not paths:
        raise DataError(f"batch {spec!r}: no file matches")
    frames = []
    for path in paths:
        if path.endswith((".parquet", ".pq")):
            frames.append(ing.read_parquet(path, {})[0])
        else:
            try:
                frames.append(ing.read_csv(path, params.ingest.read_options, params.ingest.chunk_rows)[0])
            except DataError as exc:
                if "empty" in str(exc):  # an empty batch is a monitoring result, not a crash
                    frames.append(pd.DataFrame())
                else:
                    raise
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    stem = Path(paths[0]).stem if len(paths) == 1 else f"{Path(paths[0]).stem}-and-{len(paths) - 1}-more"
    return _safe_id(stem), df


# --------------------------------------------------------------------------- monitoring
def _monitor_experiment(client, params: Params) -> str:
    from driftloop import tracking

    return tracking.experiment_id(client, params.monitor.experiment, params)


def _history(client, params: Params) -> list:
    exp = client.get_experiment_by_name(params.monitor.experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`driftloop.model` = '{params.base.model_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=500,
    )


def batches_since_retrain(history: list) -> int | None:
    """Monitored batches since the last retrain decision (None: never retrained by the loop)."""
    for i, run in enumerate(history):
        if run.data.tags.get("driftloop.status") == "retrain":
            return i
    return None


def _labels(batch: pd.DataFrame, target: str) -> pd.Series | None:
    if target not in batch.columns:
        return None
    y = batch[target]
    return y if y.notna().any() else None


def monitor_batch(
    params: Params,
    batch_id: str,
    batch: pd.DataFrame,
    *,
    client=None,
    champion: Champion | None = None,
    send_alerts: bool = True,
) -> dict[str, Any]:
    """Monitor one batch; always returns a result with a status, never raises on a bad batch."""
    from driftloop import monitor as mon
    from driftloop import tracking

    client = client or tracking.connect(params)
    champion = champion or resolve_champion(client, params)
    mp = params.monitor
    out_dir = Path(mp.output_dir) / batch_id
    out_dir.mkdir(parents=True, exist_ok=True)
    history = _history(client, params)
    since = batches_since_retrain(history)
    result: dict[str, Any] = {
        "batch_id": batch_id,
        "rows": len(batch),
        "model": champion.name,
        "champion_version": champion.version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "report_html": None,
    }
    try:
        schema = mon.check_schema(champion.contract, batch)
        result["schema"] = schema.to_dict()
        drift = pred = perf = tdrift = None
        if not schema.empty:
            html_path = out_dir / "report.html"
            drift = mon.data_drift(
                champion.reference, batch, champion.contract, mp, params.base.seed, html_path=html_path
            )
            result["drift"] = drift.to_dict()
            result["report_html"] = str(html_path)
            scorable = not schema.missing and not schema.retyped
            if scorable:
                scores = champion.model.predict_scores(batch)
                pred = mon.prediction_drift(champion.reference_scores(), scores, mp, params.base.seed)
                result["prediction_drift"] = pred
                y = _labels(batch, champion.model.target)
                if y is not None:
                    keep = y.notna().to_numpy()
                    try:
                        y_enc = champion.model.encoder.encode(y[keep])
                        s = scores[keep]
                        perf = mon.performance(y_enc, s, champion.model.task, champion.reference_metric)
                        result["performance"] = perf
                        tdrift = mon.target_drift(
                            champion.reference[champion.model.target],
                            y[keep],
                            champion.model.task,
                            mp,
                            params.base.seed,
                        )
                        result["target_drift"] = tdrift
                    except DataError as exc:
                        result.setdefault("notes", []).append(f"labels not usable for performance: {exc}")
        decision = mon.decide(schema, drift, pred, perf, mp, since)
        result["decision"] = decision.to_dict()
        result["status"] = decision.status
    except Exception as exc:  # a broken batch gives a clear status, never an unhandled exception
        result["status"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["decision"] = {"status": "error", "reasons": [result["error"]]}
    if result["report_html"] is None:
        result["report_html"] = str(_fallback_html(out_dir / "report.html", result))
    summary_path = out_dir / "summary.json"
    result["summary_json"] = str(summary_path)
    run_id = _log_monitoring(client, params, result, len(history))
    result["mlflow_run_id"] = run_id
    if send_alerts and result["status"] != "ok":
        result["alert"] = _alert(params, result)
        client.set_tag(run_id, "driftloop.alert.delivered", str(result["alert"]["sent"]).lower())
    from driftloop.evaluate import write_json

    write_json(result, summary_path)
    client.log_artifact(run_id, str(summary_path), "monitoring")
    client.set_terminated(run_id)
    return result


def _fallback_html(path: Path, result: dict) -> Path:
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in result.get("decision", {}).get("reasons", []))
    title = f"driftloop batch {html.escape(result['batch_id'])}"
    path.write_text(
        f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>Batch {html.escape(result['batch_id'])}: {html.escape(result['status'])}</h1><ul>{reasons}</ul>"
        f"<pre>{html.escape(json.dumps(result.get('schema', {}), indent=2, default=str))}</pre></body></html>",
        encoding="utf-8",
    )
    return path


def _log_monitoring(client, params: Params, result: dict, step: int) -> str:
    from driftloop import tracking

    run = tracking.start_run(
        client,
        params,
        experiment=params.monitor.experiment,
        run_name=f"monitor-{result['batch_id']}",
        tags={
            "driftloop.model": result["model"],
            "driftloop.batch_id": result["batch_id"],
            "driftloop.status": result["status"],
            "driftloop.champion_version": result["champion_version"],
            "driftloop.reasons": "; ".join(map(str, result["decision"].get("reasons", [])))[:4900],
        },
    )
    metrics = {"rows": result["rows"], "status_code": {"ok": 0, "warn": 1, "retrain": 2}.get(result["status"], 3)}
    if "drift" in result:
        metrics.update(drift_share=result["drift"]["drift_share"], n_drifted=result["drift"]["n_drifted"])
    if "prediction_drift" in result and result["prediction_drift"].get("score") is not None:
        metrics["prediction_drift_score"] = result["prediction_drift"]["score"]
    perf = result.get("performance") or {}
    for k, v in {**perf, **(perf.get("metrics") or {})}.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[f"perf_{k}"] = v
    tracking.log_batch(client, run.info.run_id, metrics=metrics, step=step)
    if result.get("report_html") and Path(result["report_html"]).exists():
        client.log_artifact(run.info.run_id, result["report_html"], "monitoring")
    return run.info.run_id


def _alert(params: Params, result: dict) -> dict:
    from driftloop.alerts import Alert, send_alert

    drift = result.get("drift", {})
    reasons = result["decision"].get("reasons", [])
    message = "\n".join(f"- {r}" for r in reasons) or "-"
    if drift:
        message += f"\n\ndrift share {drift.get('drift_share', 0):.0%}; report: {result.get('report_html')}"
    alert = Alert(
        status=result["status"],
        title=f"driftloop {result['status']}: batch {result['batch_id']}",
        message=message,
        batch_id=result["batch_id"],
        details={
            "model": result["model"],
            "champion_version": result["champion_version"],
            "report_html": result.get("report_html"),
            "drift_share": drift.get("drift_share"),
        },
    )
    outcome = send_alert(alert, params.alerts)
    return {"sent": outcome.sent, "errors": outcome.errors, "log": outcome.logged_to}


# --------------------------------------------------------------------------- scoring
def score_batch(
    params: Params, batch: pd.DataFrame, out: str | Path, *, client=None, champion: Champion | None = None
) -> dict[str, Any]:
    """Predictions of @champion for a batch, with the model version that made them (Parquet)."""
    from driftloop import tracking
    from driftloop.data.ingest import write_parquet_atomic

    client = client or tracking.connect(params)
    champion = champion or resolve_champion(client, params)
    if len(batch) == 0:
        raise DataError("the batch to score has no rows")
    pred = champion.model.predict_frame(batch)
    keep = [c for c in batch.columns if c in champion.contract["ignored"]]  # ids travel with their predictions
    frame = pd.concat([batch[keep].reset_index(drop=True), pred.reset_index(drop=True)], axis=1)
    frame["model_name"] = champion.name
    frame["model_version"] = champion.version
    frame["scored_at"] = pd.Timestamp.now(tz="UTC")
    write_parquet_atomic(frame, out)
    return {"rows": len(frame), "out": str(out), "model": champion.name, "version": champion.version}


# --------------------------------------------------------------------------- retraining
def add_labeled_batch(params: Params, batch_id: str, batch: pd.DataFrame, project: str | Path = ".") -> Path:
    """Store a labeled batch under ``ingest.labeled_dir`` as a new DVC-tracked data version."""
    from dvc.repo import Repo

    from driftloop.data.ingest import write_parquet_atomic

    target = params.base.target
    if target not in batch.columns or batch[target].isna().all():
        raise DataError(f"batch {batch_id}: no labels in column '{target}'; it cannot be added to the training data")
    labeled = Path(project) / params.ingest.labeled_dir
    path = labeled / f"{batch_id}.parquet"
    write_parquet_atomic(batch[batch[target].notna()], path)
    with Repo(str(project)) as repo:
        repo.add(str(path.relative_to(project)) if Path(project) != Path(".") else str(path))
    return path


@dataclass
class PipelineSnapshot:
    """What a retraining run can change in a project: ``dvc.lock`` and the outputs DVC does not cache
    (small reports); the cached outputs come back from DVC's cache through ``dvc.lock``."""

    project: Path
    lock: bytes | None
    uncached: dict[Path, bytes | None]

    @classmethod
    def take(cls, project: str | Path = ".") -> PipelineSnapshot:
        from dvc.repo import Repo

        project = Path(project).resolve()
        lock = project / "dvc.lock"
        with Repo(str(project)) as repo:
            paths = [Path(out.fs_path) for out in repo.index.outs if not out.use_cache]
        return cls(
            project,
            lock.read_bytes() if lock.exists() else None,
            {path: path.read_bytes() if path.is_file() else None for path in paths},
        )

    def restore(self) -> None:
        """Put ``dvc.lock`` and every pipeline output back as they were when the snapshot was taken."""
        from dvc.repo import Repo

        from driftloop.data.ingest import write_bytes_atomic

        lock = self.project / "dvc.lock"
        if (lock.read_bytes() if lock.exists() else None) == self.lock:
            return  # no stage finished with the batch (outputs are written atomically): nothing moved
        for path, data in [(lock, self.lock), *self.uncached.items()]:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_bytes_atomic(data, path)
        with Repo(str(self.project)) as repo:
            repo.checkout(force=True)  # the cached outputs (data, splits, models) of the restored dvc.lock


def withdraw_labeled_batch(path: str | Path, project: str | Path = ".") -> None:
    """Undo ``add_labeled_batch``: the batch file, its ``.dvc`` file and its ``.gitignore`` entry go."""
    from dvc.repo import Repo

    project = Path(project).resolve()
    path = Path(path) if Path(path).is_absolute() else project / path
    dvcfile = path.with_name(f"{path.name}.dvc")
    if dvcfile.exists():
        with Repo(str(project)) as repo:
            repo.remove(str(dvcfile), outs=True)
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def retraining(params: Params, batch_id: str, batch: pd.DataFrame, project: str | Path = ".") -> Iterator[Path]:
    """Add the labeled batch for the retraining run inside the block; if the block fails, withdraw it.

    A failed retraining changes nothing: the batch leaves ``ingest.labeled_dir`` (left there, a batch
    the pipeline rejects would fail every later run), and ``dvc.lock`` and the pipeline's outputs are
    restored if stages had already run with it. The registry is written by the register stage only,
    the last one, and only when every stage before it succeeded.
    """
    snapshot = PipelineSnapshot.take(project)
    path = add_labeled_batch(params, batch_id, batch, project)
    try:
        yield path
    except BaseException:
        withdraw_labeled_batch(path, project)
        snapshot.restore()
        raise


def link_retraining(client, params: Params, monitor_run_id: str | None, batch_id: str, register_result: dict) -> None:
    """Audit trail both ways: monitoring run -> model version, model version -> batch and report."""
    if not register_result.get("registered"):
        return
    version = register_result["version"]
    name = register_result["model"]
    client.set_model_version_tag(name, version, "driftloop.trigger.batch_id", batch_id)
    if monitor_run_id:
        client.set_model_version_tag(name, version, "driftloop.trigger.monitor_run_id", monitor_run_id)
        client.set_tag(monitor_run_id, "driftloop.retrain.version", version)
        client.set_tag(monitor_run_id, "driftloop.retrain.alias", register_result["alias"])
        client.set_tag(
            monitor_run_id, "driftloop.retrain.promoted", str(register_result["alias"] == "champion").lower()
        )


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
