"""params.yaml -> frozen pydantic models: defaults, typos, literals, env overrides, hashing."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from driftloop.config import ConfigError, Params, load_params, params_schema

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_defaults_load_without_a_file(tmp_path):
    p = load_params(tmp_path / "absent.yaml", env={})
    assert p == Params()
    assert p.base.task == "auto"
    assert p.base.target == "default"
    assert p.validate_params.on_leakage == "error"
    assert p.tune.storage == "memory"


def test_repo_params_yaml_is_valid():
    p = load_params(ROOT / "params.yaml", env={})
    assert p.base.seed == 42
    assert p.tune.n_trials == 30
    assert p.features.date_parts == ["year", "month", "dayofweek"]


def test_empty_file_gives_defaults(tmp_path):
    assert load_params(write(tmp_path / "params.yaml", ""), env={}) == Params()


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "params.yaml", {"tune": {"n_trails": 5}})
    with pytest.raises(ConfigError) as exc:
        load_params(path, env={})
    msg = str(exc.value)
    assert "tune.n_trails" in msg
    assert str(path) in msg
    assert "unknown key" in msg


def test_unknown_section_is_rejected(tmp_path):
    path = write(tmp_path / "params.yaml", {"tunning": {"n_trials": 5}})
    with pytest.raises(ConfigError, match="tunning"):
        load_params(path, env={})


def test_unknown_key_in_validate_section_uses_the_yaml_name(tmp_path):
    path = write(tmp_path / "params.yaml", {"validate": {"on_leak": "drop"}})
    with pytest.raises(ConfigError) as exc:
        load_params(path, env={})
    lines = str(exc.value).splitlines()[1:]
    assert any(line.strip().startswith("validate.on_leak:") for line in lines)
    assert not any("validate_" in line for line in lines)


def test_bad_literal_names_allowed_values(tmp_path):
    path = write(tmp_path / "params.yaml", {"base": {"task": "clasification"}})
    with pytest.raises(ConfigError) as exc:
        load_params(path, env={})
    msg = str(exc.value)
    assert "base.task" in msg
    assert "clasification" in msg
    for allowed in ("auto", "binary", "multiclass", "regression"):
        assert allowed in msg


def test_out_of_range_value_names_the_key(tmp_path):
    path = write(tmp_path / "params.yaml", {"split": {"test_size": 1.5}})
    with pytest.raises(ConfigError, match=r"split\.test_size"):
        load_params(path, env={})


def test_env_overrides_connection_settings(tmp_path):
    path = write(tmp_path / "params.yaml", {"base": {"tracking_uri": "sqlite:///from_file.db"}})
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5555", "DRIFTLOOP_OPTUNA_STORAGE": "optuna/study.journal"}
    p = load_params(path, env=env)
    assert p.base.tracking_uri == "http://127.0.0.1:5555"
    assert p.tune.storage == "optuna/study.journal"
    # without the environment the file wins
    assert load_params(path, env={}).base.tracking_uri == "sqlite:///from_file.db"


def test_env_override_reads_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert load_params(tmp_path / "absent.yaml").base.tracking_uri == "sqlite:///env.db"


def test_env_override_with_null_section(tmp_path):
    path = write(tmp_path / "params.yaml", "tune:\n")
    p = load_params(path, env={"DRIFTLOOP_OPTUNA_STORAGE": "sqlite:///optuna.db"})
    assert p.tune.storage == "sqlite:///optuna.db"


def test_model_settings_cannot_come_from_env(tmp_path):
    path = write(tmp_path / "params.yaml", {"base": {"target": "y", "seed": 7}, "tune": {"n_trials": 3}})
    env = {
        "DRIFTLOOP_TARGET": "other",
        "DRIFTLOOP_BASE_TARGET": "other",
        "BASE_TARGET": "other",
        "DRIFTLOOP_SEED": "1",
        "DRIFTLOOP_BASE_SEED": "1",
        "DRIFTLOOP_TUNE_N_TRIALS": "99",
        "DRIFTLOOP_N_TRIALS": "99",
    }
    p = load_params(path, env=env)
    assert p.base.target == "y"
    assert p.base.seed == 7
    assert p.tune.n_trials == 3


def test_invalid_yaml(tmp_path):
    path = write(tmp_path / "params.yaml", "base:\n  seed: [1, 2\n  task: auto\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path, env={})
    assert "not valid YAML" in str(exc.value)
    assert str(path) in str(exc.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "params.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(path, env={})


def test_csv_source_without_path_fails(tmp_path):
    path = write(tmp_path / "params.yaml", {"ingest": {"source": "csv"}})
    with pytest.raises(ConfigError) as exc:
        load_params(path, env={})
    assert "ingest.path is required" in str(exc.value)
    assert str(path) in str(exc.value)


def test_sql_source_needs_query_or_table(tmp_path):
    path = write(tmp_path / "params.yaml", {"ingest": {"source": "sql"}})
    with pytest.raises(ConfigError, match="ingest.sql.query or ingest.sql.table"):
        load_params(path, env={})


def test_params_are_frozen():
    p = Params()
    with pytest.raises(pydantic.ValidationError):
        p.base.seed = 1
    with pytest.raises(pydantic.ValidationError):
        p.tune = p.tune
    assert p.base.seed == 42


def test_validate_alias_and_attribute():
    p = Params.model_validate({"validate": {"min_rows": 10}})
    assert p.validate_params.min_rows == 10
    assert p.model_dump(by_alias=True)["validate"]["min_rows"] == 10


def test_hash_is_stable():
    a = Params.model_validate({"base": {"target": "y"}, "tune": {"n_trials": 5}})
    b = Params.model_validate({"tune": {"n_trials": 5}, "base": {"target": "y"}})
    assert a.hash() == b.hash()
    assert a.hash() == Params.model_validate(a.model_dump(by_alias=True)).hash()
    assert len(a.hash()) == 16


def test_hash_changes_with_model_settings():
    base = Params()
    assert Params.model_validate({"base": {"seed": 1}}).hash() != base.hash()
    assert Params.model_validate({"tune": {"max_rounds": 500}}).hash() != base.hash()
    assert Params.model_validate({"features": {"max_categories": 10}}).hash() != base.hash()
    assert Params.model_validate({"validate": {"on_leakage": "drop"}}).hash() != base.hash()


def test_hash_ignores_connection_settings():
    base = Params()
    assert Params.model_validate({"base": {"tracking_uri": "http://elsewhere:5000"}}).hash() == base.hash()
    assert Params.model_validate({"base": {"registry_uri": "sqlite:///r.db"}}).hash() == base.hash()
    assert Params.model_validate({"base": {"artifact_location": "/tmp/a"}}).hash() == base.hash()
    assert Params.model_validate({"tune": {"storage": "sqlite:///optuna.db"}}).hash() == base.hash()
    # sections outside the model ones do not count either
    assert Params.model_validate({"monitor": {"drift_share_warn": 0.5}}).hash() == base.hash()


def test_hash_of_selected_sections():
    a = Params.model_validate({"tune": {"n_trials": 5}})
    assert a.hash("base", "features") == Params().hash("base", "features")
    assert a.hash("base", "features", "tune") != Params().hash("base", "features", "tune")


def test_schema_lists_sections():
    schema = params_schema()
    props = schema["properties"]
    for section in ("base", "tune", "validate", "split", "register"):
        assert section in props
    assert "validate_" not in props
