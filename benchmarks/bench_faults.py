"""Kill -9 at every named fault point, restart with no hand repair, check the invariants.

Every point declared with ``driftloop.faults.register_point`` is exercised ``--repeat`` times. Each attempt starts
from the same trained project (two registered versions, ``@champion`` with a previous champion, a journal-backed
Optuna study), runs the command that reaches the point with ``DRIFTLOOP_FAULT=<point>`` (the process SIGKILLs
itself there), then the normal next command(s) without the fault, and checks:

- the faulty command really died by SIGKILL at the point (else: "not reached", a gap of the harness);
- the next commands succeed: a killed worker's rerun, ``driftloop history`` after a registry command (the next
  registry command recovers an interrupted move), then ``driftloop run``: no hand repair;
- ``@champion`` equals the ``to_version`` of the last committed ``champion`` audit record (read as it is,
  without recovering);
- ``dvc status`` is clean after the rerun, and no retraining intent is left pending;
- every labeled batch in the training data is linked to the model version it triggered (or absent);
- no finished Optuna trial was lost, no trial is left RUNNING, no MLflow run is left RUNNING.

    python benchmarks/bench_faults.py --repeat 3            # every point, 3 times (tens of minutes)
    python benchmarks/bench_faults.py --points registry.    # the points whose name starts with a prefix

Attempts run one at a time in one folder, restored from a snapshot of the trained project each time (MLflow
stores absolute artifact paths, so the project must live at the same path).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml
from _common import env, machine, machine_line, make_project, run, write_json

SCENARIO_KEYWORDS = (  # what reaches a point, from its declaration's ``reached_by`` text (first match wins)
    ("after a killed move", "recover"),  # recovery's own points: a move must have been interrupted first
    ("driftloop tune-worker", "tune_worker"),  # only the worker's own points ("driftloop tune / tune-worker": run)
    ("promote", "promote"),
    ("rollback", "rollback"),
    ("monitor", "retrain"),
    ("retrain", "retrain"),
)
HISTORY = ["driftloop", "history"]
RETRAIN_BATCH = "sim://2025-03?rows=3000&covariate_shift=2&concept_drift=1"


def all_points() -> dict[str, str]:
    """Import every driftloop module so each declares its points; {name: reached_by}."""
    import driftloop
    from driftloop import faults

    for mod in pkgutil.walk_packages(driftloop.__path__, "driftloop."):
        if mod.name.endswith((".cli", ".demo")):
            continue
        try:
            importlib.import_module(mod.name)
        except Exception as exc:  # pragma: no cover - report, do not hide
            print(f"  (could not import {mod.name}: {exc})")
    return dict(faults.POINTS)


def scenario_of(reached_by: str) -> str:
    text = reached_by.lower()
    for keyword, scenario in SCENARIO_KEYWORDS:
        if keyword in text:
            return scenario
    return "run"


def _params(proj: Path) -> dict:
    return yaml.safe_load((proj / "params.yaml").read_text())


def _set_seed(proj: Path, seed: int) -> None:
    p = _params(proj)
    p["base"]["seed"] = seed
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def build(proj: Path, rows: int, trials: int) -> None:
    """Two trained versions, v2 @champion over v1, a journal-backed study (a relative path, as users write it)."""
    make_project(
        proj,
        {
            "simulate.n_rows": rows,
            "tune.n_trials": trials,
            "tune.max_rounds": 120,
            "tune.early_stopping_rounds": 15,
            "tune.num_threads": 1,
            "tune.storage": "optuna/study.journal",
            "register.n_bootstrap": 50,
            "monitor.reference_rows": 1000,
            "evaluate.shap_sample_rows": 200,
        },
    )
    run(["driftloop", "run"], proj)
    _set_seed(proj, 43)
    run(["driftloop", "run"], proj)
    state = champion_state(proj)
    if state["champion"] != "2":
        run(["driftloop", "promote", "2", "--reason", "bench set-up"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "trained"], proj)


def champion_state(proj: Path) -> dict:
    """The state the invariants are checked on, read by a fresh interpreter (``--probe``): this process's
    MLflow engine would keep reading the SQLite file of an earlier attempt after the project is restored."""
    res = run([sys.executable, __file__, "--probe", str(proj)], proj)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _probe(proj: Path) -> dict:
    """@champion, the last committed audit record, RUNNING MLflow runs, Optuna trial states, linked batches."""
    import os

    from driftloop import register, tracking
    from driftloop.config import load_params

    cwd = os.getcwd()
    os.chdir(proj)
    try:
        p = load_params(proj / "params.yaml")
        client = tracking.connect(p)
        current = register.current_version(client, p.base.model_name, register.CHAMPION)
        # the committed moves of @champion as they are: read without recovering (history() would recover)
        committed = register._chain(client, p, register.CHAMPION)
        running = []
        for exp in client.search_experiments():
            running += [
                f"{r.info.run_name} ({exp.name}, {r.info.run_id[:8]})"
                for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
            ]
        linked = set()
        for mv in client.search_model_versions(f"name = '{p.base.model_name}'"):
            linked |= {v for k, v in mv.tags.items() if "batch" in k}
        return {
            "champion": None if current is None else str(current.version),
            "last_record": committed[0].get("to_version") if committed else None,
            "running_runs": running,
            "trials": trial_states(proj),
            "linked": sorted(linked),
        }
    finally:
        os.chdir(cwd)


def trial_states(proj: Path) -> dict[str, dict[str, list]]:
    journal = proj / "optuna" / "study.journal"
    if not journal.exists():
        return {}
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal.resolve())))
    out: dict[str, dict[str, list]] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        out[summary.study_name] = {str(t.number): [t.state.name, t.value] for t in study.get_trials(deepcopy=False)}
    return out


def command_for(scenario: str, proj: Path, attempt: int) -> list[str]:
    if scenario == "promote":
        return ["driftloop", "promote", "1", "--reason", "bench"]
    if scenario == "rollback":
        return ["driftloop", "rollback", "--reason", "bench"]
    if scenario == "retrain":
        return ["driftloop", "monitor", RETRAIN_BATCH, "--retrain"]
    if scenario == "recover":
        return ["driftloop", "history"]  # after a promote killed with the alias moved (see attempt)
    if scenario == "tune_worker":  # the trained study is full: two more trials of budget for the worker
        p = _params(proj)
        p["tune"]["n_trials"] += 2
        (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        return ["driftloop", "tune-worker", "--split-dir", "data/split"]
    _set_seed(proj, 100 + attempt)  # new data: every stage reruns
    return ["driftloop", "run"]


def check(proj: Path, before_kill: dict, scenario: str, recovery_outputs: list) -> list[str]:
    """The invariants after the recovery commands; a list of violations (empty: all hold)."""
    bad = []
    for cmd, res in recovery_outputs:
        if res.returncode != 0:
            bad.append(f"hand repair needed: `{' '.join(cmd)}` exited {res.returncode}: {res.stderr.strip()[-300:]}")
    state = champion_state(proj)
    if state["champion"] != state["last_record"]:
        bad.append(f"@champion is {state['champion']} but the last committed audit record says {state['last_record']}")
    if state["running_runs"]:
        bad.append(f"{len(state['running_runs'])} MLflow run(s) left RUNNING: {', '.join(state['running_runs'])}")
    for study, trials in state["trials"].items():
        running = [n for n, (s, _) in trials.items() if s == "RUNNING"]
        if running:
            bad.append(f"study {study}: trials {running} left RUNNING")
        for n, (s, v) in before_kill["trials"].get(study, {}).items():
            if s in ("COMPLETE", "PRUNED") and trials.get(n) != [s, v]:
                bad.append(f"study {study}: finished trial {n} lost or changed ({s}, {v} -> {trials.get(n)})")
    from driftloop.runner import status_clean

    status = run(["dvc", "status"], proj, check=False)
    if status.returncode != 0 or not status_clean(status.stdout):  # the always_changed source stage is fine
        bad.append("dvc status is not clean after the rerun: " + status.stdout[:300])
    pending = [p.name for p in (proj / ".driftloop").glob("*.json")] if (proj / ".driftloop").exists() else []
    if pending:
        bad.append(f"intent left pending: {pending}")
    labeled = sorted(p.name.removesuffix(".dvc") for p in (proj / "data" / "labeled").glob("*.dvc"))
    if labeled:
        linked = state["linked"]
        for name in labeled:
            if not any(b and b in name for b in linked):
                bad.append(f"labeled batch {name} is in the training data with no trigger link")
    return bad


def attempt(proj: Path, snapshot: Path, point: str, scenario: str, n: int) -> dict:
    shutil.rmtree(proj, ignore_errors=True)
    shutil.copytree(snapshot, proj, symlinks=True)
    cmd = command_for(scenario, proj, n)
    t0 = time.perf_counter()
    if scenario == "recover":  # an interrupted move for the recovery to finish
        pre = run(["driftloop", "promote", "1"], proj, environ=env({"DRIFTLOOP_FAULT": "registry.promote.after_alias"}),
                  check=False)  # fmt: skip
        if pre.returncode != -signal.SIGKILL:
            raise RuntimeError(f"the set-up promote was not killed ({pre.returncode}): {pre.stderr[-1000:]}")
    res = run(cmd, proj, environ=env({"DRIFTLOOP_FAULT": point}), check=False)
    killed = res.returncode == -signal.SIGKILL
    out = {"point": point, "scenario": scenario, "killed": killed, "rc": res.returncode}
    if not killed:
        out["violations"] = []
        out["seconds"] = round(time.perf_counter() - t0, 1)
        return out
    before = champion_state(proj)
    recovery = []
    # the ordinary next commands: an interrupted worker is restarted; after a registry command, the next one
    # (`driftloop history`, which recovers an interrupted move); then `driftloop run`
    nxt = {"tune_worker": [cmd], "promote": [HISTORY], "rollback": [HISTORY], "recover": [HISTORY]}
    for rcmd in nxt.get(scenario, []) + [["driftloop", "run"]]:
        recovery.append((rcmd, run(rcmd, proj, check=False)))
    out["violations"] = check(proj, before, scenario, recovery)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:  # champion_state's fresh interpreter
        print(json.dumps(_probe(Path(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--points", nargs="*", default=[], help="name prefixes (default: every point)")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/driftloop-bench-faults"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    points = {k: v for k, v in sorted(all_points().items()) if not args.points or k.startswith(tuple(args.points))}
    print(machine_line(machine()))
    print(f"{len(points)} fault points, {args.repeat} attempt(s) each")
    shutil.rmtree(args.work, ignore_errors=True)
    proj, snapshot = args.work / "proj", args.work / "snapshot"
    t0 = time.perf_counter()
    build(proj, args.rows, args.trials)
    shutil.copytree(proj, snapshot, symlinks=True)
    print(f"trained project built in {time.perf_counter() - t0:.0f} s")

    results = []
    by_point: dict[str, list[dict]] = defaultdict(list)
    for point, reached_by in points.items():
        scenario = scenario_of(reached_by)
        for n in range(args.repeat):
            r = attempt(proj, snapshot, point, scenario, n)
            results.append(r)
            by_point[point].append(r)
            flag = "killed" if r["killed"] else f"NOT REACHED (rc {r['rc']})"
            print(
                f"  {point:<40} {scenario:<12} #{n + 1} {flag:<22} violations {len(r['violations'])} ({r['seconds']} s)"
            )
            for v in r["violations"]:
                print(f"      - {v}")

    exercised = [p for p, rs in by_point.items() if any(r["killed"] for r in rs)]
    kills = sum(r["killed"] for r in results)
    violations = sum(len(r["violations"]) for r in results)
    lost = sum(1 for r in results for v in r["violations"] if "lost" in v)
    repairs = sum(1 for r in results for v in r["violations"] if v.startswith("hand repair"))
    print()
    print(f"points exercised (killed at least once): {len(exercised)} of {len(points)}")
    print(f"kills: {kills} of {len(results)} attempts")
    print(f"invariant violations: {violations}   finished trials lost: {lost}   runs needing hand repair: {repairs}")
    not_reached = sorted(set(points) - set(exercised))
    if not_reached:
        print(f"not reached by their scenario: {', '.join(not_reached)}")
    write_json(
        args.json,
        {
            "points": len(points),
            "exercised": len(exercised),
            "kills": kills,
            "attempts": len(results),
            "violations": violations,
            "trials_lost": lost,
            "hand_repairs": repairs,
            "results": results,
        },
    )
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
