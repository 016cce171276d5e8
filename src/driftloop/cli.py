"""The ``driftloop`` command: one subcommand per pipeline stage plus run, config, ui, promote,
rollback, history. Stage commands are thin: paths come from ``dvc.yaml``, settings from
``params.yaml``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, help="driftloop: train, register, monitor, retrain.")
err = Console(stderr=True)
out = Console(width=None if Console().is_terminal else 140)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
DEFAULT_PARAMS = Path("params.yaml")


def _load(path: Path):
    from driftloop.config import load_params

    return load_params(path)


def handle_errors(fn):
    """Bad input ends with exit code 1 and a one-paragraph message naming the file/column/key."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from driftloop.errors import DriftloopError

        try:
            return fn(*args, **kwargs)
        except DriftloopError as exc:
            if report := os.environ.get("DRIFTLOOP_ERROR_FILE"):  # orchestrators: bad input, do not retry
                Path(report).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}), encoding="utf-8")
            # escaped: messages quote column names and paths, which may contain "[...]"
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _rows_progress(description: str, total: int | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


@app.command()
@handle_errors
def source(
    fingerprint: Annotated[Path, typer.Option(help="fingerprint of the source (JSON, a dependency of ingest)")],
    stamp: Annotated[Path, typer.Option(help="the stage's constant output (orders it before ingest)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Fingerprint the configured source so ingest reruns when it changes (a stage that always runs)."""
    from driftloop.data.source import source as fingerprint_source

    rec = fingerprint_source(_load(params), fingerprint, stamp)
    what = rec.get("path") or rec.get("url") or rec["source"]
    detail = f"md5 {rec['md5'][:12]}" if "md5" in rec else rec.get("policy", "")
    state = "changed" if rec["changed"] else "unchanged"
    out.print(f"source: {rec['source']} {escape(str(what))} {detail} ({state})".replace("  ", " "))


@app.command()
@handle_errors
def ingest(
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file to write")], params: ParamsOpt = DEFAULT_PARAMS
):
    """Read the configured source (simulate / csv / parquet / sql) into one Parquet file."""
    from driftloop.pipeline import run_ingest

    p = _load(params)
    total = p.simulate.n_rows if p.ingest.source == "simulate" else None
    progress, advance = _rows_progress(f"ingest ({p.ingest.source})", total)
    with progress:
        result = run_ingest(p, str(out_path), advance)
    for w in result.get("warnings", []):
        err.print(f"[yellow]warning:[/] {escape(w)}")
    out.print(f"ingest: {result['rows']} rows from {result['source']} -> {out_path}")


@app.command()
@handle_errors
def validate(
    data: Annotated[Path, typer.Option(help="ingested Parquet file")],
    out_path: Annotated[Path, typer.Option("--out", help="validated Parquet file")],
    report: Annotated[Path, typer.Option(help="validation report (JSON)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Check the data contract; write warnings to the report and drop unusable columns."""
    from driftloop.pipeline import run_validate

    result = run_validate(_load(params), str(data), str(out_path), str(report))
    for w in result["warnings"]:
        action = f" ({w['action']})" if w["action"] != "none" else ""
        err.print(f"[yellow]warning:[/] {escape(w['message'])}{action}")
    for note in result.get("notes", []):
        out.print(f"validate: {escape(note)}")
    out.print(f"validate: {result['rows']} rows, task={result['task']}, {result['n_warnings']} warning(s) -> {report}")


@app.command()
@handle_errors
def split(
    data: Annotated[Path, typer.Option(help="validated Parquet file")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="folder for train/valid/test.parquet")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Split into train / valid / test (stratified, time-based or grouped)."""
    from driftloop.pipeline import run_split

    result = run_split(_load(params), str(data), str(out_dir))
    sizes = ", ".join(f"{k}={result[k]}" for k in ("train", "valid", "test"))
    copies = f" ({result['duplicate_rows']} repeated rows kept with their copies)" if result["duplicate_rows"] else ""
    out.print(f"split: {sizes}; {result['test_rows_in_train']} test rows identical to a training row{copies}")


@app.command()
@handle_errors
def tune(
    split_dir: Annotated[Path, typer.Option("--split-dir", help="folder with train/valid.parquet")],
    out_path: Annotated[Path, typer.Option("--out", help="best parameters (JSON)")],
    report: Annotated[Path, typer.Option(help="tuning summary (JSON, a DVC metric)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Optuna TPE search over LightGBM with pruning; every trial a nested MLflow run."""
    from driftloop.pipeline import run_tune
    from driftloop.runner import TrialProgress

    p = _load(params)
    with TrialProgress(p.tune.n_trials, console=err) as progress:  # a bar on a terminal, else a line per ~15 s
        result = run_tune(p, str(split_dir), str(out_path), str(report), progress=progress)
    budget = f" of a {result['timeout_seconds']:.0f}s budget" if result.get("timeout_seconds") else ""
    out.print(
        f"tune: best {result['metric']}={result['best_value']:.5f} after {result['n_complete']} complete, "
        f"{result['n_pruned']} pruned trials ({result['seconds']:.1f}s{budget}), validated on {result['validation']}; "
        f"study '{result['study_name']}'"
    )


@app.command("tune-worker")
@handle_errors
def tune_worker(
    split_dir: Annotated[Path, typer.Option("--split-dir", help="folder with train/valid.parquet")],
    worker_index: Annotated[
        int | None,
        typer.Option(
            "--worker-index",
            min=0,
            help="this worker's number: its sampler's seed is base.seed + N (default: numbered by the study)",
        ),
    ] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Run trials of the shared study (tune.storage: a database URL or a journal file); start several at once.

    The study ends with exactly tune.n_trials finished trials, however many workers share it.
    """
    from driftloop.config import mask_url
    from driftloop.errors import DriftloopError
    from driftloop.pipeline import run_tune_worker

    p = _load(params)
    if p.tune.storage == "memory":
        raise DriftloopError(
            f"tune.storage must be a database URL or a journal file for workers (got {mask_url(p.tune.storage)!r})"
        )
    n = run_tune_worker(p, str(split_dir), worker_index)
    out.print(f"tune-worker: study now has {n} finished trials")


@app.command()
@handle_errors
def train(
    split_dir: Annotated[Path, typer.Option("--split-dir")],
    tuned: Annotated[Path, typer.Option(help="best parameters from tune (JSON)")],
    validation: Annotated[Path, typer.Option(help="validation report to attach to the run")],
    model: Annotated[Path, typer.Option(help="model pickle to write")],
    baselines: Annotated[Path, typer.Option(help="baselines pickle to write")],
    run_info: Annotated[Path, typer.Option("--run-info", help="MLflow run ids (JSON) to write")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Refit LightGBM with the best parameters and fit the baselines on the same split."""
    from driftloop.pipeline import run_train

    with err.status("training LightGBM and baselines", spinner="dots"):
        result = run_train(
            _load(params), str(split_dir), str(tuned), str(validation), str(model), str(baselines), str(run_info)
        )
    rows = ", ".join(
        f"{k}: " + " ".join(f"{m}={v:.4f}" for m, v in list(d.items())[:2]) for k, d in result["valid"].items()
    )
    out.print(f"train: validation {rows}")


@app.command()
@handle_errors
def evaluate(
    split_dir: Annotated[Path, typer.Option("--split-dir")],
    model: Annotated[Path, typer.Option()],
    baselines: Annotated[Path, typer.Option()],
    run_info: Annotated[Path, typer.Option("--run-info")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write (a DVC metric)")],
    plots: Annotated[Path, typer.Option(help="folder for plot files (DVC plots)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Test-set metrics for the model and the baselines, curves and plots."""
    from driftloop.pipeline import run_evaluate

    result = run_evaluate(
        _load(params), str(split_dir), str(model), str(baselines), str(run_info), str(metrics), str(plots)
    )
    _print_metrics(result)
    if result.get("positive_class") is not None:
        out.print(f"evaluate: positive class {result['positive_class']!r} ({result.get('positive_rule')})")
    for w in result.get("warnings", []):
        err.print(f"[yellow]warning:[/] {escape(w)}")


def _print_metrics(result: dict) -> None:
    from rich.table import Table

    names = list(result["test"])
    table = Table(title=f"test set ({result['rows']} rows, {result['task']})")
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    table.add_row(result.get("model", "lightgbm (tuned)"), *(f"{result['test'][n]:.4f}" for n in names))
    for b, m in result["baselines"].items():
        table.add_row(b, *(f"{m.get(n, float('nan')):.4f}" for n in names))
    out.print(table)


@app.command()
@handle_errors
def register(
    split_dir: Annotated[Path, typer.Option("--split-dir")],
    model: Annotated[Path, typer.Option()],
    run_info: Annotated[Path, typer.Option("--run-info")],
    metrics: Annotated[Path, typer.Option()],
    out_path: Annotated[Path, typer.Option("--out", help="registration result (JSON)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Register the model; it becomes @champion only if it beats the current one, else @challenger."""
    from driftloop.pipeline import run_register

    result = run_register(_load(params), str(split_dir), str(model), str(run_info), str(metrics), str(out_path))
    if not result["registered"]:
        out.print(f"register: skipped ({result['reason']})")
        return
    outcome = result.get("outcome", "")
    line = f"register: {result['model']} version {result['version']} -> @{result['alias']} ({outcome})"
    out.print(escape(f"{line}: {result['decision']['reason']}"), highlight=False)
    if outcome in ("insufficient_evidence", "below_baseline"):  # registered, deliberately not promoted
        label = "cannot judge" if outcome == "insufficient_evidence" else "not promoted"
        err.print(f"[bold yellow]{label}:[/] {escape(result['decision']['reason'])}", highlight=False)


@app.command()
@handle_errors
def run(
    force: Annotated[bool, typer.Option(help="rerun every stage")] = False,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process/--subprocess",
            help="execute the driftloop stage commands in this process (default) or one process per stage",
        ),
    ] = True,
    target: Annotated[list[str] | None, typer.Argument(help="stages to reproduce (default: all)")] = None,
):
    """Run the whole pipeline: ``dvc repro`` through DVC's Python API, the stages in one warm process.

    The same stages run as with ``dvc repro``, with the same outputs and ``dvc.lock``; only the
    imports and the MLflow store start-up are paid once instead of once per stage.
    """
    from dvc.exceptions import DvcException

    from driftloop import loop, runner
    from driftloop.errors import DriftloopError

    _recovered(loop.recover_retraining("."))  # an interrupted `monitor --retrain`: finished before anything runs
    try:
        stages = runner.reproduce(target, force=force, in_process=in_process)
    except DvcException as exc:
        raise DriftloopError(f"dvc repro failed: {runner.explain(exc)}") from None
    # the source stage is always_changed (it fingerprints the data source): it runs every time, changes nothing
    changed = [s for s in stages if not getattr(s, "always_changed", False)]
    if changed:
        out.print(f"run: {len(changed)} stage(s) ran")
    else:
        out.print("run: everything up to date" + (" (data source unchanged)" if stages else ""))


@app.command()
@handle_errors
def config(
    schema: Annotated[bool, typer.Option("--schema", help="print the JSON schema of params.yaml")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Print the effective configuration (after environment overrides), or its JSON schema."""
    from driftloop.config import mask_secrets, params_schema

    if schema:
        sys.stdout.write(json.dumps(params_schema(), indent=2) + "\n")
        return
    p = _load(params)  # passwords in connection URLs (params or environment) are shown as ***
    sys.stdout.write(json.dumps(mask_secrets(p.model_dump(mode="json", by_alias=True)), indent=2) + "\n")


@app.command()
@handle_errors
def ui(
    port: Annotated[int, typer.Option()] = 5000,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Start the MLflow UI on 127.0.0.1 against the configured tracking store."""
    import subprocess

    p = _load(params)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        p.base.tracking_uri,
    ]
    from driftloop.config import mask_url

    out.print(f"MLflow UI on http://127.0.0.1:{port} (store: {mask_url(p.base.tracking_uri)}); Ctrl+C to stop")
    raise typer.Exit(subprocess.call(cmd))


ExpectOpt = typer.Option(
    "--expect-current",
    help="compare-and-set: move @champion only if it is still this version (`none`: no champion); "
    "else exit 1 and change nothing",
)


@app.command()
@handle_errors
def promote(
    version: Annotated[str, typer.Argument(help="model version to make @champion")],
    reason: Annotated[str, typer.Option(help="why (recorded in the audit trail)")] = "manual promotion",
    expect_current: Annotated[str | None, ExpectOpt] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Make VERSION the @champion (recorded: who, when, why, from which version)."""
    from driftloop import register as reg
    from driftloop import tracking

    p = _load(params)
    expect = reg.ANY if expect_current is None else expect_current
    rec = reg.promote(tracking.connect(p), p, version, reason, expect=expect)
    out.print(f"promote: @champion {rec['from_version'] or 'none'} -> {rec['to_version']}")


@app.command()
@handle_errors
def rollback(
    reason: Annotated[str, typer.Option(help="why (recorded in the audit trail)")] = "manual rollback",
    expect_current: Annotated[str | None, ExpectOpt] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Move @champion back to the version it replaced (read from the audit chain; twice undoes two moves)."""
    from driftloop import register as reg
    from driftloop import tracking

    p = _load(params)
    expect = reg.ANY if expect_current is None else expect_current
    rec = reg.rollback(tracking.connect(p), p, reason, expect=expect)
    out.print(f"rollback: @champion {rec['from_version'] or 'none'} -> {rec['to_version']}")


@app.command()
@handle_errors
def history(
    params: ParamsOpt = DEFAULT_PARAMS,
    limit: Annotated[int, typer.Option()] = 20,
    show_all: Annotated[
        bool, typer.Option("--all", help="also list interrupted moves (state aborted), marked")
    ] = False,
):
    """The committed alias moves of the model, newest first (an interrupted move is recovered first)."""
    from rich.table import Table

    from driftloop import register as reg
    from driftloop import tracking

    p = _load(params)
    client = tracking.connect(p)
    for rec in reg.recover(client, p):
        err.print(
            escape(
                f"recovered an interrupted move: @{rec['alias']} {rec['from_version'] or 'none'} -> "
                f"{rec['to_version']} ({rec['action']}) {rec['recovery']}"
            ),
            highlight=False,
        )
    table = Table(title=f"alias moves of '{p.base.model_name}'")
    for col in ("when", "alias", "from", "to", "action", "who", "reason") + (("state",) if show_all else ()):
        table.add_column(col)
    for rec in reg.history(client, p, limit, include_aborted=show_all):
        row = [rec.get(k) or "" for k in ("when", "alias")]
        row += [rec.get("from_version") or "none", rec.get("to_version") or "none"]
        row += [rec.get(k) or "" for k in ("action", "who", "reason")]
        table.add_row(*map(escape, row), *((rec.get("state", ""),) if show_all else ()))
    out.print(table)


BatchArg = Annotated[
    str,
    typer.Argument(
        help="a CSV/Parquet file or glob, `sql:SELECT ...`, `sim://2025-03?rows=5000&covariate_shift=1`, or "
        "`predictions:` (monitor only: the rows `driftloop serve` logged since the last monitored period)"
    ),
]


MONITOR_EXIT = {"schema_violation": 3, "error": 4}
RETRAIN_FAILED_EXIT = 5


@app.command(
    epilog="Exit codes: 0 ok, warn, retrain or insufficient_data (the decision is printed); 1 bad input "
    "(unreadable batch, bad params); 3 schema violation; 4 monitoring error; 5 retraining failed (rolled back: "
    "the batch withdrawn, dvc.lock and outputs restored)."
)
@handle_errors
def monitor(
    batch: BatchArg,
    retrain: Annotated[
        bool, typer.Option(help="on a retrain decision, add the labeled batch and rerun the pipeline")
    ] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Monitor a new batch against the champion: schema, drift, prediction drift, performance; alert.

    Prints the decision with its numbers. An interrupted retraining is recovered first.
    """
    from driftloop import loop
    from driftloop.errors import DriftloopError

    p = _load(params)
    _recovered(loop.recover_retraining(".", p, if_running="raise" if retrain else "skip"))
    if batch == loop.PREDICTIONS_SPEC:  # the served rows since the last monitored period
        with err.status(f"monitoring the prediction log {p.serve.log_dir}", spinner="dots"):
            result, df = loop.monitor_prediction_log(p)
    else:
        label, df = loop.read_batch(batch, p)
        with err.status(f"monitoring {label} ({len(df)} rows)", spinner="dots"):
            result = loop.monitor_batch(p, label, df)
    _print_monitoring(result, p)
    if retrain and result["status"] == "retrain":
        from driftloop.pipeline import retrain_on

        with err.status(f"retraining on batch {result['batch_id']}", spinner="dots"):
            try:
                reg = retrain_on(
                    p, result["batch_id"], df, result["mlflow_run_id"], summary_json=result["summary_json"]
                )
            except Exception as exc:
                loop.record_retrain_outcome(result, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                if isinstance(exc, DriftloopError):  # refused before anything changed (e.g. already added)
                    raise
                err.print(
                    f"[bold red]retrain failed:[/] {escape(f'{type(exc).__name__}: {exc}')}\n"
                    "  nothing changed: the batch was withdrawn, dvc.lock and the outputs restored"
                )
                raise typer.Exit(RETRAIN_FAILED_EXIT) from None
        _print_retrain(reg)
    elif retrain and (kept := loop.keep_labeled_batch(p, result, df)) is not None:  # retrain.keep_labeled_batches
        out.print(
            f"labeled batch kept for the next retrain: {escape(str(kept))} (a new DVC data version; record it with "
            f"`git add {escape(str(kept))}.dvc {escape(str(kept.parent / '.gitignore'))} && git commit`)",
            soft_wrap=True,
        )
    raise typer.Exit(MONITOR_EXIT.get(result["status"], 0))


def _recovered(rec: dict | None) -> None:
    if not rec:
        return
    outcome = rec["outcome"]
    if rec["action"] == "rolled_forward":
        text = f"completed: version {outcome.get('version')} -> @{outcome.get('alias')}, trigger link recorded"
    else:
        text = "rolled back: the batch withdrawn, dvc.lock and the outputs restored"
    batch = escape(rec["batch_id"])
    err.print(f"[yellow]recover:[/] an interrupted retraining of batch {batch} was {text}", soft_wrap=True)
    for note in outcome.get("notes") or []:
        err.print(f"  [yellow]note:[/] {escape(note)}", soft_wrap=True)


def _print_monitoring(result: dict, p) -> None:
    """The decision and the numbers behind it: drift share, the most drifted columns, prediction drift,
    performance and its drop."""
    from rich.table import Table

    status = result["status"]
    colour = {"ok": "green", "warn": "yellow", "insufficient_data": "yellow"}.get(status, "red")
    out.print(
        f"monitor: batch [bold]{escape(result['batch_id'])}[/] ({result.get('rows', 0)} rows) vs "
        f"{escape(str(result.get('model')))} v{result.get('champion_version')}: [bold {colour}]{status.upper()}[/]"
    )
    for reason in result.get("decision", {}).get("reasons", []):
        out.print(f"  - {escape(str(reason))}")
    mp = p.monitor
    drift = result.get("drift")
    if drift and status not in ("schema_violation", "error"):
        out.print(
            f"  drift share [bold]{drift['drift_share']:.2f}[/] ({drift['n_drifted']}/{drift['n_columns']} columns;"
            f" warn >= {mp.drift_share_warn:.2f}, retrain >= {mp.drift_share_retrain:.2f})"
        )
        cols = sorted(drift.get("columns", []), key=lambda c: -((c.get("score") or 0) / (c.get("threshold") or 1)))
        top = [c for c in cols if c.get("drifted")][:5] or cols[:3]
        if top:
            table = Table(title="most drifted columns" if top[0].get("drifted") else "top columns (none drifted)")
            for name, justify in (("column", "left"), ("test", "left"), ("score", "right"), ("threshold", "right")):
                table.add_column(name, justify=justify)
            table.add_column("drifted")
            for c in top:
                table.add_row(
                    escape(str(c["column"])),
                    escape(str(c.get("stattest"))),
                    f"{c['score']:.4f}",
                    f"{c.get('threshold') or 0:.3g}",
                    "[red]yes[/]" if c.get("drifted") else "no",
                )
            out.print(table)
    pred = result.get("prediction_drift")
    if pred and status not in ("schema_violation", "error"):
        if pred.get("skipped"):
            out.print(f"  prediction drift: not tested ({escape(str(pred['skipped']))})")
        else:
            word = "[red]drifted[/]" if pred.get("drifted") else "no drift"
            out.print(
                f"  prediction drift: {word} (score {pred.get('score') or 0:.4f}, threshold "
                f"{pred.get('threshold') or 0:.3g}, {escape(str(pred.get('stattest')))})"
            )
    perf = result.get("performance")
    if perf and perf.get("value") is not None:
        text = f"  performance: {perf['metric']} {perf['value']:.4f} on {perf.get('n_rows')} labeled rows"
        if perf.get("drop") is not None:
            text += (
                f" (reference {perf['reference']:.4f}, drop {perf['drop']:+.4f} {perf.get('drop_kind')};"
                f" retrain >= {mp.performance_drop_retrain})"
            )
        out.print(text)
    elif status in ("ok", "warn", "retrain"):
        out.print("  performance: no labels in the batch")
    est = result.get("estimated_performance") or {}
    if est.get("roc_auc") is not None and est.get("roc_auc_low") is not None:
        text = f"  estimated roc_auc (CBPE, no labels): {est['roc_auc']:.4f} [{est['roc_auc_low']:.4f}, "
        text += f"{est['roc_auc_high']:.4f}]"
        if est.get("realized_roc_auc") is not None:
            text += f"; realized {est['realized_roc_auc']:.4f}"
        out.print(text)
    out.print(f"  report: {result['report_html']}\n  summary: {result['summary_json']}")


def _print_retrain(reg: dict) -> None:
    outcome = reg.get("retrain") or {}
    if outcome.get("status") != "registered":
        out.print(f"retrain: no new version ({escape(str(outcome.get('reason')))})")
        return
    promoted = "[green]promoted to @champion[/]" if outcome.get("promoted") else f"@{outcome.get('alias')}"
    out.print(f"retrain: version {outcome.get('version')} {promoted}: {escape(str(outcome.get('reason')))}")
    out.print(f"  working tree: {escape(str(outcome.get('working_tree')))}")
    if not outcome.get("promoted"):
        out.print(f"  to make it champion anyway: driftloop promote {outcome.get('version')} --reason '...'")
    labeled = outcome.get("labeled_batch")
    out.print(
        "  to record this data version: "
        f"git add dvc.lock {labeled}.dvc {Path(str(labeled)).parent}/.gitignore reports && "
        f"git commit -m 'retrain on batch {reg.get('batch_id')}'"
    )


@app.command()
@handle_errors
def recover(
    force: Annotated[
        bool, typer.Option(help="recover even if the retraining's process looks alive (e.g. it ran on another host)")
    ] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Finish an interrupted retraining (`monitor --retrain` killed): forward if its model was registered
    (the batch stays, with its trigger link), back otherwise (the batch withdrawn, dvc.lock and the outputs
    restored). `driftloop run`, `driftloop monitor` and the monitoring flow do this on start too."""
    from driftloop import loop

    rec = loop.recover_retraining(".", _load(params), force=force)
    if rec is None:
        out.print("recover: no interrupted retraining")
        return
    _recovered(rec)
    out.print(f"recover: batch {rec['batch_id']} {rec['action'].replace('_', ' ')}")


@app.command()
@handle_errors
def score(
    batch: BatchArg,
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file for the predictions")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Score a batch with @champion; the predictions carry the model version that made them."""
    from driftloop import loop

    p = _load(params)
    label, df = loop.read_batch(batch, p)
    result = loop.score_batch(p, df, out_path, where=f"batch {label!r}")
    out.print(f"score: {result['rows']} rows scored by {result['model']} v{result['version']} -> {result['out']}")


@app.command()
@handle_errors
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind (default: serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: serve.port)")] = None,
    alias: Annotated[str | None, typer.Option(help="registry alias to serve and follow (default: serve.alias)")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="errors also show expected kinds and values")] = False,
    no_log: Annotated[bool, typer.Option("--no-log", help="do not write the prediction log")] = False,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Serve the model behind an alias over REST (/predict, /invocations, /docs); hot-swaps when the alias moves."""
    from driftloop.serve import run as run_server

    p = _load(params)
    run_server(
        p,
        host=host,
        port=port,
        alias=alias,
        debug=True if debug else None,
        log_predictions=False if no_log else None,
        echo=out.print,
    )


labels_app = typer.Typer(no_args_is_help=True, help="Delayed ground truth for the prediction log.")
app.add_typer(labels_app, name="labels")


@labels_app.command("add")
@handle_errors
def labels_add(
    file: Annotated[str, typer.Argument(help="CSV/Parquet file with the key column and the target column")],
    key: Annotated[str, typer.Option("--key", help="column that identifies a served row (e.g. an id column)")],
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """Attach labels to served predictions by key (monitoring then measures performance on real traffic)."""
    from driftloop.io import read_table
    from driftloop.serve.predlog import add_labels

    p = _load(params)
    res = add_labels(p.serve.log_dir, read_table(file), key, p.base.target, where=file)
    out.print(f"labels: {res['labels']} labels added ({res['matched_rows']} logged rows match) -> {res['file']}")


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[Path | None, typer.Option("--out", help="output directory (default: demo.output_dir)")] = None,
    months: Annotated[int | None, typer.Option(help="months to simulate (default: demo.months)")] = None,
    rows_per_month: Annotated[int | None, typer.Option(help="rows per month (default: demo.rows_per_month)")] = None,
    initial_rows: Annotated[int | None, typer.Option(help="first training rows (default: demo.initial_rows)")] = None,
    drift_from: Annotated[int | None, typer.Option(help="first drifted month (default: demo.drift_from_month)")] = None,
    n_trials: Annotated[int | None, typer.Option(help="Optuna trials per training (default: demo.n_trials)")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
):
    """A simulated production year: monitor each month, alert, retrain; timeline vs a model never retrained."""
    from driftloop.demo import rich_table, run_demo

    result = run_demo(
        out_dir,
        params_path=params,
        months=months,
        rows_per_month=rows_per_month,
        initial_rows=initial_rows,
        drift_from_month=drift_from,
        n_trials=n_trials,
        console=out,
    )
    out.print(rich_table(result))
    files = ("timeline.html", "timeline.png", "summary.json")
    out.print("demo: " + "  ".join(str(result.out_dir / f) for f in files))


if __name__ == "__main__":  # pragma: no cover
    app()
