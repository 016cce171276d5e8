"""Request bodies → the raw rows as columns of plain values (:class:`driftloop.contract.Columns`, no pandas object
per column; JSON read by orjson): MLflow's scoring formats (``dataframe_records``, ``dataframe_split``, ``inputs``,
``instances``, ``text/csv``) and a bare JSON list of records.

Errors are :class:`BadRequest` with an HTTP status and a message that never quotes the body.
"""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
import pandas as pd

from driftloop.contract import Columns

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
FORMATS = ("dataframe_records", "dataframe_split", "inputs", "instances")


class BadRequest(Exception):
    def __init__(self, status: int, kind: str, message: str, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.column, self.row = status, kind, message, column, row

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "column": self.column, "row": self.row}


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _records(rows: Any, what: str) -> Columns:
    if not isinstance(rows, list):
        raise BadRequest(400, "malformed_body", f"{what} must be a list of row objects")
    names: dict[str, None] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(400, "malformed_body", f"{what}: row {i} is not an object of column -> value", row=i)
        if len(row) != len(names) or any(k not in names for k in row):  # the union of keys, in order of appearance
            names.update(dict.fromkeys(row))
    return Columns(list(names), {k: [row.get(k) for row in rows] for k in names}, len(rows))


def _columns(data: dict, what: str) -> Columns:
    lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
    if -1 in lengths and len(lengths) == 1:  # {"col": value, ...}: one row
        return Columns(list(data), {k: [v] for k, v in data.items()}, 1)
    if -1 in lengths or len(lengths) > 1:
        raise BadRequest(400, "malformed_body", f"{what}: every column must be a list of the same length")
    return Columns(list(data), dict(data), lengths.pop() if lengths else 0)


def _split(body: Any) -> Columns:
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("columns"), list)
        or not isinstance(body.get("data"), list)
    ):
        raise BadRequest(400, "malformed_body", "dataframe_split must be an object with 'columns' and 'data' lists")
    names = [str(c) for c in body["columns"]]
    rows = body["data"]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(names):
            raise BadRequest(
                400, "malformed_body", f"dataframe_split: row {i} does not have {len(names)} values", row=i
            )
    data: dict[str, list] = {}
    for j, name in enumerate(names):
        if name not in data:  # a repeated name is a contract problem (duplicated column), reported by enforce
            data[name] = [row[j] for row in rows]
    return Columns(names, data, len(rows))


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # NaN / Infinity tokens (Python's json writes them) or an error: the standard parser decides
    try:
        return json.loads(body)  # NaN / Infinity tokens are accepted: missing / infinite values
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed_body", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            400, "malformed_body", f"the body is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None


def parse_json(body: bytes) -> Columns:
    payload = _loads(body)
    if isinstance(payload, list):
        return _records(payload, "the body")
    if not isinstance(payload, dict):
        raise BadRequest(400, "malformed_body", f"the body must be a JSON object with one of the keys {list(FORMATS)}")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise BadRequest(400, "malformed_body", f"the body must have exactly one of the keys {list(FORMATS)}")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_records":
        return _records(data, key)
    if key == "dataframe_split":
        return _split(data)
    if isinstance(data, dict):  # inputs / instances as columns
        return _columns(data, key)
    return _records(data, key)


def parse_csv(body: bytes) -> Columns:
    try:
        return Columns.from_frame(pd.read_csv(io.BytesIO(body)))
    except pd.errors.EmptyDataError:
        return Columns([], {}, 0)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, "malformed_body", f"the body is not readable CSV ({type(exc).__name__})") from None


def parse(body: bytes, content_type: str | None) -> Columns:
    kind = media_type(content_type)
    if not body.strip():
        raise BadRequest(400, "empty_body", "the request body is empty")
    if kind in JSON_TYPES:
        return parse_json(body)
    if kind in CSV_TYPES:
        return parse_csv(body)
    raise BadRequest(
        415, "unsupported_media_type", "send application/json (MLflow's formats) or text/csv (a header row)"
    )
