"""THE enforcement of a model's data contract on rows to score: ``driftloop score``, the Prefect scoring flow and
``driftloop serve`` all call :func:`enforce`; monitoring reports the same rules through
:func:`driftloop.monitor.check_schema`, which :func:`enforce` builds on.

``enforce`` raises :class:`ContractViolation` for rows that cannot be scored as they are: no rows, a missing or
duplicated contract column, a value that cannot be read as its column's kind (text in a numeric column, a date that
does not parse) or an infinite number. The error names the column and the first offending row, never the value
(``detail=True`` adds the expected kind and the check's own text, which may quote values). Extra columns are
allowed and reported; categories the model has not seen are counted (the model treats them as missing, as it did
in training). Missing values (null, NaN) are allowed: the model was trained to handle them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.errors import DataError

__all__ = ["ContractViolation", "Enforced", "Problem", "enforce", "typed_frame"]


@dataclass(frozen=True)
class Problem:
    kind: str  # empty | missing_column | duplicated_column | wrong_kind | not_finite
    column: str | None = None
    row: int | None = None  # 0-based position of the first offending row in the request / batch
    expected: str | None = None  # the contract kind (only shown with detail=True)

    def text(self, detail: bool = False) -> str:
        where = f"column {self.column!r}" if self.column is not None else "the rows"
        if self.row is not None:
            where += f", row {self.row}"
        what = {
            "empty": "no rows to score",
            "missing_column": "required column is missing",
            "duplicated_column": "column name appears more than once",
            "wrong_kind": "value cannot be read as the column's kind",
            "not_finite": "infinite value (the model takes finite numbers or missing values)",
        }[self.kind]
        if detail and self.expected:
            what += f" (expected {self.expected})"
        return f"{where}: {what}" if self.kind != "empty" else what

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "column": self.column, "row": self.row}
        if detail:
            out["expected"] = self.expected
        return out


class ContractViolation(DataError):
    """Rows that break the model's data contract; ``problems`` name the column and row of each."""

    def __init__(self, where: str, problems: list[Problem], details: tuple[str, ...] = ()):
        self.where = where
        self.problems = problems
        self.details = details  # check_schema's messages (may quote values): only with detail=True
        super().__init__(self.message())

    def message(self, detail: bool = False) -> str:
        shown = "; ".join(p.text(detail) for p in self.problems[:10])
        more = f" (+{len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        text = f"{self.where} breaks the model's data contract: {shown}{more}"
        if detail and self.details:
            text += " [" + "; ".join(self.details) + "]"
        return text


@dataclass(frozen=True)
class Enforced:
    """Rows that passed: what was ignored and what the model will treat as missing."""

    n_rows: int
    extra: tuple[str, ...] = ()  # columns not in the contract (ignored by the model)
    unseen_categories: dict[str, int] = field(default_factory=dict)  # column -> rows with an unseen category
    notes: tuple[str, ...] = ()


def _bad_rows(s: pd.Series, kind: str) -> np.ndarray:
    """Positions of the values of ``s`` that cannot be read as ``kind`` (the rules of ``check_schema``)."""
    from driftloop import monitor as m

    values = s.astype(object)
    notna = values.notna().to_numpy()
    if kind == "numeric":
        if m._is_datetime_like(s.dtype):
            return np.flatnonzero(notna)
        is_num = values.map(lambda v: isinstance(v, bool | int | float | np.number)).to_numpy()
        _, bad = m._text_to_numeric(values.where(~is_num, None))
        return np.flatnonzero(bad.to_numpy() & notna & ~is_num)
    if kind == "boolean":
        ok = values.map(lambda v: v is None or (m._norm_value(v) or "").strip().lower() in m._BOOL_TOKENS)
        return np.flatnonzero(~ok.to_numpy() & notna)
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            return np.array([], dtype=int)
        numeric = values.map(lambda v: isinstance(v, bool | int | float | np.number)).to_numpy()
        text = values.astype("string").str.strip()
        blank = (text.isna() | text.str.lower().isin(m._NA_TOKENS)).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(text.mask(blank), errors="coerce", format="mixed", utc=True)
        return np.flatnonzero((numeric & notna) | (parsed.isna().to_numpy() & ~blank))
    return np.flatnonzero(notna)  # categorical with the wrong kind of value (e.g. numbers for text categories)


def _infinite_rows(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_integer_dtype(s.dtype):
        return np.array([], dtype=int)  # no infinity in these
    if pd.api.types.is_float_dtype(s.dtype):
        return np.flatnonzero(np.isinf(s.to_numpy(dtype="float64", na_value=np.nan)))
    from driftloop.monitor import _text_to_numeric

    nums, _ = _text_to_numeric(s.astype(object))  # text such as "inf" or "-Infinity" too
    return np.flatnonzero(np.isinf(nums.to_numpy(dtype="float64", na_value=np.nan)))


def enforce(contract: Mapping[str, Any], rows: pd.DataFrame, *, where: str = "the batch") -> Enforced:
    """Check ``rows`` against the model's data contract before scoring; raise :class:`ContractViolation`."""
    from driftloop.monitor import check_schema

    check = check_schema(contract, rows, allow_extra=True)
    columns = contract["columns"]
    problems: list[Problem] = []
    if check.empty:
        problems.append(Problem("empty"))
    problems += [Problem("missing_column", c, None, columns[c]["kind"]) for c in check.missing]
    problems += [Problem("duplicated_column", c) for c in check.duplicated if c in columns]
    position = {str(c): i for i, c in enumerate(rows.columns)}
    for r in check.retyped:
        bad = _bad_rows(rows.iloc[:, position[r.column]], r.expected)
        problems.append(Problem("wrong_kind", r.column, int(bad[0]) if len(bad) else None, r.expected))
    retyped = {r.column for r in check.retyped}
    for name, spec in columns.items():
        if spec["kind"] == "numeric" and name in position and name not in retyped and name not in check.duplicated:
            inf = _infinite_rows(rows[name])
            if len(inf):
                problems.append(Problem("not_finite", name, int(inf[0]), "numeric"))
    if problems:
        raise ContractViolation(where, problems, check.messages)
    unseen: dict[str, int] = {}
    for name in check.new_categories:
        spec = columns[name]
        known = set(spec.get("categories") or [])
        s = rows.iloc[:, position[name]]
        text = s.astype("string")
        unseen[name] = int((text.notna() & ~text.isin(known)).sum())
    return Enforced(check.n_rows, tuple(check.extra), unseen, check.notes)


def typed_frame(contract: Mapping[str, Any], rows: pd.DataFrame) -> pd.DataFrame:
    """The contract's columns of rows that passed :func:`enforce`, in stable types (the prediction log's schema):
    numeric float64, boolean nullable boolean, datetime naive UTC datetime64, categorical text."""
    from driftloop import monitor as m

    out: dict[str, Any] = {}
    for name, spec in contract["columns"].items():
        s = rows[name]
        kind = spec["kind"]
        if kind == "numeric":
            out[name] = pd.to_numeric(s.astype(object) if s.dtype == object else s, errors="coerce").astype("float64")
        elif kind == "boolean":
            out[name] = s.map(
                lambda v: None if m._norm_value(v) is None else m._BOOL_TOKENS[m._norm_value(v).strip().lower()]
            ).astype("boolean")
        elif kind == "datetime":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = s if pd.api.types.is_datetime64_any_dtype(s) else pd.to_datetime(s, errors="coerce", format="mixed")
            if getattr(d.dt, "tz", None) is not None:
                d = d.dt.tz_convert("UTC").dt.tz_localize(None)
            out[name] = d.astype("datetime64[ns]")
        else:
            out[name] = s.map(m._norm_value).astype("string")
    return pd.DataFrame(out, index=rows.index)
