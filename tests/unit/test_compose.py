"""``deploy/compose.yaml``: no docker engine here, so it is checked against what it starts — every flag of every
entrypoint exists in the pinned CLI, the databases it names are the ones initdb creates, the pool is prefect.yaml's,
and no password sits in a URL or in the file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


HELP = {  # entrypoint head -> the command whose --help lists its options
    ("mlflow", "server"): ["mlflow", "server"],
    ("prefect", "server"): ["prefect", "server", "start"],
    ("prefect", "worker"): ["prefect", "worker", "start"],
    ("driftloop", "tune-worker"): ["driftloop", "tune-worker"],
}


def test_every_entrypoint_flag_exists_in_the_pinned_clis(compose):
    seen = set()
    for name, svc in compose["services"].items():
        argv = svc.get("entrypoint")
        if not argv:
            continue
        head = tuple(argv[:2])
        assert head in HELP, f"{name}: unexpected entrypoint {argv[:3]}"
        seen.add(head)
        cmd = HELP[head]
        out = subprocess.run(
            [str(BIN / cmd[0]), *cmd[1:], "--help"], capture_output=True, text=True, timeout=120,
            env={"COLUMNS": "250", "PATH": str(BIN), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        for flag in _flags(argv):
            assert flag in out.stdout, f"{name}: {' '.join(cmd)} has no {flag}"
    assert seen == set(HELP), "every server of the stack is in the file"


def test_the_worker_serves_prefect_yamls_pool_and_the_databases_are_created(compose):
    definitions = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]
    pools = {p["name"] for p in definitions["work_pools"].values()}
    worker = compose["services"]["prefect-worker"]["entrypoint"]
    assert worker[worker.index("--pool") + 1] in pools
    created = set(re.findall(r"CREATE DATABASE (\w+)", (ROOT / "deploy/initdb/10-databases.sql").read_text()))
    named = set(re.findall(r"postgresql\+\w+://[^/\s]+/(\w+)", COMPOSE.read_text()))
    assert named and named <= created, named - created


def test_no_password_in_a_url_and_every_variable_is_documented(compose):
    text = COMPOSE.read_text()
    assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", text), "a URL with a password"
    variables = set(re.findall(r"\$\{(\w+)", text))
    example = (ROOT / "deploy/compose.env.example").read_text()
    assert variables and all(f"{v}=" in example for v in variables), variables
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()
    env = compose["x-driftloop"]["environment"]
    needed = {"MLFLOW_TRACKING_URI", "DRIFTLOOP_OPTUNA_STORAGE", "DRIFTLOOP_REGISTRY_LOCK_URL", "PREFECT_API_URL"}
    assert needed <= set(env)
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
