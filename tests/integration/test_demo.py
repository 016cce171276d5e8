"""`driftloop demo` end to end with tiny settings: a throw-away workspace (git + DVC + SQLite MLflow),
the first model, four monitored months with drift from month 3, a retraining, the timeline outputs."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import ROOT, run, small_params, write_params

pytestmark = pytest.mark.slow

MONTHS, DRIFT_FROM = 4, 3


def test_demo_tiny_year(tmp_path):
    p = small_params(tmp_path)
    p["demo"].update(months=MONTHS, drift_from_month=DRIFT_FROM, rows_per_month=1500, initial_rows=6000, n_trials=2)
    params = write_params(tmp_path / "params.yaml", p)
    out = tmp_path / "out"

    res = run(["driftloop", "demo", "--params", str(params), "--out", str(out)], ROOT)

    # outputs
    png, page, summary_path = out / "timeline.png", out / "timeline.html", out / "summary.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    assert "data:image/png;base64," in html and html.count("<tr>") == MONTHS + 1
    assert "workspace/reports/monitoring/" in html  # links to the monthly Evidently reports
    assert "monthly ROC AUC" in res.stdout  # the Rich table

    # progress as it goes: the first model's stages, month k of N with its decision and AUCs, the
    # retraining's stages (printed while DVC's own output goes to the workspace's dvc.log)
    assert re.search(r"first model: stage \d+/\d+ tune done in \d+\.\d s", res.stdout), res.stdout
    for k in range(1, MONTHS + 1):
        assert re.search(rf"^demo: month {k}/{MONTHS} 2025-0{k}.*: \w+, drift share .* AUC v\d", res.stdout, re.M)
    assert re.search(rf"month {DRIFT_FROM}/{MONTHS} retraining: stage \d+/\d+ train done in", res.stdout), res.stdout
    dvc_log = (out / "workspace" / "dvc.log").read_text()
    # the retrain path (pipeline.retrain_on -> runner) writes the lines of `driftloop run`
    assert re.search(r"^\[\d+/\d+\] Running stage 'tune' \(in process\), \d+:\d\d elapsed:$", dvc_log, re.M)
    assert re.search(r"^Stage 'register' done in \d+\.\d s \[\d+/\d+, ", dvc_log, re.M)

    s = json.loads(summary_path.read_text())
    months = s["months"]
    assert [m["label"] for m in months] == ["2025-01", "2025-02", "2025-03", "2025-04"]
    assert [m["drifted"] for m in months] == [False, False, True, True]
    for m in months:
        assert (out / "workspace" / m["report_html"]).is_file()
    # the drifted months are flagged, and the first of them triggers a retraining
    assert all(m["status"] in ("warn", "retrain") for m in months if m["drifted"]), [m["status"] for m in months]
    assert months[DRIFT_FROM - 1]["status"] == "retrain"
    assert s["retrains"] and s["retrains"][0]["month"] == "2025-03" and s["retrains"][0]["version"] == "2"
    assert s["retrains"][0]["alias"] in ("champion", "challenger")
    if s["retrains"][0]["alias"] == "champion":
        assert months[DRIFT_FROM]["version_in_force"] == "2"
    # both curves, month by month, and the after-drift means
    curves = s["curves"]
    for key in ("auc_retrained", "auc_never_retrained"):
        assert len(curves[key]) == MONTHS and all(0.5 < v <= 1 for v in curves[key])
    # before any retraining both curves are the same model
    assert curves["auc_retrained"][:DRIFT_FROM] == curves["auc_never_retrained"][:DRIFT_FROM]
    # the label-free estimate (made before the labels were read) next to the realized AUC, every month
    assert all(0.5 < v <= 1 for v in curves["auc_estimated"]) and len(curves["auc_estimated"]) == MONTHS
    for m in months:
        assert m["auc_estimated_low"] <= m["auc_estimated"] <= m["auc_estimated_high"]
    errors = [abs(e - r) for e, r in zip(curves["auc_estimated"], curves["auc_retrained"], strict=True)]
    assert s["estimate_error"]["months"] == MONTHS
    assert s["estimate_error"]["mae"] == pytest.approx(sum(errors) / MONTHS)
    # a sanity bound only: here the calibration has 300 validation rows (the docs give the default-size figures)
    assert s["estimate_error"]["mae"] < 0.1
    # the oracle (trained on post-drift rows) on the drifted months only
    assert curves["auc_oracle"][: DRIFT_FROM - 1] == [None] * (DRIFT_FROM - 1)
    assert all(0.5 < v <= 1 for v in curves["auc_oracle"][DRIFT_FROM - 1 :])
    # which rows the gate compared the models on: test rows neither had trained or validated on
    gate = s["retrains"][0]["gate_rows"]
    assert 0 < gate["rows"] <= gate["test_rows"] and "absent from both models" in gate["provenance"]
    assert s["retrains"][0]["test_period"][1] <= "2025-03-31"
    # split.time_test_share 0.5: the gate's test rows are half of the newest 10 % (6,000 + 3 x 1,500 rows): the other
    # half of the triggering month was validated on and refitted (a 1.0 share would hold out all 1,050)
    assert gate["test_rows"] == pytest.approx(525, abs=5)
    assert "gate: " in html and "AUC estimated before labels" in html
    after = s["mean_auc_after_drift"]
    assert after["months"] == MONTHS - DRIFT_FROM + 1
    assert after["difference"] == pytest.approx(after["retrained"] - after["never_retrained"])

    # the workspace: every labeled month is a DVC data version, committed (retrain.keep_labeled_batches: the
    # months that did not trigger a retrain too); alerts logged
    ws = out / "workspace"
    kept = [m for m in months if m["labeled_kept"]]
    assert [m["label"] for m in kept][:2] == ["2025-01", "2025-02"]
    assert len(list((ws / "data" / "labeled").glob("*.parquet.dvc"))) == len(kept) + len(s["retrains"])
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True, check=True).stdout
    assert "retrain on sim-2025-03" in log and "labeled batch sim-2025-01" in log
    alerts = [json.loads(line) for line in (ws / "reports" / "alerts.jsonl").read_text().splitlines()]
    assert {a["status"] for a in alerts} >= {"retrain"}


def test_demo_says_why_when_the_first_model_is_not_promoted(tmp_path):
    p = small_params(tmp_path)  # 1,000 rows: 50 test rows, about 7 defaults, under register.min_test_events (30)
    p["demo"].update(months=2, drift_from_month=2, rows_per_month=500, initial_rows=1000, n_trials=1)
    params = write_params(tmp_path / "params.yaml", p)
    res = run(["driftloop", "demo", "--params", str(params), "--out", str(tmp_path / "out")], ROOT, check=False)
    assert res.returncode != 0
    assert "the first model was not promoted to @champion" in res.stderr + res.stdout
    assert "min_test_events" in res.stderr + res.stdout  # the gate's own reason
    assert "run the training pipeline first" not in res.stderr + res.stdout
