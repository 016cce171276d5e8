"""``driftloop serve``: the registered model behind an alias over REST (FastAPI + uvicorn), following the alias.

- ``app.create_app``: the ASGI app (/predict, /invocations, /health, /ready, /version, /metrics, /docs);
- ``holder.ModelHolder``: the served version and its hot swap (load + verify in the background, then swap);
- ``predlog.PredictionLog``: the buffered, partitioned Parquet log of served rows that monitoring reads.
"""

from __future__ import annotations

import gc
import logging
import os

from driftloop.config import Params
from driftloop.serve.app import create_app
from driftloop.serve.holder import ModelHolder, Served, load_served
from driftloop.serve.predlog import PredictionLog

__all__ = ["ModelHolder", "PredictionLog", "Served", "build", "create_app", "load_served", "run"]


def build(params: Params, alias: str | None = None, *, debug: bool | None = None, log_predictions: bool | None = None):
    """The app of ``params`` with its model loaded and verified: errors here are start-up errors."""
    from driftloop import tracking

    cfg = params.serve
    # an HTTP registry that does not answer must not hang a hot swap for minutes: no retries, a short timeout
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, cfg.registry_timeout_s))))
    client = tracking.connect(params)
    holder = ModelHolder(client, params, alias or cfg.alias)
    holder.load_initial()
    log_on = cfg.log_predictions if log_predictions is None else log_predictions
    log = (
        PredictionLog(
            cfg.log_dir,
            flush_rows=cfg.log_flush_rows,
            flush_s=cfg.log_flush_s,
            max_buffered_rows=cfg.log_max_buffered_rows,
        )
        if log_on
        else None
    )
    token = os.environ.get(cfg.token_env) or None
    return create_app(params, holder, log, token=token, debug=debug), holder, log


def run(
    params: Params,
    *,
    host: str | None = None,
    port: int | None = None,
    alias: str | None = None,
    debug: bool | None = None,
    log_predictions: bool | None = None,
    echo=print,
) -> None:
    import uvicorn

    cfg = params.serve
    app, holder, log = build(params, alias, debug=debug, log_predictions=log_predictions)
    host, port = host or cfg.host, port or cfg.port
    served = holder.current
    auth = "bearer token required" if os.environ.get(cfg.token_env) else f"no auth (set {cfg.token_env} to require one)"
    where = f"log -> {cfg.log_dir}" if log is not None else "prediction log off"
    echo(f"serve: {served.name} v{served.version} @{holder.alias} on http://{host}:{port} ({auth}; {where})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the imports and the loaded model never become garbage: out of the collector's sight, a full collection
    # (triggered by what requests and the log buffer allocate) does not walk them again and again
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=cfg.graceful_shutdown_s,
    )
