"""Unit tests for the monitoring engine (small frames; Evidently runs only in the drift tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

from driftloop import monitor
from driftloop.config import MonitorParams
from driftloop.monitor import (
    ColumnDrift,
    DriftResult,
    check_schema,
    data_drift,
    decide,
    performance,
    prediction_drift,
    sample_frame,
)

STATES = ["AL", "AK", "AZ", "CA"]


@pytest.fixture(scope="module")
def contract() -> dict:
    return {
        "target": "default",
        "task": "binary",
        "columns": {
            "age": {"kind": "numeric", "dtype": "float64"},
            "income": {"kind": "numeric", "dtype": "float64"},
            "n_loans": {"kind": "numeric", "dtype": "int64"},
            "state": {"kind": "categorical", "dtype": "category", "categories": STATES},
            "application_date": {"kind": "datetime", "dtype": "datetime64[ns]"},
            "has_cosigner": {"kind": "boolean", "dtype": "bool"},
        },
        "ignored": ["application_id"],
    }


def make_batch(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p_state = [0.4, 0.3, 0.2, 0.1] if shift == 0 else [0.1, 0.2, 0.3, 0.4]
    return pd.DataFrame(
        {
            "application_id": np.arange(n),
            "age": rng.normal(40 + 10 * shift, 10, n),
            "income": rng.lognormal(10, 0.5, n) * (1 + shift),
            "n_loans": rng.poisson(3 + 3 * shift, n),
            "state": pd.Categorical(rng.choice(STATES, n, p=p_state), categories=STATES),
            "application_date": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
            "has_cosigner": rng.random(n) < 0.3,
            "default": (rng.random(n) < 0.15).astype(int),
        }
    )


@pytest.fixture(scope="module")
def params() -> MonitorParams:
    return MonitorParams(sample_rows=1500)


# ------------------------------------------------------------------------------------- import


def test_import_is_cheap_and_side_effect_free():
    code = "import sys, driftloop.monitor; print('evidently' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ------------------------------------------------------------------------------------- schema


def test_schema_ok(contract):
    res = check_schema(contract, make_batch(200, 0))
    assert res.status == "ok" and res.ok
    assert res.messages == () and not res.empty
    json.dumps(res.to_dict())


def test_schema_missing_extra_renamed(contract):
    batch = make_batch(200, 0).rename(columns={"age": " Age", "n_loans": "N-Loans"}).assign(foo=1)
    res = check_schema(contract, batch)
    assert res.status == "violation"
    assert res.missing == ("age", "n_loans")
    assert set(res.extra) == {" Age", "N-Loans", "foo"}
    assert {(r.expected, r.found) for r in res.renamed} == {("age", " Age"), ("n_loans", "N-Loans")}
    d = res.to_dict()
    assert {"expected": "age", "found": " Age"} in d["renamed"]


def test_schema_target_and_ignored_are_not_extra(contract):
    res = check_schema(contract, make_batch(50, 0).drop(columns=["application_id", "default"]))
    assert res.status == "ok" and res.extra == ()


def test_schema_extra_allowed(contract):
    res = check_schema(contract, make_batch(50, 0).assign(foo=1), allow_extra=True)
    assert res.status == "ok" and res.extra == ("foo",)
    assert any("foo" in n for n in res.notes)


def test_schema_retyped_text_in_numeric(contract):
    batch = make_batch(100, 0)
    batch["age"] = batch["age"].astype(str)
    batch.loc[3, "age"] = "forty"
    res = check_schema(contract, batch)
    assert res.status == "violation"
    assert [(r.column, r.expected, r.found) for r in res.retyped] == [("age", "numeric", "object")]
    assert "forty" in res.retyped[0].detail


def test_schema_numbers_as_text_are_not_retyped(contract):
    batch = make_batch(100, 0)
    batch["n_loans"] = batch["n_loans"].astype(str)  # e.g. read from CSV as text
    batch["age"] = batch["age"].astype(object)
    batch.loc[[1, 2], "age"] = [None, " "]
    batch["has_cosigner"] = batch["has_cosigner"].map({True: "true", False: "false"})
    batch["application_date"] = batch["application_date"].dt.strftime("%Y-%m-%d")
    res = check_schema(contract, batch)
    assert res.status == "ok", res.messages


def test_schema_other_retypes(contract):
    batch = make_batch(100, 0)
    batch["has_cosigner"] = np.where(batch["has_cosigner"], "maybe", "no")
    batch["application_date"] = np.arange(100.0)
    batch["state"] = np.arange(100.0)  # numbers where the categories are text
    res = check_schema(contract, batch)
    assert {r.column for r in res.retyped} == {"has_cosigner", "application_date", "state"}
    assert res.status == "violation"


def test_schema_new_category_is_reported_not_violation(contract):
    batch = make_batch(100, 0)
    batch["state"] = batch["state"].astype(object)
    batch.loc[:4, "state"] = "TX"
    batch.loc[5, "state"] = "NY"
    res = check_schema(contract, batch)
    assert res.status == "ok"
    assert res.new_categories == {"state": ["NY", "TX"]}
    assert any("new categories" in n for n in res.notes)


def test_schema_all_missing_is_reported_not_violation(contract):
    batch = make_batch(100, 0)
    batch["income"] = np.nan
    batch["state"] = None
    res = check_schema(contract, batch)
    assert res.status == "ok"
    assert set(res.all_missing) == {"income", "state"}


def test_schema_empty_batch(contract):
    res = check_schema(contract, make_batch(10, 0).iloc[:0])
    assert res.status == "violation" and res.empty
    assert "empty" in res.messages[0]
    res = check_schema(contract, pd.DataFrame())
    assert res.empty and res.status == "violation" and len(res.missing) == 6


@pytest.mark.parametrize(
    "batch",
    [
        pd.DataFrame({"age": [[1, 2], {"a": 1}], "state": [{"x"}, None]}),  # unhashable values
        pd.DataFrame([[1, 2, 3]], columns=["age", "age", 7]),  # duplicated and non-string names
        pd.DataFrame({"age": [complex(1, 2)], "state": [pd.Timestamp("2024-01-01")]}),
        pd.DataFrame({"age": pd.array([1, None], dtype="Int64"), "state": pd.array(["AL", None], dtype="string")}),
        pd.DataFrame({"age": [np.inf, -np.inf], "income": ["1e3", "nan"], "has_cosigner": [1.0, np.nan]}),
        pd.DataFrame(index=range(3)),
        None,
    ],
)
def test_schema_never_raises(contract, batch):
    res = check_schema(contract, batch)
    assert res.status in ("ok", "violation")
    json.dumps(res.to_dict())


def test_schema_duplicated_columns(contract):
    batch = make_batch(20, 0)
    batch = pd.concat([batch, batch[["age"]]], axis=1)
    res = check_schema(contract, batch)
    assert res.duplicated == ("age",) and res.status == "violation"


def test_bad_contract_raises_value_error():
    with pytest.raises(ValueError, match="kind"):
        check_schema({"columns": {"a": {"kind": "text"}}}, pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="columns"):
        check_schema({"target": "y"}, pd.DataFrame({"a": [1]}))


# ------------------------------------------------------------------------------------- sampling


def test_sample_frame_reproducible():
    df = make_batch(5000, 0)
    a = sample_frame(df, 1000, seed=7)
    b = sample_frame(df, 1000, seed=7)
    c = sample_frame(df, 1000, seed=8)
    assert len(a) == 1000 and a.equals(b) and not a.equals(c)
    assert a["application_id"].is_monotonic_increasing  # original order kept
    assert len(sample_frame(df.iloc[:300], 1000, seed=7)) == 300
    assert list(sample_frame(df, 10, 1, columns=["age", "state"]).columns) == ["age", "state"]


# ------------------------------------------------------------------------------------- data drift


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_batch(3000, 1)


def test_data_drift_detects_shift_and_writes_html(reference, contract, params, tmp_path):
    html = tmp_path / "sub" / "drift.html"
    res = data_drift(reference, make_batch(3000, 2, shift=1.0), contract, params, seed=0, html_path=html)
    assert html.exists() and html.stat().st_size > 10_000
    assert res.html_path == str(html)
    assert {"age", "income", "n_loans", "state"} <= set(res.drifted_columns)
    assert "has_cosigner" not in res.drifted_columns
    assert res.n_columns == 5 and res.n_drifted == len(res.drifted_columns)
    assert res.drift_share == pytest.approx(res.n_drifted / 5)
    assert res.skipped == {"application_date": "datetime column (excluded: dates always drift)"}
    assert res.reference_rows == 3000 and res.reference_sample_rows == params.sample_rows
    age = res.column("age")
    assert age.kind == "numeric" and age.stattest and age.threshold > 0 and age.drifted
    d = res.to_dict()
    json.dumps(d)
    assert {"column", "stattest", "score", "threshold", "drifted"} <= set(d["columns"][0])


def test_data_drift_same_distribution_not_flagged(reference, contract, params):
    res = data_drift(reference, make_batch(3000, 3), contract, params, seed=0)
    assert res.n_columns == 5
    assert res.drifted_columns == []
    assert res.drift_share == 0.0


def test_data_drift_sampling_reproducible(reference, contract, params):
    cur = make_batch(3000, 4, shift=0.2)
    a = data_drift(reference, cur, contract, params, seed=11)
    b = data_drift(reference, cur, contract, params, seed=11)
    c = data_drift(reference, cur, contract, params, seed=12)
    assert a.to_dict() == b.to_dict()
    assert [x.score for x in a.columns] != [x.score for x in c.columns]


def test_data_drift_coerces_and_skips(reference, contract, params):
    cur = make_batch(800, 5)
    cur["n_loans"] = cur["n_loans"].astype(str)  # numbers as text: coerced, still tested
    cur["age"] = "n/a?"  # text: skipped with a reason
    cur["has_cosigner"] = np.nan  # all missing: skipped with a reason
    cur = cur.drop(columns=["income"])
    res = data_drift(reference, cur, contract, params, seed=0)
    tested = {c.column for c in res.columns}
    assert tested == {"n_loans", "state"}
    assert "missing" in res.skipped["income"]
    assert "incompatible" in res.skipped["age"]
    assert "no non-missing" in res.skipped["has_cosigner"]
    assert res.current_sample_rows == 800  # smaller than sample_rows: not sampled


def test_data_drift_no_testable_column(contract, params):
    ref = pd.DataFrame({"application_date": pd.date_range("2024-01-01", periods=5)})
    res = data_drift(ref, ref, contract, params, seed=0)
    assert res.n_columns == 0 and res.drift_share == 0.0 and res.columns == ()


# ------------------------------------------------------------------------------------- prediction drift


def test_prediction_drift(params):
    rng = np.random.default_rng(0)
    ref = rng.beta(2, 8, 4000)
    same = prediction_drift(ref, rng.beta(2, 8, 4000), params, seed=0)
    cur = rng.beta(4, 6, 4000)
    moved = prediction_drift(ref, cur, params, seed=0)
    assert same["kind"] == "numeric" and same["drifted"] is False
    assert moved["drifted"] is True and moved["score"] > same["score"]
    assert moved["current_sample_rows"] == params.sample_rows
    assert prediction_drift(ref, cur, params, seed=0) == moved  # seeded sampling: reproducible
    json.dumps(moved)


def test_prediction_drift_classes_and_empty(params):
    rng = np.random.default_rng(1)
    res = prediction_drift(rng.integers(0, 3, 2000), rng.integers(0, 3, 2000), params, seed=0)
    assert res["kind"] == "categorical" and res["drifted"] is False
    res = prediction_drift(np.array([np.nan, np.nan]), rng.random(100), params, seed=0)
    assert res["drifted"] is False and res["skipped"]


# ------------------------------------------------------------------------------------- performance


def test_performance_binary():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.7, 0.3, 0.9, 0.4, 0.6])
    res = performance(y, p, "binary", reference_metric=0.9)
    assert res["metrics"]["roc_auc"] == pytest.approx(1.0)
    assert res["metrics"]["pr_auc"] == pytest.approx(1.0)
    assert 0 < res["metrics"]["log_loss"] < 1
    assert res["metric"] == "roc_auc" and res["drop"] == pytest.approx(-0.1) and res["drop_kind"] == "absolute"
    worse = performance(y, 1 - p, "binary", reference_metric=0.9)
    assert worse["drop"] == pytest.approx(0.9)
    one_class = performance([0, 0, 0], [0.1, 0.2, 0.3], "binary", reference_metric=0.8)
    assert one_class["value"] is None and one_class["drop"] is None and one_class["notes"]
    json.dumps(worse)


def test_performance_regression_and_multiclass():
    y = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    res = performance(y, np.array([1.0, 2.0, 3.0, 6.0, 1.0]), "regression", reference_metric=0.5)
    assert res["n_rows"] == 4
    assert res["metrics"]["rmse"] == pytest.approx(1.0) and res["metrics"]["mae"] == pytest.approx(0.5)
    assert res["drop"] == pytest.approx(1.0) and res["drop_kind"] == "relative"  # rmse doubled
    res = performance([0, 1, 2, 2], [0, 1, 2, 1], "multiclass", reference_metric=None)
    assert res["metrics"]["accuracy"] == pytest.approx(0.75) and res["drop"] is None
    with pytest.raises(ValueError):
        performance([1], [1], "ranking", None)


# ------------------------------------------------------------------------------------- decide


def _drift(n_drifted: int, n_columns: int = 10) -> DriftResult:
    cols = tuple(
        ColumnDrift(
            f"c{i}", "numeric", "Wasserstein distance (normed)", 0.5 if i < n_drifted else 0.01, 0.1, i < n_drifted
        )
        for i in range(n_columns)
    )
    return DriftResult(cols, n_drifted / n_columns, n_drifted, n_columns, 100, 100, 100, 100, seed=0)


@pytest.fixture(scope="module")
def ok_schema(contract):
    return check_schema(contract, make_batch(20, 0))


P = MonitorParams(
    drift_share_warn=0.2, drift_share_retrain=0.4, performance_drop_retrain=0.03, cooldown_batches=2, min_rows=10
)
NO_PRED = {"drifted": False, "score": 0.01}
PRED = {"drifted": True, "score": 0.3, "stattest": "Wasserstein distance (normed)"}


def test_decide_ok(ok_schema):
    d = decide(ok_schema, _drift(1), NO_PRED, {"drop": 0.01, "metric": "roc_auc"}, P, None)
    assert d.status == "ok" and d.reasons == () and not d.cooldown_active
    assert decide(ok_schema, None, None, None, P, None).status == "ok"
    json.dumps(d.to_dict())


def test_decide_warn_on_drift_share(ok_schema):
    d = decide(ok_schema, _drift(2), NO_PRED, None, P, None)
    assert d.status == "warn" and "warn threshold" in d.reasons[0]


def test_decide_warn_on_prediction_drift_alone(ok_schema):
    d = decide(ok_schema, _drift(1), PRED, None, P, None)
    assert d.status == "warn" and "prediction drift" in d.reasons[0]
    no_retrain = P.model_copy(update={"prediction_drift_retrain": False})
    assert decide(ok_schema, _drift(3), PRED, None, no_retrain, None).status == "warn"


def test_decide_retrain_branches(ok_schema):
    assert decide(ok_schema, _drift(4), NO_PRED, None, P, None).status == "retrain"  # share >= retrain
    d = decide(ok_schema, _drift(2), PRED, None, P, None)  # prediction drift + share >= warn
    assert d.status == "retrain" and any("prediction drift" in r for r in d.reasons)
    d = decide(ok_schema, _drift(0), NO_PRED, {"drop": 0.05, "metric": "roc_auc", "drop_kind": "absolute"}, P, None)
    assert d.status == "retrain" and "roc_auc dropped" in d.reasons[0]
    assert decide(ok_schema, _drift(4), None, None, P, 2).status == "retrain"  # cooldown over


def test_decide_cooldown_downgrades_retrain(ok_schema):
    d = decide(ok_schema, _drift(5), PRED, None, P, batches_since_retrain=1)
    assert d.status == "warn" and d.cooldown_active
    assert any("cooldown" in r for r in d.reasons)
    d = decide(ok_schema, _drift(2), NO_PRED, None, P, batches_since_retrain=0)  # warn only: no cooldown flag
    assert d.status == "warn" and not d.cooldown_active


def test_decide_schema_violation_wins(contract):
    bad = check_schema(contract, make_batch(20, 0).drop(columns=["age"]))
    d = decide(bad, _drift(10), PRED, {"drop": 0.5, "metric": "roc_auc"}, P, None)
    assert d.status == "schema_violation" and not d.cooldown_active
    assert "missing column(s): age" in d.reasons[0]
    empty = check_schema(contract, make_batch(20, 0).iloc[:0])
    assert decide(empty, None, None, None, P, None).status == "schema_violation"


def test_monitor_module_exports():
    assert set(monitor.__all__) >= {"check_schema", "data_drift", "prediction_drift", "performance", "decide"}


def test_decide_too_few_rows_is_insufficient_data_never_retrain(contract):
    tiny = check_schema(contract, make_batch(20, 0).iloc[:1])
    d = decide(tiny, _drift(10), PRED, {"drop": 0.5, "metric": "roc_auc"}, P, None)  # "drift share 1.00"
    assert d.status == "insufficient_data" and not d.cooldown_active
    assert "min_rows=10" in d.reasons[0]
    assert decide(tiny, None, None, None, P.model_copy(update={"min_rows": 0}), None).status == "ok"
    bad = check_schema(contract, make_batch(20, 0).iloc[:1].drop(columns=["age"]))
    assert decide(bad, None, None, None, P, None).status == "schema_violation"  # a broken schema still wins


def _run(status: str):
    return types.SimpleNamespace(data=types.SimpleNamespace(tags={"driftloop.status": status}))


def test_small_or_failed_batches_neither_start_nor_count_towards_a_cooldown():
    from driftloop.loop import batches_since_retrain

    # newest first: a retrain, then two 1-row batches: the cooldown still has its 2 judged batches to go
    assert batches_since_retrain([_run("insufficient_data"), _run("error"), _run("retrain")]) == 0
    assert batches_since_retrain([_run("warn"), _run("insufficient_data"), _run("retrain")]) == 1
    assert batches_since_retrain([_run("insufficient_data"), _run("ok")]) is None


# ------------------------------------------------------------------------------------- batch ids, folders, alerts


def test_batch_ids_are_unique_per_content_and_sanitized(tmp_path):
    from driftloop.loop import make_batch_id

    a = pd.DataFrame({"x": [1, 2, 3]})
    b = pd.DataFrame({"x": [1, 2, 4]})
    ida, idb = make_batch_id("2025-03", a), make_batch_id("2025-03", b)  # A/2025-03.parquet, B/2025-03.parquet
    assert ida != idb and ida.startswith("2025-03-") and len(ida) == len("2025-03-") + 8
    assert make_batch_id("2025-03", a.copy()) == ida == make_batch_id(ida, a)  # same rows, same id; idempotent
    for label in ("..", "...", ".", "../../etc", "/", "", "-.-"):
        bid = make_batch_id(label, a)
        assert ".." not in bid and not bid.startswith((".", "-")) and "/" not in bid, (label, bid)
    assert make_batch_id("..", a).startswith("batch-")


def test_report_dir_stays_inside_output_dir_and_keeps_every_run(tmp_path):
    from driftloop.config import Params
    from driftloop.loop import make_batch_id, report_dir

    p = Params().model_copy(update={"monitor": MonitorParams(output_dir=str(tmp_path / "mon"))})
    bid = make_batch_id("..", pd.DataFrame({"x": [1]}))
    first, second = report_dir(p, bid), report_dir(p, bid)
    assert first != second and first.is_dir() and second.is_dir()
    for d in (first, second, report_dir(p, "../../escape")):
        assert d.resolve().is_relative_to((tmp_path / "mon").resolve())


def test_alert_of_a_schema_violation_does_not_claim_a_drift_share():
    from driftloop.loop import alert_message

    drift = {"drift_share": 0.0, "n_drifted": 0, "n_columns": 9, "columns": []}
    bad = {"status": "schema_violation", "decision": {"reasons": ["missing column(s): age"]}, "drift": drift}
    assert "drift share" not in alert_message(bad) and "missing column(s): age" in alert_message(bad)
    cols = [{"column": "income", "score": 0.4, "drifted": True}]
    warn = {"status": "warn", "decision": {"reasons": ["r"]}, "drift": {**drift, "drift_share": 0.3, "columns": cols}}
    assert "drift share 30%" in alert_message(warn) and "income 0.400" in alert_message(warn)


def test_metric_keys_are_valid_mlflow_names():
    from driftloop.loop import metric_key

    assert metric_key("annual income (€)") == "annual income _"
    assert metric_key("a/b:c") == "a_b_c"
