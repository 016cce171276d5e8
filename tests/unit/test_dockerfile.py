"""The Dockerfile of ``driftloop serve``: parsed with the official BuildKit parser (``dockerfile``; no docker
engine on this machine, so it is syntax-checked, not built). Its entrypoint is started as a real process by
``tests/integration/test_serve_process.py``."""

from __future__ import annotations

import json
from pathlib import Path

import dockerfile

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_parses_and_runs_driftloop_serve_as_a_non_root_user():
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    by_cmd: dict[str, list] = {}
    for c in commands:
        by_cmd.setdefault(c.cmd, []).append(c)
    assert by_cmd["FROM"][0].value[0].startswith("python:3.11")
    entry = by_cmd["ENTRYPOINT"][-1]
    assert entry.json and list(entry.value) == ["driftloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert by_cmd["USER"][-1].value[0] not in ("root", "0")
    assert by_cmd["EXPOSE"][-1].value[0] == "8000"
    assert any("-c requirements.lock" in r.value[0] for r in by_cmd["RUN"]), "installs the pinned set"
    assert "/health" in json.dumps(by_cmd["HEALTHCHECK"][-1].value)
    copied = {v for c in by_cmd["COPY"] for v in c.value[:-1]}
    assert all((ROOT / path).exists() for path in copied), copied


def test_dockerignore_keeps_run_state_out_of_the_image():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "mlflow.db", "mlartifacts", "data"} <= set(ignored)
