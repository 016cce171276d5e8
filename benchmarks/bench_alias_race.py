"""N processes moving ``@champion`` at once, R rounds: exactly one winner per round, the audit chain consistent.

Each round, ``--movers`` real ``driftloop promote V --expect-current C`` processes start together, all expecting
the current champion ``C`` and each asking for another version. Compare-and-set under the registry lock means
exactly one of them wins and every other exits 1 with "moved from C to W ... nothing changed". After each round
the benchmark reads the registry in this process and checks:

- exactly one process exited 0, the others exited 1 naming the winner;
- ``@champion`` equals the ``to_version`` of the newest committed audit record (``driftloop history``);
- every committed record's ``from_version`` is the previous record's ``to_version``, and no audit run is RUNNING.

    python benchmarks/bench_alias_race.py                       # 10 movers, 20 rounds, SQLite store
    python benchmarks/bench_alias_race.py --movers 4 --rounds 3
    python benchmarks/bench_alias_race.py --tracking-uri postgresql+psycopg://postgres@127.0.0.1:5432/test

The registered model has versions without artifacts: moving an alias never reads them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _common import derived_params, env, machine, machine_line, write_json, write_params

N_VERSIONS = 12


def _registry(work: Path, tracking_uri: str | None, name: str):
    from driftloop import register as reg
    from driftloop import tracking
    from driftloop.config import load_params

    overrides = {"base.model_name": name}
    if tracking_uri:
        overrides["base.tracking_uri"] = tracking_uri
    else:
        overrides["base.tracking_uri"] = f"sqlite:///{work / 'mlflow.db'}"
        overrides["base.artifact_location"] = str(work / "mlartifacts")
    write_params(work / "params.yaml", derived_params(overrides))
    os.chdir(work)
    p = load_params(work / "params.yaml")
    client = tracking.connect(p)
    client.create_registered_model(name)
    for i in range(N_VERSIONS):
        client.create_model_version(name, str(work / "nowhere" / str(i)))
    reg.record_move(client, p, alias=reg.CHAMPION, to_version="1", action="gate", reason="bench set-up", expect=None)
    return p, client


def _champion(client, name: str) -> str | None:
    from driftloop import register as reg

    mv = reg.current_version(client, name, reg.CHAMPION)
    return str(mv.version) if mv else None


def chain_violations(client, p) -> list[str]:
    from driftloop import register as reg

    out = []
    running = reg._audit_runs(client, p, "attributes.status = 'RUNNING'")
    if running:
        out.append(f"{len(running)} audit run(s) left RUNNING")
    records = [reg._record(r) for r in reg._audit_runs(client, p, f"tags.`driftloop.audit.alias` = '{reg.CHAMPION}'")]
    chain = [r for r in records if r["state"] == reg.COMMITTED]
    if not chain:
        return [*out, "no committed move"]
    champion = _champion(client, p.base.model_name)
    if chain[0]["to_version"] != champion:
        out.append(f"@champion is {champion} but the last committed record moved it to {chain[0]['to_version']}")
    for newer, older in zip(chain, chain[1:], strict=False):
        if newer["from_version"] != older["to_version"]:
            out.append(f"chain broken: {older['from_version']}->{older['to_version']} then {newer['from_version']}->")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--movers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--tracking-uri", default=None, help="default: a fresh SQLite store in the work folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/driftloop-bench-alias-race"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.movers >= N_VERSIONS:
        sys.exit(f"--movers must be below {N_VERSIONS}")

    print(machine_line(machine()))
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    name = f"race-{uuid.uuid4().hex[:8]}"
    p, client = _registry(args.work, args.tracking_uri, name)
    store = "PostgreSQL" if args.tracking_uri and "postgres" in args.tracking_uri else "SQLite"
    print(f"{args.movers} movers x {args.rounds} rounds, registered model {name} on {store}")
    environ = env()
    one_winner = consistent = 0
    rounds = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        current = _champion(client, name)
        targets = [str(v) for v in range(1, N_VERSIONS + 1) if str(v) != current][: args.movers]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "driftloop.cli", "promote", v, "--expect-current", current, "--reason", "race"],
                cwd=args.work,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in targets
        ]
        outs = [(pr.wait(timeout=600), *pr.communicate()) for pr in procs]
        winners = [t for t, o in zip(targets, outs, strict=True) if o[0] == 0]
        after = _champion(client, name)
        problems = []
        if len(winners) != 1:
            problems.append(f"{len(winners)} winners")
        elif after != winners[0]:
            problems.append(f"winner {winners[0]} but @champion is {after}")
        for t, (code, _, err) in zip(targets, outs, strict=True):
            if t in winners:
                continue
            text = " ".join(err.split())
            if code != 1 or "nothing changed" not in text or f"moved from {current} to {after}" not in text:
                problems.append(f"loser {t}: exit {code}, {text[-200:]!r}")
        violations = chain_violations(client, p)
        one_winner += len(winners) == 1
        consistent += not violations
        rounds.append({"round": r + 1, "from": current, "to": after, "winners": winners, "problems": problems,
                       "violations": violations})  # fmt: skip
        flag = "ok" if not problems and not violations else "FAILED"
        print(f"  round {r + 1:>2}: @champion {current} -> {after}, winners {winners} {flag}")
        for line in problems + violations:
            print(f"      - {line}")
    seconds = time.perf_counter() - t0
    print()
    print(f"exactly one winner: {one_winner}/{args.rounds} rounds")
    print(f"audit chain consistent: {consistent}/{args.rounds} rounds")
    print(f"{seconds:.0f} s ({seconds / args.rounds:.1f} s a round of {args.movers} processes)")
    write_json(
        args.json,
        {"movers": args.movers, "rounds": args.rounds, "store": store, "one_winner": one_winner,
         "consistent": consistent, "seconds": round(seconds, 1), "results": rounds},
    )  # fmt: skip
    sys.exit(0 if one_winner == consistent == args.rounds else 1)


if __name__ == "__main__":
    main()
