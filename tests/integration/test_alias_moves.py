"""Alias moves under real faults and real concurrency: ``driftloop promote`` / ``rollback`` / ``register``
subprocesses killed (SIGKILL, driftloop.faults) at every step boundary of a move, then restarted with no hand
repair; N processes moving ``@champion`` at once. Invariants: ``@champion`` equals the ``to_version`` of the last
committed audit record, each record's ``from_version`` is the previous record's ``to_version``, no audit record
stays RUNNING, and of N compare-and-set movers on one expected state exactly one wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, run_data_stages, small_params, write_params

from driftloop import pipeline, tracking
from driftloop import register as reg
from driftloop.config import load_params
from driftloop.errors import RegistryError
from driftloop.tune import LGBM_DEFAULTS, fixed_params

pytestmark = pytest.mark.slow

MODEL = "driftloop"


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DRIFTLOOP_FAULT", "MLFLOW_TRACKING_URI")}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    if fault:
        env["DRIFTLOOP_FAULT"] = fault
    return env


def _argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "driftloop.cli", *args]


def _cli(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(args), cwd=cwd, env=_env(fault), capture_output=True, text=True, timeout=240)


def _ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _killed(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == -9, f"expected SIGKILL, got {res.returncode}\n{res.stdout}\n{res.stderr}"


def _champion(client, name: str = MODEL) -> str | None:
    mv = reg.current_version(client, name, reg.CHAMPION)
    return str(mv.version) if mv else None


def assert_chain_consistent(client, p) -> list[dict]:
    """The invariant, read without recovering first (the CLI command before must have done it)."""
    running = reg._audit_runs(client, p, "attributes.status = 'RUNNING'")
    assert running == [], [r.data.tags for r in running]
    runs = reg._audit_runs(client, p, f"tags.`driftloop.audit.alias` = '{reg.CHAMPION}'")
    records = [reg._record(r) for r in runs]
    assert all(r["state"] in (reg.COMMITTED, reg.ABORTED) for r in records)
    chain = [r for r in records if r["state"] == reg.COMMITTED]
    assert chain, "no committed move"
    assert chain[0]["to_version"] == _champion(client, p.base.model_name)
    for newer, older in zip(chain, chain[1:], strict=False):
        assert newer["from_version"] == older["to_version"], (newer, older)
        assert int(newer["seq"]) > int(older["seq"])
    return chain


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registered model with versions 1..6 (no artifacts needed to move aliases) and @champion 1 -> 2."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DRIFTLOOP_FAULT", raising=False)
    write_params(tmp_path / "params.yaml", small_params(tmp_path))
    p = load_params(tmp_path / "params.yaml")
    client = tracking.connect(p)
    client.create_registered_model(MODEL)
    for i in range(6):
        client.create_model_version(MODEL, str(tmp_path / "nowhere" / str(i)))
    reg.record_move(client, p, alias=reg.CHAMPION, to_version="1", action="gate", reason="first", expect=None)
    reg.promote(client, p, "2", "setup", expect="1")
    return tmp_path, p, client


ROLLED_FORWARD = ("after_alias", "after_tags", "before_commit")


def test_killed_promote_recovers_at_every_point(registry):
    cwd, p, client = registry
    for step in reg._STEPS:
        before = _champion(client)
        target = next(v for v in ("3", "4", "5") if v != before)
        _killed(_cli(["promote", target, "--expect-current", before], cwd, fault=f"registry.promote.{step}"))
        expected = target if step in ROLLED_FORWARD else before
        assert _champion(client) == expected, step  # the old state or the new one, never a third
        # the next start recovers; its compare-and-set passes only if the recovery went the right way
        again = next(v for v in ("3", "4", "5") if v not in (expected, target))
        _ok(_cli(["promote", again, "--expect-current", expected], cwd))
        chain = assert_chain_consistent(client, p)
        killed = reg.history(client, p, 2, include_aborted=True)[1]
        assert (killed["to_version"], killed["from_version"]) == (target, before)
        assert killed["state"] == (reg.COMMITTED if step in ROLLED_FORWARD else reg.ABORTED), step
        if step in ROLLED_FORWARD:  # the roll forward completed the version tags
            tags = client.get_model_version(MODEL, target).tags
            assert tags["driftloop.champion.previous_version"] == before
            assert tags["driftloop.champion.audit_run_id"] == chain[1]["run_id"]
        else:
            assert "before the alias moved" in killed["note"]
    assert "abort" in _ok(_cli(["history", "--all"], cwd)).stdout


def test_a_killed_recovery_is_recovered(registry):
    cwd, p, client = registry
    _killed(_cli(["promote", "4"], cwd, fault="registry.promote.after_alias"))
    _killed(_cli(["history"], cwd, fault="registry.recover.before_commit"))
    res = _ok(_cli(["rollback", "--expect-current", "4"], cwd))  # recovers (rolls forward), then rolls back
    assert "rollback: @champion 4 -> 2" in res.stdout
    assert_chain_consistent(client, p)
    assert _champion(client) == "2"


def test_killed_rollback_recovers_at_every_point(registry):
    cwd, p, client = registry
    for step in reg._STEPS:
        reg.promote(client, p, "3" if _champion(client) != "3" else "4", "setup")
        before = _champion(client)
        previous = reg._chain(client, p, reg.CHAMPION)[0]["from_version"]
        _killed(_cli(["rollback"], cwd, fault=f"registry.rollback.{step}"))
        _ok(_cli(["history"], cwd))
        assert_chain_consistent(client, p)
        assert _champion(client) == (previous if step in ROLLED_FORWARD else before), step
    # the chain, not a version tag, decides: the last rollback undid the last promote; the next one undoes more
    chain = reg._chain(client, p, reg.CHAMPION)
    expected = reg.rollback_target(chain)["from_version"]
    assert _ok(_cli(["rollback"], cwd)).stdout.strip().endswith(f"-> {expected}")
    assert_chain_consistent(client, p)


def test_compare_and_set_one_winner_among_concurrent_promotes(registry):
    cwd, p, client = registry
    n = 6
    procs = [
        subprocess.Popen(
            _argv(["promote", str(3 + i % 4), "--expect-current", "2"]),
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    outs = [(pr.wait(timeout=240), *pr.communicate()) for pr in procs]
    winners = [o for o in outs if o[0] == 0]
    losers = [o for o in outs if o[0] != 0]
    assert len(winners) == 1, outs
    won = winners[0][1].strip().rsplit(" ", 1)[-1]
    for code, _, stderr in losers:
        assert code == 1
        assert f"@champion of '{MODEL}' moved from 2 to {won}" in " ".join(stderr.split())
        assert "nothing changed" in stderr
    chain = assert_chain_consistent(client, p)
    assert [(r["from_version"], r["to_version"]) for r in chain[:2]] == [("2", won), ("1", "2")]


def test_concurrent_moves_without_expectation_serialize(registry):
    cwd, p, client = registry
    procs = [
        subprocess.Popen(_argv(["promote", v]), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for v in ("3", "4", "5", "6")
    ] + [
        subprocess.Popen(_argv(["rollback"]), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    codes = [pr.wait(timeout=240) for pr in procs]
    for pr in procs:
        pr.communicate()
    assert codes[:4] == [0, 0, 0, 0]  # promotes of distinct versions all succeed, one after the other
    assert set(codes[4:]) <= {0, 1}  # a rollback may find nothing left to undo: a clear error, not a half state
    chain = assert_chain_consistent(client, p)
    assert len(chain) == 2 + 4 + codes[4:].count(0)


def test_concurrent_rollbacks_end_on_one_version(registry):
    cwd, p, client = registry
    reg.promote(client, p, "3", "setup", expect="2")  # chain: none -> 1 -> 2 -> 3
    procs = [
        subprocess.Popen(_argv(["rollback"]), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [pr.wait(timeout=240) for pr in procs] == [0, 0]
    for pr in procs:
        pr.communicate()
    assert _champion(client) == "1"  # whatever the timing: undo 2 -> 3, then undo 1 -> 2
    assert_chain_consistent(client, p)
    res = _cli(["rollback"], cwd)
    assert res.returncode == 1 and "no previous champion" in res.stderr


# --------------------------------------------------------------------------- the register stage
REGISTER = [
    "register",
    "--split-dir",
    "data/split",
    "--model",
    "models/model.pkl",
    "--run-info",
    "models/run.json",
    "--metrics",
    "reports/metrics.json",
    "--out",
    "reports/register.json",
]


def _train_evaluate(p, **lgb) -> None:
    tuned = {"lgb_params": {**fixed_params("binary", 2, p.tune, p.base.seed), **LGBM_DEFAULTS, **lgb}}
    Path("models").mkdir(exist_ok=True)
    Path("models/tuned.json").write_text(json.dumps({**tuned, "tune_run_id": ""}))
    pipeline.run_train(
        p, "data/split", "models/tuned.json", "reports/validation.json", "models/model.pkl", "models/baselines.pkl",
        "models/run.json",
    )  # fmt: skip
    pipeline.run_evaluate(
        p, "data/split", "models/model.pkl", "models/baselines.pkl", "models/run.json", "reports/metrics.json",
        "reports/plots",
    )  # fmt: skip


def test_killed_register_stage_recovers_without_a_second_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(tmp_path / "params.yaml", small_params(tmp_path, **{"register.n_bootstrap": 20}))
    p = load_params(tmp_path / "params.yaml")
    run_data_stages(p)
    client = tracking.connect(p)
    points = ["after_version", "after_intent", "after_alias", "before_commit"]
    for i, step in enumerate(points):
        # alternate weak and strong models: every other one is promoted, the others become @challenger
        _train_evaluate(p, **({"num_leaves": 2, "learning_rate": 0.01} if i % 2 == 0 else {}))
        run_id = json.loads(Path("models/run.json").read_text())["run_id"]
        _killed(_cli(REGISTER, tmp_path, fault=f"registry.gate.{step}"))
        _ok(_cli(REGISTER, tmp_path))
        result = json.loads(Path("reports/register.json").read_text())
        assert result["run_id"] == run_id
        assert result["version"] == str(i + 1), "the rerun reused the version the killed run registered"
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == i + 1
        assert reg.gate_record(client, p, result["version"])["alias"] == result["alias"]
        assert str(client.get_model_version_by_alias(MODEL, result["alias"]).version) == result["version"]
        assert_chain_consistent(client, p)
        if i == 0:  # a third run of the same train run is idempotent: the recorded result, no new version or move
            moves = len(reg.history(client, p, 1000))
            _ok(_cli(REGISTER, tmp_path))
            assert json.loads(Path("reports/register.json").read_text()) == result
            assert len(reg.history(client, p, 1000)) == moves
    assert_chain_consistent(client, p)


def test_register_stage_compares_and_sets_the_champion_it_compared(tmp_path, monkeypatch):
    """@champion moves between the gate's comparison and its alias move (a concurrent promote): the move is
    refused with a clear message and nothing changes; the rerun gates the same version against the new champion."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_params(tmp_path / "params.yaml", small_params(tmp_path, **{"register.n_bootstrap": 20}))
    p = load_params(tmp_path / "params.yaml")
    run_data_stages(p)
    client = tracking.connect(p)
    weak = {"num_leaves": 2, "learning_rate": 0.01}
    for _ in range(2):  # v1 champion; v2 the same model again: no improvement, @challenger
        _train_evaluate(p, **weak)
        _ok(_cli(REGISTER, tmp_path))
    assert _champion(client) == "1"
    _train_evaluate(p)  # v3: clearly better than v1
    decide = reg.decide

    def racing_decide(*args, **kwargs):
        decision = decide(*args, **kwargs)
        reg.promote(client, p, "2", "a person, at the same moment", expect="1")
        return decision

    monkeypatch.setattr(reg, "decide", racing_decide)
    args = ("data/split", "models/model.pkl", "models/run.json", "reports/metrics.json", "reports/register.json")
    before = Path("reports/register.json").read_text()
    with pytest.raises(RegistryError, match="@champion of 'driftloop' moved from 1 to 2 since the gate compared"):
        pipeline.run_register(p, *args)
    assert _champion(client) == "2" and not client.get_model_version(MODEL, "3").aliases
    assert Path("reports/register.json").read_text() == before
    assert_chain_consistent(client, p)
    monkeypatch.setattr(reg, "decide", decide)
    result = pipeline.run_register(p, *args)  # the rerun: the same version, against the new champion
    assert result["version"] == "3" and result["decision"]["champion_version"] == "2"
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 3
    assert_chain_consistent(client, p)


@pytest.mark.postgres
def test_postgres_store_uses_an_advisory_lock(tmp_path, monkeypatch, pg_mlflow_url, unique_name):
    """The registry on PostgreSQL: the movers serialize on pg_advisory_lock, one CAS winner."""
    import sqlalchemy as sa

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = small_params(tmp_path)
    params["base"].update(tracking_uri=pg_mlflow_url, model_name=unique_name, experiment=unique_name)
    write_params(tmp_path / "params.yaml", params)
    p = load_params(tmp_path / "params.yaml")
    assert reg.lock_target(p) == ("postgresql", pg_mlflow_url)
    client = tracking.connect(p)
    client.create_registered_model(unique_name)
    try:
        for i in range(4):
            client.create_model_version(unique_name, str(tmp_path / "nowhere" / str(i)))
        reg.record_move(client, p, alias=reg.CHAMPION, to_version="1", action="gate", reason="first", expect=None)
        # a lock held elsewhere (a session of another mover) blocks the move until it is released
        engine = sa.create_engine(pg_mlflow_url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": reg._lock_key(unique_name)})
            blocked = subprocess.Popen(
                _argv(["promote", "2", "--expect-current", "1"]),
                cwd=tmp_path,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            with pytest.raises(subprocess.TimeoutExpired):
                blocked.wait(timeout=8)
            assert _champion(client, unique_name) == "1"
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": reg._lock_key(unique_name)})
        engine.dispose()
        assert blocked.wait(timeout=120) == 0, blocked.communicate()
        procs = [
            subprocess.Popen(
                _argv(["promote", v, "--expect-current", "2"]),
                cwd=tmp_path,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in ("3", "4", "3", "4")
        ]
        codes = [pr.wait(timeout=240) for pr in procs]
        errs = [pr.communicate()[1] for pr in procs]
        assert sorted(codes) == [0, 1, 1, 1], errs
        assert all("moved from 2 to" in e for c, e in zip(codes, errs, strict=True) if c)
        assert_chain_consistent(client, p)
    finally:
        client.delete_registered_model(unique_name)
