"""THE enforcement of a model's data contract on rows to score: ``driftloop score``, the Prefect scoring flow and
``driftloop serve`` all call :func:`enforce`. The value rules themselves are :func:`classify` (one place), which
monitoring's :func:`driftloop.monitor.check_schema` calls too, so the four agree on what a wrong value is.

``enforce`` takes a DataFrame (a batch: typed columns decide at once, other columns are judged by their distinct
values) or a parsed request's :class:`Columns` (plain Python values: no pandas object per column, which is what a
small request used to cost).

``enforce`` raises :class:`ContractViolation` for rows that cannot be scored as they are: no rows, a missing or
duplicated contract column, a value that cannot be read as its column's kind (text in a numeric column, a date that
does not parse) or an infinite number. The error names the column and the first offending row, never the value
(``detail=True`` adds the expected kind and the check's own text, which may quote values). Extra columns are
allowed and reported; categories the model has not seen are counted (the model treats them as missing, as it did
in training). Missing values (null, NaN) are allowed: the model was trained to handle them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from driftloop.errors import DataError

__all__ = ["Columns", "ContractViolation", "Enforced", "Problem", "classify", "enforce", "typed_frame"]


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


# --------------------------------------------------------------------------- the value rules (one place)
_NUMBER = (bool, int, float, np.number)
_INF_TEXT = frozenset({"inf", "infinity"})
OK, WRONG_KIND, NOT_FINITE = 0, 1, 2
_ISO_NAIVE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?$")


def is_missing(v: Any) -> bool:
    """Null in any of its forms (None, NaN, pd.NA, NaT)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float | np.floating):
        return v != v
    return isinstance(v, np.datetime64) and np.isnat(v)


def _number_code(v: Any) -> int:
    from driftloop.monitor import _NA_TOKENS

    if isinstance(v, _NUMBER):
        return NOT_FINITE if isinstance(v, float | np.floating) and math.isinf(v) else OK
    text = str(v).strip()
    if text.lower() in _NA_TOKENS:
        return OK  # missing
    if not text.isascii() or "_" in text:  # what pandas.to_numeric (the model's reading) refuses
        return WRONG_KIND
    try:
        f = float(text)
    except ValueError:
        return WRONG_KIND
    if f != f:
        return WRONG_KIND
    if math.isinf(f):
        return NOT_FINITE if text.lower().lstrip("+-") in _INF_TEXT else WRONG_KIND  # "1e400" does not parse
    return OK


def _boolean_code(v: Any) -> int:
    from driftloop.monitor import _BOOL_TOKENS, _norm_value

    return OK if (_norm_value(v) or "").strip().lower() in _BOOL_TOKENS else WRONG_KIND


def _iso_date(text: str) -> bool:
    """A plain ISO 8601 date/time pandas reads as well (the common case, without calling pandas)."""
    from driftloop.features import iso_datetime

    return iso_datetime(text) is not None


def classify(kind: str, values: Sequence[Any]) -> np.ndarray:
    """THE value rules of the data contract: per value, ``OK`` (0: readable as ``kind``, or missing),
    ``WRONG_KIND`` (1: e.g. text in a numeric column, a date that does not parse) or ``NOT_FINITE`` (2: an
    infinite number). Used on every value of a request, on the distinct values of a batch (:func:`enforce`) and by
    monitoring's schema check (:func:`driftloop.monitor.check_schema`). Categorical values are never wrong one by
    one (see :func:`categorical_wrong`)."""
    out = np.zeros(len(values), dtype=np.int8)
    if kind == "categorical":
        return out
    if kind == "numeric":
        for i, v in enumerate(values):
            if not is_missing(v):
                out[i] = _number_code(v)
        return out
    if kind == "boolean":
        for i, v in enumerate(values):
            if not is_missing(v):
                out[i] = _boolean_code(v)
        return out
    if kind != "datetime":
        raise ValueError(f"unknown contract kind {kind!r}")
    from driftloop.monitor import _NA_TOKENS

    parse: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        if is_missing(v):
            continue
        if isinstance(v, _NUMBER) and not isinstance(v, pd.Timestamp):
            out[i] = WRONG_KIND  # a number is not a date
            continue
        text = str(v).strip()
        if text.lower() in _NA_TOKENS or _iso_date(text):
            continue
        parse.append((i, text))
    if parse:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(
                pd.Series([t for _, t in parse], dtype=object), errors="coerce", format="mixed", utc=True
            )
        for (i, _), nat in zip(parse, parsed.isna().to_numpy(), strict=True):
            if nat:
                out[i] = WRONG_KIND
    return out


def categorical_wrong(dtype_class: str, categories: Sequence[str] | None) -> bool:
    """The column rule of a categorical column: dates, or numbers where the categories are text."""
    from driftloop.monitor import _parses_as_number

    if dtype_class == "datetime":
        return True
    text_categories = bool(categories) and not any(_parses_as_number(c) for c in categories)
    return dtype_class == "numeric" and text_categories


def names_check(contract: Mapping[str, Any], names: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Missing contract columns, extra columns (not contract, target or ignored) and duplicated names."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    duplicated = sorted(n for n, k in counts.items() if k > 1)
    expected = [str(c) for c in contract["columns"]]
    target = contract.get("target")
    allowed = set(expected) | {str(c) for c in contract.get("ignored") or []} | ({str(target)} if target else set())
    missing = [c for c in expected if c not in counts]
    extra = [n for n in counts if n not in allowed]
    return missing, extra, duplicated


# --------------------------------------------------------------------------- rows as columns (a parsed request)
class Columns:
    """Rows as columns of plain Python values, in the order given: what the server parses a request into, so a
    small request never builds a pandas object per column. ``names`` may repeat (a duplicated column); ``data``
    holds one list of ``n_rows`` values per distinct name."""

    __slots__ = ("data", "n_rows", "names")

    def __init__(self, names: Sequence[str], data: dict[str, list], n_rows: int):
        self.names, self.data, self.n_rows = list(names), data, n_rows

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Columns:
        names = [str(c) for c in frame.columns]
        data: dict[str, list] = {}
        for i, name in enumerate(names):
            if name not in data:
                data[name] = frame.iloc[:, i].tolist()
        return cls(names, data, len(frame))

    def frame(self) -> pd.DataFrame:
        """A DataFrame of the columns (pandas infers the dtypes as for ``DataFrame.from_records``)."""
        return pd.DataFrame(self.data, index=pd.RangeIndex(self.n_rows), columns=list(self.data))


def _dtype_class(s: pd.Series) -> str:
    from driftloop import monitor as m

    if m._is_datetime_like(s.dtype):
        return "datetime"
    if m._is_plain_numeric(s.dtype):
        return "numeric"
    return "bool" if pd.api.types.is_bool_dtype(s.dtype) else "object"


def _values_class(values: list) -> str:
    """What pandas would infer for these values: "numeric" (numbers only), "bool", "datetime" or "object"."""
    kinds = set()
    for v in values:
        if is_missing(v):
            continue
        if isinstance(v, bool | np.bool_):
            kinds.add("bool")
        elif isinstance(v, int | float | np.number):
            kinds.add("numeric")
        elif isinstance(v, datetime | np.datetime64):
            kinds.add("datetime")
        else:
            return "object"
        if len(kinds) > 1:
            return "object"
    return kinds.pop() if kinds else "object"


def _first(mask: np.ndarray) -> int | None:
    return int(mask.argmax()) if mask.any() else None


def _plain(values: list, types: tuple[type, ...]) -> bool:
    """Every value is None or exactly of one of ``types`` (bool is not int here)."""
    return set(map(type, values)) <= {type(None), *types}


def _classify_distinct(kind: str, values: list) -> np.ndarray:
    """:func:`classify` of each value, computed once per distinct value (a request repeats values)."""
    try:
        distinct = list(dict.fromkeys(values))
    except TypeError:  # unhashable values (lists, objects): one by one
        return classify(kind, values)
    if len(distinct) == len(values):
        return classify(kind, values)
    code = dict(zip(distinct, classify(kind, distinct).tolist(), strict=True))
    return np.fromiter((code[v] for v in values), dtype=np.int8, count=len(values))


def _scan_list(name: str, spec: Mapping[str, Any], values: list, known: frozenset[str]) -> tuple:
    """(first wrong-kind row, first infinite row, rows with an unseen category) of one request column."""
    kind = spec["kind"]
    if kind == "categorical":
        from driftloop.monitor import _norm_value

        if _plain(values, (str,)):  # the common case: text or missing
            return None, None, sum(1 for v in values if v is not None and v not in known)
        nested = next((i for i, v in enumerate(values) if isinstance(v, list | dict)), None)
        if nested is not None:
            return nested, None, 0  # a list or an object is not a category
        if categorical_wrong(_values_class(values), spec.get("categories")):
            return next(i for i, v in enumerate(values) if not is_missing(v)), None, 0
        unseen = sum(1 for v in values if (t := _norm_value(v)) is not None and t not in known)
        return None, None, unseen
    if kind == "numeric" and _plain(values, (float, int)):  # numbers or null: only infinity to look for
        return None, _first(np.isinf(np.array(values, dtype="float64"))), 0
    if kind == "boolean" and _plain(values, (bool,)):
        return None, None, 0
    codes = _classify_distinct(kind, values)
    return _first(codes == WRONG_KIND), _first(codes == NOT_FINITE), 0


def _scan_series(name: str, spec: Mapping[str, Any], s: pd.Series, known: frozenset[str]) -> tuple:
    """The same as :func:`_scan_list` on a pandas column: typed dtypes decide at once, other columns are classified
    by their distinct values."""
    from driftloop import monitor as m

    kind, cls = spec["kind"], _dtype_class(s)
    notna = s.notna().to_numpy()
    if not notna.any():
        return None, None, 0
    if kind == "categorical":
        if categorical_wrong(cls, spec.get("categories")):
            return _first(notna), None, 0
        distinct = m._unique_nonnull(s)
        new = [v for v in distinct if (t := m._norm_value(v)) is not None and t not in known]
        return None, None, int(s.isin(new).sum()) if new else 0
    if cls == "datetime":
        return (None if kind == "datetime" else _first(notna)), None, 0
    if cls in ("numeric", "bool"):
        if kind == "datetime":
            return _first(notna), None, 0
        if kind == "numeric" and pd.api.types.is_float_dtype(s.dtype):
            return None, _first(np.isinf(s.to_numpy(dtype="float64", na_value=np.nan))), 0
        if kind == "numeric" or cls == "bool":
            return None, None, 0
    if pd.api.types.is_complex_dtype(s.dtype):
        return _first(notna), None, 0
    distinct = m._unique_nonnull(s)
    codes = classify(kind, distinct)
    wrong, inf = distinct[codes == WRONG_KIND], distinct[codes == NOT_FINITE]
    values = s.astype(object)
    return (
        _first(values.isin(wrong).to_numpy()) if len(wrong) else None,
        _first(values.isin(inf).to_numpy()) if len(inf) else None,
        0,
    )


def enforce(contract: Mapping[str, Any], rows: pd.DataFrame | Columns, *, where: str = "the batch") -> Enforced:
    """Check ``rows`` (a DataFrame, or a parsed request's :class:`Columns`) against the model's data contract before
    scoring; raise :class:`ContractViolation` naming the column and first row of each problem."""
    from driftloop.monitor import _norm_value

    columns = contract["columns"]
    names = list(rows.names) if isinstance(rows, Columns) else [str(c) for c in rows.columns]
    n_rows = len(rows)
    missing, extra, duplicated = names_check(contract, names)
    problems: list[Problem] = []
    if n_rows == 0:
        problems.append(Problem("empty"))
    problems += [Problem("missing_column", c, None, columns[c]["kind"]) for c in missing]
    problems += [Problem("duplicated_column", c) for c in duplicated if c in columns]
    position = {n: i for i, n in enumerate(names)}
    unseen: dict[str, int] = {}
    infinite: list[Problem] = []
    for name, spec in columns.items():
        name = str(name)
        if name not in position or name in duplicated:
            continue
        known = frozenset(t for c in spec.get("categories") or () if (t := _norm_value(c)) is not None)
        try:
            if isinstance(rows, Columns):
                wrong, inf, new = _scan_list(name, spec, rows.data[name], known)
            else:
                wrong, inf, new = _scan_series(name, spec, rows.iloc[:, position[name]], known)
        except Exception:  # noqa: BLE001 - odd values (lists, dicts, ...) are of the wrong kind
            wrong, inf, new = 0, None, 0
        if wrong is not None:
            problems.append(Problem("wrong_kind", name, wrong, spec["kind"]))
        elif inf is not None:
            infinite.append(Problem("not_finite", name, inf, "numeric"))
        if new:
            unseen[name] = new
    problems += infinite
    if problems:
        details = tuple(f"column {p.column!r}: expected {p.expected}" for p in problems if p.kind == "wrong_kind")
        raise ContractViolation(where, problems, details)
    notes = (f"ignored column(s): {', '.join(extra)}",) if extra else ()
    return Enforced(n_rows, tuple(extra), unseen, notes)


def _typed_plain(kind: str, values: list) -> Any:
    """``typed_frame``'s column straight from plain values (numbers, text, booleans, plain ISO dates, nulls), as
    the general path would give it; ``None`` for anything else (the general path decides)."""
    if kind == "numeric" and _plain(values, (float, int)):
        return np.array(values, dtype="float64")  # None -> NaN
    if kind == "categorical" and _plain(values, (str,)):
        return pd.array(values, dtype="string")
    if kind == "boolean" and _plain(values, (bool,)):
        return pd.array(values, dtype="boolean")
    if kind == "datetime" and _plain(values, (str,)):
        from driftloop.features import iso_datetime

        if all(map(_ISO_NAIVE_PREFIX.match, filter(None, values))):
            try:  # numpy's ISO 8601 reader, in C (values that passed the contract are within pandas' range)
                return np.array(values, dtype="datetime64[ns]")
            except ValueError:
                pass
        dates = [None if v is None else iso_datetime(v) for v in values]
        if all(d is not None or v is None for d, v in zip(dates, values, strict=True)):
            return np.array([np.datetime64("NaT") if d is None else d for d in dates], dtype="datetime64[ns]")
    return None


def typed_frame(contract: Mapping[str, Any], rows: pd.DataFrame | Columns) -> pd.DataFrame:
    """The contract's columns of rows that passed :func:`enforce`, in stable types (the prediction log's schema):
    numeric float64, boolean nullable boolean, datetime naive UTC datetime64, categorical text."""
    from driftloop import monitor as m

    out: dict[str, Any] = {}
    for name, spec in contract["columns"].items():
        kind = spec["kind"]
        if isinstance(rows, Columns):
            values = rows.data[name]
            plain = _typed_plain(kind, values)
            if plain is not None:
                out[name] = plain
                continue
            s = pd.Series(values, dtype=None if values else object)
        else:
            s = rows[name]
        if kind == "numeric":
            out[name] = pd.to_numeric(s.astype(object) if s.dtype == object else s, errors="coerce").astype("float64")
        elif kind == "boolean":
            out[name] = s.map(_distinct_map(s, lambda t: m._BOOL_TOKENS[t.strip().lower()])).astype("boolean")
        elif kind == "datetime":
            d = s
            if not pd.api.types.is_datetime64_any_dtype(s):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    d = pd.to_datetime(s, errors="coerce", format="mixed")
                    if not pd.api.types.is_datetime64_any_dtype(d):  # mixed time zones
                        d = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
            if getattr(d.dt, "tz", None) is not None:
                d = d.dt.tz_convert("UTC").dt.tz_localize(None)
            out[name] = d.astype("datetime64[ns]").to_numpy()
        else:
            out[name] = s.map(_distinct_map(s, lambda t: t)).astype("string").array
    index = pd.RangeIndex(len(rows)) if isinstance(rows, Columns) else rows.index
    return pd.DataFrame(out, index=index)


def _distinct_map(s: pd.Series, convert) -> dict:
    """value -> ``convert`` of its canonical text (None for missing), computed once per distinct value."""
    from driftloop.monitor import _norm_value

    out = {}
    for v in pd.unique(s.dropna()):
        t = _norm_value(v)
        out[v] = None if t is None else convert(t)
    return out
