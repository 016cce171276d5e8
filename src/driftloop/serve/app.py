"""The FastAPI application of ``driftloop serve``: /predict, /invocations, /health, /ready, /version, /metrics.

Every scoring request: read the body (at most ``serve.max_body_bytes``), parse it (``requests.parse``), hold it to
the served model's data contract (``driftloop.contract.enforce``, the rules of ``driftloop score`` and
monitoring), predict with the version the request started with, hand the rows to the prediction log, answer.
The CPU work of a large request runs in a worker thread, off the event loop; a small one (at most
``INLINE_BYTES``, ~1-2 ms of work) runs inline, cheaper than the hop to a thread. Errors are JSON naming the column and
row, never the request's values (``serve.debug`` adds the contract's detail).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from driftloop.config import Params
from driftloop.contract import Columns, ContractViolation, enforce
from driftloop.serve.holder import ModelHolder, Served
from driftloop.serve.predlog import Entry, PredictionLog
from driftloop.serve.requests import BadRequest, parse

_log = logging.getLogger("driftloop.serve")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
OPEN_PATHS = frozenset({"/health"})  # everything else needs the bearer token when one is configured
INLINE_BYTES = 16_384  # bodies up to this size (~20 rows) are scored on the event loop, larger ones in a worker thread
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Prometheus metrics in a registry of the app's own (nothing global, two apps in one process are fine)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("driftloop_serve_requests", "Scoring requests", ["endpoint", "code"], registry=r)
        self.latency = Histogram(
            "driftloop_serve_request_seconds",
            "Scoring request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("driftloop_serve_rows", "Rows scored", registry=r)
        self.errors = Counter("driftloop_serve_errors", "Refused requests by kind", ["kind"], registry=r)
        self.unseen = Counter(
            "driftloop_serve_unseen_categories", "Rows with a category the model has not seen", ["column"], registry=r
        )
        self.extra = Counter("driftloop_serve_ignored_columns", "Requests with columns the model ignores", registry=r)
        self.version = Gauge("driftloop_serve_model_version", "Served model version", ["model", "alias"], registry=r)
        self.swaps = Gauge("driftloop_serve_hot_swaps", "Hot swaps since start", registry=r)
        self.swap_failures = Gauge("driftloop_serve_swap_failures", "Versions refused since start", registry=r)
        self.registry_errors = Gauge("driftloop_serve_registry_errors", "Failed alias reads since start", registry=r)
        self.log_written = Gauge("driftloop_serve_log_rows_written", "Prediction-log rows written", registry=r)
        self.log_dropped = Gauge("driftloop_serve_log_rows_dropped", "Prediction-log rows dropped", registry=r)
        self.log_buffered = Gauge(
            "driftloop_serve_log_rows_buffered", "Prediction-log rows not yet written", registry=r
        )

    def render(self, holder: ModelHolder, log: PredictionLog | None) -> bytes:
        from prometheus_client import generate_latest

        if holder.ready:
            self.version.labels(holder.name, holder.alias).set(float(holder.current.version))
        self.swaps.set(holder.stats.swaps)
        self.swap_failures.set(holder.stats.failures)
        self.registry_errors.set(holder.stats.registry_errors)
        if log is not None:
            self.log_written.set(log.written_rows)
            self.log_dropped.set(log.dropped_rows)
            self.log_buffered.set(log.buffered)
        return generate_latest(self.registry)


def _error(status: int, kind: str, message: str, request_id: str, **extra: Any) -> JSONResponse:
    body = {"error": {"kind": kind, "message": message, **extra}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id})


def _records(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    names = list(outputs)
    return [dict(zip(names, row, strict=True)) for row in zip(*(a.tolist() for a in outputs.values()), strict=True)]


def predict_rows(model: Any, rows: Columns, num_threads: int | None) -> dict[str, np.ndarray]:
    """The model's outputs for a request's rows: a LightGBM booster gets the float matrix built straight from the
    values when they are plain (``Preprocessor.matrix``); anything else (other values, a linear model, which reads
    its features by name) takes the DataFrame path every other caller uses. The predictions are the same."""
    X = (
        model.preprocessor.matrix(rows.data, len(rows))
        if getattr(model, "algorithm", "lightgbm") == "lightgbm"
        else None
    )
    if X is None:
        X = model.features(rows.frame())
    return model.outputs(model.scores_from_features(X, num_threads))


def _score(
    served: Served, body: bytes, content_type: str | None, max_rows: int, num_threads: int | None
) -> tuple[Columns, dict[str, np.ndarray], Any, bytes]:
    """The CPU part of a scoring request (a worker thread): parse, enforce, predict, serialize."""
    rows = parse(body, content_type)
    if len(rows) > max_rows:
        raise BadRequest(
            413, "too_many_rows", f"{len(rows)} rows in one request; the limit is {max_rows} (serve.max_rows)"
        )
    enforced = enforce(served.contract, rows, where="the request")
    outputs = predict_rows(served.model, rows, num_threads)
    return rows, outputs, enforced, _records(outputs)


# --------------------------------------------------------------------------- OpenAPI from the data contract
_KIND_SCHEMA = {
    "numeric": {"type": ["number", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "datetime": {"type": ["string", "null"], "format": "date-time"},
    "categorical": {"type": ["string", "null"]},
}


def row_schema(served: Served, max_listed: int = 50) -> dict[str, Any]:
    """The JSON schema of one raw row: the contract's columns and kinds (categories listed up to ``max_listed``)."""
    props: dict[str, Any] = {}
    for name, spec in served.contract["columns"].items():
        prop = dict(_KIND_SCHEMA[spec["kind"]], title=str(name), description=f"{spec['kind']} ({spec['dtype']})")
        cats = spec.get("categories")
        if cats:
            prop["examples"] = list(cats[:max_listed])
            prop["description"] += "; other values are treated as missing (unseen categories, counted)"
        props[str(name)] = prop
    return {
        "title": "Row",
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": True,
        "description": f"One raw row for {served.name} version {served.version}; extra columns are ignored "
        "(listed in the X-Ignored-Columns header); null = missing.",
    }


def _request_body() -> dict[str, Any]:
    rows = {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {"dataframe_records": rows},
                            "required": ["dataframe_records"],
                        },
                        {
                            "type": "object",
                            "properties": {
                                "dataframe_split": {
                                    "type": "object",
                                    "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                                }
                            },
                            "required": ["dataframe_split"],
                        },
                        {"type": "object", "properties": {"inputs": rows}, "required": ["inputs"]},
                        rows,
                    ]
                }
            },
            "text/csv": {"schema": {"type": "string", "description": "CSV with a header row of column names"}},
        },
    }


# --------------------------------------------------------------------------- the app
def create_app(
    params: Params,
    holder: ModelHolder,
    log: PredictionLog | None = None,
    *,
    token: str | None = None,
    debug: bool | None = None,
    poll: bool = True,
) -> FastAPI:
    """The server of ``holder``'s model. ``poll=False``: no background alias polling (tests call ``holder.poll``)."""
    cfg = params.serve
    debug = cfg.debug if debug is None else debug
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if poll:
            holder.start(cfg.poll_interval_s)
        if log is not None:
            log.start()
        try:
            yield
        finally:
            holder.stop()
            if log is not None:
                log.close()  # what is buffered is written: a graceful shutdown loses no prediction

    app = FastAPI(
        title="driftloop serve",
        description="Predictions of the registered model behind an alias; the request schema is the model's data "
        "contract. Request formats: MLflow's (dataframe_records, dataframe_split, inputs) and text/csv.",
        version=params.base.model_name,
        lifespan=lifespan,
    )
    app.state.holder, app.state.log, app.state.metrics = holder, log, metrics

    async def auth(request: Request, call_next):
        if request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                metrics.errors.labels("unauthorized").inc()
                return JSONResponse(
                    {"error": {"kind": "unauthorized", "message": "missing or wrong bearer token"}},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    if token:  # no middleware at all otherwise (it costs every request a little)
        app.middleware("http")(auth)

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
            raise BadRequest(
                413, "body_too_large", f"the body is larger than {cfg.max_body_bytes} bytes (serve.max_body_bytes)"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise BadRequest(
                    413, "body_too_large", f"the body is larger than {cfg.max_body_bytes} bytes (serve.max_body_bytes)"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(request: Request, endpoint: str) -> Response:
        start = time.perf_counter()
        given = request.headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        code = 200
        try:
            if not holder.ready:
                code = 503
                return _error(503, "not_ready", "no model loaded", rid)
            served = holder.current  # this request scores with this version to the end, whatever swaps meanwhile
            try:
                body = await read_body(request)
                args = (served, body, request.headers.get("content-type"), cfg.max_rows, cfg.num_threads or None)
                if len(body) <= INLINE_BYTES:  # a small request costs less than a hop to a worker thread
                    rows, outputs, enforced, records = _score(*args)
                else:
                    rows, outputs, enforced, records = await run_in_threadpool(_score, *args)
            except BadRequest as exc:
                code = exc.status
                metrics.errors.labels(exc.kind).inc()
                return _error(exc.status, exc.kind, exc.message, rid, column=exc.column, row=exc.row)
            except ContractViolation as exc:
                empty = any(p.kind == "empty" for p in exc.problems)
                code = 400 if empty else 422
                first = exc.problems[0]
                metrics.errors.labels("no_rows" if empty else first.kind).inc()
                return _error(
                    code,
                    "no_rows" if empty else "contract_violation",
                    exc.message(debug),
                    rid,
                    column=first.column,
                    row=first.row,
                    problems=[p.to_dict(debug) for p in exc.problems],
                )
            served_at = datetime.now(UTC)
            if log is not None:
                log.append(Entry(rows, outputs, served.contract, served.name, served.version, rid, served_at))
            metrics.rows.inc(len(rows))
            for column, n in enforced.unseen_categories.items():
                metrics.unseen.labels(column).inc(n)
            headers = {"X-Request-ID": rid, "X-Model-Version": served.version, "X-Model-Name": served.name}
            if enforced.extra:
                metrics.extra.inc()
                headers["X-Ignored-Columns"] = ",".join(re.sub(r"[^\x20-\x7e]", "?", c) for c in enforced.extra)
            if enforced.unseen_categories:
                headers["X-Unseen-Categories"] = str(sum(enforced.unseen_categories.values()))
            content = {"predictions": records, "model": served.name, "version": served.version, "request_id": rid}
            if enforced.unseen_categories:
                content["unseen_categories"] = enforced.unseen_categories
            return Response(orjson.dumps(content), media_type="application/json", headers=headers)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 as JSON, the server keeps serving
            code = 500
            metrics.errors.labels("internal").inc()
            _log.exception("request %s failed", rid)
            return _error(500, "internal", f"internal error ({type(exc).__name__})", rid)
        finally:
            metrics.requests.labels(endpoint, str(code)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    body_doc = {"requestBody": _request_body()}
    responses = {"200": {"description": "predictions: label, class probabilities, model version, request id"}}

    @app.post("/predict", openapi_extra=body_doc, responses=responses, summary="Score raw rows")
    async def predict(request: Request) -> Response:
        return await score(request, "predict")

    @app.post("/invocations", openapi_extra=body_doc, responses=responses, summary="MLflow-compatible scoring")
    async def invocations(request: Request) -> Response:
        return await score(request, "invocations")

    @app.get("/health", summary="Liveness")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Model loaded and verified")
    async def ready() -> Response:
        if not holder.ready:
            return JSONResponse({"ready": False}, status_code=503)
        served = holder.current
        digest = getattr(served.model, "sha256", None)
        return JSONResponse(
            {"ready": True, "version": served.version, "verified": digest is not None, "sha256": digest}
        )

    @app.get("/version", summary="Registered model, version, alias, lineage")
    async def version() -> Response:
        if not holder.ready:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse(
            {
                **holder.current.describe(),
                "swaps": holder.stats.swaps,
                "refused_versions": sorted(holder.stats.failed_versions),
            }
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(holder, log), media_type=CONTENT_TYPE_LATEST)

    base_openapi = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        """Regenerated when the served version changes: /docs always shows the current contract."""
        version = holder.current.version if holder.ready else None
        if cache.get("version") != version or "schema" not in cache:
            app.openapi_schema = None
            schema = base_openapi()
            if holder.ready:
                schema.setdefault("components", {}).setdefault("schemas", {})["Row"] = row_schema(holder.current)
            cache.update(version=version, schema=schema)
        return cache["schema"]

    app.openapi = openapi
    return app
