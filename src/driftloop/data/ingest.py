"""Ingest stage: read the configured source (simulator, CSV, Parquet, SQL) into one Parquet file.

The target contract (present, finite, at least two classes, enough rows) is checked *before*
anything is written, and the output is written atomically, so a bad source never replaces the
previous data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError

Progress = Callable[[int], None]


def dedupe_columns(names: list[str]) -> tuple[list[str], list[str]]:
    """Rename duplicated column names (``a``, ``a`` -> ``a``, ``a__2``); returns names and warnings."""
    seen: dict[str, int] = {}
    out, notes = [], []
    taken = set(map(str, names))
    for name in map(str, names):
        if name not in seen:
            seen[name] = 1
            out.append(name)
            continue
        k = seen[name] + 1
        while f"{name}__{k}" in taken:
            k += 1
        seen[name] = k
        new = f"{name}__{k}"
        taken.add(new)
        out.append(new)
        notes.append(f"duplicate column name '{name}' renamed to '{new}'")
    return out, notes


def _mask_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable SQL URL>"


_BY_COLUMN_OPTIONS = {
    "low_memory",
    "parse_dates",
    "date_format",
    "dtype",
    "converters",
    "usecols",
    "index_col",
    "na_values",
    "keep_default_na",
    "na_filter",
    "true_values",
    "false_values",
}


def read_csv(
    path: str, options: dict, chunk_rows: int, progress: Progress | None = None
) -> tuple[pd.DataFrame, list[str]]:
    opts = {"low_memory": False, **options}
    # the header row is read as text: options that refer to columns by name (parse_dates, dtype, ...)
    # cannot apply to it, and names like "NA" or "01" must not become NaN or 1
    header_opts = {k: v for k, v in opts.items() if k not in _BY_COLUMN_OPTIONS}
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, **header_opts)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    header_names = [v if isinstance(v, str) and v else f"Unnamed: {i}" for i, v in enumerate(header.iloc[0])]
    names, notes = dedupe_columns(header_names)
    try:
        reader = pd.read_csv(path, header=0, names=names, chunksize=chunk_rows, **opts)
        chunks = []
        for chunk in reader:
            chunks.append(chunk)
            if progress:
                progress(len(chunk))
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    df = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names)
    return df, notes


def read_parquet(path: str, options: dict) -> tuple[pd.DataFrame, list[str]]:
    try:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, **options)
        except Exception as exc:
            if "Multiple matches for FieldRef" not in str(exc):
                raise
            table = pq.ParquetFile(path).read()  # duplicate column names: read without the dataset API
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
    names, notes = dedupe_columns(table.column_names)
    df = table.to_pandas()  # renaming the table would drop the pandas metadata (Int64 -> float64)
    df.columns = names
    return df, notes


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
    if ing.source == "csv":
        df, notes = read_csv(ing.path, ing.read_options, ing.chunk_rows, progress)
        where = ing.path
    elif ing.source == "parquet":
        df, notes = read_parquet(ing.path, ing.read_options)
        where = ing.path
        if progress:
            progress(len(df))
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


def write_bytes_atomic(data: bytes, out: str | Path) -> None:
    """Write ``data`` to ``out`` through a temporary file: readers see the old file or the new one."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def write_parquet_atomic(frames: Iterator[pd.DataFrame] | pd.DataFrame, out: str | Path) -> int:
    """Write one or many frames to ``out`` through a temporary file; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frames = [frames] if isinstance(frames, pd.DataFrame) else frames
    writer = None
    n = 0
    try:
        for df in frames:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table, row_group_size=256_000)
            n += len(df)
        if writer is None:
            raise DataError(f"{out}: nothing to write")
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return n


def labeled_batches(params: Params) -> list[Path]:
    """Labeled production batches that retraining added (``ingest.labeled_dir``), in name order."""
    d = params.ingest.labeled_dir
    return sorted(Path(d).glob("*.parquet")) if d and Path(d).is_dir() else []


def ingest(params: Params, out: str | Path, progress: Progress | None = None) -> dict:
    """Run the ingest stage; returns a summary (rows, columns, warnings)."""
    from driftloop.data.validate import check_contract

    extra = labeled_batches(params)
    if params.ingest.source == "simulate":

        def chunks() -> Iterator[pd.DataFrame]:
            for chunk in simulate_chunks(params):
                if progress:
                    progress(len(chunk))
                yield chunk
            for path in extra:
                yield _aligned(pd.read_parquet(path), chunk, path)

        n = write_parquet_atomic(chunks(), out)
        return {"rows": n, "source": "simulate", "labeled_batches": len(extra), "warnings": []}
    df, notes = read_source(params, progress)
    if extra:
        df = pd.concat([df, *(_aligned(pd.read_parquet(p), df, p) for p in extra)], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_contract(df, params, source=params.ingest.path or "ingest.sql")
    n = write_parquet_atomic(df, out)
    return {"rows": n, "columns": df.shape[1], "source": params.ingest.source, "warnings": notes}
