"""BestCurvePruner: a trial is stopped only when clearly behind the best finished trial at the same round."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from driftloop.config import TuneParams
from driftloop.pruners import BestCurvePruner
from driftloop.tune import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)
FLOAT = optuna.distributions.FloatDistribution(0, 1)


def _study(direction="maximize", curves=(), margin=0.01, startup=2, warmup=30):
    """A study whose COMPLETE trials have the given (final value, {step: value}) curves."""
    study = optuna.create_study(
        direction=direction, pruner=BestCurvePruner(margin=margin, n_startup_trials=startup, n_warmup_steps=warmup)
    )
    for value, curve in curves:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"x": 0.5},
                distributions={"x": FLOAT},
                intermediate_values=curve,
            )
        )
    return study


def _verdicts(study, reports):
    """should_prune() after each (step, value) reported by a new trial."""
    trial = study.ask({"x": FLOAT})
    out = []
    for step, value in reports:
        trial.report(value, step)
        out.append(trial.should_prune())
    return out


# an incumbent that learns slowly (0.80 at round 50 ... 0.90 at round 400) and a fast, worse one
SLOW_BEST = (0.90, {50: 0.80, 100: 0.85, 200: 0.88, 400: 0.90})
FAST = (0.86, {50: 0.86, 100: 0.86})


def test_prunes_only_a_trial_clearly_behind_the_best_curve_at_the_same_round():
    study = _study(curves=[SLOW_BEST, FAST])  # the best is the slow learner: trials are judged against its curve
    # a fast learner ahead of the slow incumbent early on is kept, even though it is below the best's final value
    assert _verdicts(study, [(50, 0.83), (100, 0.855)]) == [False, False]
    # within the margin (1 % of 0.88) at round 200: kept; clearly behind: stopped
    assert _verdicts(study, [(200, 0.875)]) == [False]
    assert _verdicts(study, [(200, 0.86)]) == [True]


def test_the_running_best_counts_not_the_last_value():
    study = _study(curves=[SLOW_BEST, FAST])
    # dipped below the line at round 200 but had been above it at round 100: its best so far (0.9) counts
    assert _verdicts(study, [(100, 0.90), (200, 0.86)]) == [False, False]


def test_past_the_end_of_the_best_curve_its_best_value_is_the_reference():
    study = _study(curves=[SLOW_BEST, FAST])
    assert _verdicts(study, [(600, 0.895)]) == [False]  # 0.90 - 1 %: kept
    assert _verdicts(study, [(600, 0.88)]) == [True]


def test_no_pruning_before_the_warm_up_nor_before_enough_complete_trials():
    assert _verdicts(_study(curves=[SLOW_BEST, FAST]), [(25, 0.10)]) == [False]  # round 25 < warm-up 30
    assert _verdicts(_study(curves=[SLOW_BEST]), [(50, 0.10)]) == [False]  # 1 complete trial < 2
    assert _verdicts(_study(curves=[SLOW_BEST, FAST], startup=0), [(50, 0.10)]) == [True]


def test_minimised_metrics_and_a_best_trial_without_a_curve():
    loss = _study(direction="minimize", curves=[(0.30, {50: 0.40, 100: 0.30}), (0.35, {50: 0.35})])
    assert _verdicts(loss, [(100, 0.302)]) == [False]  # within 1 % of 0.30
    assert _verdicts(loss, [(100, 0.32)]) == [True]
    # the best trial comes from a study run without pruning: compared by its final value
    flat = _study(curves=[(0.90, {}), (0.80, {})])
    assert _verdicts(flat, [(50, 0.895)]) == [False]
    assert _verdicts(flat, [(50, 0.85)]) == [True]


def test_a_negative_margin_is_rejected():
    with pytest.raises(ValueError, match="margin"):
        BestCurvePruner(margin=-0.1)


def test_params_choose_the_pruner():
    assert isinstance(make_pruner(TuneParams()), BestCurvePruner)
    assert make_pruner(TuneParams(pruner_margin=0.02)).margin == 0.02
    assert isinstance(make_pruner(TuneParams(pruner="median")), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(TuneParams(pruning=False)), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="pruner"):
        TuneParams(pruner="hyperband")
