"""The monitoring report's summary block: on top of Evidently's page, replaced (not repeated) when rewritten,
escaped, and a page of its own when no drift was computed."""

from __future__ import annotations

from driftloop import batch_report

RESULT = {
    "batch_id": "2025-03-<script>alert(1)</script>",
    "status": "retrain",
    "rows": 5000,
    "model": "driftloop",
    "champion_version": "3",
    "created_at": "2026-12-07T00:00:00+00:00",
    "decision": {"status": "retrain", "reasons": ["drift share 0.55 >= 0.4"], "notes": []},
    "schema": {"status": "ok", "missing": [], "extra": [], "retyped": [], "renamed": [], "new_categories": {}},
    "drift": {
        "drift_share": 0.55,
        "n_drifted": 11,
        "n_columns": 20,
        "columns": [
            {"column": "annual_income", "stattest": "wasserstein", "score": 0.41, "threshold": 0.1, "drifted": True},
            {"column": "age", "stattest": "wasserstein", "score": 0.02, "threshold": 0.1, "drifted": False},
        ],
    },
    "prediction_drift": {"score": 0.3, "threshold": 0.1, "stattest": "wasserstein", "drifted": True},
    "performance": {"metric": "roc_auc", "value": 0.78, "reference": 0.86, "drop": 0.08, "n_rows": 5000},
}

EVIDENTLY = "<html><head><title>e</title></head><body class='x'><div id='root'>EVIDENTLY</div></body></html>"


def test_summary_goes_on_top_of_evidently_page_and_is_replaced_not_repeated(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(EVIDENTLY)
    batch_report.write_report(page, RESULT)
    text = page.read_text()
    assert text.index(batch_report.BEGIN) < text.index("EVIDENTLY")
    assert text.index("<body class='x'>") < text.index(batch_report.BEGIN)
    assert "RETRAIN" in text and "annual_income" in text and "0.4100" in text and "drop +0.0800" in text
    batch_report.write_report(page, {**RESULT, "retrain": {"status": "registered", "version": "4", "promoted": True}})
    text = page.read_text()
    assert text.count(batch_report.BEGIN) == 1 and text.count("EVIDENTLY") == 1
    assert "Retraining: registered" in text and "promoted: True" in text


def test_values_are_escaped(tmp_path):
    page = batch_report.write_report(tmp_path / "report.html", RESULT)
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_a_broken_batch_gets_a_page_of_its_own_without_drift_numbers(tmp_path):
    broken = {
        **RESULT,
        "status": "schema_violation",
        "decision": {"status": "schema_violation", "reasons": ["missing columns: credit_score"]},
        "schema": {**RESULT["schema"], "status": "violation", "missing": ["credit_score"]},
    }
    text = batch_report.write_report(tmp_path / "report.html", broken).read_text()
    assert text.startswith("<!DOCTYPE html>") and "SCHEMA_VIOLATION" in text
    assert "missing columns" in text and "credit_score" in text
    assert "Data drift" not in text and "Prediction drift" not in text
