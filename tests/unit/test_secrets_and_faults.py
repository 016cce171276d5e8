"""Secrets never printed; fault points fire exactly where and when they are armed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.config import mask_secrets, mask_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "hidden", "kept"),
    [
        ("postgresql+psycopg://bob:s3cr%40t@db:5432/x", "s3cr", "bob:***@db:5432/x"),
        ("postgresql+psycopg://bob:p@ss@db:5432/x", "ss@", "bob:***@db:5432/x"),  # '@' inside the password
        ("postgresql://db/x?password=abc&sslmode=require", "abc", "sslmode=require"),
        ("https://u:tok@h/a?token=zz", "zz", "https://u:***@h/a"),
    ],
)
def test_mask_url_hides_the_password_and_keeps_the_rest(url, hidden, kept):
    masked = mask_url(url)
    assert hidden not in masked
    assert kept in masked


@pytest.mark.parametrize("value", ["sqlite:///mlflow.db", "http://user@host:5000", "memory", "optuna/study.journal"])
def test_mask_url_leaves_secret_free_values_alone(value):
    assert mask_url(value) == value


def test_mask_secrets_walks_nested_values():
    assert mask_secrets({"a": ["mysql://a:b@c/d"], "n": 1}) == {"a": ["mysql://a:***@c/d"], "n": 1}


def test_config_never_prints_passwords_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:hunter2@127.0.0.1:5432/mlflow")
    monkeypatch.setenv("DRIFTLOOP_OPTUNA_STORAGE", "postgresql://optuna:hunter3@127.0.0.1/optuna")
    result = CliRunner().invoke(app, ["config", "-p", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 0, result.output
    assert "hunter" not in result.output
    data = json.loads(result.stdout)
    assert data["base"]["tracking_uri"] == "postgresql://mlflow:***@127.0.0.1:5432/mlflow"


def _run_point(spec: str | None, hits: int) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from driftloop.faults import fault_point\n"
        f"for i in range({hits}):\n"
        "    fault_point('test.point')\n"
        "    print(i, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DRIFTLOOP_FAULT"}
    if spec is not None:
        env["DRIFTLOOP_FAULT"] = spec
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_fault_point_is_inert_unless_armed():
    res = _run_point(None, 3)
    assert res.returncode == 0 and res.stdout.split() == ["0", "1", "2"]
    res = _run_point("other.point", 3)
    assert res.returncode == 0 and res.stdout.split() == ["0", "1", "2"]


def test_fault_point_kills_with_sigkill_at_the_armed_hit():
    res = _run_point("test.point", 3)
    assert res.returncode == -signal.SIGKILL and res.stdout.split() == []
    res = _run_point("x.y,test.point@3", 5)
    assert res.returncode == -signal.SIGKILL and res.stdout.split() == ["0", "1"]


def test_every_fault_point_in_the_code_is_declared_and_every_declared_point_is_used():
    """A renamed or removed point would silently stop being exercised by the fault benchmark."""
    sources = {p: p.read_text() for p in (ROOT / "src" / "driftloop").rglob("*.py")}
    sources.update({p: p.read_text() for p in (ROOT / "flows").glob("*.py")})
    declared: dict[str, str] = {}
    for path, text in sources.items():
        for var, name in re.findall(r"^(\w+)\s*=\s*register_point\(\s*\"([^\"]+)\"", text, flags=re.M):
            declared[var + "@" + str(path)] = name
    assert declared, "no fault points declared"
    names = set(declared.values())
    assert len(names) == len(declared), "a fault point name is declared twice"
    everything = "\n".join(sources.values())
    for key, name in declared.items():
        var, path = key.split("@", 1)
        # reached through its name: ``fault_point(VAR)``, ``fault_point(module.VAR)``, or handed to the code that
        # calls fault_point (``trial_point=VAR``, ``fault=VAR``); the declaration itself does not count
        uses = re.findall(rf"(?<![\w.]){var}\b(?!\s*=\s*register_point)|\.{var}\b", everything)
        assert uses, f"{name} ({path}) is never reached"
    literal = {n for text in sources.values() for n in re.findall(r"fault_point\(\s*\"([^\"]+)\"", text)}
    assert literal <= names, f"fault_point() with undeclared names: {sorted(literal - names)}"
