"""Monitoring bad batches against a real champion (MLflow registry, Evidently): a report and a clear
status every time, never an exception, never an alias move."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import module_workdir, run_data_stages, run_model_stages, small_params, write_params

from driftloop import batch_report, loop, pipeline, tracking
from driftloop.config import load_params
from driftloop.data.simulate import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One champion for the module (ingest → register, in process, SQLite MLflow)."""
    work, mp = module_workdir(tmp_path_factory, "monitoring")
    write_params(
        work / "params.yaml",
        small_params(work, **{"tune.n_trials": 2, "simulate.n_rows": 5000, "monitor.reference_rows": 3000}),
    )
    p = load_params(work / "params.yaml")
    run_data_stages(p)
    pipeline.run_tune(p, "data/split", "models/best_params.json", "reports/tune.json")
    run_model_stages(p)
    client = tracking.connect(p)
    champion = loop.resolve_champion(client, p)
    yield p, client, champion
    mp.undo()


def _monitor(trained, batch_id, df):
    p, client, champion = trained
    before = client.get_model_version_by_alias(p.base.model_name, "champion").version
    result = loop.monitor_batch(p, batch_id, df, client=client, champion=champion)
    assert client.get_model_version_by_alias(p.base.model_name, "champion").version == before
    assert json.loads(Path(result["summary_json"]).read_text())["status"] == result["status"]
    assert Path(result["report_html"]).read_text().strip()
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["driftloop.status"] == result["status"]
    return result


def _month(seed=11, rows=2000, **drift):
    q = "&".join(f"{k}={v}" for k, v in drift.items())
    return f"sim://2025-02?rows={rows}&seed={seed}" + (f"&{q}" if q else "")


def test_resolves_reference_through_lineage(trained):
    p, _, champion = trained
    assert champion.version == "1"
    assert len(champion.reference) == p.monitor.reference_rows
    assert "application_id" in champion.contract["ignored"]  # dropped by validation, allowed in batches


def test_no_drift_batch_is_ok_with_labels_and_performance(trained):
    p, *_ = trained
    batch_id, df = loop.read_batch(_month(), p)
    r = _monitor(trained, batch_id, df)
    assert r["status"] == "ok", r["decision"]
    assert r["drift"]["n_drifted"] <= 1  # sparse columns (mostly missing) can cross 0.1 on 2,000 rows
    assert r["performance"]["metrics"]["roc_auc"] > 0.7
    page = Path(r["report_html"]).read_text()
    summary = page.split(batch_report.BEGIN, 1)[1].split(batch_report.END, 1)[0]
    assert "OK" in summary and "Data drift: share" in summary and "Prediction drift" in summary
    assert f"roc_auc {r['performance']['value']:.4f}" in summary and "Target drift" in summary
    assert page.count(batch_report.BEGIN) == 1
    assert len(page) - len(summary) > 10 * len(summary)  # Evidently's per-column report follows the summary


def test_label_free_estimate_next_to_the_realized_metric(trained):
    """The champion's calibration travels with the registered (hash-verified) model; the monitor reports the CBPE
    estimate with its interval, the realized AUC next to it when labels arrive, and charts both in MLflow."""
    p, client, champion = trained
    assert champion.model.calibration and champion.reference_se > 0
    batch_id, df = loop.read_batch(_month(seed=13, covariate_shift=1.0), p)
    r = _monitor(trained, batch_id, df)
    est = r["estimated_performance"]
    assert est["roc_auc_low"] < est["roc_auc"] < est["roc_auc_high"]
    assert est["realized_roc_auc"] == r["performance"]["metrics"]["roc_auc"]
    assert abs(est["error"]) < 0.04  # 2,000 rows: the realized AUC itself scatters by ~0.015
    metrics = client.get_run(r["mlflow_run_id"]).data.metrics
    assert metrics["est_roc_auc"] == pytest.approx(est["roc_auc"]) and "perf_roc_auc" in metrics
    # without labels: the estimate alone, and no realized metric
    r = _monitor(trained, "unlabeled-estimate", df.drop(columns=["default"]))
    assert r["estimated_performance"]["roc_auc"] == pytest.approx(est["roc_auc"])
    assert "realized_roc_auc" not in r["estimated_performance"] and "performance" not in r


def test_covariate_shift_is_flagged(trained):
    p, *_ = trained
    batch_id, df = loop.read_batch(_month(covariate_shift=1.5), p)
    r = _monitor(trained, batch_id, df)
    assert r["status"] in ("warn", "retrain")
    assert {"annual_income", "credit_score"} & set(
        r["drift"]["drifted_columns"]
        if "drifted_columns" in r["drift"]
        else [c["column"] for c in r["drift"]["columns"] if c["drifted"]]
    )


def test_batch_without_labels_drift_only(trained):
    p, *_ = trained
    _, df = loop.read_batch(_month(seed=12), p)
    r = _monitor(trained, "unlabeled", df.drop(columns=["default"]))
    assert r["status"] == "ok"
    assert "performance" not in r and "drift" in r


@pytest.mark.parametrize(
    "name, change, status",
    [
        ("missing", lambda d: d.drop(columns=["credit_score"]), "schema_violation"),
        ("extra", lambda d: d.assign(promo_code="X1"), "schema_violation"),
        ("renamed", lambda d: d.rename(columns={"annual_income": "Annual Income"}), "schema_violation"),
        ("retyped", lambda d: d.assign(credit_score=np.where(d.index % 2, "high", "low")), "schema_violation"),
        ("empty", lambda d: d.iloc[:0], "schema_violation"),
    ],
)
def test_schema_problems_are_reported_not_raised(trained, name, change, status):
    p, *_ = trained
    _, df = loop.read_batch(_month(seed=13, rows=800), p)
    r = _monitor(trained, f"bad-{name}", change(df))
    assert r["status"] == status
    assert r["decision"]["reasons"]
    if name == "renamed":
        assert r["schema"]["renamed"]
    page = Path(r["report_html"]).read_text()
    summary = page.split(batch_report.BEGIN, 1)[1].split(batch_report.END, 1)[0]
    assert "SCHEMA_VIOLATION" in summary and "Data drift" not in summary  # no drift verdict for a broken batch
    assert all(html.escape(reason) in summary for reason in r["decision"]["reasons"])


def test_all_missing_column_and_new_category_are_reported(trained):
    p, *_ = trained
    _, df = loop.read_batch(_month(seed=14, rows=1500, new_category=1), p)
    df["credit_utilization"] = np.nan
    r = _monitor(trained, "odd-values", df)
    assert r["status"] in ("ok", "warn", "retrain")
    assert "credit_utilization" in r["schema"]["all_missing"]
    assert "crypto_investment" in r["schema"]["new_categories"].get("loan_purpose", [])


def test_batch_far_larger_than_reference(trained):
    p, _, champion = trained
    df = simulate(60_000, 21, start_date="2025-03-01", months=1)
    r = _monitor(trained, "large", df)
    assert r["status"] == "ok"
    assert r["drift"]["current_rows"] == 60_000
    assert r["drift"]["current_sample_rows"] <= p.monitor.sample_rows


def test_empty_csv_file_gives_a_status(trained, tmp_path):
    p, *_ = trained
    path = tmp_path / "empty.csv"
    path.write_text("")
    batch_id, df = loop.read_batch(str(path), p)
    r = _monitor(trained, batch_id, df)
    assert r["status"] == "schema_violation"


def test_a_tiny_batch_is_insufficient_data_and_does_not_mute_the_next_one(trained):
    """A 1-row batch once decided a retrain ("drift share 1.00") whose cooldown muted the next broken batch."""
    p, client, champion = trained
    fresh = p.model_copy(update={"monitor": p.monitor.model_copy(update={"experiment": "tiny-then-broken"})})
    _, df = loop.read_batch(_month(seed=31, rows=1000, covariate_shift=2, concept_drift=2), p)
    tiny = loop.monitor_batch(fresh, "tiny", df.head(1), client=client, champion=champion)
    assert tiny["status"] == "insufficient_data" and "drift" not in tiny
    assert "min_rows" in tiny["decision"]["reasons"][0]
    broken = loop.monitor_batch(fresh, "broken", df, client=client, champion=champion)
    assert broken["status"] == "retrain", broken["decision"]
    assert not broken["decision"]["cooldown_active"]


def test_per_column_drift_is_charted_and_a_batch_monitored_twice_keeps_both(trained):
    p, client, champion = trained
    fresh = p.model_copy(update={"monitor": p.monitor.model_copy(update={"experiment": "twice"})})
    batch_id, df = loop.read_batch(_month(seed=32, rows=800), p)
    first = loop.monitor_batch(fresh, batch_id, df, client=client, champion=champion)
    second = loop.monitor_batch(fresh, batch_id, df, client=client, champion=champion)
    assert first["batch_id"] == second["batch_id"]  # the same rows: the same id ...
    assert first["summary_json"] != second["summary_json"]  # ... and both results kept
    assert Path(first["summary_json"]).exists() and Path(second["summary_json"]).exists()
    assert (first["batch_index"], second["batch_index"]) == (0, 1)
    history = client.get_metric_history(second["mlflow_run_id"], "drift/annual_income")
    assert [m.step for m in history] == [1]
    score = next(c["score"] for c in second["drift"]["columns"] if c["column"] == "annual_income")
    assert history[0].value == pytest.approx(score)


def test_alert_log_records_non_ok_batches(trained):
    p, *_ = trained
    lines = [json.loads(line) for line in Path(p.alerts.log_path).read_text().splitlines()]
    assert any(line["status"] == "schema_violation" for line in lines)


def test_score_batch_writes_version(trained, tmp_path):
    p, client, champion = trained
    _, df = loop.read_batch(_month(seed=15, rows=500), p)
    out = tmp_path / "pred.parquet"
    res = loop.score_batch(p, df, out, client=client, champion=champion)
    pred = pd.read_parquet(out)
    assert len(pred) == 500 and set(pred["model_version"]) == {"1"}
    assert "application_id" in pred.columns and "proba_1" in pred.columns
    assert res["version"] == "1"
