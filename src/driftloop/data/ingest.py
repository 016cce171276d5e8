"""Ingest stage: read the configured source (simulator, CSV, Parquet, SQL) into one Parquet file.

The target contract (present, finite, at least two classes, enough rows) is checked *before*
anything is written, and the output is written atomically, so a bad source never replaces the
previous data. Files (``ingest.path``, the labeled batches of ``ingest.labeled_dir``) are read by the
one reading function, ``driftloop.io.read_table``: the same formats and named errors as monitoring
and scoring. When ingest reruns is decided by the ``source`` stage before it (``driftloop.data.source``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError
from driftloop.faults import fault_point, register_point
from driftloop.io import (  # noqa: F401 - the atomic writers are also imported from here
    dedupe_columns,
    read_table,
    read_table_with_notes,
    redact_url,
    write_bytes_atomic,
    write_parquet_atomic,
)

Progress = Callable[[int], None]

BEFORE_WRITE = register_point("ingest.before_write", "driftloop ingest (run/dvc repro): data read, before raw.parquet")


def _mask_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable SQL URL>"


def read_csv(
    path: str, options: dict, chunk_rows: int = 250_000, progress: Progress | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """A CSV file through the one reading function (``driftloop.io.read_table``); frame and warnings."""
    return read_table_with_notes(path, options, fmt="csv", chunk_rows=chunk_rows, progress=progress)


def read_parquet(path: str, options: dict) -> tuple[pd.DataFrame, list[str]]:
    """A Parquet file through the one reading function (``driftloop.io.read_table``); frame and warnings."""
    return read_table_with_notes(path, options, fmt="parquet")


def read_sql(params: Params, env: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    import sqlalchemy as sa

    env = dict(os.environ) if env is None else env
    cfg = params.ingest.sql
    url = env.get("DRIFTLOOP_SQL_URL") or cfg.url
    if not url:
        raise DataError("ingest.sql.url is not set (set it in params.yaml or DRIFTLOOP_SQL_URL)")
    try:
        engine = sa.create_engine(url, connect_args=_connect_timeout(url))
    except Exception as exc:
        raise DataError(f"ingest.sql.url {_mask_url(url)}: invalid URL ({exc})") from None
    stmt = sa.text(cfg.query) if cfg.query else sa.select(sa.text("*")).select_from(sa.table(cfg.table))
    try:
        with engine.connect() as conn:
            df = pd.read_sql_query(stmt, conn, coerce_float=True)
    except sa.exc.OperationalError as exc:
        raise DataError(
            f"ingest.sql.url {_mask_url(url)}: cannot connect ({str(exc.orig).strip().splitlines()[0]})"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        what = f"query {cfg.query!r}" if cfg.query else f"table {cfg.table!r}"
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DataError(f"ingest.sql {what} failed on {_mask_url(url)}: {first}") from None
    finally:
        engine.dispose()
    names, notes = dedupe_columns(list(df.columns))
    df.columns = names
    return df, notes


def _connect_timeout(url: str) -> dict:
    if url.startswith(("postgresql", "postgres")):
        return {"connect_timeout": 5}
    if url.startswith("mysql"):
        return {"connect_timeout": 5}
    return {}


def simulate_chunks(params: Params) -> Iterator[pd.DataFrame]:
    from driftloop.data.simulate import simulate_chunks as _chunks

    s = params.simulate
    drift = s.drift if any(s.drift.model_dump().values()) else None
    yield from _chunks(
        s.n_rows,
        params.base.seed,
        start_date=s.start_date,
        months=s.months,
        default_rate=s.default_rate,
        drift=drift,
        chunk_rows=s.chunk_rows,
    )


def read_source(params: Params, progress: Progress | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Read a non-simulated source whole; returns the frame and warnings."""
    ing = params.ingest
    if ing.source in ("csv", "parquet"):
        df, notes = read_table_with_notes(
            ing.path, ing.read_options, fmt=ing.source, chunk_rows=ing.chunk_rows, progress=progress
        )
        where = redact_url(ing.path)
    elif ing.source == "sql":
        df, notes = read_sql(params)
        where = "ingest.sql"
        if progress:
            progress(len(df))
    else:  # pragma: no cover - guarded by config
        raise DataError(f"ingest.source '{ing.source}' cannot be read whole")
    if df.shape[1] == 0:
        raise DataError(f"{where}: no columns")
    if len(df) == 0:
        raise DataError(f"{where}: no rows (header only)")
    return df, notes


def _aligned(df: pd.DataFrame, like: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A labeled batch with the columns and dtypes of the main data (categories are unioned)."""
    missing = [c for c in like.columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: labeled batch lacks column(s) {missing}")
    df = df[list(like.columns)].copy()
    for col in like.columns:
        if isinstance(like[col].dtype, pd.CategoricalDtype):
            cats = list(like[col].cat.categories) + [
                c for c in pd.unique(df[col].dropna()) if c not in set(like[col].cat.categories)
            ]
            df[col] = pd.Categorical(df[col].astype(object), categories=cats)
    import pyarrow as pa

    for field in pa.Schema.from_pandas(like, preserve_index=False):  # what the Parquet writer will cast to
        if isinstance(like[field.name].dtype, pd.CategoricalDtype):
            continue
        try:
            pa.array(df[field.name], from_pandas=True).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"{path}: labeled batch column '{field.name}' ({df[field.name].dtype}) does not fit the data's "
                f"type {field.type}: {exc}"
            ) from None
    return df


def labeled_batches(params: Params) -> list[Path]:
    """Labeled production batches that retraining added (``ingest.labeled_dir``), in name order."""
    d = params.ingest.labeled_dir
    return sorted(Path(d).glob("*.parquet")) if d and Path(d).is_dir() else []


def read_labeled(paths: list[Path]) -> list[tuple[Path, pd.DataFrame]]:
    """Every labeled batch, read before anything is written: a 0-byte or corrupt one is named."""
    out = []
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = read_table(path, fmt="parquet")
        if len(df) == 0:
            raise DataError(f"{path}: labeled batch has no rows; remove it from ingest.labeled_dir")
        out.append((path, df))
    return out


def ingest(params: Params, out: str | Path, progress: Progress | None = None) -> dict:
    """Run the ingest stage; returns a summary (rows, columns, warnings)."""
    from driftloop.data.validate import check_contract

    extra = read_labeled(labeled_batches(params))

    def before_commit() -> None:
        fault_point(BEFORE_WRITE)

    if params.ingest.source == "simulate":

        def chunks() -> Iterator[pd.DataFrame]:
            for chunk in simulate_chunks(params):
                if progress:
                    progress(len(chunk))
                yield chunk
            for path, batch in extra:
                yield _aligned(batch, chunk, path)

        n = write_parquet_atomic(chunks(), out, before_commit=before_commit)
        return {"rows": n, "source": "simulate", "labeled_batches": len(extra), "warnings": []}
    df, notes = read_source(params, progress)
    if extra:
        df = pd.concat([df, *(_aligned(batch, df, path) for path, batch in extra)], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_contract(df, params, source=redact_url(params.ingest.path) if params.ingest.path else "ingest.sql")
    n = write_parquet_atomic(df, out, before_commit=before_commit)
    return {"rows": n, "columns": df.shape[1], "source": params.ingest.source, "warnings": notes}
