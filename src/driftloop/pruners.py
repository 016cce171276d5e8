"""The tune stage's pruner: stop a trial that is clearly behind the best finished trial at the same round.

Optuna's median pruner compares a trial with the median of the other trials at the same boosting round.
With the learning rate in the search space that always stops the slow learners early: a trial at
lr 0.02 is behind one at lr 0.2 for hundreds of rounds even when it ends better. TPE then learns that
low learning rates are "bad" and the search drifts to fast learners (benchmarks/README.md: on 100k rows
the median pruner's studies ended 0.0007-0.0016 AUC below the unpruned ones on every seed tried).

``BestCurvePruner`` compares the trial with one curve only, the best finished trial's, and only prunes
when the trial's best value so far is worse than that curve at the same round by more than a margin
(a fraction of the reference value, so it means the same for AUC, log loss or RMSE). Once the incumbent
is itself a slow learner, the trials like it are judged against a curve that also starts slow; fewer
trials are pruned, and fewer good regions are written off. The pruner keeps no state of its own: it
reads the study, so it resumes from a journal file and serves several workers on one database.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


class BestCurvePruner(optuna.pruners.BasePruner):
    """Prune when the trial's best value so far is worse than the best COMPLETE trial's value at the
    same step by more than ``margin`` × |that value|; not before ``n_warmup_steps`` nor before
    ``n_startup_trials`` trials are complete. If the best trial stopped before this step (early
    stopping), its best reported value is the reference; a best trial with no reported values (e.g.
    from a study run without pruning) is compared by its final value.
    """

    def __init__(self, margin: float = 0.006, n_startup_trials: int = 5, n_warmup_steps: int = 30) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = margin
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.n_warmup_steps:
            return False
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < max(self.n_startup_trials, 1):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best_of = max if maximize else min
        incumbent = best_of(complete, key=lambda t: t.value)
        curve = incumbent.intermediate_values
        reference = curve[step] if step in curve else best_of(curve.values()) if curve else incumbent.value
        current = best_of(trial.intermediate_values.values())
        slack = self.margin * abs(reference)
        return current < reference - slack if maximize else current > reference + slack
