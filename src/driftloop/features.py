"""Preprocessing that travels with the model: raw rows in, LightGBM-ready frame out.

``Preprocessor`` is fitted on the training split and travels inside the MLflow model as plain JSON
(``to_dict``/``from_dict``: no pickle), so ``models:/<name>@champion`` scores raw rows exactly as the
pipeline did:

- categories are fixed from the training data (most frequent ``max_categories`` with at least
  ``min_category_count`` rows); unseen values become missing, never a crash;
- date columns are expanded into numeric parts (year, month, day of week, ...);
- booleans and nullable integers become floats; text in a numeric column becomes missing;
- column names LightGBM rejects (JSON-special characters, duplicates after cleaning) are
  mapped to safe names reversibly (``original_name`` maps back).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from driftloop.config import FeaturesParams

_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")
_BOOL_TEXT = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


def column_kind(series: pd.Series, *, categorical: bool = False, date: bool = False) -> str:
    """The kind of a raw column: numeric, boolean, categorical or datetime."""
    if date or pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if categorical:
        return "categorical"
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    return "categorical"


_ISO_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?$")


def iso_datetime(text: str) -> datetime | None:
    """``text`` as a naive datetime when it is a plain ISO 8601 date/time without a zone that pandas reads the same
    way (within its nanosecond range); ``None`` otherwise (then pandas decides)."""
    if not _ISO_NAIVE.match(text):
        return None
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return None
    return d if 1678 < d.year < 2262 else None


_PART = {
    "year": lambda d: d.year,
    "month": lambda d: d.month,
    "day": lambda d: d.day,
    "dayofweek": lambda d: d.weekday(),
    "dayofyear": lambda d: d.timetuple().tm_yday,
    "hour": lambda d: d.hour,
}


def _iso_date_parts(values: list, parts: list[str]) -> list[np.ndarray] | None:
    """The date parts of plain ISO strings (or nulls) without pandas; ``None`` when any value is something else."""
    dates = []
    for v in values:
        if v is None:
            dates.append(None)
        elif type(v) is str and (d := iso_datetime(v)) is not None:
            dates.append(d)
        else:
            return None
    return [np.array([np.nan if d is None else _PART[p](d) for d in dates], dtype="float64") for p in parts]


def _safe_name(i: int, name: str) -> str:
    cleaned = _UNSAFE.sub("_", str(name)).strip("_")[:40]
    return f"f{i}_{cleaned}" if cleaned else f"f{i}"


@dataclass
class Preprocessor:
    """Fitted mapping from raw rows to model features (picklable, and JSON through ``to_dict``)."""

    params: FeaturesParams = field(default_factory=FeaturesParams)
    categorical_columns: tuple[str, ...] = ()
    date_columns: tuple[str, ...] = ()
    # learned at fit
    kinds: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    original_name: dict[str, str] = field(default_factory=dict)

    def fit(self, X: pd.DataFrame) -> Preprocessor:
        self.kinds, self.dtypes, self.categories = {}, {}, {}
        for col in X.columns:
            kind = column_kind(X[col], categorical=col in self.categorical_columns, date=col in self.date_columns)
            self.kinds[col] = kind
            self.dtypes[col] = str(X[col].dtype)
            if kind == "categorical":
                counts = X[col].value_counts(dropna=True)
                counts.index = counts.index.astype(str)
                counts = counts.groupby(level=0).sum().sort_values(ascending=False, kind="stable")
                counts = counts[counts >= self.params.min_category_count]
                top = counts.head(self.params.max_categories).index
                self.categories[col] = sorted(top.tolist())
        self.feature_names, self.original_name = [], {}
        i = 0
        for col, kind in self.kinds.items():
            outs = [f"{col}.{p}" for p in self.params.date_parts] if kind == "datetime" else [col]
            for out in outs:
                safe = _safe_name(i, out)
                self.feature_names.append(safe)
                self.original_name[safe] = out
                i += 1
        return self

    @property
    def input_columns(self) -> list[str]:
        return list(self.kinds)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.kinds if c not in X.columns]
        if missing:
            raise KeyError(f"input is missing column(s) the model was trained on: {missing}")
        out: dict[str, pd.Series | np.ndarray] = {}
        names = iter(self.feature_names)
        for col, kind in self.kinds.items():
            s = X[col]
            if kind == "datetime":
                for part in self._date_parts(s):
                    out[next(names)] = part
            elif kind == "categorical":
                if isinstance(s.dtype, pd.CategoricalDtype):
                    s = s.cat.rename_categories([str(c) for c in s.cat.categories])
                    out[next(names)] = s.cat.set_categories(self.categories[col]).array
                else:
                    values = s.astype("string").where(s.notna())
                    out[next(names)] = pd.Categorical(values, categories=self.categories[col])
            elif kind == "boolean":
                if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
                    # text such as "True"/"false" maps to 1/0, other text becomes missing (was: ValueError)
                    s = s.map(lambda v: _BOOL_TEXT.get(v.strip().lower(), np.nan) if isinstance(v, str) else v)
                out[next(names)] = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
            else:
                if pd.api.types.is_numeric_dtype(s):
                    out[next(names)] = s.astype("float64").to_numpy()
                else:
                    out[next(names)] = pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
        return pd.DataFrame(out, index=X.index)

    def _date_parts(self, s: pd.Series) -> list[np.ndarray]:
        dt = s
        if not pd.api.types.is_datetime64_any_dtype(s):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                dt = pd.to_datetime(s, errors="coerce", format="mixed")
            if not pd.api.types.is_datetime64_any_dtype(dt):  # mixed time zones (or zones and none): read as UTC
                dt = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
        if getattr(dt.dt, "tz", None) is not None:
            dt = dt.dt.tz_localize(None)
        return [getattr(dt.dt, part).astype("float64").to_numpy() for part in self.params.date_parts]

    def matrix(self, data: Mapping[str, list], n_rows: int) -> np.ndarray | None:
        """``transform`` of rows given as columns of plain Python values (a parsed request), straight into the
        float matrix LightGBM reads (a category as its code, as LightGBM codes a pandas categorical; missing as
        NaN), without a pandas object per column. ``None`` when a column holds values whose reading depends on
        pandas' type inference (text in a numeric column, numbers in a categorical one): use ``transform``."""
        X = np.empty((n_rows, len(self.feature_names)), dtype="float64")
        j = 0
        for col, kind in self.kinds.items():
            values = data[col]
            if kind == "datetime":
                parts = _iso_date_parts(values, self.params.date_parts)
                if parts is None:  # not plain ISO dates: pandas reads them, as in transform
                    parts = self._date_parts(pd.Series(values, dtype=None if values else object))
                X[:, j : j + len(parts)] = np.column_stack(parts) if parts else X[:, j:j]
                j += len(parts)
                continue
            column = X[:, j]
            j += 1
            if kind == "categorical":
                codes = self._codes(col)
                for i, v in enumerate(values):
                    t = type(v)
                    if t is str:
                        column[i] = codes.get(v, np.nan)
                    elif v is None or (t is float and v != v):
                        column[i] = np.nan
                    elif t is bool:
                        column[i] = codes.get(str(v), np.nan)
                    else:
                        return None
            elif kind == "boolean":
                for i, v in enumerate(values):
                    t = type(v)
                    if v is None:
                        column[i] = np.nan
                    elif t is bool or t is int or t is float:
                        column[i] = float(v)
                    elif t is str:
                        column[i] = _BOOL_TEXT.get(v.strip().lower(), np.nan)
                    else:
                        return None
            else:
                for i, v in enumerate(values):
                    t = type(v)
                    if v is None:
                        column[i] = np.nan
                    elif t is float or t is int:
                        column[i] = float(v)
                    else:
                        return None
        return X

    def _codes(self, col: str) -> dict[str, int]:
        cache = self.__dict__.setdefault("_code_cache", {})
        if col not in cache:
            cache[col] = {c: i for i, c in enumerate(self.categories[col])}
        return cache[col]

    def fit_transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.fit(X).transform(X)

    # ------------------------------------------------------------------ declarative (JSON) form
    def to_dict(self) -> dict:
        """Everything ``transform`` uses, as JSON-ready data (no code, no pickle).

        Mappings keyed by column are lists of ``[column, value]`` pairs: the order of ``kinds`` is the order
        of the model's features, and a column name keeps its JSON type (a JSON object would make it text).
        """
        return {
            "params": self.params.model_dump(mode="json"),
            "categorical_columns": list(self.categorical_columns),
            "date_columns": list(self.date_columns),
            "kinds": [[c, k] for c, k in self.kinds.items()],
            "dtypes": [[c, d] for c, d in self.dtypes.items()],
            "categories": [[c, list(v)] for c, v in self.categories.items()],
            "feature_names": list(self.feature_names),
            "original_name": [[n, o] for n, o in self.original_name.items()],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessor:
        """The inverse of ``to_dict`` (``from_dict(json.loads(json.dumps(p.to_dict())))`` transforms as ``p``)."""

        def key(c):  # a column name that was a tuple or list in pandas cannot come back from JSON: keep it hashable
            return tuple(c) if isinstance(c, list) else c

        return cls(
            params=FeaturesParams(**data["params"]),
            categorical_columns=tuple(key(c) for c in data["categorical_columns"]),
            date_columns=tuple(key(c) for c in data["date_columns"]),
            kinds={key(c): str(k) for c, k in data["kinds"]},
            dtypes={key(c): str(d) for c, d in data["dtypes"]},
            categories={key(c): [str(v) for v in vals] for c, vals in data["categories"]},
            feature_names=[str(n) for n in data["feature_names"]],
            original_name={str(n): o for n, o in data["original_name"]},
        )

    @property
    def categorical_features(self) -> list[str]:
        """Safe names of the categorical model features."""
        cats = []
        names = iter(self.feature_names)
        for kind in self.kinds.values():
            n = len(self.params.date_parts) if kind == "datetime" else 1
            for _ in range(n):
                name = next(names)
                if kind == "categorical":
                    cats.append(name)
        return cats

    def contract(self, target: str, task: str, ignored: list[str] | None = None) -> dict:
        """The data contract the model was trained on (used by monitoring's schema check)."""
        cols = {}
        for col, kind in self.kinds.items():
            entry = {"kind": kind, "dtype": self.dtypes[col]}
            if kind == "categorical":
                entry["categories"] = self.categories[col]
            cols[col] = entry
        return {"target": target, "task": task, "columns": cols, "ignored": list(ignored or [])}
