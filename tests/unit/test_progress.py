"""Progress people can see: the stage lines of `driftloop run` (and of the retrain path, the Prefect flow
and the demo), their "still running" lines, and the month lines of the demo."""

from __future__ import annotations

import io
import re
import time

import pytest

from driftloop import runner
from driftloop.runner import StageEvent, StageProgress, clock, stage_line


def _collect(**kwargs) -> tuple[StageProgress, list[str]]:
    lines: list[str] = []
    return StageProgress(echo=lines.append, **kwargs), lines


def test_clock():
    assert [clock(s) for s in (0, 5.9, 65, 3599, 3600, 7325)] == ["0:00", "0:05", "1:05", "59:59", "1:00:00", "2:02:05"]


def test_plain_lines_keep_dvcs_wording_with_k_of_n_and_times():
    ev = StageEvent("start", 5, 8, "tune", 0.0, 72.0)
    assert stage_line(ev, "in process") == "[5/8] Running stage 'tune' (in process), 1:12 elapsed:"
    assert stage_line(ev, "subprocess") == "[5/8] stage 'tune' in a subprocess, 1:12 elapsed:"
    done = StageEvent("done", 5, 8, "tune", 41.26, 113.0)
    assert stage_line(done) == "Stage 'tune' done in 41.3 s [5/8, 1:53 elapsed]"
    assert stage_line(StageEvent("failed", 2, 8, "ingest", 0.4, 1.0)).startswith("Stage 'ingest' failed after 0.4 s")
    assert "unchanged, skipped" in stage_line(StageEvent("skipped", 1, 8, "source", 0.2, 0.2))
    running = stage_line(StageEvent("running", 5, 8, "tune", 60.0, 72.0))
    assert running == "[5/8] stage 'tune' still running: 1:00 so far, 1:12 elapsed"
    # the benchmarks read the stage times from the end lines
    assert re.match(r"^Stage '(\w+)' done in ([\d.]+) s", stage_line(StageEvent("done", 1, 1, "a", 2.0, 2.0)))


def test_stage_k_of_n_from_the_plan_and_past_it():
    progress, _ = _collect(plan=["ingest", "split", "tune"])
    assert progress.position("split") == (2, 3)
    assert progress.position("other") == (4, 4)  # not in the plan: counted on after it
    assert progress.position("another") == (5, 5)
    assert progress.position("other") == (4, 4)


def test_a_stage_says_when_it_starts_and_how_long_it_took():
    progress, lines = _collect(plan=["ingest", "split"], heartbeat=None)
    with progress.stage("split", "in process"):
        progress.note("> driftloop split")
    assert lines[0].startswith("[2/2] Running stage 'split' (in process), 0:0")
    assert lines[1] == "> driftloop split"
    assert re.fullmatch(r"Stage 'split' done in \d+\.\d s \[2/2, 0:0\d elapsed\]", lines[2])

    with pytest.raises(RuntimeError), progress.stage("ingest"):
        raise RuntimeError("boom")
    assert lines[-1].startswith("Stage 'ingest' failed after")

    with progress.stage("ingest") as running:
        running.skip()
    assert "unchanged, skipped" in lines[-1]


def test_a_long_stage_is_not_silent_and_backs_off():
    progress, lines = _collect(plan=["tune"], heartbeat=0.1, heartbeat_max=0.2)
    with progress.stage("tune"):
        time.sleep(0.75)
    running = [line for line in lines if "still running" in line]
    assert 2 <= len(running) <= 5, lines  # after 0.1, 0.3, 0.5, 0.7 s (the interval doubles up to its cap)
    assert lines[-1].startswith("Stage 'tune' done in")  # the ticker stopped before the end line
    n = len(lines)
    time.sleep(0.3)
    assert len(lines) == n  # nothing after the end


def test_listeners_see_every_event_while_observing():
    seen: list[StageEvent] = []
    progress, _ = _collect(plan=["a", "b"], heartbeat=None)
    with runner.observe(seen.append), progress.stage("b"):
        pass
    with progress.stage("a"):  # no longer observed
        pass
    assert [(e.kind, e.index, e.total, e.name) for e in seen] == [("start", 2, 2, "b"), ("done", 2, 2, "b")]


def test_on_a_terminal_rich_lines_and_no_heartbeat_over_a_live_display():
    from rich.console import Console
    from rich.progress import Progress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    progress = StageProgress(["tune"], console=console, heartbeat=0.05)
    with progress.stage("tune", "in process"), Progress(console=console, transient=True):
        time.sleep(0.3)  # the stage's own display is on screen: the runner adds no line under it
    text = buf.getvalue()
    assert "1/1" in text and "tune" in text and "done in" in text
    assert "still running" not in text
    assert "\x1b[" in text  # styled


def test_the_default_output_is_plain_lines_on_stdout_when_not_a_terminal(capsys):
    progress = StageProgress(["x"], heartbeat=None)  # the CLI's stderr console: not a terminal under pytest
    with progress.stage("x", "in process"):
        pass
    out = capsys.readouterr().out
    assert "[1/1] Running stage 'x' (in process)" in out and "Stage 'x' done in" in out


def test_the_demo_month_line_and_stage_lines():
    from driftloop.demo import MonthRecord, _stage_reporter, month_line

    rec = MonthRecord(
        month=3,
        label="2025-03",
        drifted=True,
        batch_id="sim-2025-03",
        rows=1500,
        status="retrain",
        reasons=["drift"],
        drift_share=0.45,
        n_drifted=8,
        prediction_drift=True,
        target_drift=False,
        version_in_force="1",
        auc_retrained=0.8123,
        auc_never_retrained=0.8123,
        report_html=None,
        seconds_monitor=2.0,
    )
    line = month_line(rec, 12, 75)
    assert line == (
        "demo: month 3/12 2025-03 (drift): retrain, drift share 0.45, AUC v1 0.812 / never retrained 0.812 "
        "[1:15 elapsed]"
    )
    said: list[str] = []
    listener = _stage_reporter(said.append, "demo:   ")
    listener(StageEvent("start", 5, 8, "tune", 0, 0))
    listener(StageEvent("done", 5, 8, "tune", 12.34, 20))
    listener(StageEvent("running", 6, 8, "train", 60, 80))
    assert said == ["demo:   stage 5/8 tune done in 12.3 s", "demo:   stage 6/8 train still running (1:00)"]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("binary", {"roc", "precision_recall", "calibration", "confusion"}),
        ("multiclass", {"confusion"}),
        ("regression", {"predicted_vs_actual"}),
    ],
)
def test_curves_are_written_as_csv_and_png(tmp_path, task, expected):
    import numpy as np

    from driftloop.evaluate import write_curves

    rng = np.random.default_rng(0)
    n = 300
    if task == "binary":
        y, scores, classes = rng.integers(0, 2, n), rng.random(n), [0, 1]
    elif task == "multiclass":
        y, scores, classes = rng.integers(0, 3, n), rng.random((n, 3)), ["a", "b", "c"]
    else:
        y, scores, classes = rng.random(n), rng.random(n), []
    written = write_curves(task, y, scores, 0.5, classes, tmp_path, 100, 5)
    assert {p.name for p in written} == {f"{name}.{ext}" for name in expected for ext in ("csv", "png")}
    for name in expected:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    assert not plt.get_fignums()  # every figure closed


def _study_with_progress(n: int, every: float, prune_every: int = 3):
    import optuna

    from driftloop.runner import TrialProgress

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lines: list[str] = []
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number % prune_every == prune_every - 1:
            raise optuna.TrialPruned()
        return x

    with TrialProgress(n, echo=lines.append, every=every) as progress:
        study.optimize(objective, n_trials=n, callbacks=[progress])
    return study, lines


def test_trial_lines_count_complete_pruned_best_and_eta():
    study, lines = _study_with_progress(6, every=0)
    assert len(lines) == 6
    assert re.fullmatch(
        r"tune: trial 1/6 \(1 complete, 0 pruned\), best 0\.\d{5}, \d+:\d\d elapsed, ETA \d+:\d\d", lines[0]
    )
    assert lines[2].startswith("tune: trial 3/6 (2 complete, 1 pruned)")
    assert lines[-1].startswith("tune: trial 6/6 (4 complete, 2 pruned)") and "ETA" not in lines[-1]
    assert f"best {study.best_value:.5f}" in lines[-1]


def test_trial_lines_are_throttled_but_the_first_and_last_always_shown():
    _, lines = _study_with_progress(8, every=1e9)
    assert [ln.split(" (")[0] for ln in lines] == ["tune: trial 1/8", "tune: trial 8/8"]


def test_no_best_before_a_trial_completes():
    _, lines = _study_with_progress(3, every=0, prune_every=1)  # every trial pruned
    assert all("best" not in ln for ln in lines) and lines[-1].startswith("tune: trial 3/3 (0 complete, 3 pruned)")
