"""The ``driftloop`` command through Typer's CliRunner: output, exit codes, error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from driftloop.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DRIFTLOOP_OPTUNA_STORAGE", "DRIFTLOOP_SQL_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_clean_failure(result) -> None:
    """Exit code 1 through typer.Exit: a message, not an uncaught exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def flat(text: str) -> str:
    return " ".join(text.split())


def csv_params(tmp_path: Path, csv: Path, **extra) -> Path:
    return write_params(
        tmp_path / "params.yaml",
        {
            "base": {"target": "y", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
            "ingest": {"source": "csv", "path": str(csv)},
            "validate": {"min_rows": 10},
            **extra,
        },
    )


def test_no_args_shows_help():
    result = runner.invoke(app, [])
    assert "ingest" in result.output and "promote" in result.output


def test_config_prints_json(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"base": {"target": "label"}, "tune": {"n_trials": 3}})
    result = invoke("config", "--params", str(params))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["base"]["target"] == "label"
    assert data["tune"]["n_trials"] == 3
    assert data["tune"]["max_rounds"] == 1000  # defaults filled in
    assert "validate" in data and "validate_" not in data


def test_config_shows_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    result = invoke("config", "-p", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["base"]["tracking_uri"] == "http://127.0.0.1:5999"


def test_config_schema():
    result = invoke("config", "--schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "tune" in schema["properties"]
    assert "n_trials" in json.dumps(schema)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ({"tune": {"n_trails": 5}}, "tune.n_trails"),
        ({"base": {"task": "clasification"}}, "base.task"),
        ({"ingest": {"source": "csv"}}, "ingest.path is required"),
        ("base: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_params_exit_1_without_traceback(tmp_path, content, needle):
    path = tmp_path / "params.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    result = runner.invoke(app, ["config", "--params", str(path)])
    assert_clean_failure(result)
    assert needle in result.output
    assert str(path) in flat(result.output)
    assert result.stdout == ""  # the message goes to stderr


def test_ingest_csv_writes_parquet(tmp_path):
    csv = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=40), "amount[usd]": rng.normal(size=40), "y": np.tile(["no", "yes"], 20)})
    df.to_csv(csv, index=False)
    out = tmp_path / "data" / "raw.parquet"
    result = invoke("ingest", "--out", str(out), "--params", str(csv_params(tmp_path, csv)))
    assert result.exit_code == 0, result.output
    assert "40 rows from csv" in result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), df)


def test_ingest_prints_duplicate_column_warning(tmp_path):
    csv = tmp_path / "dup.csv"
    csv.write_text("a[1],a[1],y\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(30)))
    out = tmp_path / "raw.parquet"
    result = invoke("ingest", "--out", str(out), "-p", str(csv_params(tmp_path, csv)))
    assert result.exit_code == 0, result.output
    assert "a[1]__2" in flat(result.output)
    assert list(pd.read_parquet(out).columns) == ["a[1]", "a[1]__2", "y"]


def test_ingest_empty_csv_exits_1_naming_the_file(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_bytes(b"")
    out = tmp_path / "raw.parquet"
    result = runner.invoke(app, ["ingest", "--out", str(out), "--params", str(csv_params(tmp_path, csv))])
    assert_clean_failure(result)
    assert str(csv) in flat(result.output)
    assert "empty" in result.output
    assert not out.exists()


def test_ingest_error_message_keeps_brackets(tmp_path):
    # the message quotes column names; rich markup must not eat "[usd]" or choke on "[/]"
    csv = tmp_path / "d.csv"
    pd.DataFrame({"amount[usd]": range(30), "[/]": range(30), "target": [0, 1] * 15}).to_csv(csv, index=False)
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "o.parquet"), "-p", str(csv_params(tmp_path, csv))])
    assert_clean_failure(result)
    text = flat(result.output)
    assert "'y'" in text
    assert "amount[usd]" in text
    assert "'[/]'" in text


def test_validate_and_split_commands(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    df = pd.DataFrame({"x": rng.normal(size=n), "const": 1, "y": rng.permutation(np.tile([0, 1], n // 2))})
    raw = tmp_path / "raw.parquet"
    df.to_parquet(raw)
    params = write_params(tmp_path / "params.yaml", {"base": {"target": "y"}, "validate": {"min_rows": 10}})
    report = tmp_path / "reports" / "validation.json"
    result = invoke(
        "validate", "--data", str(raw), "--out", str(tmp_path / "v.parquet"), "--report", str(report), "-p", str(params)
    )
    assert result.exit_code == 0, result.output
    assert "task=binary" in result.output
    assert "const" in result.output
    assert json.loads(report.read_text())["dropped_columns"] == ["const"]
    result = invoke(
        "split", "--data", str(tmp_path / "v.parquet"), "--out-dir", str(tmp_path / "split"), "-p", str(params)
    )
    assert result.exit_code == 0, result.output
    assert "train=120, valid=40, test=40" in result.output
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]


def test_validate_missing_input_exits_1(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"base": {"target": "y"}})
    missing = tmp_path / "nope.parquet"
    result = runner.invoke(
        app,
        [
            "validate",
            "--data",
            str(missing),
            "--out",
            str(tmp_path / "v.parquet"),
            "--report",
            str(tmp_path / "r.json"),
            "-p",
            str(params),
        ],
    )
    assert_clean_failure(result)
    assert str(missing) in flat(result.output)


def test_promote_unknown_version(tmp_path):
    db = tmp_path / "mlflow.db"
    params = write_params(
        tmp_path / "params.yaml",
        {"base": {"tracking_uri": f"sqlite:///{db}", "model_name": "credit", "artifact_location": str(tmp_path / "a")}},
    )
    result = runner.invoke(app, ["promote", "7", "--params", str(params)])
    assert_clean_failure(result)
    assert "model 'credit' has no version 7" in flat(result.output)
