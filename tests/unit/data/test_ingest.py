"""Ingest of CSV / Parquet files: bad inputs fail with a DataError naming the file or column and
never replace the previous output; awkward but valid inputs are read faithfully."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.ingest import dedupe_columns, ingest, read_csv, read_parquet, write_parquet_atomic
from driftloop.errors import DataError

OLD_BYTES = b"previous output, must survive a failed ingest"


def make_params(
    path,
    *,
    source: str = "csv",
    target: str = "y",
    task: str = "auto",
    min_rows: int = 10,
    read_options: dict | None = None,
) -> Params:
    return Params.model_validate(
        {
            "base": {"target": target, "task": task},
            "ingest": {"source": source, "path": str(path), "read_options": read_options or {}},
            "validate": {"min_rows": min_rows},
        }
    )


def frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "cat": rng.choice(["a", "b", "c"], size=n),
            "y": np.tile([0, 1], n // 2),
        }
    )


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out" / "raw.parquet"
    path.parent.mkdir()
    path.write_bytes(OLD_BYTES)
    return path


def assert_untouched(out):
    assert out.read_bytes() == OLD_BYTES
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no temporary file may be left behind"


def fails(params: Params, out, *needles: str) -> str:
    with pytest.raises(DataError) as exc:
        ingest(params, out)
    msg = str(exc.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert_untouched(out)
    return msg


# --------------------------------------------------------------------------- unreadable files
def test_empty_file(tmp_path, out):
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    msg = fails(make_params(src), out, str(src))
    assert "empty" in msg


def test_header_only_csv(tmp_path, out):
    src = tmp_path / "header.csv"
    src.write_text("x,cat,y\n")
    msg = fails(make_params(src), out, str(src))
    assert "no rows" in msg


def test_binary_garbage_as_csv(tmp_path, out):
    src = tmp_path / "garbage.csv"
    src.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    fails(make_params(src), out, str(src))


def test_csv_given_as_parquet(tmp_path, out):
    src = tmp_path / "data.parquet"
    frame().to_csv(src, index=False)
    msg = fails(make_params(src, source="parquet"), out, str(src))
    assert "Parquet" in msg


def test_empty_file_as_parquet(tmp_path, out):
    src = tmp_path / "empty.parquet"
    src.write_bytes(b"")
    fails(make_params(src, source="parquet"), out, str(src))


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_missing_file(tmp_path, out, source):
    src = tmp_path / f"nope.{source}"
    msg = fails(make_params(src, source=source), out, str(src))
    assert "not found" in msg


def test_wrong_separator_reads_one_column_and_names_target(tmp_path, out):
    src = tmp_path / "semicolon.csv"
    frame().to_csv(src, index=False, sep=";")
    fails(make_params(src), out, str(src), "'y'")
    # ... and works with the read option
    result = ingest(make_params(src, read_options={"sep": ";"}), out)
    assert result["rows"] == 40
    assert list(pd.read_parquet(out).columns) == ["x", "cat", "y"]


# --------------------------------------------------------------------------- target contract
def test_missing_target_column(tmp_path, out):
    src = tmp_path / "d.csv"
    frame().rename(columns={"y": "Y "}).to_csv(src, index=False)
    msg = fails(make_params(src), out, str(src), "'y'", "not found")
    assert "did you mean 'Y '" in msg


def test_nan_target(tmp_path, out):
    df = frame()
    df["y"] = df["y"].astype("float64")
    df.loc[[3, 7], "y"] = np.nan
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    msg = fails(make_params(src), out, str(src), "'y'")
    assert "missing" in msg


def test_all_nan_target(tmp_path, out):
    df = frame()
    df["y"] = np.nan
    src = tmp_path / "d.parquet"
    df.to_parquet(src)
    fails(make_params(src, source="parquet"), out, str(src), "'y'", "no values")


def test_infinite_target_regression(tmp_path, out):
    df = frame()
    df["y"] = np.linspace(0, 10, len(df))
    df.loc[5, "y"] = np.inf
    src = tmp_path / "d.parquet"
    df.to_parquet(src)
    msg = fails(make_params(src, source="parquet", task="regression"), out, str(src), "'y'")
    assert "finite" in msg


def test_infinite_target_auto_task(tmp_path, out):
    df = frame()
    df["y"] = np.linspace(0, 10, len(df))
    df.loc[5, "y"] = -np.inf
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    fails(make_params(src), out, str(src), "'y'", "finite")


def test_text_in_regression_target(tmp_path, out):
    df = frame()
    df["y"] = np.linspace(0, 10, len(df)).astype(object)
    df.loc[4, "y"] = "n/a?"
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    fails(make_params(src, task="regression"), out, str(src), "'y'")


def test_single_class_target(tmp_path, out):
    df = frame()
    df["y"] = 1
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    msg = fails(make_params(src), out, str(src), "'y'")
    assert "two classes" in msg


def test_too_few_rows_for_min_rows(tmp_path, out):
    src = tmp_path / "d.csv"
    frame(n=8).to_csv(src, index=False)
    msg = fails(make_params(src, min_rows=10), out, str(src), "'y'")
    assert "min_rows" in msg


def test_too_few_rows_per_class_for_the_split(tmp_path, out):
    df = frame(n=40)
    df["y"] = [1] * 4 + [0] * 36  # 4 positives cannot be spread over train/valid/test
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    msg = fails(make_params(src), out, str(src), "'y'", "rows per class")
    assert "class '1' has 4 rows" in msg


def test_failure_without_previous_output_creates_nothing(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("x,y\n")
    target = tmp_path / "new" / "raw.parquet"
    with pytest.raises(DataError):
        ingest(make_params(src), target)
    assert not target.exists()


def test_success_replaces_previous_output(tmp_path, out):
    src = tmp_path / "d.csv"
    frame().to_csv(src, index=False)
    result = ingest(make_params(src), out)
    assert result == {"rows": 40, "columns": 3, "source": "csv", "warnings": []}
    assert out.read_bytes() != OLD_BYTES
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame())
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw.parquet"]


# --------------------------------------------------------------------------- awkward but valid
WEIRD = ["plain col", 'a"b', "x[0]", "{k}:v", "naïve col", "comma,name", "日本語", "y"]


def test_weird_column_names_csv(tmp_path, out):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({name: rng.normal(size=30) for name in WEIRD[:-1]})
    df["y"] = np.tile(["yes", "no"], 15)
    src = tmp_path / "weird.csv"
    df.to_csv(src, index=False, encoding="utf-8")
    result = ingest(make_params(src), out)
    assert result["rows"] == 30
    back = pd.read_parquet(out)
    assert list(back.columns) == WEIRD
    pd.testing.assert_frame_equal(back, df)


def test_weird_column_names_parquet(tmp_path, out):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({name: rng.normal(size=30) for name in WEIRD[:-1]})
    df["y"] = np.tile([True, False], 15)
    src = tmp_path / "weird.parquet"
    df.to_parquet(src)
    ingest(make_params(src, source="parquet"), out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), df)


def test_duplicate_column_names_csv(tmp_path, out):
    src = tmp_path / "dup.csv"
    lines = ["a,b,a,a__2,a,y"] + [f"{i},{i * 2},{i * 3},{i * 4},{i * 5},{i % 2}" for i in range(30)]
    src.write_text("\n".join(lines) + "\n")
    result = ingest(make_params(src), out)
    back = pd.read_parquet(out)
    # 'a__2' is taken by a real column, so the second duplicate skips to 'a__3'
    assert list(back.columns) == ["a", "b", "a__3", "a__2", "a__4", "y"]
    assert back["a__3"].tolist() == [i * 3 for i in range(30)]
    assert back["a__4"].tolist() == [i * 5 for i in range(30)]
    assert len(result["warnings"]) == 2
    assert "duplicate column name 'a' renamed to 'a__3'" in result["warnings"][0]


def test_duplicate_column_names_simple(tmp_path, out):
    src = tmp_path / "dup.csv"
    src.write_text("a,a,y\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(30)))
    result = ingest(make_params(src), out)
    assert list(pd.read_parquet(out).columns) == ["a", "a__2", "y"]
    assert pd.read_parquet(out)["a__2"].tolist() == [-i for i in range(30)]
    assert result["warnings"] == ["duplicate column name 'a' renamed to 'a__2'"]


def test_header_names_are_kept_as_text(tmp_path, out):
    src = tmp_path / "names.csv"
    src.write_text("NA,01,,null,y\n" + "".join(f"{i},{i},{i},{i},{i % 2}\n" for i in range(30)))
    ingest(make_params(src), out)
    assert list(pd.read_parquet(out).columns) == ["NA", "01", "Unnamed: 2", "null", "y"]


def test_column_based_read_options(tmp_path, out):
    src = tmp_path / "d.csv"
    src.write_text("when,code,y\n" + "".join(f"2024-01-{i + 1:02d},{i:03d},{i % 2}\n" for i in range(30)))
    ingest(make_params(src, read_options={"parse_dates": ["when"], "dtype": {"code": "string"}}), out)
    back = pd.read_parquet(out)
    assert pd.api.types.is_datetime64_any_dtype(back["when"])
    assert back["code"].tolist()[:3] == ["000", "001", "002"]


def test_dedupe_columns_unit():
    assert dedupe_columns(["a", "b"]) == (["a", "b"], [])
    names, notes = dedupe_columns(["a", "a", "a"])
    assert names == ["a", "a__2", "a__3"]
    assert len(notes) == 2
    names, _ = dedupe_columns([1, "1"])
    assert names == ["1", "1__2"]


def test_duplicate_column_names_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "dup.parquet"
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([0, 1])], names=["a", "a", "y"])
    pq.write_table(table, src)
    df, notes = read_parquet(str(src), {})
    assert list(df.columns) == ["a", "a__2", "y"]
    assert df["a__2"].tolist() == [3, 4]
    assert notes == ["duplicate column name 'a' renamed to 'a__2'"]


def mixed_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    ints = pd.array(rng.integers(0, 100, n), dtype="Int64")
    ints[[1, 5]] = pd.NA
    return pd.DataFrame(
        {
            "text": rng.choice(["red", "green", None], size=n).astype(object),
            "flag": rng.random(n) > 0.5,
            "count": ints,
            "when": pd.date_range("2024-01-01", periods=n, freq="D"),
            "amount": rng.normal(size=n),
            "y": np.tile(["yes", "no"], n // 2),
        }
    )


def test_mixed_dtypes_parquet_round_trip(tmp_path, out):
    df = mixed_frame()
    src = tmp_path / "mixed.parquet"
    df.to_parquet(src)
    result = ingest(make_params(src, source="parquet"), out)
    assert result["rows"] == len(df)
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, df)
    assert str(back["count"].dtype) == "Int64"
    assert back["flag"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(back["when"])
    assert back["count"].isna().sum() == 2


def test_mixed_dtypes_csv(tmp_path, out):
    df = mixed_frame()
    src = tmp_path / "mixed.csv"
    df.to_csv(src, index=False)
    ingest(make_params(src, read_options={"parse_dates": ["when"]}), out)
    back = pd.read_parquet(out)
    assert back["flag"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(back["when"])
    assert back["when"].tolist() == df["when"].tolist()
    assert back["count"].isna().sum() == 2  # nullable ints survive as floats with NaN
    assert back["count"].dropna().tolist() == df["count"].dropna().astype(float).tolist()
    assert back["text"].isna().sum() == df["text"].isna().sum()
    assert sorted(back["y"].unique()) == ["no", "yes"]


def test_string_target(tmp_path, out):
    df = frame()
    df["y"] = np.where(df["y"] == 1, "yes", "no")
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    ingest(make_params(src), out)
    assert pd.read_parquet(out)["y"].value_counts().to_dict() == {"no": 20, "yes": 20}


@pytest.mark.parametrize("task", ["auto", "regression"])
def test_regression_target(tmp_path, out, task):
    df = frame()
    df["y"] = np.random.default_rng(4).normal(size=len(df)) * 1000
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    assert ingest(make_params(src, task=task), out)["rows"] == 40


def test_multiclass_string_target(tmp_path, out):
    df = frame(n=60)
    df["y"] = np.tile(["low", "mid", "high"], 20)
    src = tmp_path / "d.csv"
    df.to_csv(src, index=False)
    assert ingest(make_params(src), out)["rows"] == 60


def test_read_csv_in_chunks_reports_progress(tmp_path):
    src = tmp_path / "d.csv"
    frame(n=2500).to_csv(src, index=False)
    seen = []
    df, notes = read_csv(str(src), {}, 1000, seen.append)
    assert len(df) == 2500
    assert seen == [1000, 1000, 500]
    assert notes == []


def test_write_parquet_atomic_many_frames(tmp_path):
    target = tmp_path / "sub" / "x.parquet"
    n = write_parquet_atomic(iter([frame(10, seed=1), frame(10, seed=2)]), target)
    assert n == 20
    pd.testing.assert_frame_equal(
        pd.read_parquet(target), pd.concat([frame(10, seed=1), frame(10, seed=2)], ignore_index=True)
    )


def test_write_parquet_atomic_nothing_to_write_keeps_old(tmp_path, out):
    with pytest.raises(DataError, match="nothing to write"):
        write_parquet_atomic(iter([]), out)
    assert_untouched(out)


def test_write_parquet_atomic_failure_mid_stream_keeps_old(tmp_path, out):
    def frames():
        yield frame(10)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_parquet_atomic(frames(), out)
    assert_untouched(out)


# --------------------------------------------------------------------------- labeled batches (retraining)
def _with_labeled(params: Params, labeled_dir) -> Params:
    return params.model_copy(update={"ingest": params.ingest.model_copy(update={"labeled_dir": str(labeled_dir)})})


def test_labeled_batches_are_appended_with_new_categories(tmp_path, out):
    src = tmp_path / "d.csv"
    frame().to_csv(src, index=False)
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    batch = frame(n=10, seed=1).assign(cat="new")
    batch.loc[0, "x"] = np.nan  # a missing value in a numeric column is data, not an error
    batch.to_parquet(labeled / "2025-01.parquet")
    ingest(_with_labeled(make_params(src), labeled), out)
    got = pd.read_parquet(out)
    assert len(got) == 50
    assert (got["cat"].astype(str).tail(10) == "new").all()


@pytest.mark.parametrize("source", ["csv", "simulate"])
def test_labeled_batch_missing_a_column_names_the_batch_and_column(tmp_path, out, source):
    from driftloop.data.simulate import simulate

    labeled = tmp_path / "labeled"
    labeled.mkdir()
    src = tmp_path / "d.csv"
    frame().to_csv(src, index=False)
    params = make_params(src, source=source, target="y" if source == "csv" else "default")
    if source == "simulate":
        params = params.model_copy(update={"simulate": params.simulate.model_copy(update={"n_rows": 200})})
        batch = simulate(50, 3).drop(columns=["credit_score"])
        missing = "credit_score"
    else:
        batch, missing = frame(n=10).drop(columns=["x"]), "x"
    batch.to_parquet(labeled / "2025-02.parquet")
    fails(_with_labeled(params, labeled), out, "2025-02.parquet", missing)


def test_labeled_batch_with_text_in_a_numeric_column_names_the_batch_and_column(tmp_path, out):
    from driftloop.data.simulate import simulate

    labeled = tmp_path / "labeled"
    labeled.mkdir()
    batch = simulate(50, 3)
    batch["annual_income"] = batch["annual_income"].round(2).astype(str)  # e.g. a CSV export read as text
    batch.loc[batch.index[:3], "annual_income"] = "n/a"
    batch.to_parquet(labeled / "2025-03.parquet")
    params = make_params(tmp_path / "unused.csv", source="simulate", target="default")
    params = params.model_copy(update={"simulate": params.simulate.model_copy(update={"n_rows": 200})})
    fails(_with_labeled(params, labeled), out, "2025-03.parquet", "annual_income")


@pytest.mark.parametrize("content", [b"", b"PAR1 truncated, not a parquet file"])
@pytest.mark.parametrize("source", ["csv", "simulate"])
def test_zero_byte_or_corrupt_labeled_batch_names_the_file(tmp_path, out, content, source):
    src = tmp_path / "d.csv"
    frame().to_csv(src, index=False)
    labeled = tmp_path / "labeled"
    labeled.mkdir()
    frame(n=10, seed=1).to_parquet(labeled / "2025-01.parquet")
    (labeled / "2025-02.parquet").write_bytes(content)
    params = make_params(src, source=source, target="y" if source == "csv" else "default")
    msg = fails(_with_labeled(params, labeled), out, str(labeled / "2025-02.parquet"))
    assert ("empty" in msg) if not content else ("Parquet" in msg)


def test_parquet_source_with_a_saved_index(tmp_path, out):
    src = tmp_path / "indexed.parquet"
    frame().rename_axis("row_no").to_parquet(src)  # a named index: read back as a column
    result = ingest(make_params(src, source="parquet"), out)
    assert list(pd.read_parquet(out).columns) == ["row_no", "x", "cat", "y"]
    assert any("row_no" in w for w in result["warnings"])


def test_ingest_fault_point_is_before_the_atomic_replace(tmp_path, out):
    import os
    import subprocess
    import sys

    src = tmp_path / "d.csv"
    frame().to_csv(src, index=False)
    code = (
        "import sys; from driftloop.config import Params; from driftloop.data.ingest import ingest; "
        "p = Params.model_validate({'base': {'target': 'y'}, 'validate': {'min_rows': 10}, "
        "'ingest': {'source': 'csv', 'path': sys.argv[1]}}); ingest(p, sys.argv[2])"
    )
    env = {**os.environ, "DRIFTLOOP_FAULT": "ingest.before_write"}
    res = subprocess.run([sys.executable, "-c", code, str(src), str(out)], env=env, capture_output=True)
    assert res.returncode == -9  # SIGKILL at the point
    assert out.read_bytes() == OLD_BYTES  # the previous output whole
    subprocess.run([sys.executable, "-c", code, str(src), str(out)], check=True)  # the rerun needs no repair
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame())
