"""``driftloop serve`` in process: the ASGI app under Starlette's TestClient, a real SQLite MLflow registry with
small LightGBM models registered once for the module, real alias moves (``register.promote``/``rollback``), a
tampered artifact, an unreachable registry, the Parquet prediction log and the labels join."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fit_model, free_port, module_workdir, register_model, small_params, write_params
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from driftloop import loop, serve, tracking
from driftloop import register as reg
from driftloop.cli import app as cli_app
from driftloop.config import load_params
from driftloop.contract import ContractViolation
from driftloop.data.simulate import simulate
from driftloop.errors import DataError, IntegrityError, RegistryError
from driftloop.serve import predlog

TUNE = {"max_rounds": 30, "early_stopping_rounds": 10, "num_threads": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Versions 1 and 2 (different data), version 3 (a copy of 2 whose booster is then tampered); @champion = 1."""
    work, mp = module_workdir(tmp_path_factory, "serve")
    raw = small_params(work)
    raw["tune"].update(TUNE)
    raw["train"]["baselines"] = []
    raw["serve"].update(log_dir=str(work / "predictions"), log_flush_s=60, max_rows=100, max_body_bytes=200_000)
    raw["alerts"]["log_path"] = str(work / "alerts.jsonl")
    write_params(work / "params.yaml", raw)
    p = load_params(work / "params.yaml")
    client = tracking.connect(p)
    name = p.base.model_name
    models, rows = [], None
    for seed in (7, 8):
        model, parts = fit_model(p, simulate(2000, seed=seed), "binary")
        sample = parts["test"].drop(columns=["default"]).head(100)
        register_model(client, p, model, sample, name, reference=parts["train"].head(300))
        models.append(model)
        rows = parts["test"].drop(columns=["default"]).head(40).reset_index(drop=True) if rows is None else rows
    info3, _ = register_model(client, p, models[1], rows.head(50), name)
    root = Path(client.get_logged_model(info3.model_id).artifact_location.removeprefix("file://"))
    with open(root / "artifacts/booster.txt", "ab") as f:
        f.write(b"\nTree=999\n")
    client.set_registered_model_alias(name, "champion", "1")
    yield {"work": work, "p": p, "client": client, "models": models, "rows": rows}
    mp.undo()


def _records(rows: pd.DataFrame) -> list[dict]:
    return json.loads(rows.to_json(orient="records", date_format="iso"))


@pytest.fixture(scope="module")
def app(served):
    application, holder, log = serve.build(served["p"])
    with TestClient(application) as client:
        yield client, holder, log
    # the lifespan's shutdown flushed the log


def _expected(served, version: int, rows: pd.DataFrame) -> list[dict]:
    pred = served["models"][version - 1].predict_frame(rows)
    return json.loads(pred.to_json(orient="records", double_precision=15))


def _close(got: list[dict], want: list[dict]) -> None:
    assert [g["prediction"] for g in got] == [w["prediction"] for w in want]
    np.testing.assert_allclose([g["proba_1"] for g in got], [w["proba_1"] for w in want], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- request formats, same answers
def test_every_request_format_gives_the_models_predictions(served, app):
    client, holder, _ = app
    rows = served["rows"].head(5)
    recs = _records(rows)
    split = json.loads(rows.to_json(orient="split", date_format="iso", index=False))
    bodies = [
        ("/predict", {"json": {"dataframe_records": recs}}),
        ("/invocations", {"json": {"dataframe_records": recs}}),
        ("/invocations", {"json": {"dataframe_split": split}}),
        ("/invocations", {"json": {"inputs": recs}}),
        ("/invocations", {"json": {"inputs": {c: [r[c] for r in recs] for c in recs[0]}}}),
        ("/predict", {"json": recs}),
        ("/invocations", {"content": rows.to_csv(index=False), "headers": {"content-type": "text/csv"}}),
    ]
    want = _expected(served, 1, rows)
    for path, kwargs in bodies:
        r = client.post(path, **kwargs)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        _close(body["predictions"], want)
        assert body["version"] == r.headers["x-model-version"] == "1"
        assert body["request_id"] == r.headers["x-request-id"]
        assert set(body["predictions"][0]) == {"prediction", "proba_0", "proba_1"}


def test_extra_columns_are_ignored_and_named_unseen_categories_counted(served, app):
    client, _, _ = app
    recs = _records(served["rows"].head(3))
    recs[0]["state"] = "Atlantis"
    for r in recs:
        r["note"] = "free text"
    r = client.post("/predict", json={"dataframe_records": recs}, headers={"x-request-id": "req-extra-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-ignored-columns"] == "note"
    assert r.headers["x-unseen-categories"] == "1" and r.json()["unseen_categories"] == {"state": 1}
    assert r.headers["x-request-id"] == "req-extra-1"
    metrics = client.get("/metrics").text
    assert 'driftloop_serve_unseen_categories_total{column="state"} 1.0' in metrics


def test_missing_values_are_allowed_as_the_model_handles_them(served, app):
    client, _, _ = app
    rec = _records(served["rows"].head(1))[0]
    body = json.dumps({"dataframe_records": [dict(rec, annual_income=float("nan"), state=None)]})
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    raw = served["rows"].head(1).assign(annual_income=np.nan, state=None)
    _close(r.json()["predictions"], _expected(served, 1, raw))


def test_the_request_fast_path_scores_exactly_as_the_dataframe_path(served):
    """``Preprocessor.matrix`` (plain values straight into LightGBM's matrix) gives the bits ``predict_frame`` gives
    on the same rows as a DataFrame; values whose reading depends on pandas' inference take the DataFrame path."""
    from driftloop.contract import Columns
    from driftloop.serve.app import predict_rows

    model = served["models"][0]
    assert model.booster.pandas_categorical == list(model.preprocessor.categories.values())
    recs = _records(served["rows"].head(30))
    recs[0].update(state="Atlantis", annual_income=None, application_date=None)  # unseen, missing
    recs[1].update(has_cosigner="false", employment_type=None)  # boolean as text
    recs[2].update(loan_term_months=36.0)  # a float in an int column
    for data in (recs, [dict(recs[3], annual_income="52000", age=True)]):  # the second: text, a boolean as numbers
        cols = Columns(list(data[0]), {k: [r.get(k) for r in data] for k in data[0]}, len(data))
        fast = model.preprocessor.matrix(cols.data, len(cols))
        assert (fast is None) == (data is not recs), "plain values take the fast path, text numbers do not"
        got = predict_rows(model, cols, 1)
        want = model.predict_frame(pd.DataFrame.from_records(data))
        assert list(got) == list(want.columns)
        for c in want.columns:
            np.testing.assert_array_equal(got[c], want[c].to_numpy(), err_msg=c)


def test_a_linear_champion_is_served_through_the_dataframe_path(served):
    """The algorithm selection can register a linear model (``driftloop.linear``), which reads its features by
    name: the request path gives it the DataFrame, and the predictions are those of ``predict_frame``."""
    import dataclasses

    from driftloop.contract import Columns
    from driftloop.linear import LinearModel
    from driftloop.serve.app import predict_rows

    base = served["models"][0]
    raw = served["rows"]
    y = (base.predict_scores(raw) > 0.5).astype(int)  # any labels: the point is the path, not the fit
    linear = LinearModel("binary", seed=0, strength=1.0).fit(base.features(raw), y)
    model = dataclasses.replace(base, booster=linear, algorithm="linear", best_iteration=None)
    recs = _records(raw.head(10))
    cols = Columns(list(recs[0]), {k: [r.get(k) for r in recs] for k in recs[0]}, len(recs))
    got = predict_rows(model, cols, 1)
    want = model.predict_frame(pd.DataFrame.from_records(recs))
    for c in want.columns:
        np.testing.assert_array_equal(got[c], want[c].to_numpy(), err_msg=c)


# --------------------------------------------------------------------------- bad input: 4xx, nothing logged
def _raw(body, ctype: str = "application/json") -> dict:
    return {"content": body, "headers": {"content-type": ctype}}


def _recs(rows) -> dict:
    return {"json": {"dataframe_records": rows}}


def _bad_cases(rows: pd.DataFrame) -> list[tuple[str, dict, int, str, str | None]]:
    rec = _records(rows.head(2))
    no_age = [{k: v for k, v in r.items() if k != "age"} for r in rec]
    infinite = json.dumps({"dataframe_records": [dict(rec[0], annual_income=float("inf"))]})
    bad_csv = rows.head(2).assign(loan_amount=["12", "forty"]).to_csv(index=False)
    bad = "contract_violation"
    return [
        ("garbage JSON", _raw(b"{not json"), 400, "malformed_body", None),
        ("empty body", _raw(b""), 400, "empty_body", None),
        ("wrong content type", _raw(b"age=3", "text/plain"), 415, "unsupported_media_type", None),
        ("no known key", {"json": {"rows": rec}}, 400, "malformed_body", None),
        ("0 rows", _recs([]), 400, "no_rows", None),
        ("missing column", _recs(no_age), 422, bad, "age"),
        ("text in a numeric column", _recs([rec[0], dict(rec[1], age="forty")]), 422, bad, "age"),
        ("a date that does not parse", _recs([rec[0], dict(rec[1], application_date="31st of Nevember")]), 422, bad,
         "application_date"),
        ("infinity", _raw(infinite), 422, bad, "annual_income"),
        ("text in a numeric CSV column", _raw(bad_csv, "text/csv"), 422, bad, "loan_amount"),
        ("huge body", _raw(b'{"dataframe_records": [' + b" " * 250_000 + b"]}"), 413, "body_too_large", None),
        ("too many rows", _recs([rec[0]] * 101), 413, "too_many_rows", None),
        ("split with a short row", {"json": {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}}, 400,
         "malformed_body", None),
    ]  # fmt: skip


ROW_OF = {
    "text in a numeric column": 1,
    "a date that does not parse": 1,
    "infinity": 0,
    "text in a numeric CSV column": 1,
}


def test_bad_input_is_a_clear_4xx_without_the_data_and_the_server_keeps_serving(served, app):
    client, _, log = app
    rows = served["rows"]
    good = {"dataframe_records": _records(rows.head(1))}
    before = log.buffered + log.written_rows
    for label, kwargs, status, kind, column in _bad_cases(rows):
        r = client.post("/invocations", **kwargs)
        assert r.status_code == status, (label, r.text)
        err = r.json()["error"]
        assert err["kind"] == kind, (label, err)
        assert err["column"] == column, (label, err)
        if label in ROW_OF:
            assert err["row"] == ROW_OF[label], (label, err)
        for secret in ("forty", "Nevember", "free text", "Infinity", "inf,"):
            assert secret not in r.text, (label, r.text)
        assert str(rows.loc[0, "annual_income"]) not in r.text, label  # no value of the request comes back
        assert client.post("/predict", json=good).status_code == 200, label
    assert log.buffered + log.written_rows == before + len(_bad_cases(rows)), "only the good requests were logged"
    metrics = client.get("/metrics").text
    assert 'driftloop_serve_errors_total{kind="wrong_kind"}' in metrics
    assert 'driftloop_serve_errors_total{kind="body_too_large"} 1.0' in metrics


def test_debug_errors_add_the_expected_kind(served):
    application, _, _ = serve.build(served["p"], debug=True, log_predictions=False)
    rec = _records(served["rows"].head(1))[0]
    with TestClient(application) as client:
        r = client.post("/predict", json={"dataframe_records": [dict(rec, age="forty")]})
    assert r.status_code == 422
    assert r.json()["error"]["problems"][0]["expected"] == "numeric"


# --------------------------------------------------------------------------- endpoints, auth, OpenAPI
def test_health_ready_version_metrics_and_openapi_from_the_contract(served, app):
    client, holder, _ = app
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] and ready["verified"] and len(ready["sha256"]) == 64
    version = client.get("/version").json()
    assert version["model"] == "driftloop" and version["alias"] == "champion" and version["task"] == "binary"
    assert version["lineage"]["driftloop.sha256"] == ready["sha256"]
    metrics = client.get("/metrics").text
    assert "driftloop_serve_request_seconds_bucket" in metrics and "driftloop_serve_rows_total" in metrics
    row = client.get("/openapi.json").json()["components"]["schemas"]["Row"]
    contract = holder.current.contract["columns"]
    assert list(row["properties"]) == list(contract) == row["required"]
    assert row["properties"]["age"]["type"] == ["number", "null"]
    assert row["properties"]["application_date"]["format"] == "date-time"
    assert "NY" in row["properties"]["state"]["examples"]


def test_bearer_token_from_the_environment(served, monkeypatch):
    monkeypatch.setenv("DRIFTLOOP_SERVE_TOKEN", "s3cret-token")
    application, _, _ = serve.build(served["p"], log_predictions=False)
    body = {"dataframe_records": _records(served["rows"].head(1))}
    with TestClient(application) as client:
        assert client.get("/health").status_code == 200  # liveness stays open
        assert client.post("/predict", json=body).status_code == 401
        assert client.get("/version").status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert client.post("/predict", json=body, headers=wrong).status_code == 401
        ok = {"authorization": "Bearer s3cret-token"}
        assert client.post("/predict", json=body, headers=ok).status_code == 200


# --------------------------------------------------------------------------- start-up errors
def test_startup_refuses_an_unknown_alias_a_tampered_version_and_an_unreachable_registry(served, monkeypatch):
    p = served["p"]
    with pytest.raises(RegistryError, match="no alias 'nope'"):
        serve.build(p, "nope")
    client = served["client"]
    client.set_registered_model_alias(p.base.model_name, "tampered", "3")
    with pytest.raises(IntegrityError, match="artifacts/booster.txt"):
        serve.build(p, "tampered")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = p.model_copy(update={"base": p.base.model_copy(update={"tracking_uri": f"http://127.0.0.1:{free_port()}"})})
    with pytest.raises(RegistryError, match="registry failed"):
        serve.build(dead)


# --------------------------------------------------------------------------- hot swap
def test_hot_swap_follows_promote_and_rollback_and_refuses_a_tampered_version(served, app, monkeypatch):
    client, holder, _ = app
    p, mlflow_client = served["p"], served["client"]
    rows = served["rows"].head(4)
    body = {"dataframe_records": _records(rows)}
    assert holder.poll() == "unchanged"

    reg.promote(mlflow_client, p, "2", "serve test")
    assert holder.poll() == "swapped"
    r = client.post("/predict", json=body)
    assert r.headers["x-model-version"] == "2"
    _close(r.json()["predictions"], _expected(served, 2, rows))
    assert client.get("/version").json()["version"] == "2"

    reg.promote(mlflow_client, p, "3", "serve test: a tampered artifact")
    assert holder.poll() == "refused"
    assert holder.poll() == "refused-before"  # not retried until the alias moves again
    r = client.post("/predict", json=body)
    assert r.status_code == 200 and r.headers["x-model-version"] == "2"
    alerts = [json.loads(line) for line in Path(p.alerts.log_path).read_text().splitlines()]
    assert alerts[-1]["status"] == "error" and alerts[-1]["details"]["version"] == "3"
    assert "booster.txt" in alerts[-1]["details"]["error"]
    assert client.get("/version").json()["refused_versions"] == ["3"]

    good = holder.client  # the registry goes away during serving: keep serving, count it
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    holder.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    try:
        assert holder.poll() == "registry-error"
        assert client.post("/predict", json=body).headers["x-model-version"] == "2"
        assert client.get("/ready").status_code == 200
        assert "driftloop_serve_registry_errors 1.0" in client.get("/metrics").text
    finally:
        holder.client = good

    reg.rollback(mlflow_client, p, "serve test: back")  # 3 -> 2
    reg.rollback(mlflow_client, p, "serve test: back again")  # 2 -> 1
    assert holder.poll() == "swapped"
    assert client.post("/predict", json=body).headers["x-model-version"] == "1"


# --------------------------------------------------------------------------- the prediction log and labels
def test_prediction_log_rows_carry_version_and_request_id_and_labels_join_by_key(served, app):
    client, _, log = app
    rows = served["rows"].iloc[10:16]
    r = client.post("/predict", json={"dataframe_records": _records(rows)}, headers={"x-request-id": "log-req-1"})
    assert r.status_code == 200
    log.flush()
    logged = predlog.read_log(served["p"].serve.log_dir)
    mine = logged[logged["request_id"] == "log-req-1"]
    assert len(mine) == 6 and mine["model_version"].eq(r.headers["x-model-version"]).all()
    assert mine["row"].tolist() == list(range(6))
    np.testing.assert_allclose(mine["proba_1"], [x["proba_1"] for x in r.json()["predictions"]])
    assert mine["application_id"].tolist() == rows["application_id"].astype(float).tolist()
    assert mine["annual_income"].dtype == "float64" and str(mine["application_date"].dtype) == "datetime64[ns]"
    files = list(Path(served["p"].serve.log_dir).glob("date=*/part-*.parquet"))
    assert files and all(f.parent.name.startswith("date=20") for f in files)

    labels = served["work"] / "labels.csv"
    pd.DataFrame({"application_id": rows["application_id"].head(4), "default": [1, 0, 1, 0]}).to_csv(
        labels, index=False
    )
    res = CliRunner().invoke(cli_app, ["labels", "add", str(labels), "--key", "application_id"])
    assert res.exit_code == 0, res.output
    assert "4 labels added" in res.output
    joined = predlog.join_labels(served["p"].serve.log_dir, mine, "default", [0, 1])
    assert joined["default"].tolist()[:4] == [1, 0, 1, 0] and joined["default"].iloc[4:].isna().all()

    bad = served["work"] / "bad_labels.csv"
    pd.DataFrame({"application_id": [1, 1], "default": [0, 1]}).to_csv(bad, index=False)
    res = CliRunner().invoke(cli_app, ["labels", "add", str(bad), "--key", "application_id"])
    assert res.exit_code == 1 and "repeats a key" in res.output
    res = CliRunner().invoke(cli_app, ["labels", "add", str(labels), "--key", "nope"])
    assert res.exit_code == 1 and "'nope'" in res.output


# --------------------------------------------------------------------------- score: the same enforcement
def test_score_refuses_a_contract_violation_naming_column_and_row(served, tmp_path):
    p, client = served["p"], served["client"]
    champion = loop.Champion("driftloop", "1", "", served["models"][0], served["models"][0].contract(), None, None)
    bad = served["rows"].head(3).astype({"age": object})
    bad.loc[2, "age"] = "forty"
    out = tmp_path / "scored.parquet"
    with pytest.raises(ContractViolation, match=r"column 'age', row 2"):
        loop.score_batch(p, bad, out, client=client, champion=champion)
    assert not out.exists()
    res = loop.score_batch(p, served["rows"].head(3), out, client=client, champion=champion)
    assert res["rows"] == 3


def test_monitoring_reads_each_served_period_once_with_its_labels(served, app):
    client, holder, log = app
    p = served["p"]
    first = datetime.now(UTC)
    log.flush()
    result, batch = loop.monitor_prediction_log(p, client=served["client"], until=first)
    assert result["status"] != "error", result
    logged = predlog.read_log(p.serve.log_dir)
    assert len(batch) == len(logged) > 0
    assert "prediction" not in batch.columns and "request_id" not in batch.columns
    assert batch["default"].notna().sum() == 4  # the labels added above, joined by application_id
    assert predlog.read_watermark(p.serve.log_dir) == first

    rows = served["rows"].head(7)
    assert client.post("/predict", json={"dataframe_records": _records(rows)}).status_code == 200
    log.flush()
    second = datetime.now(UTC)
    result, batch = loop.monitor_prediction_log(p, client=served["client"], until=second)
    assert len(batch) == 7, "only the rows served after the first period"
    assert result["period"]["since"] == first.isoformat()
    with pytest.raises(DataError, match="no rows served"):
        loop.monitor_prediction_log(p, client=served["client"], until=datetime.now(UTC))
    assert predlog.read_watermark(p.serve.log_dir) == second


def test_a_row_flushed_after_its_period_was_read_comes_with_the_next_period_once(served, tmp_path):
    """Periods are read by ``served_at``; a flush that lands after its period was read (a slow writer, a second
    server) is not skipped: its rows come with the next period, and no row comes twice."""
    from datetime import timedelta

    from driftloop.contract import Columns

    p, model = served["p"], served["models"][0]
    log_dir = tmp_path / "log"
    params = p.model_copy(update={"serve": p.serve.model_copy(update={"log_dir": str(log_dir)})})
    rows = served["rows"].head(3)
    outputs = model.outputs(model.predict_scores(rows))

    def entry(rid: str, at: datetime) -> predlog.Entry:
        return predlog.Entry(Columns.from_frame(rows), outputs, model.contract(), "driftloop", "1", rid, at)

    log = predlog.PredictionLog(log_dir, flush_rows=10**6, flush_s=60, max_buffered_rows=10**6)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    log.append(entry("a", t0))
    log.flush()
    log.append(entry("late", t0 + timedelta(minutes=1)))  # served in the first period, written after it was read
    since, first, batch, files = predlog.read_period(params, until=t0 + timedelta(minutes=2))
    assert since is None and len(batch) == 3
    predlog.write_watermark(log_dir, first, "period-1", files)
    log.flush()
    log.append(entry("b", t0 + timedelta(minutes=3)))
    log.append(entry("after", t0 + timedelta(minutes=5)))  # beyond the second period: the third one's
    log.flush()
    since, second, batch, files = predlog.read_period(params, until=t0 + timedelta(minutes=4))
    assert since == first and len(batch) == 6, "the late rows and the period's own"
    predlog.write_watermark(log_dir, second, "period-2", files)
    since, third, batch, files = predlog.read_period(params, until=t0 + timedelta(minutes=6))
    assert since == second and len(batch) == 3, "only the rows served after the second period"
    predlog.write_watermark(log_dir, third, "period-3", files)
    assert predlog.read_period(params, until=t0 + timedelta(minutes=7))[2].empty
    assert len(predlog.read_log(log_dir)) == 12  # 3 + 3 + 3 + 3 monitored exactly once
