"""The closed loop at the edges: resolve the champion through its lineage, read a production
batch, monitor it (schema, drift, prediction drift, performance), alert, score, retrain.

``driftloop.monitor`` holds the pure engine; this module adds MLflow, files and alerts. Nothing
here ever moves a registry alias: only the register stage (through the gate) and people do.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop import batch_report
from driftloop.config import DriftParams, Params
from driftloop.errors import DataError, DriftloopError
from driftloop.faults import fault_point, register_point
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
    reference_se: float | None = None  # the reference metric's standard error (its test split's noise)

    def reference_scores(self) -> np.ndarray:
        return self.model.predict_scores(self.reference)


def resolve_champion(client, params: Params) -> Champion:
    """The @champion, its training reference sample and contract, found through its lineage."""
    from driftloop import register as reg

    name = params.base.model_name
    mv = reg.current_version(client, name, reg.CHAMPION)
    if mv is None:
        raise DriftloopError(f"model '{name}' has no @champion yet: run the training pipeline first (`make run`)")
    from driftloop import artifacts

    model = artifacts.load_model(name, mv.version, client)  # verified against its recorded SHA-256 manifest
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
    value = test_metrics.get(metric)
    return Champion(
        name, str(mv.version), mv.run_id, model, contract, reference, value, reference_se(mv.tags, metric, value)
    )


def estimate_performance(champion: Champion, scores: np.ndarray, params: Params) -> dict | None:
    """The champion's ROC AUC and accuracy on a batch estimated from its calibrated probabilities (no labels
    needed), against its reference metric; None for a model without calibration (not binary, or older)."""
    from driftloop.calibration import Calibration, estimate

    cal = Calibration.from_dict(getattr(champion.model, "calibration", None))
    if cal is None or champion.model.task != "binary":
        return None
    mp = params.monitor
    return estimate(
        cal,
        scores,
        champion.model.threshold,
        reference=champion.reference_metric,
        reference_se=champion.reference_se,
        confidence=mp.performance_confidence,
        n_sim=mp.performance_bootstrap,
        seed=params.base.seed,
    )


def reference_se(tags: dict, metric: str, value: float | None) -> float | None:
    """The standard error of the champion's reference metric, from the class counts of the test split its gate
    saw (ROC AUC: Hanley & McNeil); None when unknown (the drop's interval then counts the batch's noise only)."""
    from driftloop import monitor as mon

    if metric != "roc_auc" or value is None:
        return None
    try:
        counts = list(json.loads(tags.get("driftloop.gate", "{}") or "{}")["events"]["test"].values())
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if len(counts) != 2:
        return None
    n_neg, n_pos = int(counts[0]), int(counts[1])
    return mon.auc_se_hanley_mcneil(float(value), n_pos, n_neg)


# --------------------------------------------------------------------------- batches
def _safe_id(text: str) -> str:
    """A file-name-safe id: letters, digits, ``_ . -`` only, no leading/trailing dot or dash, no ``..``
    (``...csv`` -> ``batch``, never ``..``: an id is a folder name under ``monitor.output_dir``)."""
    s = re.sub(r"[^0-9A-Za-z_.-]+", "-", str(text))
    s = re.sub(r"\.{2,}", ".", s)
    return s.strip("-._")[:80].strip("-._") or "batch"


def content_hash(df: pd.DataFrame, n: int = 8) -> str:
    """A short SHA-256 of a frame's column names, dtypes and values (row order matters, the index does not)."""
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        try:
            values = pd.util.hash_pandas_object(df, index=False).to_numpy()
        except (TypeError, ValueError):  # unhashable cells (lists, dicts): their text form
            values = pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy()
        h.update(values.tobytes())
    return h.hexdigest()[:n]


def make_batch_id(label: str, df: pd.DataFrame) -> str:
    """The id of a batch: its sanitized label plus a short hash of its content, e.g. ``2025-03-3fa2c1d9``.

    ``A/2025-03.parquet`` and ``B/2025-03.parquet`` get different ids unless their rows are the same; the
    same rows always get the same id. Idempotent: an id that already ends with the content's hash is kept.
    """
    digest = content_hash(df)
    base = _safe_id(label)
    if base == digest or base.endswith(f"-{digest}"):
        return base
    return f"{base[:70].strip('-._') or 'batch'}-{digest}"


def report_dir(params: Params, batch_id: str, *, create: bool = True) -> Path:
    """A new folder for one monitoring of ``batch_id``: ``<monitor.output_dir>/<batch id>/<UTC time>[-n]/``.

    Every monitoring run of a batch keeps its own folder (a batch monitored twice keeps both results),
    and the folder is always inside ``output_dir`` whatever the id holds.
    """
    root = Path(params.monitor.output_dir).resolve()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = root / _safe_id(batch_id)
    for n in range(1, 1000):
        path = base / (stamp if n == 1 else f"{stamp}-{n}")
        if not path.resolve().is_relative_to(root):  # pragma: no cover - _safe_id forbids it
            raise DataError(f"batch id {batch_id!r}: its report folder would leave {root}")
        if not create:
            return path
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise DriftloopError(f"{base}: too many monitoring runs of batch {batch_id} in one second")  # pragma: no cover


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
    """A batch from a file or glob (CSV/Parquet), a SQL query (``sql:SELECT ...``) or the simulator.

    Files are read by ``driftloop.io.read_table``'s machinery, as ingest reads them: the same formats
    and named errors (missing, unreadable, unknown extension); a 0-byte file is an empty batch.
    """
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
    from driftloop.io import EmptyFileError, read_table_with_notes, table_format

    frames = []
    for path in paths:
        fmt = table_format(path)  # a named error for an unknown extension
        # ingest.read_options are for the ingest source's format: CSV options for CSV batches, pyarrow's for
        # Parquet batches when the source is Parquet too
        same = fmt == params.ingest.source or (fmt == "csv" and params.ingest.source != "parquet")
        try:
            df, _ = read_table_with_notes(
                path, params.ingest.read_options if same else {}, fmt=fmt, chunk_rows=params.ingest.chunk_rows
            )
            frames.append(df)
        except EmptyFileError:  # an empty batch is a monitoring result (schema violation), not a crash
            frames.append(pd.DataFrame())
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    stem = Path(paths[0]).stem if len(paths) == 1 else f"{Path(paths[0]).stem}-and-{len(paths) - 1}-more"
    return _safe_id(stem), df


# --------------------------------------------------------------------------- monitoring
# statuses that are not a judgement of the batch's data: they neither start nor count towards a cooldown
NOT_JUDGED = frozenset({"insufficient_data", "error"})
STATUS_CODES = {"ok": 0, "warn": 1, "retrain": 2, "schema_violation": 3, "error": 4, "insufficient_data": 5}


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
    """Judged batches since the last retrain decision (None: never retrained by the loop).

    Batches too small to judge (``insufficient_data``) and batches that could not be monitored (``error``)
    do not count: three 1-row batches do not end a cooldown, as none of them started one.
    """
    n = 0
    for run in history:
        status = run.data.tags.get("driftloop.status")
        if status == "retrain":
            return n
        if status not in NOT_JUDGED:
            n += 1
    return None


def batch_index(history: list) -> int:
    """The index of the next monitored batch of this model (the MLflow step of its metrics): 0, 1, 2, ..."""
    for run in history[:1]:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return int(run.data.tags["driftloop.batch_index"]) + 1
    return len(history)


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
    """Monitor one batch; always returns a result with a status, never raises on a bad batch.

    ``result["batch_id"]`` is the batch's unique id (``make_batch_id``: the label plus a hash of its rows);
    the report and summary go to a new folder per monitoring run (``report_dir``).
    """
    from driftloop import monitor as mon
    from driftloop import tracking

    client = client or tracking.connect(params)
    champion = champion or resolve_champion(client, params)
    mp = params.monitor
    bid = make_batch_id(batch_id, batch)
    out_dir = report_dir(params, bid)
    history = _history(client, params)
    since = batches_since_retrain(history)
    result: dict[str, Any] = {
        "batch_id": bid,
        "rows": len(batch),
        "model": champion.name,
        "champion_version": champion.version,
        "batch_index": batch_index(history),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "report_html": None,
    }
    try:
        schema = mon.check_schema(champion.contract, batch)
        result["schema"] = schema.to_dict()
        drift = pred = perf = tdrift = None
        if not schema.empty and len(batch) >= mp.min_rows:  # below min_rows the numbers mean nothing
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
                estimate = estimate_performance(champion, scores, params)
                if estimate is not None:
                    result["estimated_performance"] = estimate
                y = _labels(batch, champion.model.target)
                if y is not None:
                    keep = y.notna().to_numpy()
                    try:
                        y_enc = champion.model.encoder.encode(y[keep])
                        s = scores[keep]
                        perf = mon.performance(
                            y_enc,
                            s,
                            champion.model.task,
                            champion.reference_metric,
                            reference_se=champion.reference_se,
                            confidence=mp.performance_confidence,
                            n_bootstrap=mp.performance_bootstrap,
                            seed=params.base.seed,
                        )
                        result["performance"] = perf
                        if estimate is not None and estimate.get("roc_auc") is not None:
                            realized = (perf.get("metrics") or {}).get("roc_auc")
                            estimate["realized_roc_auc"] = realized
                            estimate["error"] = None if realized is None else estimate["roc_auc"] - realized
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
        decision = mon.decide(schema, drift, pred, perf, mp, since, estimate=result.get("estimated_performance"))
        result["decision"] = decision.to_dict()
        result["status"] = decision.status
    except Exception as exc:  # a broken batch gives a clear status, never an unhandled exception
        result["status"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["decision"] = {"status": "error", "reasons": [result["error"]]}
    # one page per batch: the decision and its numbers on top of Evidently's per-column report (or alone)
    result["report_html"] = str(batch_report.write_report(out_dir / "report.html", result))
    summary_path = out_dir / "summary.json"
    result["summary_json"] = str(summary_path)
    run_id = _log_monitoring(client, params, result, result["batch_index"])
    result["mlflow_run_id"] = run_id
    if send_alerts and result["status"] != "ok":
        result["alert"] = _alert(params, result)
        client.set_tag(run_id, "driftloop.alert.delivered", str(result["alert"]["sent"]).lower())
    from driftloop.evaluate import write_json

    write_json(result, summary_path)
    client.log_artifact(run_id, str(summary_path), "monitoring")
    client.set_terminated(run_id)
    return result


def record_retrain_outcome(result: dict, outcome: dict, client=None) -> None:
    """Write the retraining's outcome into the batch's ``summary.json`` (and the monitoring run's copy and tags)."""
    from driftloop.evaluate import write_json

    result["retrain"] = outcome
    summary = result.get("summary_json")
    if summary:
        write_json(result, summary)
    if result.get("report_html") and Path(result["report_html"]).exists():
        batch_report.write_report(result["report_html"], result)  # the outcome joins the page's summary
    run_id = result.get("mlflow_run_id")
    if client is not None and run_id:
        client.set_tag(run_id, "driftloop.retrain.outcome", str(outcome.get("status")))
        if summary:
            client.log_artifact(run_id, summary, "monitoring")
        if result.get("report_html") and Path(result["report_html"]).exists():
            client.log_artifact(run_id, result["report_html"], "monitoring")


def retrain_outcome(register_result: dict | None, labeled: str | Path | None = None) -> dict[str, Any]:
    """What a finished retraining did, for people: the new version, promoted or not, and why."""
    reg = register_result or {}
    decision = reg.get("decision") or {}
    if not reg.get("registered"):
        out = {"status": "not_registered", "reason": reg.get("reason") or "the pipeline registered no new version"}
    else:
        version, promoted = str(reg.get("version")), reg.get("alias") == "champion"
        champion = decision.get("champion_version")
        out = {
            "status": "registered",
            "model": reg.get("model"),
            "version": version,
            "alias": reg.get("alias"),
            "promoted": promoted,
            "reason": decision.get("reason"),
            "champion_version": version if promoted else (None if champion is None else str(champion)),
            # the pipeline's outputs in the working tree are those of the retrained model, promoted or not
            "working_tree": f"models/ and reports/metrics.json hold version {version}"
            + (" (@champion)" if promoted else f" (@{reg.get('alias')}); @champion is still version {champion}"),
        }
    if labeled is not None:
        out["labeled_batch"] = str(labeled)
    return out


def metric_key(text: str) -> str:
    """An MLflow metric name for a column (MLflow allows letters, digits, ``_ - . / space``)."""
    return re.sub(r"[^0-9A-Za-z_\-. ]+", "_", str(text))[:200] or "_"


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
            "driftloop.batch_index": str(step),
            "driftloop.status": result["status"],
            "driftloop.champion_version": result["champion_version"],
            "driftloop.reasons": "; ".join(map(str, result["decision"].get("reasons", [])))[:4900],
        },
    )
    metrics = {"rows": result["rows"], "status_code": STATUS_CODES.get(result["status"], 4)}
    if "drift" in result:
        metrics.update(drift_share=result["drift"]["drift_share"], n_drifted=result["drift"]["n_drifted"])
        # one metric per column, step = batch index: the MLflow UI charts a column's drift across batches
        for col in result["drift"].get("columns", []):
            if col.get("score") is not None:
                metrics[f"drift/{metric_key(col['column'])}"] = col["score"]
    if "prediction_drift" in result and result["prediction_drift"].get("score") is not None:
        metrics["prediction_drift_score"] = result["prediction_drift"]["score"]
    if (result.get("target_drift") or {}).get("score") is not None:
        metrics["target_drift_score"] = result["target_drift"]["score"]
    perf = result.get("performance") or {}
    for k, v in {**perf, **(perf.get("metrics") or {})}.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[f"perf_{k}"] = v
    # the label-free estimate, charted per batch in MLflow next to the realized metric (perf_roc_auc)
    for k, v in (result.get("estimated_performance") or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[f"est_{k}"] = v
    tracking.log_batch(client, run.info.run_id, metrics=metrics, step=step)
    if result.get("report_html") and Path(result["report_html"]).exists():
        client.log_artifact(run.info.run_id, result["report_html"], "monitoring")
    return run.info.run_id


def alert_message(result: dict) -> str:
    """The alert's text: the reasons, then the numbers that apply to the status (no drift share for a
    batch whose schema is broken or that is too small: those numbers would mislead)."""
    reasons = result.get("decision", {}).get("reasons", [])
    message = "\n".join(f"- {r}" for r in reasons) or "-"
    drift = result.get("drift") or {}
    if drift and result.get("status") in ("ok", "warn", "retrain"):
        share, n, of = drift.get("drift_share", 0), drift.get("n_drifted"), drift.get("n_columns")
        message += f"\n\ndrift share {share:.0%} ({n}/{of} columns)"
        top = sorted((c for c in drift.get("columns", []) if c.get("drifted")), key=lambda c: -(c.get("score") or 0))
        if top:
            message += "; most drifted: " + ", ".join(f"{c['column']} {c['score']:.3f}" for c in top[:5])
    return message + f"\nreport: {result.get('report_html')}"


def _alert(params: Params, result: dict) -> dict:
    from driftloop.alerts import Alert, send_alert

    drift = result.get("drift", {}) if result["status"] in ("ok", "warn", "retrain") else {}
    alert = Alert(
        status=result["status"],
        title=f"driftloop {result['status']}: batch {result['batch_id']}",
        message=alert_message(result),
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


# --------------------------------------------------------------------------- the served prediction log
PREDICTIONS_SPEC = "predictions:"  # `driftloop monitor predictions:` = the log of `driftloop serve` since last time


def monitor_prediction_log(
    params: Params,
    *,
    client=None,
    champion: Champion | None = None,
    send_alerts: bool = True,
    until: dt.datetime | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Monitor the rows served since the last monitored period (``serve.log_dir``), then record the period.

    The watermark (``<log_dir>/_monitored.json``: the end of the period and the log files read) moves only after
    the period was monitored (any status but ``error``): a failed run leaves it, so the next run covers the same
    rows again; a row is never in two monitored periods, and a row flushed after its period was read comes with the
    next one (``predlog.read_rows``). No rows in the period is bad input (nothing monitored, the watermark stays).
    """
    from driftloop.serve import predlog

    since, until, batch, files = predlog.read_period(params, until)
    period = f"({since.isoformat() if since else 'the start'}, {until.isoformat(timespec='seconds')}]"
    if batch.empty:
        raise DataError(f"prediction log {params.serve.log_dir}: no rows served in {period}")
    label = f"predictions-{until:%Y%m%dT%H%M%S}"
    result = monitor_batch(params, label, batch, client=client, champion=champion, send_alerts=send_alerts)
    result["period"] = {"since": since.isoformat() if since else None, "until": until.isoformat()}
    if result["status"] != "error":
        predlog.write_watermark(params.serve.log_dir, until, result["batch_id"], files)
    return result, batch


# --------------------------------------------------------------------------- scoring
def score_batch(
    params: Params,
    batch: pd.DataFrame,
    out: str | Path,
    *,
    client=None,
    champion: Champion | None = None,
    where: str = "the batch to score",
) -> dict[str, Any]:
    """Predictions of @champion for a batch, with the model version that made them (Parquet).

    The batch is held to the champion's data contract first (``driftloop.contract.enforce``, the same rules as
    ``driftloop serve``): a violation raises ``ContractViolation`` naming the column and row, and nothing is written.
    """
    from driftloop import tracking
    from driftloop.contract import enforce
    from driftloop.data.ingest import write_parquet_atomic

    client = client or tracking.connect(params)
    champion = champion or resolve_champion(client, params)
    if len(batch) == 0:
        raise DataError(f"{where} has no rows")
    enforce(champion.contract, batch, where=where)
    pred = champion.model.predict_frame(batch)
    keep = [c for c in batch.columns if c in champion.contract["ignored"]]  # ids travel with their predictions
    frame = pd.concat([batch[keep].reset_index(drop=True), pred.reset_index(drop=True)], axis=1)
    frame["model_name"] = champion.name
    frame["model_version"] = champion.version
    frame["scored_at"] = pd.Timestamp.now(tz="UTC")
    write_parquet_atomic(frame, out)
    return {"rows": len(frame), "out": str(out), "model": champion.name, "version": champion.version}


# --------------------------------------------------------------------------- retraining
def labeled_path(params: Params, batch_id: str, project: str | Path = ".") -> Path:
    return Path(project) / params.ingest.labeled_dir / f"{_safe_id(batch_id)}.parquet"


def _check_labels(params: Params, batch_id: str, batch: pd.DataFrame) -> None:
    target = params.base.target
    if target not in batch.columns or batch[target].isna().all():
        raise DataError(f"batch {batch_id}: no labels in column '{target}'; it cannot be added to the training data")


def add_labeled_batch(params: Params, batch_id: str, batch: pd.DataFrame, project: str | Path = ".") -> Path:
    """Store a labeled batch under ``ingest.labeled_dir`` as a new DVC-tracked data version.

    The file is named by the batch's unique id (``make_batch_id``); labeled data is never overwritten: a
    batch whose file is already there is refused, naming the file.
    """
    from dvc.repo import Repo

    from driftloop.data.ingest import write_parquet_atomic

    batch_id = make_batch_id(batch_id, batch)
    _check_labels(params, batch_id, batch)
    path = labeled_path(params, batch_id, project)
    if path.exists() or path.with_name(f"{path.name}.dvc").exists():
        raise DataError(f"batch {batch_id}: {path} is already in the training data; labeled data is never overwritten")
    write_parquet_atomic(batch[batch[params.base.target].notna()], path)
    with Repo(str(project)) as repo:
        repo.add(str(path.relative_to(project)) if Path(project) != Path(".") else str(path))
    return path


# decisions whose labeled batch may join the training data without a retrain (a retrain adds it itself; a batch
# with a schema violation, too few rows or a monitoring error is not trusted as training data)
KEEP_LABELED = ("ok", "warn")


def keep_labeled_batch(
    params: Params, result: dict[str, Any], batch: pd.DataFrame, project: str | Path = "."
) -> Path | None:
    """``retrain.keep_labeled_batches``: a monitored batch with labels that did not trigger a retrain (ok, warn,
    a retrain held back by the cooldown) joins the training data as a DVC data version, so the next retrain
    trains on every labeled month, not only on the ones that triggered. Returns the file (None: not kept, and
    ``result["labeled_batch"]`` says why). Idempotent: a batch already there is not added twice.
    """
    if not params.retrain.keep_labeled_batches or result.get("status") not in KEEP_LABELED:
        return None
    if _labels(batch, params.base.target) is None:
        result["labeled_batch"] = {"kept": False, "reason": f"no labels in '{params.base.target}'"}
        return None
    path = labeled_path(params, result["batch_id"], project)
    if not path.exists():
        add_labeled_batch(params, result["batch_id"], batch, project)
    result["labeled_batch"] = {"kept": True, "path": str(path)}
    if result.get("summary_json") and Path(result["summary_json"]).exists():
        from driftloop.evaluate import write_json

        write_json(result, result["summary_json"])
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

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for the write-ahead intent): file contents base64-encoded, paths relative to the project."""

        def enc(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode("ascii")

        return {
            "lock": enc(self.lock),
            "uncached": {str(p.relative_to(self.project)): enc(d) for p, d in self.uncached.items()},
        }

    @classmethod
    def from_dict(cls, project: str | Path, data: dict[str, Any]) -> PipelineSnapshot:
        project = Path(project).resolve()

        def dec(text: str | None) -> bytes | None:
            return None if text is None else base64.b64decode(text)

        return cls(project, dec(data.get("lock")), {project / p: dec(d) for p, d in data.get("uncached", {}).items()})

    def restore(self, *, force: bool = False) -> None:
        """Put ``dvc.lock`` and every pipeline output back as they were when the snapshot was taken.

        Without ``force``, nothing is done when ``dvc.lock`` did not change (an in-process failure: outputs
        are written atomically and ``persist``ed). After a crash (``force``), a stage may have written its
        outputs without reaching ``dvc.lock``: everything is put back.
        """
        from dvc.repo import Repo

        lock = self.project / "dvc.lock"
        if not force and (lock.read_bytes() if lock.exists() else None) == self.lock:
            return  # no stage finished with the batch (outputs are written atomically): nothing moved
        for path, data in [(lock, self.lock), *self.uncached.items()]:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                _write_synced(data, path)
        with Repo(str(self.project)) as repo:
            repo.checkout(force=True)  # the cached outputs (data, splits, models) of the restored dvc.lock


def withdraw_labeled_batch(path: str | Path, project: str | Path = ".", gitignore: bytes | None = None) -> None:
    """Undo ``add_labeled_batch``: the batch file, its ``.dvc`` file and its ``.gitignore`` entry go.

    ``gitignore``: the labeled folder's ``.gitignore`` as it was before (a crash inside ``dvc add`` can leave
    the entry without the ``.dvc`` file); it is written back as it was.
    """
    from dvc.repo import Repo

    project = Path(project).resolve()
    path = Path(path) if Path(path).is_absolute() else project / path
    dvcfile = path.with_name(f"{path.name}.dvc")
    if dvcfile.exists():
        with Repo(str(project)) as repo:
            repo.remove(str(dvcfile), outs=True)
    path.unlink(missing_ok=True)
    ignore = path.parent / ".gitignore"
    if gitignore is not None:
        if not ignore.exists() or ignore.read_bytes() != gitignore:
            _write_synced(gitignore, ignore)
    elif ignore.exists() and not any(
        line.strip() and line.strip() != f"/{path.name}" for line in ignore.read_text().splitlines()
    ):
        ignore.unlink()  # only this batch's entry was in it: DVC created it for this batch


# -- write-ahead retraining ------------------------------------------------------------------------------
# A retraining changes the project in several steps (the labeled batch and its .dvc file, then dvc.lock and
# the outputs stage by stage, then the registry, then the trigger link). Before the first change an intent
# (.driftloop/retrain.json) records what to undo; it is deleted once the trigger link is recorded. A process
# killed in between leaves the intent behind, and the next start (`driftloop run`, `driftloop monitor`, the
# monitoring flow, `driftloop recover`) finishes the job: forward when the model was registered (the batch
# stays, with its trigger link), back otherwise (the batch withdrawn, dvc.lock and the outputs restored).
INTENT_DIR = ".driftloop"
INTENT_FILE = "retrain.json"
_ACTIVE: set[str] = set()  # intents this process is carrying out (not orphans, whatever their pid says)

AFTER_INTENT = register_point("retrain.after_intent", "driftloop monitor BATCH --retrain (intent written)")
AFTER_BATCH = register_point("retrain.after_batch", "driftloop monitor BATCH --retrain (batch + .dvc added)")
AFTER_STAGE = register_point(
    "retrain.after_stage", "driftloop monitor BATCH --retrain (after each stage and its dvc.lock entry; @N: N-th)"
)
AFTER_PIPELINE = register_point(
    "retrain.after_pipeline", "driftloop monitor BATCH --retrain (registered; no trigger link yet)"
)
BEFORE_COMMIT = register_point(
    "retrain.before_commit", "driftloop monitor BATCH --retrain (trigger link recorded; intent not committed)"
)


def intent_path(project: str | Path = ".") -> Path:
    return Path(project).resolve() / INTENT_DIR / INTENT_FILE


def _write_synced(data: bytes, path: Path) -> None:
    """Atomic and durable: a temporary file, fsync, rename (readers and crashes see the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_intent(intent: dict[str, Any]) -> None:
    path = intent_path(intent["project"])
    ignore = path.parent / ".gitignore"
    if not ignore.exists():  # driftloop's own state is never committed (and never shows in `git status`)
        path.parent.mkdir(parents=True, exist_ok=True)
        ignore.write_text("# driftloop's own state (write-ahead intents, locks): never committed\n*\n")
    _write_synced(json.dumps(intent, indent=1, default=str).encode(), path)


def read_intent(project: str | Path = ".") -> dict[str, Any] | None:
    path = intent_path(project)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:  # written atomically: a broken file was edited by hand
        raise DriftloopError(f"{path}: unreadable retraining intent ({exc}); fix or delete it") from None


def _lock(project: str | Path):
    from filelock import FileLock

    path = intent_path(project).with_name("retrain.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=600)


def _owner() -> dict[str, Any]:
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time()}


def owner_alive(intent: dict[str, Any]) -> bool:
    """Whether the process that wrote ``intent`` is still carrying it out (another host: assumed so)."""
    import psutil

    owner = intent.get("owner") or {}
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("pid") == os.getpid():
        return intent.get("id") in _ACTIVE
    try:
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["started"])) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def pending_retrain(project: str | Path = ".") -> dict[str, Any] | None:
    """An interrupted retraining waiting for recovery (its process is gone), or None.

    For readers of ``ingest.labeled_dir`` (the ingest stage): the labeled batch of a pending intent is not
    part of the training data until it is recovered (``recover_retraining``; ``driftloop recover``). A
    retraining still running (its own ingest stage reads the batch) is not pending.
    """
    intent = read_intent(project)
    return intent if intent is not None and not owner_alive(intent) else None


def _max_version(client, name: str) -> int:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        return 0
    return max((int(v.version) for v in versions), default=0)


class Retraining:
    """One write-ahead retraining: ``begin`` (intent, then the batch), the pipeline, ``registered``,
    ``link``, ``commit``; ``rollback`` undoes it. ``retraining()`` and ``pipeline.retrain_on`` drive it."""

    def __init__(
        self,
        params: Params,
        batch_id: str,
        batch: pd.DataFrame,
        project: str | Path = ".",
        *,
        monitor_run_id: str | None = None,
        summary_json: str | None = None,
        client=None,
    ):
        self.params, self.batch, self.project = params, batch, Path(project).resolve()
        self.batch_id = make_batch_id(batch_id, batch)
        self.monitor_run_id, self.summary_json = monitor_run_id, summary_json
        self._client = client
        self.intent: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None
        self.path = labeled_path(params, self.batch_id, self.project)

    @property
    def client(self):
        if self._client is None:
            from driftloop import tracking

            self._client = tracking.connect(self.params)
        return self._client

    def begin(self) -> Path:
        """Recover an interrupted retraining, write the intent, then add the labeled batch."""
        _check_labels(self.params, self.batch_id, self.batch)
        recover_retraining(self.project, self.params, client=self._client)
        rel = self.path.relative_to(self.project)
        if self.path.exists() or self.path.with_name(f"{self.path.name}.dvc").exists():
            raise DataError(
                f"batch {self.batch_id}: {rel} is already in the training data; labeled data is never overwritten"
            )
        with _lock(self.project):
            current = read_intent(self.project)
            if current is not None:  # started meanwhile by another process
                raise DriftloopError(_in_progress(current))
            ignore = self.path.parent / ".gitignore"
            self.intent = {
                "id": uuid.uuid4().hex,
                "version": 1,
                "project": str(self.project),
                "phase": "begun",
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "created_ms": int(time.time() * 1000),
                "owner": _owner(),
                "batch_id": self.batch_id,
                "batch_path": str(rel),
                "gitignore": None if not ignore.exists() else base64.b64encode(ignore.read_bytes()).decode("ascii"),
                "monitor_run_id": self.monitor_run_id,
                "summary_json": self.summary_json,
                "model": self.params.base.model_name,
                "versions_before": _max_version(self.client, self.params.base.model_name),
                "snapshot": PipelineSnapshot.take(self.project).to_dict(),
                "result": None,
            }
            _write_intent(self.intent)
            _ACTIVE.add(self.intent["id"])
        fault_point(AFTER_INTENT)
        add_labeled_batch(self.params, self.batch_id, self.batch, self.project)
        fault_point(AFTER_BATCH)
        return self.path

    def registered(self, register_result: dict) -> None:
        """The pipeline finished (the register stage wrote its result): from here on, recovery goes forward."""
        self.intent.update(phase="registered", result=register_result)
        _write_intent(self.intent)
        fault_point(AFTER_PIPELINE)

    def link(self) -> None:
        """The audit trail both ways (idempotent)."""
        result = self.intent["result"] or {}
        link_retraining(self.client, self.params, self.monitor_run_id, self.batch_id, result)
        self.intent["phase"] = "linked"
        _write_intent(self.intent)
        fault_point(BEFORE_COMMIT)

    def commit(self) -> dict[str, Any]:
        outcome = retrain_outcome(self.intent["result"], self.intent["batch_path"])
        _record_outcome(self.intent, outcome, self._client)
        _finish(self.intent)
        return outcome

    def rollback(self, reason: str) -> dict[str, Any]:
        outcome = _roll_back(self.intent, self.params, self._client, reason)
        _finish(self.intent)
        return outcome


def _in_progress(intent: dict[str, Any]) -> str:
    owner = intent.get("owner") or {}
    return (
        f"a retraining of batch {intent.get('batch_id')} is in progress (pid {owner.get('pid')} on "
        f"{owner.get('host')}, since {intent.get('created_at')}; {intent_path(intent['project'])}); wait for it "
        "to finish, or if that process is gone for good, run `driftloop recover --force`"
    )


def _finish(intent: dict[str, Any]) -> None:
    intent_path(intent["project"]).unlink(missing_ok=True)
    _ACTIVE.discard(intent.get("id"))


def _record_outcome(intent: dict[str, Any], outcome: dict, client) -> None:
    """The outcome into the batch's summary.json and onto the monitoring run (best effort: the data state is
    what the intent protects; a summary that cannot be written is not a reason to undo a registration)."""
    path = intent.get("summary_json")
    with contextlib.suppress(Exception):
        result = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
        result.setdefault("summary_json", path)
        result.setdefault("mlflow_run_id", intent.get("monitor_run_id"))
        record_retrain_outcome(result, outcome, client)


def _registration(intent: dict[str, Any], client) -> dict | None:
    """The register stage's result if the interrupted retraining registered a model (None otherwise)."""
    if intent.get("result"):
        return intent["result"]
    from driftloop.pipeline import _register_out

    project = Path(intent["project"])
    try:
        result = json.loads((project / _register_out(project)).read_text(encoding="utf-8"))
        if not result.get("registered") or int(result["version"]) <= int(intent.get("versions_before") or 0):
            return None
        mv = client.get_model_version(intent["model"], str(result["version"]))
    except Exception:  # noqa: BLE001 - no result, an older one, or not in the registry: not registered
        return None
    return result if mv.run_id == result.get("run_id") else None


def _roll_forward(intent: dict[str, Any], params: Params, client, result: dict) -> dict[str, Any]:
    from dvc.repo import Repo

    project = Path(intent["project"])
    with Repo(str(project)) as repo:
        stale = repo.status()
        for target in stale:  # registered, but killed before DVC recorded the last stage: record it now
            repo.commit(target, force=True)
    link_retraining(client, params, intent.get("monitor_run_id"), intent["batch_id"], result)
    outcome = {**retrain_outcome(result, intent["batch_path"]), "recovered": "rolled forward"}
    _record_outcome(intent, outcome, client)
    return outcome


def _roll_back(intent: dict[str, Any], params: Params, client, reason: str) -> dict[str, Any]:
    project = Path(intent["project"])
    notes = _fail_stale_runs(intent, client)
    ignore = intent.get("gitignore")
    withdraw_labeled_batch(intent["batch_path"], project, base64.b64decode(ignore) if ignore is not None else None)
    PipelineSnapshot.from_dict(project, intent["snapshot"]).restore(force=True)
    notes += _orphan_versions(intent, client)
    outcome = {"status": "rolled_back", "reason": reason, "labeled_batch": None, "notes": notes}
    _record_outcome(intent, outcome, client)
    return outcome


def _fail_stale_runs(intent: dict[str, Any], client) -> list[str]:
    """MLflow runs of the interrupted retraining's stages (named in its tune/train outputs) left RUNNING."""
    if client is None:
        return []
    project, notes = Path(intent["project"]), []
    ids = []
    for rel, key in (("models/run.json", "run_id"), ("models/best_params.json", "tune_run_id")):
        with contextlib.suppress(Exception):
            ids.append(json.loads((project / rel).read_text())[key])
    for run_id in filter(None, ids):
        with contextlib.suppress(Exception):
            run = client.get_run(run_id)
            if run.info.status == "RUNNING" and run.info.start_time >= int(intent.get("created_ms", 0)):
                client.set_terminated(run_id, status="FAILED")
                notes.append(f"MLflow run {run_id} of the interrupted retraining marked FAILED")
    return notes


def _orphan_versions(intent: dict[str, Any], client) -> list[str]:
    """Versions registered by the interrupted retraining whose data was withdrawn: tagged, never moved."""
    if client is None:
        return []
    notes = []
    with contextlib.suppress(Exception):
        for mv in client.search_model_versions(f"name = '{intent['model']}'"):
            if int(mv.version) > int(intent.get("versions_before") or 0) and int(mv.creation_timestamp) >= int(
                intent.get("created_ms", 0)
            ):
                client.set_model_version_tag(
                    intent["model"], mv.version, "driftloop.retrain.withdrawn", intent["batch_id"]
                )
                notes.append(
                    f"version {mv.version} was registered by the interrupted retraining, whose batch was withdrawn: "
                    "tagged driftloop.retrain.withdrawn (aliases untouched; see `driftloop history`)"
                )
    return notes


def recover_retraining(
    project: str | Path = ".",
    params: Params | None = None,
    *,
    client=None,
    force: bool = False,
    if_running: str = "raise",
) -> dict[str, Any] | None:
    """Finish an interrupted retraining of ``project``; None when there is none to finish.

    Forward when its model was registered (the batch stays, the trigger link is recorded, the outcome goes
    into the batch's summary.json), back otherwise (the batch withdrawn, ``dvc.lock`` and the outputs
    restored: as if it had never started). A retraining whose process is still running is left alone:
    ``if_running="raise"`` raises ``DriftloopError`` saying so, ``"skip"`` returns None; ``force`` recovers
    it anyway (only for a process known to be gone, e.g. on another machine).
    Returns ``{"action": "rolled_forward" | "rolled_back", "batch_id", "outcome"}``.
    """
    path = intent_path(project)
    if not path.exists():
        return None  # the common path: one stat
    with _lock(project):
        intent = read_intent(project)
        if intent is None:
            return None
        if owner_alive(intent) and not force:
            if if_running == "skip":
                return None
            raise DriftloopError(_in_progress(intent))
        if params is None:
            from driftloop.config import load_params

            params = load_params(Path(intent["project"]) / "params.yaml")
        if client is None:
            from driftloop import tracking

            client = tracking.connect(params)
        batch = Path(intent["project"]) / intent["batch_path"]
        result = _registration(intent, client)
        if result is not None and batch.exists() and batch.with_name(f"{batch.name}.dvc").exists():
            action, outcome = "rolled_forward", _roll_forward(intent, params, client, result)
        else:
            reason = f"interrupted in phase '{intent.get('phase')}' (pid {intent.get('owner', {}).get('pid')})"
            action, outcome = (
                "rolled_back",
                _roll_back(intent, params, client, reason + "; recovered at the next start"),
            )
        _finish(intent)
    return {"action": action, "batch_id": intent["batch_id"], "outcome": outcome}


@contextlib.contextmanager
def retraining(
    params: Params,
    batch_id: str,
    batch: pd.DataFrame,
    project: str | Path = ".",
    *,
    monitor_run_id: str | None = None,
    summary_json: str | None = None,
    client=None,
) -> Iterator[Retraining]:
    """A write-ahead retraining around the block that runs the pipeline.

    On entry: an interrupted retraining is recovered, the intent written, the labeled batch added. The block
    runs the pipeline and calls ``txn.registered(result)``; on exit the trigger link is recorded and the intent
    committed. If the block fails before ``registered``, everything is rolled back (the batch withdrawn,
    ``dvc.lock`` and the outputs restored) and the error re-raised; after it, the intent stays for the next
    start to roll forward.
    """
    txn = Retraining(
        params, batch_id, batch, project, monitor_run_id=monitor_run_id, summary_json=summary_json, client=client
    )
    try:
        txn.begin()
        yield txn
    except BaseException as exc:
        if txn.intent is not None and txn.intent.get("phase") == "begun":
            txn.rollback(f"{type(exc).__name__}: {exc}"[:2000])
        elif txn.intent is not None:
            _ACTIVE.discard(txn.intent.get("id"))  # an orphan now: the next start rolls it forward
        raise
    if txn.intent.get("phase") == "begun":  # the block did not say: nothing registered
        txn.registered({"registered": False, "reason": "the pipeline registered no new version"})
    txn.link()
    txn.outcome = txn.commit()


def reproduce_pipeline(project: str | Path = ".") -> list[str]:
    """``dvc repro`` of the project, stage by stage (upstream first), the driftloop stage commands in this
    process when the installed DVC allows it (``runner.in_process_commands``). Returns the stages that ran.

    After each stage (and its ``dvc.lock`` entry) the fault point ``retrain.after_stage`` is reached.
    """
    import networkx as nx
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo import Repo

    from driftloop import runner

    root = Path(project).resolve()
    ran: list[str] = []
    hook = runner.in_process_commands() if runner.in_process_available() else contextlib.nullcontext()
    with Repo(str(root)) as repo, hook:
        graph = repo.index.graph
        declared = {stage: i for i, stage in enumerate(repo.index.stages)}
        wanted: set = set()
        for stage in repo.stage.collect(str(root / PROJECT_FILE)):
            wanted.update(nx.dfs_postorder_nodes(graph, stage))
        order = nx.lexicographical_topological_sort(
            graph.subgraph(wanted).reverse(copy=True), key=lambda s: declared.get(s, len(declared))
        )
        for stage in [s for s in order if getattr(s, "cmd", None)]:
            if repo.reproduce(f"{stage.path}:{stage.name}", single_item=True):
                ran.append(stage.addressing)
            fault_point(AFTER_STAGE)
    return ran


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
