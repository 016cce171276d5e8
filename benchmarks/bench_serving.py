"""`driftloop serve` vs `mlflow models serve` of the same registered model, side by side in one run.

A real load generator (threads, one keep-alive httpx client each, closed loop: every thread sends its next
request when the last one answered) against each server started as its own process on 127.0.0.1:

- throughput (requests/s, rows/s) and p50/p99 latency for 1-row and 1,000-row requests: `driftloop serve` with the
  prediction log on, with it off (`--no-log`), and `mlflow models serve --env-manager local -w 1`;
- prediction-log overhead: p50 with the log on vs off;
- hot swap under load: `--swap-seconds` of 1-row load on `driftloop serve` (log on) while @champion is moved
  `--moves` times (`register.promote`, what `driftloop promote` runs); failed requests, and rows in the
  prediction log whose version is not the one that answered the request (by request id).

The three servers run at once and the legs alternate between them (``--rounds`` rounds, the order rotating), so a
change in the machine's load falls on all of them; medians and per-round ratios are reported.

    .venv/bin/python benchmarks/bench_serving.py                      # ~5 min on 2 loaded cores
    .venv/bin/python benchmarks/bench_serving.py --seconds 5 --rounds 2 --swap-seconds 20 --json /tmp/serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from _common import BIN, ROOT, derived_params, env, machine, machine_line, write_json, write_params

sys.path.insert(0, str(ROOT / "tests"))


def _setup(work: Path, rows: int):
    """Two registered versions (different data) of a small LightGBM model; @champion = 1."""
    os.chdir(work)
    from conftest import fit_model, register_model  # the tests' in-process train + register

    from driftloop import tracking
    from driftloop.config import load_params
    from driftloop.data.simulate import simulate

    raw = derived_params(
        {
            "base.tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "base.artifact_location": str(work / "mlartifacts"),
            "train.baselines": [],
            "tune.max_rounds": 200,
            "tune.num_threads": 1,
            "serve.log_dir": str(work / "predictions"),
            "serve.poll_interval_s": 1.0,
            "serve.max_rows": 5000,
            "alerts.log_path": str(work / "alerts.jsonl"),
        }
    )
    write_params(work / "params.yaml", raw)
    p = load_params(work / "params.yaml", env={})
    client = tracking.connect(p)
    sample = None
    for seed in (1, 2):
        model, parts = fit_model(p, simulate(rows, seed=seed), "binary")
        test = parts["test"].drop(columns=["default"])
        register_model(client, p, model, test.head(100), p.base.model_name, reference=parts["train"].head(1000))
        sample = test.reset_index(drop=True) if sample is None else sample
    client.set_registered_model_alias(p.base.model_name, "champion", "1")
    return p, client, sample


def _start(cmd: list[str], cwd: Path, url: str, environ: dict, timeout: float = 180) -> subprocess.Popen:
    from conftest import start_server

    proc = start_server(cmd, cwd, environ, url, timeout)
    if proc is None:
        raise RuntimeError(f"{' '.join(cmd)} not ready in {timeout} s")
    return proc


def _client(url: str, body: bytes, stop: float, record: bool) -> tuple[list[float], int, list]:
    """One closed-loop client (keep-alive httpx) until ``stop`` (time.time()): latencies, failures, answers."""
    import httpx

    lat, failed, seen = [], 0, []
    with httpx.Client(timeout=30) as client:
        while time.time() < stop:
            rid = uuid.uuid4().hex
            t0 = time.perf_counter()
            try:
                r = client.post(url, content=body, headers={"content-type": "application/json", "x-request-id": rid})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok, r = False, None
            lat.append(time.perf_counter() - t0)
            failed += not ok
            if record and r is not None:
                seen.append((time.time(), rid, r.status_code, r.headers.get("x-model-version")))
    return lat, failed, seen


def _client_process(url: str, body: bytes, stop: float, record: bool, queue) -> None:
    queue.put(_client(url, body, stop, record))


def load(
    url: str, body: bytes, seconds: float, threads: int, record: list | None = None, processes: bool = False
) -> dict:
    """Closed-loop load: ``threads`` clients posting ``body`` for ``seconds``; latencies and failures. With
    ``processes`` every client is a process of its own (no GIL shared between the clients: the latency is the
    server's and the machine's, not the load generator's)."""
    stop = time.time() + seconds
    results: list[tuple[list[float], int, list]] = []
    start = time.perf_counter()
    if processes:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        pool = [
            ctx.Process(target=_client_process, args=(url, body, stop, record is not None, queue))
            for _ in range(threads)
        ]
        for proc in pool:
            proc.start()
        results = [queue.get() for _ in pool]
        for proc in pool:
            proc.join()
    else:
        out: list = [None] * threads

        def worker(i: int) -> None:
            out[i] = _client(url, body, stop, record is not None)

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        results = out
    elapsed = time.perf_counter() - start
    all_lat = np.array([x for lat, _, _ in results for x in lat])
    if record is not None:
        record.extend(x for _, _, seen in results for x in seen)
    return {
        "requests": len(all_lat),
        "failed": sum(f for _, f, _ in results),
        "rps": len(all_lat) / elapsed,
        "p50_ms": float(np.percentile(all_lat, 50) * 1000),
        "p99_ms": float(np.percentile(all_lat, 99) * 1000),
    }


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a server process and its children (mlflow's uvicorn worker)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def main() -> None:
    from conftest import free_port
    from conftest import stop_server as _stop

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000, help="simulated training rows per version")
    ap.add_argument("--seconds", type=float, default=10, help="load per leg")
    ap.add_argument("--threads", type=int, default=4, help="concurrent clients")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of alternating legs (medians are reported)")
    ap.add_argument("--pause", type=float, default=2.5, help="seconds between legs")
    ap.add_argument("--processes", action="store_true", help="each client a process of its own (default: threads)")
    ap.add_argument("--swap-seconds", type=float, default=60)
    ap.add_argument("--moves", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    p, client, sample = _setup(work, args.rows)
    from driftloop import register as reg
    from driftloop.serve import predlog

    def body(n: int) -> bytes:
        rows = sample.head(n) if n <= len(sample) else sample.sample(n, replace=True, random_state=p.base.seed)
        records = json.loads(rows.to_json(orient="records", date_format="iso"))
        return json.dumps({"dataframe_records": records}).encode()

    bodies = {1: body(1), 1000: body(1000)}
    environ = env({"MLFLOW_TRACKING_URI": p.base.tracking_uri})
    environ.pop("DRIFTLOOP_SERVE_TOKEN", None)
    servers = {
        "driftloop serve (log on)": [str(BIN / "driftloop"), "serve"],
        "driftloop serve (log off)": [str(BIN / "driftloop"), "serve", "--no-log"],
        "mlflow models serve": [str(BIN / "mlflow"), "models", "serve", "-m", "models:/driftloop/1"]
        + ["--env-manager", "local", "-w", "1", "-h", "127.0.0.1"],
    }
    # all three servers up at once; the legs alternate between them, round after round (the order rotates), so a
    # change in the machine's load (shared with other work) falls on every server alike
    procs, urls = {}, {}
    try:
        for name, cmd in servers.items():
            port = free_port()
            is_mlflow = cmd[0].endswith("mlflow")
            cmd = [*cmd, "-p" if is_mlflow else "--port", str(port)]
            ready = f"http://127.0.0.1:{port}/{'ping' if is_mlflow else 'ready'}"
            procs[name] = _start(cmd, work, ready, environ)
            urls[name] = f"http://127.0.0.1:{port}/invocations"
            load(urls[name], bodies[1], 1.0, args.threads)  # warm-up
        legs: dict[str, list[dict]] = {}
        names = list(servers)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n, b in bodies.items():
                for name in order:
                    cpu0 = server_cpu(procs[name].pid)
                    res = load(urls[name], b, args.seconds, args.threads, processes=args.processes)
                    res["server_cpu_ms_per_request"] = (server_cpu(procs[name].pid) - cpu0) * 1000 / res["requests"]
                    res["rows_per_s"] = res["rps"] * n
                    res["loadavg"] = os.getloadavg()[0]
                    legs.setdefault(f"{name} | {n} row(s)", []).append(res)
                    print(
                        f"round {r + 1} {name:26s} {n:5d} row(s): {res['rps']:7.1f} req/s  "
                        f"{res['rows_per_s']:9.0f} rows/s  p50 {res['p50_ms']:7.1f} ms  p99 {res['p99_ms']:7.1f} ms  "
                        f"server CPU {res['server_cpu_ms_per_request']:.2f} ms/req  failed {res['failed']}  "
                        f"load {res['loadavg']:.1f}",
                        flush=True,
                    )
                    time.sleep(args.pause)  # the log writer's flush lands between legs
    finally:
        for proc in procs.values():
            _stop(proc)
    results = {
        k: {
            m: float(np.median([x[m] for x in v]))
            for m in ("rps", "rows_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
        }
        | {"failed": sum(x["failed"] for x in v), "requests": sum(x["requests"] for x in v), "rounds": v}
        for k, v in legs.items()
    }

    # ---------------------------------------------------------------- hot swap under load
    port = free_port()
    log_dir = Path(p.serve.log_dir)
    proc = _start(
        [str(BIN / "driftloop"), "serve", "--port", str(port)], work, f"http://127.0.0.1:{port}/ready", environ
    )
    record: list = []
    moves: list[str] = []

    def mover() -> None:
        gap = args.swap_seconds / (args.moves + 1)
        for i in range(args.moves):
            time.sleep(gap)
            version = "2" if i % 2 == 0 else "1"
            reg.promote(client, p, version, f"bench_serving move {i + 1}")
            moves.append(version)

    t = threading.Thread(target=mover)
    t.start()
    try:
        swap = load(
            f"http://127.0.0.1:{port}/predict", bodies[1], args.swap_seconds, args.threads, record, args.processes
        )
    finally:
        t.join()
        _stop(proc)  # SIGTERM: the log is flushed
    logged = predlog.read_log(log_dir)
    by_rid = logged.groupby("request_id")["model_version"].agg(lambda s: set(s))
    record.sort()  # completion order across the clients
    answered = {rid: v for _, rid, code, v in record if code == 200}
    missing = [rid for rid in answered if rid not in by_rid.index]
    wrong = [rid for rid, v in answered.items() if rid in by_rid.index and by_rid[rid] != {v}]
    versions_seen = []
    for _, _, _, v in record:
        if v and (not versions_seen or versions_seen[-1] != v):
            versions_seen.append(v)
    swap.update(
        moves=len(moves),
        version_changes_seen=len(versions_seen) - 1,
        logged_requests=int(len(by_rid)),
        not_logged=len(missing),
        misattributed=len(wrong),
    )

    # ---------------------------------------------------------------- side by side
    m = machine()
    d1, d0, ml = (results[f"{k} | 1 row(s)"] for k in servers)
    d1k, ml1k = results["driftloop serve (log on) | 1000 row(s)"], results["mlflow models serve | 1000 row(s)"]

    def per_round(a: str, b: str, metric: str) -> list[float]:
        return [x[metric] / y[metric] for x, y in zip(legs[a], legs[b], strict=True)]

    on, off, mlf = (f"{k} | 1 row(s)" for k in servers)
    summary = {
        "throughput_1row_vs_mlflow": float(np.median(per_round(on, mlf, "rps"))),
        "throughput_1row_vs_mlflow_rounds": per_round(on, mlf, "rps"),
        "throughput_1row_log_off_vs_mlflow": float(np.median(per_round(off, mlf, "rps"))),
        "throughput_1000row_vs_mlflow": float(
            np.median(per_round("driftloop serve (log on) | 1000 row(s)", "mlflow models serve | 1000 row(s)", "rps"))
        ),
        "p99_1row_ms": d1["p99_ms"],
        "log_overhead_p50": float(np.median(per_round(on, off, "p50_ms"))) - 1,
        "log_overhead_p50_rounds": [x - 1 for x in per_round(on, off, "p50_ms")],
    }
    print()
    print(machine_line(m))
    print(
        f"1 row:     driftloop serve {d1['rps']:.0f} req/s (log off {d0['rps']:.0f}) vs mlflow models serve "
        f"{ml['rps']:.0f} req/s (medians of {args.rounds} rounds): {summary['throughput_1row_vs_mlflow']:.2f}x, median "
        f"of the per-round ratios {', '.join(f'{x:.2f}' for x in summary['throughput_1row_vs_mlflow_rounds'])} "
        f"(target >= 3x); p99 {d1['p99_ms']:.1f} ms (mlflow {ml['p99_ms']:.1f}; target <= 25 ms)"
    )
    cpu = {k: v["server_cpu_ms_per_request"] for k, v in results.items()}
    summary["server_cpu_ms_per_request"] = cpu
    print(
        "server CPU per request (medians; the load-independent figure): 1 row "
        f"{cpu[on]:.2f} ms (log off {cpu[off]:.2f}) vs mlflow {cpu[mlf]:.2f} ms = {cpu[mlf] / cpu[on]:.1f}x less; "
        f"1000 rows {cpu['driftloop serve (log on) | 1000 row(s)']:.1f} ms (log off "
        f"{cpu['driftloop serve (log off) | 1000 row(s)']:.1f}) vs mlflow "
        f"{cpu['mlflow models serve | 1000 row(s)']:.1f} ms"
    )
    print(
        f"1000 rows: driftloop serve {d1k['rps']:.1f} req/s vs mlflow {ml1k['rps']:.1f} req/s = "
        f"{summary['throughput_1000row_vs_mlflow']:.2f}x; p99 {d1k['p99_ms']:.0f} vs {ml1k['p99_ms']:.0f} ms"
    )
    print(
        f"prediction log: p50 {d1['p50_ms']:.2f} ms on vs {d0['p50_ms']:.2f} ms off; per round "
        f"{', '.join(f'{100 * x:+.1f} %' for x in summary['log_overhead_p50_rounds'])}, median "
        f"{100 * summary['log_overhead_p50']:+.1f} % (target <= 10 %)"
    )
    print(
        f"hot swap under load ({args.swap_seconds:.0f} s, {swap['moves']} alias moves, {swap['version_changes_seen']} "
        f"version changes seen by clients): {swap['requests']} requests, failed {swap['failed']}, "
        f"misattributed {swap['misattributed']}, not logged {swap['not_logged']} (targets 0 / 0)"
    )
    write_json(args.json, {"machine": m, "legs": results, "swap": swap, "summary": summary})


if __name__ == "__main__":
    main()
