"""Monitoring engine: schema check, data drift, prediction/target drift, performance and a decision.

Pure functions on pandas / numpy inputs; no MLflow and no Prefect here (flows wrap this module).
The only side effect is the optional Evidently HTML report written by :func:`data_drift`.

Evidently (0.7 API: ``Report``, ``Dataset``, ``DataDefinition``, ``ValueDrift``)
and scikit-learn are imported inside the functions that need them, so ``import driftloop.monitor``
stays cheap (importing Evidently takes several seconds).

Why sampling: Evidently's cost grows with the row count (1M vs 1M rows x 30 columns takes minutes),
while its default drift tests for more than 1000 reference rows are *distances* (normed Wasserstein
for numeric columns, Jensen-Shannon for categorical ones) with fixed thresholds, whose estimates
barely change between 50k and 1M rows. Both frames are therefore sampled (seeded, reproducible) to
at most ``MonitorParams.sample_rows`` rows before Evidently runs; ``benchmarks/bench_monitoring.py``
measures the speed-up and compares which columns are flagged with and without sampling.

The data contract (written by the training side) is a plain dict::

    {"target": "default", "task": "binary",
     "columns": {"age": {"kind": "numeric", "dtype": "float64"},
                 "state": {"kind": "categorical", "dtype": "category", "categories": ["AL", "AK"]},
                 "application_date": {"kind": "datetime", "dtype": "datetime64[ns]"},
                 "has_cosigner": {"kind": "boolean", "dtype": "bool"}},
     "ignored": ["application_id"]}
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover - typing only
    from driftloop.config import MonitorParams

__all__ = [
    "KINDS",
    "ColumnDrift",
    "Decision",
    "DriftResult",
    "Renamed",
    "Retyped",
    "SchemaCheck",
    "check_schema",
    "data_drift",
    "decide",
    "performance",
    "prediction_drift",
    "sample_frame",
    "target_drift",
]

KINDS = ("numeric", "categorical", "boolean", "datetime")

# Values treated as missing when they appear as text (e.g. a CSV column read as strings).
_NA_TOKENS = frozenset({"", "nan", "none", "null", "na", "n/a", "<na>", "nat"})
_BOOL_TOKENS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}
_MAX_LISTED = 50  # at most this many new category values listed per column
_MAX_DATETIME_PARSE = 10_000  # distinct strings parsed when checking a text datetime column
_LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}
_DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}


# --------------------------------------------------------------------------------------------
# helpers


def _jsonable(obj: Any) -> Any:
    """Convert to plain JSON types: numpy scalars -> python, NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and not isinstance(obj, pd.DataFrame | pd.Series):
        return obj.to_dict()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    return str(obj)


def _norm_name(name: Any) -> str:
    """Case-, whitespace- and punctuation-insensitive form of a column name (for rename matching)."""
    return re.sub(r"[\W_]+", "", str(name).casefold())


def _norm_value(v: Any) -> str | None:
    """Canonical text form of a categorical value: 1, 1.0 and "1" compare equal; NaN -> None."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, bool | np.bool_):
        return "True" if v else "False"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return None
        if math.isfinite(f) and f.is_integer():
            return str(int(f))
        return repr(f)
    return str(v)


def _unique_nonnull(s: pd.Series) -> np.ndarray:
    """Distinct non-missing values (fast path for pandas categoricals: only the codes in use)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = pd.unique(s.cat.codes.to_numpy())
        codes = codes[codes >= 0]
        return np.asarray(s.cat.categories.take(np.sort(codes)), dtype=object)
    return np.asarray(pd.unique(s.dropna()), dtype=object)


def _is_datetime_like(dtype: Any) -> bool:
    return (
        pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
        or isinstance(dtype, pd.PeriodDtype)
    )


def _is_plain_numeric(dtype: Any) -> bool:
    return (
        pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)
    )


def _text_to_numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Coerce text to float; returns (numbers, mask of non-missing values that did not parse)."""
    text = values.astype("string").str.strip()
    blank = text.isna() | text.str.lower().isin(_NA_TOKENS)
    text = text.mask(blank)
    nums = pd.to_numeric(text, errors="coerce")
    nums = pd.Series(np.asarray(nums, dtype="float64"), index=values.index)
    bad = nums.isna() & ~blank
    return nums, bad


def _examples(values: Iterable[Any], k: int = 3) -> str:
    out = []
    for v in values:
        out.append(repr(v))
        if len(out) >= k:
            break
    return ", ".join(out)


# --------------------------------------------------------------------------------------------
# the data contract


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str
    dtype: str | None
    categories: tuple[str, ...] | None  # normalized text forms


@dataclass(frozen=True)
class _Contract:
    columns: tuple[_Spec, ...]
    target: str | None
    task: str | None
    ignored: frozenset[str]

    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _parse_contract(contract: Mapping[str, Any]) -> _Contract:
    if not isinstance(contract, Mapping):
        raise ValueError(f"data contract must be a mapping, got {type(contract).__name__}")
    cols = contract.get("columns")
    if not isinstance(cols, Mapping):
        raise ValueError("data contract: 'columns' must be a mapping of column name -> {kind, dtype, ...}")
    specs = []
    for name, spec in cols.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"data contract: column {name!r} must map to a dict with a 'kind'")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ValueError(f"data contract: column {name!r} has kind {kind!r}; expected one of {KINDS}")
        cats = spec.get("categories")
        norm_cats = None
        if cats is not None:
            norm_cats = tuple(c for c in (_norm_value(v) for v in cats) if c is not None)
        specs.append(_Spec(str(name), kind, None if spec.get("dtype") is None else str(spec["dtype"]), norm_cats))
    target = contract.get("target")
    ignored = frozenset(str(c) for c in (contract.get("ignored") or []))
    return _Contract(tuple(specs), None if target is None else str(target), contract.get("task"), ignored)


# --------------------------------------------------------------------------------------------
# per-column compatibility (shared by the schema check and the drift coercion)


def _numeric_issue(s: pd.Series) -> str | None:
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype) or _is_plain_numeric(dtype):
        return None
    if _is_datetime_like(dtype):
        return f"{dtype} values in a numeric column"
    if pd.api.types.is_complex_dtype(dtype):
        return "complex numbers in a numeric column"
    from driftloop.contract import WRONG_KIND, classify  # the contract's value rules, one implementation

    values = _unique_nonnull(s)
    bad = values[classify("numeric", values) == WRONG_KIND]
    if len(bad):
        return f"{len(bad)} distinct non-numeric value(s), e.g. {_examples(bad)}"
    return None


def _categorical_issue(s: pd.Series, spec: _Spec) -> str | None:
    dtype = s.dtype
    if _is_datetime_like(dtype):
        return f"{dtype} values in a categorical column"
    from driftloop.contract import categorical_wrong

    if _is_plain_numeric(dtype) and categorical_wrong("numeric", spec.categories) and s.notna().any():
        return "numbers in a categorical column whose categories are text"
    return None


def _parses_as_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _boolean_issue(s: pd.Series) -> str | None:
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if _is_datetime_like(dtype):
        return f"{dtype} values in a boolean column"
    from driftloop.contract import WRONG_KIND, classify

    values = _unique_nonnull(s)
    bad = values[classify("boolean", values) == WRONG_KIND]
    if len(bad):
        return f"{len(bad)} distinct non-boolean value(s), e.g. {_examples(bad)}"
    return None


def _datetime_issue(s: pd.Series) -> str | None:
    dtype = s.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return None if s.notna().sum() == 0 else f"{dtype} values in a datetime column"
    values = _unique_nonnull(s)
    if len(values) == 0:
        return None
    if len(values) > _MAX_DATETIME_PARSE:  # best effort: a deterministic subset of the distinct values
        values = values[np.linspace(0, len(values) - 1, _MAX_DATETIME_PARSE).astype(int)]
    if any(isinstance(v, bool | int | float | np.number) and not isinstance(v, pd.Timestamp) for v in values):
        return "numbers in a datetime column"
    from driftloop.contract import WRONG_KIND, classify

    bad = values[classify("datetime", values) == WRONG_KIND]
    if len(bad):
        return f"{len(bad)} distinct value(s) that are not dates, e.g. {_examples(bad)}"
    return None


def _column_issue(s: pd.Series, spec: _Spec) -> str | None:
    if spec.kind == "numeric":
        return _numeric_issue(s)
    if spec.kind == "categorical":
        return _categorical_issue(s, spec)
    if spec.kind == "boolean":
        return _boolean_issue(s)
    return _datetime_issue(s)


def _new_categories(s: pd.Series, spec: _Spec) -> list[str]:
    if spec.categories is None:
        return []
    known = set(spec.categories)
    seen = {_norm_value(v) for v in _unique_nonnull(s)}
    return sorted(v for v in seen if v is not None and v not in known)


def _coerce(s: pd.Series, spec: _Spec) -> tuple[pd.Series | None, str | None]:
    """Values in the form Evidently gets: float64 for numeric, canonical text for categorical/boolean."""
    issue = _column_issue(s, spec)
    if issue is not None:
        return None, issue
    if spec.kind == "numeric":
        if pd.api.types.is_bool_dtype(s.dtype) or _is_plain_numeric(s.dtype):
            out = pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index, name=s.name)
        else:
            out, _ = _text_to_numeric(s.astype(object))
        return out.replace([np.inf, -np.inf], np.nan), None
    # categorical / boolean: map distinct values to canonical text (None stays missing)
    if spec.kind == "boolean":

        def conv(v: Any) -> str | None:
            t = _norm_value(v)
            return None if t is None else str(_BOOL_TOKENS[t.strip().lower()])

    else:
        conv = _norm_value
    values = s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s
    uniq = pd.unique(values.dropna())
    mapping = {v: conv(v) for v in uniq}
    out = values.map(mapping).astype(object)
    out = out.where(out.notna(), None)
    return out, None


# --------------------------------------------------------------------------------------------
# schema check


@dataclass(frozen=True)
class Retyped:
    column: str
    expected: str  # the contract kind
    found: str  # the batch dtype
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "expected": self.expected, "found": self.found, "detail": self.detail}


@dataclass(frozen=True)
class Renamed:
    expected: str  # missing contract column
    found: str  # extra batch column that matches it up to case/whitespace/punctuation

    def to_dict(self) -> dict[str, Any]:
        return {"expected": self.expected, "found": self.found}


@dataclass(frozen=True)
class SchemaCheck:
    """Result of :func:`check_schema`. ``status`` is "violation" when the batch cannot be monitored
    as is: empty, missing / duplicated / unexpected columns, or values of the wrong kind. New
    categories and all-missing columns are reported (``notes``) but are not violations."""

    status: Literal["ok", "violation"]
    n_rows: int
    n_columns: int
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    retyped: tuple[Retyped, ...] = ()
    renamed: tuple[Renamed, ...] = ()
    new_categories: dict[str, list[str]] = field(default_factory=dict)
    all_missing: tuple[str, ...] = ()
    duplicated: tuple[str, ...] = ()
    empty: bool = False
    messages: tuple[str, ...] = ()  # why it is a violation (empty when ok)
    notes: tuple[str, ...] = ()  # reported, not a violation

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "status": self.status,
                "n_rows": self.n_rows,
                "n_columns": self.n_columns,
                "missing": list(self.missing),
                "extra": list(self.extra),
                "retyped": [r.to_dict() for r in self.retyped],
                "renamed": [r.to_dict() for r in self.renamed],
                "new_categories": {k: list(v) for k, v in self.new_categories.items()},
                "all_missing": list(self.all_missing),
                "duplicated": list(self.duplicated),
                "empty": self.empty,
                "messages": list(self.messages),
                "notes": list(self.notes),
            }
        )


def _match_renames(missing: list[str], extra: list[str]) -> list[Renamed]:
    by_norm: dict[str, list[str]] = {}
    for e in extra:
        by_norm.setdefault(_norm_name(e), []).append(e)
    pairs = []
    for m in missing:
        cands = by_norm.get(_norm_name(m), [])
        if len(cands) == 1 and _norm_name(m):
            pairs.append(Renamed(m, cands.pop()))
    return pairs


def check_schema(contract: Mapping[str, Any], batch: pd.DataFrame, *, allow_extra: bool = False) -> SchemaCheck:
    """Compare a production batch with the data contract. Never raises on a DataFrame.

    Violations: an empty batch, missing contract columns (with best-effort ``renamed`` pairs),
    duplicated column names, unexpected columns (not in the contract, not the target, not an
    ``ignored`` column; reported but allowed when ``allow_extra=True``) and values of the wrong
    kind (``retyped``: e.g. text in a numeric column; numbers stored as text that parse cleanly are
    fine). Reported only: ``new_categories`` (values outside the contract's categories, at most
    50 listed per column) and ``all_missing`` columns.

    Raises ``ValueError`` only for a malformed contract.
    """
    spec = _parse_contract(contract)
    if not isinstance(batch, pd.DataFrame):
        try:
            batch = pd.DataFrame(batch)
        except Exception as exc:  # noqa: BLE001 - anything that is not table-like
            return SchemaCheck(
                status="violation",
                n_rows=0,
                n_columns=0,
                empty=True,
                missing=tuple(spec.names()),
                messages=(f"batch is not a table ({type(batch).__name__}: {exc})",),
            )

    n_rows, n_cols = int(batch.shape[0]), int(batch.shape[1])
    names = [str(c) for c in batch.columns]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    duplicated = sorted(n for n, k in counts.items() if k > 1)
    present = set(names)
    expected = spec.names()
    allowed = set(expected) | spec.ignored | ({spec.target} if spec.target else set())
    missing = [c for c in expected if c not in present]
    extra = [n for n in dict.fromkeys(names) if n not in allowed]
    renamed = _match_renames(missing, extra)

    messages: list[str] = []
    notes: list[str] = []
    empty = n_rows == 0
    if empty:
        messages.append("batch is empty (0 rows)" + ("" if n_cols else " and has no columns") + ": nothing to monitor")
    if missing:
        messages.append(f"missing column(s): {', '.join(missing)}")
    for r in renamed:
        messages.append(f"column {r.expected!r} looks renamed to {r.found!r}")
    if duplicated:
        messages.append(f"duplicated column name(s): {', '.join(duplicated)}")
    if extra:
        text = f"unexpected column(s): {', '.join(extra)}"
        (notes if allow_extra else messages).append(text)

    # map str(name) -> position, so non-string column labels still work
    position = {str(c): i for i, c in enumerate(batch.columns)}
    retyped: list[Retyped] = []
    new_cats: dict[str, list[str]] = {}
    all_missing: list[str] = []
    for col in spec.columns:
        if col.name not in present or col.name in duplicated:
            continue
        s = batch.iloc[:, position[col.name]]
        try:
            if n_rows and not s.notna().any():
                all_missing.append(col.name)
                continue
            issue = _column_issue(s, col)
            if issue is not None:
                retyped.append(Retyped(col.name, col.kind, str(s.dtype), issue))
                continue
            if col.kind == "categorical":
                new = _new_categories(s, col)
                if new:
                    new_cats[col.name] = new[:_MAX_LISTED]
                    more = f" (+{len(new) - _MAX_LISTED} more)" if len(new) > _MAX_LISTED else ""
                    notes.append(f"new categories in {col.name!r}: {', '.join(new[:5])}{more}")
        except Exception as exc:  # noqa: BLE001 - never raise on odd values (lists, dicts, ...)
            retyped.append(
                Retyped(col.name, col.kind, str(s.dtype), f"values could not be inspected: {type(exc).__name__}")
            )
    for r in retyped:
        messages.append(f"column {r.column!r}: expected {r.expected}, found {r.found} ({r.detail})")
    if all_missing:
        notes.append(f"all values missing in: {', '.join(all_missing)}")

    return SchemaCheck(
        status="violation" if messages else "ok",
        n_rows=n_rows,
        n_columns=n_cols,
        missing=tuple(missing),
        extra=tuple(extra),
        retyped=tuple(retyped),
        renamed=tuple(renamed),
        new_categories=new_cats,
        all_missing=tuple(all_missing),
        duplicated=tuple(duplicated),
        empty=empty,
        messages=tuple(messages),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# sampling


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream])


def _sample_positions(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray | None:
    if n <= max_rows:
        return None
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def sample_frame(
    df: pd.DataFrame, max_rows: int, seed: int, columns: list[str] | None = None, *, stream: int = 0
) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``df`` (uniform without replacement, original order kept),
    restricted to ``columns``; the same ``(seed, stream)`` always gives the same rows."""
    pos = _sample_positions(len(df), max_rows, _rng(seed, stream))
    out = df if pos is None else df.iloc[pos]
    if columns is not None:
        out = out[columns]
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# data drift


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # contract kind: numeric | categorical | boolean
    stattest: str
    score: float
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "column": self.column,
                "kind": self.kind,
                "stattest": self.stattest,
                "score": self.score,
                "threshold": self.threshold,
                "drifted": self.drifted,
            }
        )


@dataclass(frozen=True)
class DriftResult:
    """Result of :func:`data_drift` (per-column tests run by Evidently on the sampled frames)."""

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    n_drifted: int
    n_columns: int
    reference_rows: int
    current_rows: int
    reference_sample_rows: int
    current_sample_rows: int
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it was not tested
    html_path: str | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "columns": [c.to_dict() for c in self.columns],
                "drift_share": self.drift_share,
                "n_drifted": self.n_drifted,
                "n_columns": self.n_columns,
                "drifted_columns": self.drifted_columns,
                "reference_rows": self.reference_rows,
                "current_rows": self.current_rows,
                "reference_sample_rows": self.reference_sample_rows,
                "current_sample_rows": self.current_sample_rows,
                "seed": self.seed,
                "skipped": dict(self.skipped),
                "html_path": self.html_path,
            }
        )


def _test_failed(status: Any) -> bool:
    return str(getattr(status, "value", status)).upper() == "FAIL"


def _read_value_drift(snapshot: Any) -> dict[str, dict[str, Any]]:
    """``ValueDrift`` results of an Evidently snapshot keyed by column name (found by metric type):
    {stattest, threshold, score, drifted}; ``drifted`` comes from the metric's own test."""
    data = snapshot.dict()
    by_col: dict[str, dict[str, Any]] = {}
    for m in data.get("metrics", []):
        cfg = m.get("config") or {}
        mtype = str(cfg.get("type", ""))
        if mtype.endswith(":ValueDrift"):
            by_col[str(cfg["column"])] = {
                "stattest": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": m.get("value"),
            }
    for t in data.get("tests", []):
        params = (t.get("metric_config") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift") and str(params.get("column")) in by_col:
            by_col[str(params["column"])]["drifted"] = _test_failed(t.get("status"))
    return by_col


def _save_html(snapshot: Any, html_path: str | Path) -> str:
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))  # Evidently 0.7 only writes when given a str
    return str(path)


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: Mapping[str, Any],
    params: MonitorParams,
    seed: int,
    html_path: str | Path | None = None,
) -> DriftResult:
    """Per-column data drift between the champion's reference data and a production batch.

    Tested columns: the contract's numeric, categorical and boolean columns present in both frames
    whose values are compatible with their kind (datetime columns always drift and are skipped;
    every skipped column is listed with the reason). Both frames are sampled to at most
    ``params.sample_rows`` rows (seeded: same seed -> same rows -> same result), coerced to the
    contract kinds, then passed to Evidently with a ``DataDefinition`` built from the contract
    (numeric -> numerical, categorical/boolean -> categorical) and one ``ValueDrift`` metric per
    column, with ``num_stattest``/``cat_stattest``/``num_threshold``/``cat_threshold`` from
    ``params`` when set (Evidently's own choice otherwise: for more than 1000 reference rows the
    normed Wasserstein distance for numeric and Jensen-Shannon for categorical columns, threshold
    0.1). These are the per-column metrics ``DataDriftPreset`` generates; the preset itself is not
    used because it computes every column's drift three times (its ``DriftedColumnsCount`` and its
    render-time drift table recompute what ``ValueDrift`` does): at 50k x 30 it took 5.8 s vs 4.1 s
    on an idle machine and about 20 s vs 5 s on a busy one.
    A column is drifted when Evidently's own test for its ``ValueDrift`` fails; ``n_drifted`` and
    ``drift_share`` count those. Results are read by metric type and column name, never by
    position. The Evidently HTML report is written to ``html_path`` when given.
    """
    spec = _parse_contract(contract)
    skipped: dict[str, str] = {}
    ref_names = pd.Index([str(c) for c in reference.columns])
    cur_names = pd.Index([str(c) for c in current.columns])
    ref_dup = set(ref_names[ref_names.duplicated()])
    cur_dup = set(cur_names[cur_names.duplicated()])
    candidates: list[_Spec] = []
    for col in spec.columns:
        if spec.target is not None and col.name == spec.target:
            continue
        if col.kind == "datetime":
            skipped[col.name] = "datetime column (excluded: dates always drift)"
        elif col.name not in ref_names:
            skipped[col.name] = "missing in reference"
        elif col.name not in cur_names:
            skipped[col.name] = "missing in current batch"
        elif col.name in ref_dup or col.name in cur_dup:
            skipped[col.name] = "duplicated column name"
        else:
            candidates.append(col)

    names = [c.name for c in candidates]
    ref_pos = _sample_positions(len(reference), params.sample_rows, _rng(seed, 0))
    cur_pos = _sample_positions(len(current), params.sample_rows, _rng(seed, 1))

    def _take(df: pd.DataFrame, colnames: pd.Index, pos: np.ndarray | None) -> pd.DataFrame:
        idx = [colnames.get_loc(n) for n in names]
        out = df.iloc[:, idx] if pos is None else df.iloc[pos, idx]
        out = out.reset_index(drop=True)
        out.columns = names
        return out

    ref_s = _take(reference, ref_names, ref_pos)
    cur_s = _take(current, cur_names, cur_pos)

    ref_cols: dict[str, pd.Series] = {}
    cur_cols: dict[str, pd.Series] = {}
    tested: list[_Spec] = []
    for col in candidates:
        try:
            r, r_issue = _coerce(ref_s[col.name], col)
            c, c_issue = _coerce(cur_s[col.name], col)
        except Exception as exc:  # noqa: BLE001 - odd values (lists, dicts, ...) skip the column
            skipped[col.name] = f"values could not be coerced to {col.kind}: {type(exc).__name__}"
            continue
        if r_issue or c_issue:
            which = "reference" if r_issue else "current batch"
            skipped[col.name] = f"incompatible with kind {col.kind} in {which}: {r_issue or c_issue}"
        elif r.notna().sum() == 0 or c.notna().sum() == 0:
            which = "reference" if r.notna().sum() == 0 else "current batch"
            skipped[col.name] = f"no non-missing values in the {which} sample"
        else:
            ref_cols[col.name], cur_cols[col.name] = r, c
            tested.append(col)

    base = {
        "reference_rows": len(reference),
        "current_rows": len(current),
        "reference_sample_rows": len(ref_s),
        "current_sample_rows": len(cur_s),
        "seed": int(seed),
        "skipped": skipped,
    }
    if not tested:
        return DriftResult(columns=(), drift_share=0.0, n_drifted=0, n_columns=0, **base)

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    num = [c.name for c in tested if c.kind == "numeric"]
    cat = [c.name for c in tested if c.kind != "numeric"]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    metrics = [ValueDrift(column=c, method=params.num_stattest, threshold=params.num_threshold) for c in num]
    metrics += [ValueDrift(column=c, method=params.cat_stattest, threshold=params.cat_threshold) for c in cat]
    ref_df = pd.DataFrame(ref_cols)[num + cat]
    cur_df = pd.DataFrame(cur_cols)[num + cat]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(cur_df, data_definition=definition),
            Dataset.from_pandas(ref_df, data_definition=definition),
        )
    by_col = _read_value_drift(snapshot)

    results = []
    for col in tested:
        r = by_col.get(col.name)
        if r is None or r.get("score") is None or "drifted" not in r:
            skipped[col.name] = "Evidently returned no drift result"
            continue
        results.append(
            ColumnDrift(
                column=col.name,
                kind=col.kind,
                stattest=str(r["stattest"]),
                score=float(r["score"]),
                threshold=float(r["threshold"]),
                drifted=bool(r["drifted"]),
            )
        )
    n_drifted = sum(c.drifted for c in results)
    n_columns = len(results)
    written = _save_html(snapshot, html_path) if html_path is not None else None
    return DriftResult(
        columns=tuple(results),
        drift_share=n_drifted / n_columns if n_columns else 0.0,
        n_drifted=n_drifted,
        n_columns=n_columns,
        html_path=written,
        **base,
    )


# --------------------------------------------------------------------------------------------
# prediction / target drift


def _to_1d(values: Any) -> np.ndarray:
    arr = values.to_numpy() if isinstance(values, pd.Series | pd.DataFrame) else np.asarray(values)
    if arr.ndim == 2:
        # a probability matrix: one column -> that column; two -> P(class 1); more -> predicted class
        if arr.shape[1] == 1:
            return arr[:, 0]
        if arr.shape[1] == 2:
            return arr[:, 1]
        return np.argmax(arr, axis=1)
    return arr.reshape(-1)


def _infer_kind(*arrays: np.ndarray) -> str:
    floats = []
    for arr in arrays:
        if arr.dtype.kind in "biuUS":  # bool, integers (class ids), strings
            return "categorical"
        if arr.dtype.kind == "O":  # objects: numbers (e.g. with None) or labels
            s = pd.Series(arr)
            nums = pd.to_numeric(s, errors="coerce")
            if (nums.isna() & s.notna()).any():
                return "categorical"
            arr = nums.to_numpy(dtype="float64")
        floats.append(np.asarray(arr, dtype="float64"))
    both = np.concatenate(floats)
    both = both[np.isfinite(both)]
    if both.size and np.all(both == np.round(both)) and np.unique(both).size <= 20:
        return "categorical"  # class ids stored as floats
    return "numeric"


def _series_drift(
    name: str, reference: Any, current: Any, params: MonitorParams, seed: int, kind: str | None
) -> dict[str, Any]:
    ref = _to_1d(reference)
    cur = _to_1d(current)
    kind = kind or _infer_kind(ref, cur)
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    spec = _Spec(name, kind, None, None)
    ref_pos = _sample_positions(len(ref), params.sample_rows, _rng(seed, 2))
    cur_pos = _sample_positions(len(cur), params.sample_rows, _rng(seed, 3))
    ref_s = pd.Series(ref if ref_pos is None else ref[ref_pos], name=name)
    cur_s = pd.Series(cur if cur_pos is None else cur[cur_pos], name=name)
    out: dict[str, Any] = {
        "column": name,
        "kind": kind,
        "stattest": None,
        "score": None,
        "threshold": None,
        "drifted": False,
        "reference_rows": int(len(ref)),
        "current_rows": int(len(cur)),
        "reference_sample_rows": int(len(ref_s)),
        "current_sample_rows": int(len(cur_s)),
        "skipped": None,
    }
    r, r_issue = _coerce(ref_s, spec)
    c, c_issue = _coerce(cur_s, spec)
    if r_issue or c_issue:
        out["skipped"] = f"values incompatible with kind {kind}: {r_issue or c_issue}"
        return out
    r, c = r.dropna(), c.dropna()
    if r.empty or c.empty:
        out["skipped"] = f"no non-missing values in the {'reference' if r.empty else 'current'} {name}s"
        return out

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    method = params.num_stattest if kind == "numeric" else params.cat_stattest
    threshold = params.num_threshold if kind == "numeric" else params.cat_threshold
    definition = DataDefinition(
        numerical_columns=[name] if kind == "numeric" else [], categorical_columns=[] if kind == "numeric" else [name]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report([ValueDrift(column=name, method=method, threshold=threshold)], include_tests=True).run(
            Dataset.from_pandas(c.to_frame(name), data_definition=definition),
            Dataset.from_pandas(r.to_frame(name), data_definition=definition),
        )
    res = _read_value_drift(snapshot).get(name) or {}
    out.update(
        stattest=None if res.get("stattest") is None else str(res["stattest"]),
        score=None if res.get("score") is None else float(res["score"]),
        threshold=None if res.get("threshold") is None else float(res["threshold"]),
        drifted=bool(res.get("drifted", False)),
    )
    return _jsonable(out)


def prediction_drift(
    reference_scores: Any, current_scores: Any, params: MonitorParams, seed: int, *, kind: str | None = None
) -> dict[str, Any]:
    """Drift of the champion's outputs: P(positive) for binary, the predicted value for regression,
    the predicted class for multiclass (a 2-d probability matrix is reduced: 2 columns -> column 1,
    more -> argmax). ``kind`` ("numeric" | "categorical") is inferred when not given (bool/int/text
    or a few integral floats -> categorical). Both arrays are sampled to ``params.sample_rows``
    (seeded) and tested with Evidently's ``ValueDrift`` (for more than 1000 reference values its
    default is the normed Wasserstein distance, threshold 0.1, for numeric scores and Jensen-Shannon
    for classes; ``num_stattest``/``cat_stattest`` and thresholds from ``params`` override it).

    Returns ``{column, kind, stattest, score, threshold, drifted, *_rows, skipped}``; ``skipped`` is
    a reason (and ``drifted`` False) when there was nothing to compare.
    """
    return _series_drift("prediction", reference_scores, current_scores, params, seed, kind)


def target_drift(reference_y: Any, current_y: Any, task: str, params: MonitorParams, seed: int) -> dict[str, Any]:
    """Drift of the label distribution (prior shift) when the batch has labels; same output as
    :func:`prediction_drift`. Informational: :func:`decide` acts on performance, not on this."""
    kind = "numeric" if task == "regression" else "categorical"
    return _series_drift("target", reference_y, current_y, params, seed, kind)


# --------------------------------------------------------------------------------------------
# performance


def auc_se_hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> float | None:
    """The standard error of a ROC AUC from its value and class counts (Hanley & McNeil 1982): for a reference
    metric whose scores are not at hand (the champion's test AUC)."""
    if not (n_pos > 0 and n_neg > 0) or auc is None or not math.isfinite(auc):
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(math.sqrt(max(var, 0.0)))


def auc_se_delong(y: np.ndarray, p: np.ndarray) -> float | None:
    """The standard error of the ROC AUC of scores ``p`` for 0/1 labels ``y`` (DeLong's placement values; ties
    count one half). O(n log n)."""
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        return None
    v10 = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")) / (2 * n)
    v01 = 1 - (np.searchsorted(pos, neg, "left") + np.searchsorted(pos, neg, "right")) / (2 * m)
    return float(math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n))


def _bootstrap_se(fn, arrays: tuple[np.ndarray, ...], n: int, seed: int) -> float | None:
    if n < 2 or len(arrays[0]) < 2:
        return None
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(arrays[0]), len(arrays[0]))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                v = fn(*(a[idx] for a in arrays))
            except ValueError:
                continue
        if v is not None and math.isfinite(v):
            vals.append(v)
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else None


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def performance(
    y_true: Any,
    y_score: Any,
    task: str,
    reference_metric: float | None,
    *,
    metric: str | None = None,
    reference_se: float | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Model quality on a labelled batch, and its drop against the champion's reference metric.

    * binary: ``roc_auc``, ``pr_auc`` (average precision), ``log_loss``; ``y_score`` = P(positive)
      (or an (n, 2) probability matrix). Labels must be 0/1 or bool; for any other two labels the
      larger one in sort order is the positive class.
    * multiclass: ``accuracy``, ``macro_f1``; ``y_score`` = predicted class (or an (n, k) matrix:
      argmax, i.e. class index, so labels must be 0..k-1).
    * regression: ``rmse``, ``mae``, ``r2``.

    ``metric`` (default roc_auc / macro_f1 / rmse) is compared with ``reference_metric``: ``drop``
    is positive when quality got worse -- an absolute difference for bounded scores (roc_auc,
    pr_auc, accuracy, macro_f1, r2) and a relative increase, ``current / reference - 1``, for
    error metrics (rmse, mae, log_loss), so the same ``performance_drop_retrain`` (e.g. 0.03) reads
    as "3 AUC points" or "3 % more RMSE". Rows with a missing label or score are ignored.

    The drop's noise: ``value_se`` is the batch metric's standard error (ROC AUC: DeLong; other metrics: a
    seeded bootstrap of ``n_bootstrap`` resamples), ``reference_se`` the reference's (e.g.
    ``auc_se_hanley_mcneil`` of the champion's test AUC); ``drop_se`` combines both (independent samples), and
    ``drop_low`` / ``drop_high`` is the two-sided ``confidence`` interval of the drop, in the drop's units.
    """
    from sklearn import metrics as skm

    if task not in _DEFAULT_METRIC:
        raise ValueError(f"task must be one of {sorted(_DEFAULT_METRIC)}, got {task!r}")
    yt = pd.Series(np.asarray(y_true).reshape(-1))
    ys_raw = y_score.to_numpy() if isinstance(y_score, pd.Series | pd.DataFrame) else np.asarray(y_score)
    if task == "multiclass" and ys_raw.ndim == 2:
        ys_raw = np.argmax(ys_raw, axis=1)
    elif ys_raw.ndim == 2:
        ys_raw = ys_raw[:, -1] if ys_raw.shape[1] in (1, 2) else ys_raw[:, 0]
    ys = pd.Series(ys_raw.reshape(-1))
    if len(yt) != len(ys):
        raise ValueError(f"y_true has {len(yt)} rows but y_score has {len(ys)}")
    keep = yt.notna() & ys.notna()
    if task != "multiclass":
        ys = pd.to_numeric(ys, errors="coerce")
        keep &= np.isfinite(ys.astype("float64"))
    yt, ys = yt[keep].reset_index(drop=True), ys[keep].reset_index(drop=True)

    metric = metric or _DEFAULT_METRIC[task]
    values: dict[str, float | None] = {}
    notes: list[str] = []
    if len(yt) == 0:
        notes.append("no labelled rows")
    elif task == "binary":
        labels = sorted(pd.unique(yt).tolist(), key=_norm_value)
        if set(labels) <= {0, 1}:
            y = yt.astype(int).to_numpy()
        else:
            pos = labels[-1]
            if len(labels) > 2:
                notes.append(f"{len(labels)} distinct labels in a binary task; positive class = {pos!r}")
            y = (yt == pos).astype(int).to_numpy()
        p = np.clip(ys.to_numpy(dtype="float64"), 1e-15, 1 - 1e-15)
        if len(np.unique(y)) < 2:
            notes.append("only one class present: roc_auc and pr_auc are undefined")
            values.update(roc_auc=None, pr_auc=None)
        else:
            values.update(roc_auc=float(skm.roc_auc_score(y, p)), pr_auc=float(skm.average_precision_score(y, p)))
        values["log_loss"] = float(skm.log_loss(y, p, labels=[0, 1]))
    elif task == "multiclass":
        t = yt.map(_norm_value).to_numpy()
        s = ys.map(_norm_value).to_numpy()
        values.update(
            accuracy=float(skm.accuracy_score(t, s)),
            macro_f1=float(skm.f1_score(t, s, average="macro", zero_division=0)),
        )
    else:
        y = pd.to_numeric(yt, errors="coerce").to_numpy(dtype="float64")
        p = ys.to_numpy(dtype="float64")
        ok = np.isfinite(y)
        y, p = y[ok], p[ok]
        values.update(
            rmse=float(np.sqrt(skm.mean_squared_error(y, p))),
            mae=float(skm.mean_absolute_error(y, p)),
            r2=float(skm.r2_score(y, p)) if len(y) > 1 else None,
        )
    if metric not in values and len(yt):
        raise ValueError(f"metric {metric!r} is not computed for task {task!r}; one of {sorted(values)}")

    value = values.get(metric)
    value_se = None
    if value is not None and task == "binary" and metric == "roc_auc":
        value_se = auc_se_delong(y, p)
    elif value is not None and n_bootstrap > 0:
        fns = {
            "pr_auc": lambda a, b: float(skm.average_precision_score(a, b)) if 0 < a.sum() < len(a) else None,
            "log_loss": lambda a, b: float(skm.log_loss(a, b, labels=[0, 1])),
            "accuracy": lambda a, b: float(skm.accuracy_score(a, b)),
            "macro_f1": lambda a, b: float(skm.f1_score(a, b, average="macro", zero_division=0)),
            "rmse": lambda a, b: float(np.sqrt(np.mean((a - b) ** 2))),
            "mae": lambda a, b: float(np.mean(np.abs(a - b))),
            "r2": lambda a, b: float(skm.r2_score(a, b)),
        }
        arrays = (t, s) if task == "multiclass" else (y, p)
        if metric in fns:
            value_se = _bootstrap_se(fns[metric], arrays, n_bootstrap, seed)
    drop, drop_kind, drop_se, drop_low, drop_high = None, None, None, None, None
    if value is not None and reference_metric is not None and math.isfinite(float(reference_metric)):
        ref = float(reference_metric)
        scale = 1.0
        if metric in _LOWER_IS_BETTER and ref > 0:
            drop, drop_kind, scale = value / ref - 1.0, "relative", 1.0 / ref
        elif metric in _LOWER_IS_BETTER:
            drop, drop_kind = value - ref, "absolute"
        else:
            drop, drop_kind = ref - value, "absolute"
        if value_se is not None:
            ref_se = reference_se if reference_se is not None and math.isfinite(reference_se) else 0.0
            if reference_se is None:
                notes.append("the reference metric's noise is unknown: the drop's interval counts the batch's only")
            drop_se = scale * math.sqrt(value_se**2 + ref_se**2)
            half = _z(confidence) * drop_se
            drop_low, drop_high = drop - half, drop + half
    return _jsonable(
        {
            "task": task,
            "n_rows": int(len(yt)),
            "metrics": values,
            "metric": metric,
            "value": value,
            "reference": None if reference_metric is None else float(reference_metric),
            "value_se": value_se,
            "reference_se": reference_se,
            "drop": drop,
            "drop_kind": drop_kind,
            "drop_se": drop_se,
            "drop_low": drop_low,
            "drop_high": drop_high,
            "confidence": confidence,
            "notes": notes,
        }
    )


# --------------------------------------------------------------------------------------------
# decision


@dataclass(frozen=True)
class Decision:
    status: Literal["ok", "warn", "retrain", "schema_violation", "insufficient_data"]
    reasons: tuple[str, ...]
    cooldown_active: bool = False
    notes: tuple[str, ...] = ()  # reported observations that did not change the status
    signals: dict[str, Any] = field(default_factory=dict)  # the numbers the rule looked at

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "status": self.status,
                "reasons": list(self.reasons),
                "cooldown_active": self.cooldown_active,
                "notes": list(self.notes),
                "signals": dict(self.signals),
            }
        )


def _fmt_num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, int | float) else str(x)


def _fmt_cols(cols: list[str], k: int = 8) -> str:
    return ", ".join(cols[:k]) + (f", ... (+{len(cols) - k})" if len(cols) > k else "")


def decide(
    schema: SchemaCheck,
    drift: DriftResult | None,
    pred_drift: Mapping[str, Any] | None,
    perf: Mapping[str, Any] | None,
    params: MonitorParams,
    batches_since_retrain: int | None,
    *,
    estimate: Mapping[str, Any] | None = None,
) -> Decision:
    """The monitoring decision for one batch.

    * ``schema_violation`` when the schema check failed (wins over everything else);
    * ``insufficient_data`` when the batch has fewer than ``min_rows`` rows: too few to judge drift or
      performance (a 1-row batch has a "drift share" of 1.0). Never a retrain, and it neither starts nor
      counts towards a cooldown, so the next real batch is judged on its own;
    * ``retrain`` when drift_share >= ``drift_share_retrain``, or prediction drift with
      ``prediction_drift_retrain`` and drift_share >= ``drift_share_warn``, or performance
      ``drop`` >= ``performance_drop_retrain``;
    * ``warn`` when drift_share >= ``drift_share_warn``, when the predictions drifted, or when a
      column whose own drift test failed holds categories the model never saw in training
      (``schema.new_categories``): the model extrapolates on a material share of the rows. A few
      rows with an unseen value do not move the column's distance past its threshold and stay a
      note. (At the simulator's ``new_category=1``, 15 % of ``loan_purpose`` and of ``channel``
      are new values: 2 drifted columns of 21, a drift share of 0.10, below ``drift_share_warn``.)
    * a retrain while ``batches_since_retrain < cooldown_batches`` becomes ``warn`` with
      ``cooldown_active=True`` (``None`` = no retrain yet, no cooldown).

    * ``retrain`` too when the label-free estimate (``estimate``: ``driftloop.calibration.estimate``) of the
      champion's ROC AUC dropped by ``estimated_drop_retrain`` or more with an interval above 0 (a warning
      when within the noise); labels then need not have arrived.

    Missing inputs (``None``) contribute nothing; a drift result with no tested column counts as
    drift_share 0.
    """
    notes = list(schema.notes)
    if not schema.ok:
        return Decision("schema_violation", tuple(schema.messages) or ("schema check failed",), False, tuple(notes))
    min_rows = getattr(params, "min_rows", 0) or 0
    if schema.n_rows < min_rows:
        reason = (
            f"{schema.n_rows} row(s) < monitor.min_rows={min_rows}: too few to judge drift or performance"
            " (no retrain, no cooldown)"
        )
        return Decision("insufficient_data", (reason,), False, tuple(notes), {"rows": schema.n_rows})

    share = float(drift.drift_share) if drift is not None and drift.n_columns > 0 else None
    pred_drifted = bool(pred_drift and pred_drift.get("drifted"))
    drop = None if not perf else perf.get("drop")
    signals = {
        "drift_share": share,
        "n_drifted": None if drift is None else drift.n_drifted,
        "n_columns": None if drift is None else drift.n_columns,
        "prediction_drift": None if pred_drift is None else pred_drifted,
        "prediction_drift_score": None if not pred_drift else pred_drift.get("score"),
        "performance_metric": None if not perf else perf.get("metric"),
        "performance_drop": drop,
        "batches_since_retrain": batches_since_retrain,
        "new_category_columns": None,
    }
    if drift is not None and drift.n_columns == 0:
        notes.append("no column could be tested for data drift")
    if pred_drift and pred_drift.get("skipped"):
        notes.append(f"prediction drift not tested: {pred_drift['skipped']}")

    retrain: list[str] = []
    warn: list[str] = []
    drift_txt = ""
    if share is not None:
        drift_txt = f"drift share {share:.2f} ({drift.n_drifted}/{drift.n_columns} columns"
        drift_txt += f": {_fmt_cols(drift.drifted_columns)})" if drift.n_drifted else ")"
        if share >= params.drift_share_retrain:
            retrain.append(f"{drift_txt} >= retrain threshold {params.drift_share_retrain:.2f}")
        elif share >= params.drift_share_warn:
            warn.append(f"{drift_txt} >= warn threshold {params.drift_share_warn:.2f}")
    new_cats = schema.new_categories or {}
    if drift is not None and new_cats:
        unseen = [c for c in drift.drifted_columns if c in new_cats]
        signals["new_category_columns"] = unseen
        if unseen:
            listed = "; ".join(f"{c}: {', '.join(map(str, new_cats[c][:3]))}" for c in unseen)
            warn.append(f"categories unseen in training in drifted column(s) ({listed})")
    if pred_drifted:
        pd_txt = f"prediction drift (score {_fmt_num(pred_drift.get('score'))}, {pred_drift.get('stattest')})"
        if params.prediction_drift_retrain and share is not None and share >= params.drift_share_warn:
            retrain.append(f"{pd_txt} with drift share {share:.2f} >= {params.drift_share_warn:.2f}")
        else:
            warn.append(pd_txt)
    if drop is not None and drop >= params.performance_drop_retrain:
        kind = perf.get("drop_kind") or "absolute"
        txt = (
            f"{perf.get('metric')} dropped by {drop:.4f} ({kind}; {_fmt_num(perf.get('reference'))} ->"
            f" {_fmt_num(perf.get('value'))})"
            f" >= {params.performance_drop_retrain}"
        )
        low = perf.get("drop_low")
        signals["performance_drop_low"] = low
        must_be_real = getattr(params, "performance_drop_significant", False)
        if must_be_real and low is not None and low <= 0:
            # within the noise of the batch's and the reference's metric: a warning, never a retrain
            warn.append(
                f"{txt}, but within the noise ({perf.get('confidence', 0.95):.0%} interval of the drop "
                f"[{low:+.4f}, {perf.get('drop_high'):+.4f}] includes 0 at {perf.get('n_rows')} rows): not a retrain"
            )
        else:
            if low is not None:
                txt += f"; {perf.get('confidence', 0.95):.0%} interval [{low:+.4f}, {perf.get('drop_high'):+.4f}]"
            elif must_be_real:
                notes.append("the performance drop has no interval: judged on its size alone")
            retrain.append(txt)

    est_drop = None if not estimate else estimate.get("drop")
    signals["estimated_roc_auc"] = None if not estimate else estimate.get("roc_auc")
    signals["estimated_drop"] = est_drop
    threshold = getattr(params, "estimated_drop_retrain", None)
    if est_drop is not None and threshold is not None and est_drop >= threshold:
        low, high = estimate.get("drop_low"), estimate.get("drop_high")
        txt = (
            f"estimated roc_auc (CBPE, no labels) dropped by {est_drop:.4f} ({_fmt_num(estimate.get('reference'))}"
            f" -> {_fmt_num(estimate.get('roc_auc'))}) >= monitor.estimated_drop_retrain={threshold}"
        )
        if low is not None and low > 0:
            retrain.append(f"{txt}; {estimate.get('confidence', 0.95):.0%} interval [{low:+.4f}, {high:+.4f}]")
        else:
            warn.append(f"{txt}, but within the noise (interval [{_fmt_num(low)}, {_fmt_num(high)}]): not a retrain")

    if retrain:
        in_cooldown = batches_since_retrain is not None and batches_since_retrain < params.cooldown_batches
        if in_cooldown:
            reasons = retrain + warn
            reasons.append(
                f"retrain suppressed: cooldown ({batches_since_retrain} batch(es) since the last retrain"
                f" < cooldown_batches={params.cooldown_batches})"
            )
            return Decision("warn", tuple(reasons), True, tuple(notes), signals)
        return Decision("retrain", tuple(retrain + warn), False, tuple(notes), signals)
    if warn:
        return Decision("warn", tuple(warn), False, tuple(notes), signals)
    return Decision("ok", (), False, tuple(notes), signals)
