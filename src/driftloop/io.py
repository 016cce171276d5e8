"""Reading and writing files: the one reading function for every table a user hands in, and atomic writes.

``read_table(path, read_options)`` is how ingest (``ingest.source: csv | parquet`` and the labeled batches of
``ingest.labeled_dir``), monitoring (``driftloop monitor``, the Prefect monitoring flow) and scoring read a
CSV or Parquet file, local or an fsspec URL (``s3://...``, ``memory://...``). Whatever the caller, the same
file gives the same frame and the same errors, each naming the file:

- ``MissingFileError``: no such file;
- ``EmptyFileError``: a 0-byte file;
- ``UnreadableFileError``: not CSV / not Parquet / corrupt / truncated;
- ``UnknownFormatError``: an extension that is neither (``.csv``, ``.tsv``, ``.txt``, also compressed
  ``.gz/.bz2/.zip/.xz/.zst``; ``.parquet``, ``.pq``, ``.parq``) when the format is not given;
- ``UnsupportedColumnError``: a Parquet column no model can use (nested list / struct / map / union).

Awkward but valid files are read as their data, never as pandas' bookkeeping:

- a Parquet file written with a pandas index (``df.set_index("id").to_parquet(...)``): a *named* index
  is data the writer chose to keep and becomes a column again; an unnamed or range index (row labels)
  is dropped;
- a categorical (pandas) or dictionary-encoded (Arrow) column is read as its values (text stays text,
  numbers stay numbers);
- a timezone-aware timestamp column is converted to naive UTC, with a warning naming the column;
- a ``date32`` column becomes a datetime column; a decimal column becomes float64;
- duplicated column names are renamed (``a``, ``a`` -> ``a``, ``a__2``) with a warning.

Warnings are returned as notes by ``read_table_with_notes`` and issued as ``ReadWarning`` by ``read_table``.
URLs are shown without their password or query string in every message.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from driftloop.errors import DataError

Progress = Callable[[int], None]

CSV_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")


class ReadError(DataError):
    """A file a user handed in cannot be read; the message names the file."""


class MissingFileError(ReadError):
    """The file does not exist."""


class EmptyFileError(ReadError):
    """The file has 0 bytes."""


class UnreadableFileError(ReadError):
    """The file is not in the expected format, or is corrupt."""


class UnknownFormatError(ReadError):
    """The file's extension says neither CSV nor Parquet."""


class UnsupportedColumnError(ReadError):
    """A column of a type no model can use (nested values)."""


class ReadWarning(UserWarning):
    """Something in a file was read differently from how it was stored (named column, what was done)."""


# --------------------------------------------------------------------------- names and paths
def is_url(path: str | os.PathLike) -> bool:
    """An fsspec URL (``s3://``, ``gs://``, ``https://``, ``memory://``...), not a local path."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def redact_url(path: str | os.PathLike) -> str:
    """``path`` safe to print or record: a URL loses its password/user info and query string."""
    text = str(path)
    if not is_url(text):
        return text
    from driftloop.config import redact_url_parts

    return redact_url_parts(text)


def dedupe_columns(names: list[Any]) -> tuple[list[str], list[str]]:
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


def table_format(path: str | os.PathLike) -> str:
    """``csv`` or ``parquet`` from the file name; ``UnknownFormatError`` naming the file otherwise."""
    name = str(path).split("?", 1)[0].rstrip("/").lower()
    for comp in COMPRESSION_SUFFIXES:
        if name.endswith(comp):
            stem = name[: -len(comp)]
            if stem.endswith(CSV_SUFFIXES):
                return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    suffix = Path(name).suffix or "(none)"
    raise UnknownFormatError(
        f"{redact_url(path)}: unknown file type {suffix!r}: expected CSV ({', '.join(CSV_SUFFIXES)}, optionally "
        f"compressed {', '.join(COMPRESSION_SUFFIXES)}) or Parquet ({', '.join(PARQUET_SUFFIXES)})"
    )


def _check_exists(path: str, where: str, storage_options: dict | None) -> None:
    """Missing and 0-byte files, before any parser sees them (each parser says something else)."""
    if is_url(path):
        try:
            import fsspec

            fs, inner = fsspec.core.url_to_fs(path, **(storage_options or {}))
            if not fs.exists(inner):
                raise MissingFileError(f"{where}: file not found")
            if not fs.isdir(inner) and fs.size(inner) == 0:
                raise EmptyFileError(f"{where}: the file is empty (0 bytes)")
        except ReadError:
            raise
        except Exception:  # no fsspec backend, no network: the reader reports what it meets
            return
        return
    local = Path(path.removeprefix("file://"))
    if not local.exists():
        raise MissingFileError(f"{where}: file not found")
    if local.is_file() and local.stat().st_size == 0:
        raise EmptyFileError(f"{where}: the file is empty (0 bytes)")


# --------------------------------------------------------------------------- CSV
# read options that refer to columns by name (they cannot apply to the header row read as text)
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


def _read_csv(
    path: str, where: str, options: dict, chunk_rows: int, progress: Progress | None
) -> tuple[pd.DataFrame, list[str]]:
    opts = {"low_memory": False, **options}
    if "sep" not in opts and "delimiter" not in opts and str(path).lower().split("?")[0].endswith((".tsv", ".tab")):
        opts["sep"] = "\t"
    # the header row is read as text: options that refer to columns by name (parse_dates, dtype, ...)
    # cannot apply to it, and names like "NA" or "01" must not become NaN or 1
    header_opts = {k: v for k, v in opts.items() if k not in _BY_COLUMN_OPTIONS}
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, **header_opts)
    except pd.errors.EmptyDataError:
        raise EmptyFileError(f"{where}: the file is empty (no header row)") from None
    except FileNotFoundError:
        raise MissingFileError(f"{where}: file not found") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(f"{where}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    header_names = [v if isinstance(v, str) and v else f"Unnamed: {i}" for i, v in enumerate(header.iloc[0])]
    names, notes = dedupe_columns(header_names)
    try:
        reader = pd.read_csv(path, header=0, names=names, chunksize=chunk_rows, **opts)
        chunks = []
        for chunk in reader:
            chunks.append(chunk)
            if progress:
                progress(len(chunk))
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(f"{where}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    df = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names)
    return df, notes


# --------------------------------------------------------------------------- Parquet
def _read_parquet(path: str, where: str, options: dict) -> tuple[pd.DataFrame, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    opts = dict(options)
    storage_options = opts.pop("storage_options", None)
    source: Any = path
    if is_url(path):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path, **(storage_options or {}))
        opts["filesystem"] = fs
        source = inner
    else:
        source = path.removeprefix("file://")
    try:
        try:
            table = pq.read_table(source, **opts)
        except Exception as exc:
            if "Multiple matches for FieldRef" not in str(exc):
                raise
            # duplicate column names: read without the dataset API
            fs = opts.get("filesystem")
            if fs is not None:
                with fs.open(source, "rb") as f:
                    table = pq.ParquetFile(f).read()
            else:
                table = pq.ParquetFile(source).read()
    except FileNotFoundError:
        raise MissingFileError(f"{where}: file not found") from None
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise UnreadableFileError(f"{where}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None

    for i, field in enumerate(table.schema):
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(t):
            raise UnsupportedColumnError(
                f"{where}: column '{field.name}' holds nested values ({field.type}), which no model can use; "
                "leave it out (read_options: {columns: [...]}) or flatten it"
            )
        if pa.types.is_decimal(field.type):  # exact decimals: read as numbers
            table = table.set_column(i, field.name, table.column(i).cast(pa.float64()))
    try:
        df = table.to_pandas(date_as_object=False)
    except Exception as exc:  # e.g. timestamps out of pandas' range
        raise UnreadableFileError(f"{where}: cannot be converted to a table ({type(exc).__name__}: {exc})") from None
    df, index_notes = _index_as_data(df)
    names, dup_notes = dedupe_columns(list(df.columns))
    df.columns = names
    return df, dup_notes + index_notes


def _index_as_data(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A pandas index saved in the file: named levels become columns, row labels are dropped."""
    index = df.index
    if isinstance(index, pd.RangeIndex) and index.name is None:
        return df.reset_index(drop=True) if index.start != 0 or index.step != 1 else df, []
    named = [n for n in index.names if n is not None]
    if not named:
        return df.reset_index(drop=True), []
    if len(named) < index.nlevels:  # keep the named levels only
        df = df.reset_index(level=[i for i, n in enumerate(index.names) if n is None], drop=True)
    taken = set(map(str, df.columns))
    clash = [str(n) for n in named if str(n) in taken]
    if clash:  # an index named like a column: the column keeps its name
        df = df.rename_axis(index=[f"{n}__index" if str(n) in taken else n for n in df.index.names])
    df = df.reset_index()
    cols = ", ".join(f"'{n}'" for n in df.columns[: len(named)])
    return df, [f"the saved pandas index {cols} read as column(s)"]


# --------------------------------------------------------------------------- shared post-processing
def _values(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Categorical columns as their values; timezone-aware timestamps as naive UTC (with a note)."""
    for col in df.columns:
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            cats = s.cat.categories
            has_missing = bool(s.isna().any())
            if pd.api.types.is_integer_dtype(cats.dtype) and has_missing:
                df[col] = s.astype("float64")
            elif pd.api.types.is_bool_dtype(cats.dtype) and has_missing:
                df[col] = s.astype(object)
            else:
                df[col] = s.astype(cats.dtype)
            s = df[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            df[col] = s.dt.tz_convert("UTC").dt.tz_localize(None)
            notes.append(f"column '{col}': timezone-aware times ({s.dtype.tz}) converted to UTC without a timezone")
    return df


def read_table_with_notes(
    path: str | os.PathLike,
    read_options: dict | None = None,
    *,
    fmt: str | None = None,
    chunk_rows: int = 250_000,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV or Parquet file (local or fsspec URL); returns the frame and warnings (notes).

    ``fmt`` (``csv`` / ``parquet``) overrides the file name; ``read_options`` go to ``pandas.read_csv`` or
    ``pyarrow.parquet.read_table`` (``storage_options`` to fsspec for URLs). ``progress`` is called with the
    rows of each chunk read.
    """
    path = str(path)
    where = redact_url(path)
    fmt = fmt or table_format(path)
    if fmt not in ("csv", "parquet"):
        raise UnknownFormatError(f"{where}: unknown format {fmt!r} (expected csv or parquet)")
    options = dict(read_options or {})
    _check_exists(path, where, options.get("storage_options"))
    if fmt == "csv":
        df, notes = _read_csv(path, where, options, chunk_rows, progress)
    else:
        df, notes = _read_parquet(path, where, options)
        if progress:
            progress(len(df))
    return _values(df, notes), notes


def read_table(
    path: str | os.PathLike,
    read_options: dict | None = None,
    *,
    fmt: str | None = None,
    chunk_rows: int = 250_000,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Read a CSV or Parquet file a user handed in (see the module docstring); notes become ``ReadWarning``."""
    df, notes = read_table_with_notes(path, read_options, fmt=fmt, chunk_rows=chunk_rows, progress=progress)
    for note in notes:
        warnings.warn(f"{redact_url(path)}: {note}", ReadWarning, stacklevel=2)
    return df


# --------------------------------------------------------------------------- atomic writes
def write_bytes_atomic(data: bytes, out: str | Path) -> None:
    """Write ``data`` to ``out`` through a temporary file: readers see the old file or the new one."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def write_parquet_atomic(
    frames: Iterator[pd.DataFrame] | pd.DataFrame,
    out: str | Path,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Write one or many frames to ``out`` through a temporary file; returns the row count.

    ``before_commit`` runs once the temporary file is complete, just before it replaces ``out`` (a fault
    point: a crash there leaves the previous ``out`` whole).
    """
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
        if before_commit is not None:
            before_commit()
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return n
