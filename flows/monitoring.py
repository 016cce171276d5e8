"""The monitoring flow: read a batch, monitor it against @champion (schema, drift, prediction drift,
performance; reports, MLflow run, alerts), and on a ``retrain`` decision add the labeled batch as a
new DVC data version and run the training flow as a subflow.

A bad batch (unreadable, empty, missing columns...) ends with a status (``error`` or
``schema_violation``), never an exception. This flow never moves a registry alias: only the
register stage's gate (in the training flow) and people do.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from driftloop.errors import DataError, DriftloopError

try:
    from flows.training import (
        FLOW_RUN_ENV,
        RETRY_DELAYS,
        environ,
        load_project_params,
        retry_unless_bad_input,
        training_flow,
    )
except ModuleNotFoundError:  # loaded by file path (a Prefect entrypoint) from outside the project root
    from training import FLOW_RUN_ENV, RETRY_DELAYS, environ, load_project_params, retry_unless_bad_input, training_flow


@task(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def read_batch(batch: str, params) -> tuple[str, Any]:
    """A file or glob (CSV/Parquet), ``sql:SELECT ...`` or ``sim://2025-03?rows=5000``; DataError if unreadable."""
    from driftloop import loop

    return loop.read_batch(batch, params)


@task(cache_policy=NO_CACHE)  # not retried: every call logs a monitoring run and may alert
def monitor(params, batch_id: str, df) -> dict[str, Any]:
    from driftloop import loop

    return loop.monitor_batch(params, batch_id, df)


def _unreadable(params, batch: str, exc: Exception) -> dict[str, Any]:
    """The result for a batch that cannot be read: status error, a summary file and an alert."""
    import datetime as dt

    from driftloop import loop
    from driftloop.alerts import Alert, send_alert
    from driftloop.evaluate import write_json

    stem = Path(batch.split("?", 1)[0]).stem or "batch"
    batch_id = loop._safe_id(f"unreadable-{stem}")[:60] + "-" + hashlib.sha1(batch.encode()).hexdigest()[:8]
    reason = f"{type(exc).__name__}: {exc}"
    result: dict[str, Any] = {
        "batch_id": batch_id,
        "batch": batch,
        "rows": 0,
        "status": "error",
        "error": reason,
        "decision": {"status": "error", "reasons": [reason]},
        "report_html": None,
        "mlflow_run_id": None,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    outcome = send_alert(
        Alert(
            status="error",
            title=f"driftloop error: batch {batch_id}",
            message=f"- {reason}",
            batch_id=batch_id,
            details={"batch": batch},
        ),
        params.alerts,
    )
    result["alert"] = {"sent": outcome.sent, "errors": outcome.errors, "log": outcome.logged_to}
    summary = loop.report_dir(params, batch_id) / "summary.json"
    result["summary_json"] = str(summary)
    write_json(result, summary)
    return result


def _retrain(params, project: Path, batch_id: str, df, result: dict) -> dict[str, Any]:
    """Retrain on the batch through the training flow (a subflow), write-ahead (``loop.retraining``): a failure
    withdraws the batch and restores dvc.lock and the outputs; a killed run is finished at the next start."""
    from driftloop import loop

    logger = get_run_logger()
    try:
        with loop.retraining(
            params,
            batch_id,
            df,
            project,
            monitor_run_id=result.get("mlflow_run_id"),
            summary_json=result.get("summary_json"),
        ) as txn:
            # the DVC stages read the project's params.yaml (dvc.yaml), whatever this flow was given
            reg = training_flow(project=str(project))
            registered_now = reg["pipeline"]["registered_now"]
            txn.registered(reg if registered_now else {"registered": False, "reason": reg.get("reason")})
    except DataError as exc:  # no labels, or already in the training data: nothing to retrain on
        logger.warning("retrain skipped: %s", exc)
        return {"skipped": str(exc)}
    except BaseException:
        logger.warning("retraining failed: batch %s withdrawn, dvc.lock and outputs restored", batch_id)
        raise
    info: dict[str, Any] = {
        **(txn.outcome or {}),
        "labeled_batch": str(txn.path),
        "training_flow_run_id": reg["pipeline"]["flow_run_id"],
        "registered": registered_now,
    }
    if not registered_now:
        info["reason"] = reg.get("reason") or "the pipeline registered no new version"
    return info


def _markdown(result: dict) -> str:
    reasons = "; ".join(map(str, result.get("decision", {}).get("reasons", []))) or "-"
    rows = [
        ("Batch", f"{result['batch_id']} ({result.get('rows', 0)} rows)"),
        ("Status", f"**{result['status']}**"),
        ("Reasons", reasons),
        ("Report", f"`{result.get('report_html') or '-'}`"),
        ("Summary", f"`{result.get('summary_json') or '-'}`"),
        ("MLflow run", f"`{result.get('mlflow_run_id') or '-'}`"),
        ("Champion", str(result.get("champion_version", "-"))),
    ]
    if "drift" in result and result["status"] in ("ok", "warn", "retrain"):  # never beside a broken schema
        drift = result["drift"]
        rows.append(
            ("Drift share", f"{drift.get('drift_share', 0):.0%} ({drift.get('n_drifted')}/{drift.get('n_columns')})")
        )
    perf = result.get("performance") or {}
    if perf.get("value") is not None:
        drop = "" if perf.get("drop") is None else f", drop {perf['drop']:+.4f}"
        rows.append(("Performance", f"{perf['metric']} {perf['value']:.4f}{drop}"))
    if "alert" in result:
        rows.append(("Alert", "sent" if result["alert"].get("sent") else f"logged to {result['alert'].get('log')}"))
    retrain = result.get("retrain")
    if retrain:
        if retrain.get("version"):
            promoted = "promoted" if retrain.get("promoted") else "not promoted"
            text = f"version {retrain['version']} -> @{retrain['alias']}, {promoted} ({retrain.get('reason')})"
        else:
            text = retrain.get("error") or retrain.get("skipped") or retrain.get("reason") or "-"
        rows.append(("Retrain", text))
    body = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return f"# driftloop monitoring\n\n| | |\n|---|---|\n{body}\n"


@flow(name="driftloop-monitoring", log_prints=True)
def monitoring_flow(
    batch: str, params_path: str = "params.yaml", project: str = ".", retrain: bool = True
) -> dict[str, Any]:
    """Monitor one batch; on ``retrain`` (and ``retrain=True``) retrain on it through the training flow."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root = Path(project).resolve()
    flow_run_id = str(flow_run.get_id())
    with contextlib.chdir(root):
        params = load_project_params(root, params_path)
        from driftloop import loop

        recovered = loop.recover_retraining(root, params, if_running="skip")  # an interrupted retraining
        if recovered:
            logger.warning("recovered an interrupted retraining: %s", recovered)
        try:
            if batch == loop.PREDICTIONS_SPEC:  # the served rows since the last monitored period
                with environ(**{FLOW_RUN_ENV: flow_run_id}):
                    result, df = loop.monitor_prediction_log(params)
                batch_id = result["batch_id"]
            else:
                batch_id, df = read_batch(batch, params)
        except DriftloopError as exc:  # a bad batch is a monitoring result, not a crash
            result = _unreadable(params, batch, exc)
        else:
            if batch != loop.PREDICTIONS_SPEC:
                with environ(**{FLOW_RUN_ENV: flow_run_id}):  # the monitoring MLflow run names this flow run
                    result = monitor(params, batch_id, df)
            if result["status"] == "retrain":
                if not retrain:
                    result["retrain"] = {"skipped": "retrain=False"}
                else:
                    try:
                        result["retrain"] = _retrain(params, root, batch_id, df, result)
                    except Exception as exc:  # the training failed: report it, then fail this run
                        result["retrain"] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                        loop.record_retrain_outcome(result, result["retrain"])
                        create_markdown_artifact(
                            key="driftloop-monitoring",
                            markdown=_markdown(result),
                            description=f"batch {batch_id}: {result['status']}",
                        )
                        raise
            elif retrain:  # retrain.keep_labeled_batches: its labels join the training data for the next retrain
                loop.keep_labeled_batch(params, result, df, root)
        result["prefect_flow_run_id"] = flow_run_id
        create_markdown_artifact(
            key="driftloop-monitoring",
            markdown=_markdown(result),
            description=f"batch {result['batch_id']}: {result['status']}",
        )
        logger.info("batch %s: %s (report %s)", result["batch_id"], result["status"], result.get("report_html"))
        return result


if __name__ == "__main__":  # pragma: no cover
    import sys

    monitoring_flow(sys.argv[1])
