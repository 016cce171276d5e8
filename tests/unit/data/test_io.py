"""The one reading function: every shape pandas/pyarrow write is read as its data, or refused with a named error
naming the file; the same for ingest, monitoring batches and scoring (loop.read_batch)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftloop import io
from driftloop.config import Params
from driftloop.errors import DataError


def frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": np.arange(100, 100 + n), "x": rng.normal(size=n), "y": np.tile([0, 1], n // 2)})


def read(path, **kw) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.ReadWarning)
        return io.read_table(path, **kw)


# --------------------------------------------------------------------------- named errors, each naming the file
@pytest.mark.parametrize("name", ["nope.csv", "nope.parquet"])
def test_missing_file(tmp_path, name):
    with pytest.raises(io.MissingFileError, match=f"{tmp_path / name}: file not found"):
        io.read_table(tmp_path / name)


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet"])
def test_zero_byte_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(io.EmptyFileError, match=f"{tmp_path / name}: the file is empty"):
        io.read_table(tmp_path / name)


def test_corrupt_parquet_and_csv_given_as_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    frame().to_parquet(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(io.UnreadableFileError, match=f"{truncated}: cannot be read as Parquet"):
        io.read_table(truncated)
    as_csv = tmp_path / "text.parquet"
    frame().to_csv(as_csv, index=False)
    with pytest.raises(io.UnreadableFileError, match="Parquet"):
        io.read_table(as_csv)


def test_binary_garbage_as_csv(tmp_path):
    src = tmp_path / "garbage.csv"
    src.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(io.UnreadableFileError, match=str(src)):
        io.read_table(src)


@pytest.mark.parametrize("name", ["data.xlsx", "data", "data.json"])
def test_unknown_extension(tmp_path, name):
    (tmp_path / name).write_text("a,b\n1,2\n")
    with pytest.raises(io.UnknownFormatError, match=f"{tmp_path / name}: unknown file type"):
        io.read_table(tmp_path / name)


def test_errors_are_data_errors():
    for cls in (io.MissingFileError, io.EmptyFileError, io.UnreadableFileError, io.UnknownFormatError):
        assert issubclass(cls, DataError)


def test_formats_by_extension_and_explicit(tmp_path):
    df = frame()
    df.to_csv(tmp_path / "a.csv.gz", index=False)
    df.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "a.pq")
    df.to_csv(tmp_path / "export.dat", index=False)
    for name in ("a.csv.gz", "a.tsv", "a.pq"):
        pd.testing.assert_frame_equal(read(tmp_path / name), df, check_dtype=False)
    pd.testing.assert_frame_equal(read(tmp_path / "export.dat", fmt="csv"), df)


def test_fsspec_url_and_redacted_messages():
    import fsspec

    df = frame()
    fs = fsspec.filesystem("memory")
    with fs.open("/dl/batch.parquet", "wb") as f:
        df.to_parquet(f)
    with fs.open("/dl/batch.csv", "wb") as f:
        f.write(df.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(read("memory://dl/batch.parquet"), df)
    pd.testing.assert_frame_equal(read("memory://dl/batch.csv"), df)
    with pytest.raises(io.MissingFileError, match="memory://dl/absent.csv"):
        io.read_table("memory://dl/absent.csv")
    assert io.redact_url("https://bob:s3cret@host/x.csv?sig=abc") == "https://bob:***@host/x.csv?<redacted>"
    assert io.redact_url("data/x.csv") == "data/x.csv"


# --------------------------------------------------------------------------- shapes pandas / pyarrow write
def test_parquet_with_a_named_pandas_index(tmp_path):
    df = frame()
    path = tmp_path / "indexed.parquet"
    df.set_index("id").to_parquet(path)  # today: ValueError: Length mismatch
    with pytest.warns(io.ReadWarning, match="'id' read as column"):
        back = io.read_table(path)
    assert sorted(back.columns) == ["id", "x", "y"]
    pd.testing.assert_frame_equal(back[["id", "x", "y"]], df)


@pytest.mark.parametrize("how", ["range_offset", "unnamed_filtered", "multi"])
def test_parquet_with_row_label_indexes(tmp_path, how):
    df = frame()
    path = tmp_path / f"{how}.parquet"
    if how == "range_offset":
        df.iloc[3:].to_parquet(path)  # a RangeIndex starting at 3 (metadata only)
        expected = df.iloc[3:].reset_index(drop=True)
    elif how == "unnamed_filtered":
        df[df["y"] == 1].to_parquet(path)  # an unnamed Index stored as __index_level_0__
        expected = df[df["y"] == 1].reset_index(drop=True)
    else:
        df.set_index(["id", "y"]).to_parquet(path)
        expected = df[["id", "y", "x"]]
    back = read(path)
    assert "__index_level_0__" not in back.columns
    assert isinstance(back.index, pd.RangeIndex) and back.index.start == 0
    pd.testing.assert_frame_equal(back[list(expected.columns)], expected)


def test_index_named_like_a_column(tmp_path):
    df = frame()
    indexed = df.set_index(pd.Index(df["id"] * 10, name="id"))
    path = tmp_path / "clash.parquet"
    indexed.to_parquet(path)
    back = read(path)
    assert back["id"].tolist() == df["id"].tolist()  # the column keeps its name and values
    assert back["id__index"].tolist() == (df["id"] * 10).tolist()


def test_categorical_and_dictionary_columns_read_as_values(tmp_path):
    df = pd.DataFrame(
        {
            "grade": pd.Categorical(["A", "B", None, "A"]),
            "code": pd.Categorical([1, 2, 2, None]),
            "flag": pd.Categorical([True, False, True, True]),
            "y": [0, 1, 0, 1],
        }
    )
    df.to_parquet(tmp_path / "cat.parquet")
    back = read(tmp_path / "cat.parquet")
    assert not any(isinstance(t, pd.CategoricalDtype) for t in back.dtypes)
    assert back["grade"].tolist()[:2] == ["A", "B"] and pd.isna(back["grade"][2])
    assert back["code"].dtype == "float64" and back["code"].tolist()[:3] == [1.0, 2.0, 2.0]
    assert back["flag"].dtype == bool
    # dictionary-encoded by pyarrow itself (no pandas metadata)
    table = pa.table({"city": pa.array(["x", "y", "x"]).dictionary_encode(), "y": [0, 1, 0]})
    pq.write_table(table, tmp_path / "dict.parquet")
    back = read(tmp_path / "dict.parquet")
    assert back["city"].dtype == object and back["city"].tolist() == ["x", "y", "x"]


def test_timezone_aware_times_become_naive_utc_with_a_warning(tmp_path):
    when = pd.date_range("2024-03-01 09:00", periods=4, freq="h", tz="Europe/Paris")
    pd.DataFrame({"when": when, "y": [0, 1, 0, 1]}).to_parquet(tmp_path / "tz.parquet")
    with pytest.warns(io.ReadWarning, match="column 'when': timezone-aware"):
        back = io.read_table(tmp_path / "tz.parquet")
    assert back["when"].dt.tz is None
    assert back["when"].iloc[0] == pd.Timestamp("2024-03-01 08:00")
    # the same from a CSV with offsets, parsed as dates
    csv = tmp_path / "tz.csv"
    csv.write_text("when,y\n2024-03-01T09:00:00+01:00,0\n2024-03-01T10:00:00+01:00,1\n")
    back, notes = io.read_table_with_notes(csv, {"parse_dates": ["when"]})
    assert back["when"].iloc[0] == pd.Timestamp("2024-03-01 08:00")
    assert any("'when'" in n for n in notes)


def test_date_and_decimal_columns(tmp_path):
    import datetime
    import decimal

    table = pa.table(
        {
            "day": pa.array([datetime.date(2024, 1, d) for d in (1, 2, 3)]),
            "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25"), None], pa.decimal128(10, 2)),
        }
    )
    pq.write_table(table, tmp_path / "dd.parquet")
    back = read(tmp_path / "dd.parquet")
    assert pd.api.types.is_datetime64_any_dtype(back["day"])
    assert back["price"].dtype == "float64" and back["price"].tolist()[:2] == [1.5, 2.25]


def test_nested_column_is_refused_naming_it(tmp_path):
    pq.write_table(pa.table({"tags": [[1, 2], [3]], "y": [0, 1]}), tmp_path / "nested.parquet")
    with pytest.raises(io.UnsupportedColumnError, match="column 'tags'"):
        io.read_table(tmp_path / "nested.parquet")
    # ... unless left out by the read options
    assert list(read(tmp_path / "nested.parquet", read_options={"columns": ["y"]}).columns) == ["y"]


# --------------------------------------------------------------------------- the same function everywhere
def test_monitor_batches_use_the_same_reader(tmp_path):
    from driftloop import loop

    params = Params.model_validate({"base": {"target": "y"}})
    df = frame()
    df.set_index("id").to_parquet(tmp_path / "2025-01.parquet")
    _, batch = loop.read_batch(str(tmp_path / "2025-01.parquet"), params)
    assert sorted(batch.columns) == ["id", "x", "y"]
    (tmp_path / "zero.parquet").write_bytes(b"")
    _, empty = loop.read_batch(str(tmp_path / "zero.parquet"), params)
    assert empty.empty  # an empty batch is a monitoring result (schema violation)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(io.UnreadableFileError, match="bad.parquet"):
        loop.read_batch(str(tmp_path / "bad.parquet"), params)
    (tmp_path / "batch.xlsx").write_bytes(b"PK")
    with pytest.raises(io.UnknownFormatError, match="batch.xlsx"):
        loop.read_batch(str(tmp_path / "batch.xlsx"), params)
