"""The monitoring report people read: one HTML page per monitored batch.

The page opens with driftloop's verdict — the decision and its reasons, the schema check, drift share and the most
drifted columns, prediction drift, performance and its drop, target drift and, after a retraining, its outcome — and
Evidently's per-column drift report follows below it in the same file. The summary sits between two markers, so
writing it again (e.g. once the retraining's outcome is known) replaces it instead of adding a second one.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from driftloop.io import write_bytes_atomic

BEGIN = "<!-- driftloop-summary -->"
END = "<!-- /driftloop-summary -->"

_COLOURS = {"ok": "#1a7f37", "warn": "#9a6700", "insufficient_data": "#9a6700"}
_STYLE = (
    "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:16px auto;"
    "padding:16px 20px;border:1px solid #d0d7de;border-radius:8px;background:#fff;color:#1f2328"
)
_TABLE = "border-collapse:collapse;margin:6px 0 12px 0;font-size:14px"
_CELL = "border:1px solid #d0d7de;padding:3px 8px;text-align:left"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, fmt: str = ".4f") -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int | float):
        return format(value, fmt)
    return _e(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th style='{_CELL};background:#f6f8fa'>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{_TABLE}'><tr>{head}</tr>{body}</table>"


def _schema_section(schema: dict) -> str:
    if not schema:
        return ""
    rows = []
    for label, key in (("missing columns", "missing"), ("extra columns", "extra"), ("duplicated", "duplicated")):
        if schema.get(key):
            rows.append([_e(label), _e(", ".join(map(str, schema[key])))])
    for r in schema.get("retyped") or []:
        found = f"expected {r.get('expected')}, found {r.get('found')}"
        found += f": {r['detail']}" if r.get("detail") else ""
        rows.append([_e(f"retyped: {r.get('column')}"), _e(found)])
    for r in schema.get("renamed") or []:
        rows.append([_e("renamed?"), _e(f"{r.get('expected')} → {r.get('found')}")])
    for col, cats in (schema.get("new_categories") or {}).items():
        rows.append([_e(f"new categories: {col}"), _e(", ".join(map(str, cats[:10])))])
    notes = "".join(f"<li>{_e(n)}</li>" for n in [*schema.get("messages", []), *schema.get("notes", [])])
    status = schema.get("status", "?")
    out = f"<h3>Schema: {_e(status)}</h3>"
    if rows:
        out += _table(["check", "finding"], rows)
    return out + (f"<ul>{notes}</ul>" if notes else "")


def _drift_section(drift: dict) -> str:
    if not drift:
        return ""
    cols = sorted(drift.get("columns", []), key=lambda c: -((c.get("score") or 0) / (c.get("threshold") or 1)))
    rows = [
        [
            _e(c.get("column")),
            _e(c.get("stattest")),
            _num(c.get("score")),
            _num(c.get("threshold"), ".3g"),
            "<b style='color:#cf222e'>yes</b>" if c.get("drifted") else "no",
        ]
        for c in cols[:15]
    ]
    head = (
        f"<h3>Data drift: share {_num(drift.get('drift_share'), '.2f')} "
        f"({_e(drift.get('n_drifted'))}/{_e(drift.get('n_columns'))} columns)</h3>"
    )
    more = f"<p>{len(cols) - 15} more columns in Evidently's report below.</p>" if len(cols) > 15 else ""
    return head + _table(["column", "test", "score", "threshold", "drifted"], rows) + more


def _series_line(title: str, d: dict | None) -> str:
    if not d:
        return ""
    if d.get("skipped"):
        return f"<p><b>{_e(title)}</b>: not tested ({_e(d['skipped'])})</p>"
    word = "<b style='color:#cf222e'>drifted</b>" if d.get("drifted") else "no drift"
    return (
        f"<p><b>{_e(title)}</b>: {word} (score {_num(d.get('score'))}, threshold {_num(d.get('threshold'), '.3g')},"
        f" {_e(d.get('stattest'))})</p>"
    )


def _performance_section(perf: dict | None) -> str:
    if not perf or perf.get("value") is None:
        return "<p><b>Performance</b>: no labels in the batch</p>"
    rows = [[_e(k), _num(v)] for k, v in (perf.get("metrics") or {}).items()]
    line = f"<h3>Performance: {_e(perf.get('metric'))} {_num(perf.get('value'))} on {_e(perf.get('n_rows'))} rows"
    if perf.get("drop") is not None:
        line += f" (reference {_num(perf.get('reference'))}, drop {_num(perf.get('drop'), '+.4f')})"
    return line + "</h3>" + (_table(["metric", "value"], rows) if rows else "")


def _retrain_section(retrain: dict | None) -> str:
    if not retrain:
        return ""
    items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in retrain.items())
    return f"<h3>Retraining: {_e(retrain.get('status'))}</h3><ul>{items}</ul>"


def summary_html(result: dict) -> str:
    """The summary block of a monitoring result (escaped; every value comes from ``result``)."""
    status = str(result.get("status", "?"))
    colour = _COLOURS.get(status, "#cf222e")
    decision = result.get("decision") or {}
    reasons = "".join(f"<li>{_e(r)}</li>" for r in decision.get("reasons", [])) or "<li>–</li>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in [*decision.get("notes", []), *result.get("notes", [])])
    parts = [
        f"<div id='driftloop-summary' style='{_STYLE}'>",
        f"<h2 style='margin-top:0'>Batch {_e(result.get('batch_id'))}: "
        f"<span style='color:{colour}'>{_e(status.upper())}</span></h2>",
        f"<p>{_e(result.get('rows'))} rows vs {_e(result.get('model'))} v{_e(result.get('champion_version'))}"
        f" · monitored {_e(result.get('created_at'))}</p>",
        f"<h3>Why</h3><ul>{reasons}</ul>",
        f"<ul style='color:#57606a'>{notes}</ul>" if notes else "",
        f"<p style='color:#cf222e'><b>error</b>: {_e(result['error'])}</p>" if result.get("error") else "",
        _schema_section(result.get("schema") or {}),
    ]
    if status not in ("schema_violation", "error"):
        parts += [
            _drift_section(result.get("drift") or {}),
            _series_line("Prediction drift", result.get("prediction_drift")),
            _performance_section(result.get("performance")),
            _series_line("Target drift", result.get("target_drift")),
        ]
    parts += [_retrain_section(result.get("retrain")), "</div>"]
    return BEGIN + "".join(parts) + END


def write_report(path: str | Path, result: dict) -> Path:
    """Put the summary of ``result`` at the top of the batch's ``report.html`` (atomically).

    An existing page (Evidently's report) keeps its content below the summary; a summary written before is
    replaced. Without a page (no drift was computed: schema violation, too few rows, error) a page of its own is
    written, with the schema check as JSON under the summary.
    """
    path = Path(path)
    block = summary_html(result)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    elif "<body" in text:
        at = text.index(">", text.index("<body")) + 1
        text = text[:at] + block + text[at:]
    else:
        title = f"driftloop batch {_e(result.get('batch_id'))}"
        schema = _e(json.dumps(result.get("schema", {}), indent=2, default=str))
        text = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"{block}<pre style='max-width:1100px;margin:auto'>{schema}</pre></body></html>"
        )
    write_bytes_atomic(text.encode("utf-8"), path)
    return path
