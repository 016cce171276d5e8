"""Register stage: the promotion gate and every alias move, recorded.

A new version becomes ``@champion`` only if the test (and validation) split holds enough evidence to judge
(``register.min_test_events``), it beats the dummy baseline, and it beats the current champion on the *same*
test set by ``register.min_improvement`` (optionally with a bootstrap interval above zero); otherwise it becomes
``@challenger``, with the outcome (``decision``) saying why. The comparison is computed before anything is
written, so a failure leaves the registry and aliases as they were.

Alias moves are compare-and-set under a lock, intent then commit:

- every move of an alias of one registered model is serialized: ``pg_advisory_lock`` on a hash of the model
  name when the registry store (or ``$DRIFTLOOP_REGISTRY_LOCK_URL``) is PostgreSQL, else a file lock next to
  the SQLite database (``<db>.<model>.registry.lock``), or for other stores (a tracking server, a file store)
  ``~/.cache/driftloop/locks/<hash of the store URI>-<model>.registry.lock`` (one machine only: point
  ``DRIFTLOOP_REGISTRY_LOCK_URL`` at a PostgreSQL database to serialize movers on several machines);
- inside the lock the current alias is compared with the one the mover expects (``--expect-current``, or the
  champion the gate compared against): if it moved, nothing is written;
- the audit record (a run in ``<experiment>-registry``) is written first with ``state=intent`` and the full
  record, then the alias and the version tags are set, then the record is marked ``state=committed`` and its
  run FINISHED;
- ``recover`` (run at the start of every registry operation) completes an interrupted move whose alias was set
  (roll forward) or marks it ``aborted`` when the alias never moved.

Invariant: ``@champion`` equals the ``to_version`` of the last committed ``champion`` record; ``history`` lists
committed records, and ``rollback`` undoes the last move that was not itself undone, read from that chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import DriftloopError, RegistryError
from driftloop.faults import fault_point, register_point
from driftloop.model import HIGHER_IS_BETTER, PRIMARY_METRIC, DriftloopModel

CHAMPION, CHALLENGER = "champion", "challenger"

# the gate's outcomes (``Decision.decision``, the version tag ``driftloop.decision``)
PROMOTED = "promoted"
NOT_BETTER = "not_better"
NOT_COMPARABLE = "not_comparable"
INSUFFICIENT_EVIDENCE = "insufficient_evidence"
BELOW_BASELINE = "below_baseline"

# audit record states (tag ``driftloop.audit.state``)
INTENT, COMMITTED, ABORTED = "intent", "committed", "aborted"

LOCK_URL_ENV = "DRIFTLOOP_REGISTRY_LOCK_URL"

# fault points: every alias move (per command) at each step boundary, the register stage before its move,
# and recovery's roll forward
_MOVERS = {"gate": "driftloop register", "manual_promote": "driftloop promote", "rollback": "driftloop rollback"}
_POINT_PREFIX = {"gate": "registry.gate", "manual_promote": "registry.promote", "rollback": "registry.rollback"}
_STEPS = ("after_intent", "after_alias", "after_tags", "before_commit")
FAULTS = {
    action: {step: register_point(f"{_POINT_PREFIX[action]}.{step}", cmd) for step in _STEPS}
    for action, cmd in _MOVERS.items()
}
AFTER_VERSION = register_point("registry.gate.after_version", "driftloop register")
RECOVER_BEFORE_COMMIT = register_point(
    "registry.recover.before_commit", "driftloop promote/rollback/history/register after a killed move"
)


def gate_metric(params: Params, task: str) -> str:
    m = params.register.metric
    return PRIMARY_METRIC[task] if m == "auto" else m


# working memory of one chunk of the vectorized bootstrap: the resample-count matrix (chunk x rows, float64)
# and the few temporaries of the same order the rank metrics need
_BOOTSTRAP_BYTES = 48 << 20
_BOOTSTRAP_TEMPS = 6


def _weighted_metric(task: str, metric: str, y: np.ndarray, scores: np.ndarray):
    """``f(W) -> values``: the metric of every resample in ``W`` (resamples x rows, integer counts), equal to
    ``metric_value`` on the explicitly repeated rows; None when the metric/data have no vectorized form.

    A binary resample with a single class is not computed (nan): the caller hands it to ``metric_value``.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(y)
    n = len(y)
    if n == 0 or len(s) != n or not np.isfinite(s).all():
        return None
    if task == "binary" and metric in ("roc_auc", "pr_auc", "log_loss", "brier"):
        if s.ndim != 1 or not np.isin(y, (0, 1)).all():
            return None
        p = np.clip(s, 1e-15, 1 - 1e-15)  # as metric_value
        pos = y == 1
        if metric == "log_loss":  # sklearn: [1 - p, p] clipped to [eps, 1 - eps], -log of the true class
            eps = np.finfo(float).eps
            loss = -np.log(np.clip(np.where(pos, p, 1 - p), eps, 1 - eps))
            return lambda W: W @ loss / W.sum(axis=1)
        if metric == "brier":  # sklearn: half the squared error summed over the two one-hot columns
            t = pos.astype(float)
            loss = ((1 - t) - (1 - p)) ** 2 + (t - p) ** 2
            return lambda W: (W @ loss / W.sum(axis=1)) * 0.5
        # rank metrics: per resample, the weight of positives and negatives at each distinct score (ascending)
        uniq, group = np.unique(p, return_inverse=True)
        code = 2 * group.ravel() + pos
        width = 2 * len(uniq)

        def rank(W: np.ndarray) -> np.ndarray:
            cells = np.empty((len(W), width))
            for j, w in enumerate(W):
                cells[j] = np.bincount(code, weights=w, minlength=width)
            neg, hit = cells[:, 0::2], cells[:, 1::2]
            n_pos, n_neg = hit.sum(axis=1), neg.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                if metric == "roc_auc":  # Mann-Whitney: pairs ranked correctly, ties count 1/2 (exact in float64)
                    below = np.cumsum(neg, axis=1) - neg
                    out = (hit * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
                else:  # average precision: sum over thresholds (descending) of recall step x precision
                    hit, neg = hit[:, ::-1], neg[:, ::-1]
                    tp = np.cumsum(hit, axis=1)
                    called = tp + np.cumsum(neg, axis=1)
                    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
                    out = (hit * precision).sum(axis=1) / n_pos
            out[(n_pos == 0) | (n_neg == 0)] = np.nan
            return out

        return rank
    if task == "regression" and metric in ("rmse", "mae"):
        if s.ndim != 1 or not np.isfinite(np.asarray(y, dtype=float)).all():
            return None
        err = np.asarray(y, dtype=float) - s
        if metric == "rmse":
            sq = err**2
            return lambda W: np.sqrt(W @ sq / W.sum(axis=1))
        ab = np.abs(err)
        return lambda W: W @ ab / W.sum(axis=1)
    if task == "multiclass" and metric in ("log_loss", "accuracy"):
        if s.ndim != 2 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= s.shape[1]:
            return None
        if metric == "accuracy":
            hit = (s.argmax(axis=1) == y).astype(float)
            return lambda W: W @ hit / W.sum(axis=1)
        eps = np.finfo(float).eps  # compute_metrics clips to [1e-15, 1], sklearn then to [eps, 1 - eps]
        loss = -np.log(np.clip(np.clip(s, 1e-15, 1)[np.arange(n), y], eps, 1 - eps))
        return lambda W: W @ loss / W.sum(axis=1)
    return None


def bootstrap_improvement(
    task: str,
    metric: str,
    y: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    *,
    n: int,
    confidence: float,
    seed: int,
    thresholds: tuple[float | None, float | None] = (None, None),
):
    """Point estimate and paired-bootstrap interval of the improvement (positive = new is better).

    Each resample draws ``len(y)`` row indices with replacement (the same stream for every metric). The
    common gate metrics are computed for a chunk of resamples at once from the resample counts
    (``_weighted_metric``); the others, and resamples a vectorized metric cannot handle, call
    ``metric_value`` on the resampled rows. Resamples where either metric is undefined (nan) are skipped.
    """
    from driftloop.evaluate import metric_value

    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    point = sign * (
        metric_value(task, metric, y, new, thresholds[0]) - metric_value(task, metric, y, old, thresholds[1])
    )
    if n == 0:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    rows = len(y)
    fast_new = _weighted_metric(task, metric, y, new)
    fast_old = _weighted_metric(task, metric, y, old) if fast_new is not None else None
    a, b = np.empty(n), np.empty(n)  # the metric of the new / old model on each resample
    if fast_new is None or fast_old is None:
        for i in range(n):
            idx = rng.integers(0, rows, rows)
            a[i] = metric_value(task, metric, y[idx], new[idx], thresholds[0])
            b[i] = metric_value(task, metric, y[idx], old[idx], thresholds[1])
    else:
        chunk = max(1, min(n, _BOOTSTRAP_BYTES // (8 * _BOOTSTRAP_TEMPS * rows)))
        for start in range(0, n, chunk):
            W = np.empty((min(chunk, n - start), rows))
            for j in range(len(W)):  # resample counts: the same indices as the loop above would draw
                W[j] = np.bincount(rng.integers(0, rows, rows), minlength=rows)
            sl = slice(start, start + len(W))
            a[sl], b[sl] = fast_new(W), fast_old(W)
            for j in np.flatnonzero(np.isnan(a[sl]) | np.isnan(b[sl])):  # e.g. a single class: as before
                idx = np.repeat(np.arange(rows), W[j].astype(np.intp))
                a[start + j] = metric_value(task, metric, y[idx], new[idx], thresholds[0])
                b[start + j] = metric_value(task, metric, y[idx], old[idx], thresholds[1])
    keep = (a == a) & (b == b)
    if not keep.any():
        return point, float("nan"), float("nan")
    diffs = sign * (a[keep] - b[keep])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


@dataclass
class Decision:
    alias: str  # champion | challenger
    reason: str
    metric: str
    new_value: float
    champion_version: str | None = None
    champion_value: float | None = None
    improvement: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    test_rows: int = 0
    decision: str = ""  # PROMOTED | NOT_BETTER | NOT_COMPARABLE | INSUFFICIENT_EVIDENCE | BELOW_BASELINE
    baseline_value: float | None = None  # the dummy baseline's gate metric on the same test rows
    events: dict = field(default_factory=dict)  # split -> {class or "rows": count}, what the evidence check saw
    # the gate's rows: how many test rows neither model trained/validated on, their provenance, the overlap check
    gate_rows: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def count_events(task: str, y: np.ndarray, classes: list) -> dict[str, int]:
    """What the gate counts as evidence: rows per class (classification), rows (regression)."""
    if task == "regression":
        return {"rows": int(len(y))}
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    return {str(c): int(n) for c, n in zip(classes, counts, strict=False)}


def _evidence_shortfall(task: str, events: dict[str, dict[str, int]], minimum: int) -> str | None:
    """A message naming the counts and the param when any split holds fewer than ``minimum`` events."""
    if minimum <= 0:
        return None
    short = {split: c for split, c in events.items() if c and min(c.values()) < minimum}
    if not short:
        return None

    def describe(split: str, c: dict[str, int]) -> str:
        if task == "regression":
            return f"the {split} split has {c['rows']:,} rows"
        if task == "binary" and len(c) == 2:
            (neg, n_neg), (pos, n_pos) = c.items()
            return f"the {split} split has {n_pos:,} positives ({pos!s}) and {n_neg:,} negatives ({neg!s})"
        return f"the {split} split has " + ", ".join(f"{n:,} of class {k}" for k, n in c.items())

    need = {
        "regression": f"at least {minimum} rows",
        "binary": f"at least {minimum} positives and {minimum} negatives",
    }.get(task, f"at least {minimum} rows of every class")
    return (
        "insufficient evidence to judge: "
        + "; ".join(describe(split, c) for split, c in events.items() if split in short)
        + f"; register.min_test_events={minimum} requires {need}. Registered as @{CHALLENGER}, not promoted "
        "(add data, or lower register.min_test_events)"
    )


def dummy_scores(task: str, y_train: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """The dummy baseline's scores on ``n`` rows: the training prior (as ``DummyClassifier(strategy="prior")``,
    ``DummyRegressor()``)."""
    y_train = np.asarray(y_train)
    if task == "regression":
        return np.full(n, float(np.mean(y_train)))
    freq = np.bincount(y_train.astype(np.int64), minlength=n_classes) / max(len(y_train), 1)
    if task == "binary":
        return np.full(n, float(freq[1]))
    return np.tile(freq, (n, 1))


# --------------------------------------------------------------------------- the fair gate: unseen rows only
SEEN_ROWS_ARTIFACT = "lineage/seen_rows.parquet"  # a model's train+valid row keys, logged with its run


def lineage_keys(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A 64-bit key per row over ``columns`` (numbers as float64, everything else as text), so the same row gets
    the same key whatever dtype a later pipeline run gave its column (int vs float, category vs object)."""
    norm = {}
    for c in columns:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            norm[c] = s.astype("float64")
        else:
            norm[c] = s.astype(object).where(s.notna(), None).astype(str)
    return pd.util.hash_pandas_object(pd.DataFrame(norm, index=df.index), index=False).to_numpy()


@dataclass
class SeenRows:
    """The rows a model was trained or validated on (``lineage_keys`` over ``columns``), from its lineage, and
    (``tested``) the keys of its test rows: together, every row of the data it came from."""

    keys: np.ndarray
    columns: list[str]
    source: str  # where the keys come from (e.g. "run <id>: lineage/seen_rows.parquet")
    tested: np.ndarray | None = None

    @classmethod
    def of(cls, frames: list[pd.DataFrame], source: str, test: pd.DataFrame | None = None) -> SeenRows:
        columns = [str(c) for c in frames[0].columns]
        keys = np.concatenate([lineage_keys(f, columns) for f in frames if len(f)]) if frames else np.array([])
        tested = None if test is None else np.unique(lineage_keys(test, columns).astype(np.uint64))
        return cls(np.unique(keys.astype(np.uint64)), columns, source, tested)

    def to_frame(self) -> pd.DataFrame:
        tested = np.array([], dtype=np.uint64) if self.tested is None else self.tested
        return pd.DataFrame(
            {
                "key": np.concatenate([self.keys, tested]).astype(np.uint64),
                "split": np.array(["trained"] * len(self.keys) + ["test"] * len(tested)),
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, columns: list[str], source: str) -> SeenRows:
        split = frame["split"].astype(str).to_numpy() if "split" in frame else np.full(len(frame), "trained")
        keys = frame["key"].to_numpy(dtype="uint64")
        tested = keys[split == "test"] if (split == "test").any() else None
        return cls(keys[split == "trained"], [str(c) for c in columns], source, tested)

    def overlap(self, df: pd.DataFrame, *, known: bool = False) -> np.ndarray | None:
        """Per row of ``df``: seen by this model (None: ``df`` lacks a key column, the check cannot be made);
        ``known``: its test rows count too (the rows of the data it came from)."""
        if any(c not in df.columns for c in self.columns):
            return None
        keys = self.keys if not known or self.tested is None else np.concatenate([self.keys, self.tested])
        return np.isin(lineage_keys(df, self.columns).astype(np.uint64), keys)


def unseen_rows(
    test_df: pd.DataFrame, champion_seen: SeenRows | None, challenger_seen: SeenRows | None
) -> tuple[np.ndarray, dict]:
    """The gate's rows: test rows neither the champion nor the challenger trained or validated on.

    Returns the row mask and the audit of the check: rows kept, rows dropped per model, where the keys came from,
    and the overlap left after the filter (0 by construction, recomputed as the check). Without the champion's
    lineage keys (a version registered before they were logged, or a schema change), the full test split is used
    and the audit says the check could not be made.
    """
    n = len(test_df)
    keep = np.ones(n, dtype=bool)
    audit: dict = {"test_rows": n}
    for who, seen in (("champion", champion_seen), ("challenger", challenger_seen)):
        hit = seen.overlap(test_df) if seen is not None else None
        if hit is None:
            audit[f"seen_by_{who}"] = None
            why = "no lineage keys" if seen is None else "the test split lacks its key columns"
            audit[f"{who}_check"] = f"unavailable ({why})"
            continue
        audit[f"seen_by_{who}"] = int(hit.sum())
        audit[f"{who}_check"] = seen.source
        keep &= ~hit
    audit["rows"] = int(keep.sum())
    for who, seen in (("champion", champion_seen), ("challenger", challenger_seen)):
        hit = seen.overlap(test_df[keep]) if seen is not None else None
        audit[f"overlap_{who}"] = None if hit is None else int(hit.sum())  # the no-overlap check: 0
    audit["provenance"] = (
        "test split rows absent from both models' train+valid splits (row keys from their lineage)"
        if audit["seen_by_champion"] is not None
        else "the full test split: the champion's training rows are unknown, so the comparison may favour it"
    )
    return keep, audit


def _beats(metric: str, new: float, old: float) -> bool:
    return bool(new > old) if HIGHER_IS_BETTER[metric] else bool(new < old)


def decide(
    new: DriftloopModel,
    champion: DriftloopModel | None,
    champion_version: str | None,
    test_df: pd.DataFrame,
    params: Params,
    champion_error: str | None = None,
    new_value: float | None = None,
    *,
    valid_df: pd.DataFrame | None = None,
    baseline_value: float | None = None,
    baseline_scores: np.ndarray | None = None,
    champion_seen: SeenRows | None = None,
    challenger_seen: SeenRows | None = None,
) -> Decision:
    """Compare the new model with the champion on the same test set (no writes).

    In order: enough evidence in the test (and ``valid_df``) split to judge (``register.min_test_events``), else
    ``insufficient_evidence``; better than the dummy baseline (``baseline_value``, the dummy's gate metric on
    these test rows; with ``register.require_significant`` and ``baseline_scores``, significantly so), else
    ``below_baseline`` (the first model too); then better than the champion.

    ``new_value``: the new model's gate metric on this test set when the caller has it already (the
    evaluate stage's metrics); the new model then scores the test rows only if there is a champion to
    compare it with (the paired bootstrap needs the scores row by row).

    The fair gate: with a champion to compare, only test rows that neither model trained or validated on are
    judged (``unseen_rows`` with ``champion_seen`` / ``challenger_seen``, the models' lineage keys); a retrain that
    re-splits old + new data at random would otherwise judge the champion partly on rows it has memorized. The
    evidence rule then counts these rows; ``Decision.gate_rows`` records them and the overlap check.
    """
    from driftloop.evaluate import metric_value

    task, rp = new.task, params.register
    metric = gate_metric(params, task)
    classes = list(new.encoder.classes)
    gate_audit: dict = {"test_rows": len(test_df), "rows": len(test_df), "provenance": "the full test split"}
    if champion_version is not None and (champion_seen is not None or challenger_seen is not None):
        keep, gate_audit = unseen_rows(test_df, champion_seen, challenger_seen)
        if not keep.all():
            test_df = test_df[keep]
            new_value = None  # the evaluate stage's value is for all test rows
            if baseline_scores is not None:
                baseline_scores = np.asarray(baseline_scores)[keep]
                baseline_value = None
                with contextlib.suppress(ValueError):  # e.g. a single class left: the evidence rule refuses it
                    baseline_value = metric_value(
                        task, metric, new.encoder.encode(test_df[new.target]), baseline_scores, None
                    )
    y = new.encoder.encode(test_df[new.target])
    events = {"test": count_events(task, y, classes)}
    if valid_df is not None and len(valid_df):
        with contextlib.suppress(KeyError, ValueError, DriftloopError):  # unknown labels: not evidence
            events["validation"] = count_events(task, new.encoder.encode(valid_df[new.target]), classes)
    base = {
        "metric": metric,
        "test_rows": len(test_df),
        "champion_version": champion_version,
        "baseline_value": baseline_value,
        "events": events,
        "gate_rows": gate_audit,
    }
    shortfall = _evidence_shortfall(task, events, rp.min_test_events)
    if not len(test_df):
        shortfall = (
            "insufficient evidence to judge: no test row is unseen by both models "
            f"({gate_audit.get('test_rows')} test rows, all trained or validated on). Registered as @{CHALLENGER}, "
            "not promoted"
        )
    if shortfall:
        value = new_value if new_value is not None else float("nan")
        return Decision(CHALLENGER, shortfall, new_value=value, decision=INSUFFICIENT_EVIDENCE, **base)
    new_scores = None
    if champion is not None or new_value is None:
        new_scores = new.predict_scores(test_df)
        new_value = metric_value(task, metric, y, new_scores, new.threshold)
    base["new_value"] = new_value
    if baseline_value is not None:
        beats = _beats(metric, new_value, baseline_value)
        why = f"{metric} {new_value:.4f} does not beat the dummy baseline's {baseline_value:.4f}"
        if beats and rp.require_significant and baseline_scores is not None and rp.n_bootstrap > 0:
            if new_scores is None:
                new_scores = new.predict_scores(test_df)
            point, lo, hi = bootstrap_improvement(
                task, metric, y, new_scores, baseline_scores, n=rp.n_bootstrap, confidence=rp.confidence,
                seed=params.base.seed, thresholds=(new.threshold, None),
            )  # fmt: skip
            if not lo > 0:
                beats = False
                why = (
                    f"{metric} {new_value:.4f} is not significantly better than the dummy baseline's "
                    f"{baseline_value:.4f} ({rp.confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}]); "
                    "register.require_significant is set"
                )
        if not beats:
            reason = f"{why}: a model no better than the dummy is never promoted"
            return Decision(CHALLENGER, reason, decision=BELOW_BASELINE, **base)
    if champion_version is None:
        reason = "first model: no current champion"
        if baseline_value is not None:
            reason += f"; {metric} {new_value:.4f} beats the dummy baseline's {baseline_value:.4f}"
        return Decision(CHAMPION, reason, decision=PROMOTED, **base)
    if champion is None:
        reason = f"the champion cannot be compared on this test set: {champion_error}"
        return Decision(CHALLENGER, reason, decision=NOT_COMPARABLE, **base)
    try:
        if champion.task != task or [str(c) for c in champion.encoder.classes] != [str(c) for c in classes]:
            raise ValueError(f"champion task/classes {champion.task}/{champion.encoder.classes} differ")
        old_scores = champion.predict_scores(test_df)
    except (KeyError, ValueError) as exc:
        return Decision(CHALLENGER, f"the champion cannot score this test set: {exc}", decision=NOT_COMPARABLE, **base)
    point, lo, hi = bootstrap_improvement(
        task,
        metric,
        y,
        new_scores,
        old_scores,
        n=rp.n_bootstrap,
        confidence=rp.confidence,
        seed=params.base.seed,
        thresholds=(new.threshold, champion.threshold),
    )
    old_value = metric_value(task, metric, y, old_scores, champion.threshold)
    evidence = {**base, "champion_value": old_value, "improvement": point, "ci_low": lo, "ci_high": hi}
    passes = point >= rp.min_improvement if rp.min_improvement > 0 else point > 0
    if rp.require_significant and not (lo > 0):
        passes = False
    ci = f"{rp.confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}]"
    if passes:
        reason = f"{metric} improves by {point:+.4f} ({ci}) >= register.min_improvement={rp.min_improvement}"
        return Decision(CHAMPION, reason, decision=PROMOTED, **evidence)
    reason = f"{metric} improvement {point:+.4f} ({ci}) does not reach register.min_improvement={rp.min_improvement}"
    if rp.require_significant and point >= rp.min_improvement:
        reason = f"{metric} improvement {point:+.4f} is not significant ({ci}); register.require_significant is set"
    return Decision(CHALLENGER, reason, decision=NOT_BETTER, **evidence)


# --------------------------------------------------------------------------- the problem a model solves
PROBLEM_TAG = "driftloop.problem"  # on every version: {"target", "task", "classes"} as JSON


def problem_of(model: DriftloopModel) -> dict:
    """What a model predicts: its target, task and classes (as text; binary: the positive class last)."""
    return {"target": str(model.target), "task": model.task, "classes": [str(c) for c in model.encoder.classes]}


def problem_mismatch(old: dict, new: dict) -> str | None:
    """How two problems differ (None: the same target, task, classes and positive class)."""
    diffs = []
    if str(old.get("target")) != str(new.get("target")):
        diffs.append(f"target '{old.get('target')}' vs '{new.get('target')}'")
    if old.get("task") != new.get("task"):
        diffs.append(f"task {old.get('task')} vs {new.get('task')}")
    else:
        a, b = list(old.get("classes") or []), list(new.get("classes") or [])
        if sorted(a) != sorted(b):
            diffs.append(f"classes {a} vs {b}")
        elif new.get("task") == "binary" and a and b and a[-1] != b[-1]:
            diffs.append(f"positive class '{a[-1]}' vs '{b[-1]}'")
    return "; ".join(diffs) or None


def version_problem(mv, model: DriftloopModel | None = None) -> dict | None:
    """The problem of a registered version: its ``driftloop.problem`` tag, else its loaded ``model`` (older
    versions have no tag), else None (unknown)."""
    raw = (getattr(mv, "tags", None) or {}).get(PROBLEM_TAG)
    if raw:
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(raw)
            if isinstance(data, dict):
                return data
    return problem_of(model) if model is not None else None


def check_same_problem(name: str, champion_mv, champion_problem: dict | None, new: DriftloopModel) -> None:
    """Refuse (``RegistryError``, nothing written) to gate ``new`` against a champion of another problem.

    A champion of another target, task or classes cannot be compared on this test set; registering the new
    model as its challenger would mix two products under one name. The way out is a new registered model.
    """
    if champion_mv is None or champion_problem is None:
        return
    mine = problem_of(new)
    diff = problem_mismatch(champion_problem, mine)
    if diff is None:
        return
    suggestion = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{name}-{mine['target']}").strip("-")
    raise RegistryError(
        f"register: this model cannot be compared with @{CHAMPION} of registered model '{name}' (version "
        f"{champion_mv.version}): {diff}. Nothing was registered. A model of another target or classes is a new "
        f"model: set base.model_name to a new name in params.yaml (e.g. '{suggestion}') and rerun; warm start "
        "and the gate then start from scratch. To predict the same target with the old classes, fix the data "
        "(or base.target / base.positive_class) instead."
    )


def current_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(name: str, version: str) -> DriftloopModel:
    from driftloop import artifacts

    # verified against the SHA-256 manifest recorded at log time, then rebuilt from JSON + LightGBM text (no
    # pickle, no code from the artifact store); a tampered or unrecorded version raises IntegrityError
    return artifacts.load_model(name, version)


# --------------------------------------------------------------------------- alias moves: lock, CAS, intent, commit
class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()  # ``expect``: no expectation about the alias's current version

_AUDIT = "driftloop.audit."  # tracking.TAG + "audit.": every field of an audit record is a tag of its run
_STATE = _AUDIT + "state"


def _norm(version) -> str | None:
    """A version as the registry spells it; None/"none"/"" = no version holds the alias."""
    if version is None or str(version).strip().lower() in ("", "none", "null"):
        return None
    return str(version).strip()


def _show(version) -> str:
    return "none" if version is None else str(version)


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "-", name)[:80] or "model"


def lock_target(params: Params) -> tuple[str, str]:
    """("postgresql", url) or ("file", path): where alias moves of ``base.model_name`` are serialized."""
    name = params.base.model_name
    url = os.environ.get(LOCK_URL_ENV) or params.base.registry_uri or params.base.tracking_uri
    if url.startswith("postgresql"):
        return "postgresql", url
    if url.startswith("sqlite:///") and (db := url[len("sqlite:///") :].split("?", 1)[0]) not in ("", ":memory:"):
        db_path = Path(db).expanduser().resolve()
        return "file", str(db_path.with_name(f"{db_path.name}.{_safe_name(name)}.registry.lock"))
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "driftloop" / "locks"
    store = hashlib.sha256(url.encode()).hexdigest()[:12]
    return "file", str(cache / f"{store}-{_safe_name(name)}.registry.lock")


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"driftloop.registry:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _pg_lock(url: str, name: str, timeout: float) -> Iterator[None]:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    u = sa.engine.make_url(url)
    if u.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; psycopg 3 is what driftloop pins
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            u = u.set(drivername="postgresql+psycopg")
    shown = u.render_as_string(hide_password=True)
    engine = sa.create_engine(u, poolclass=NullPool)
    try:
        try:
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.SQLAlchemyError as exc:
            raise RegistryError(
                f"cannot connect to {shown} to lock the alias moves of '{name}': {type(exc.orig or exc).__name__}"
            ) from None
        try:
            try:
                conn.exec_driver_sql(f"SET lock_timeout = {max(1, int(timeout * 1000))}")
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _lock_key(name)})
            except sa.exc.OperationalError:
                raise RegistryError(
                    f"another alias move of '{name}' held the registry lock (PostgreSQL advisory lock on {shown}) "
                    f"for more than register.lock_timeout_s={timeout:g}; nothing changed"
                ) from None
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
        finally:
            conn.close()  # the session ends: PostgreSQL releases the lock even if the unlock failed (or on kill -9)
    finally:
        engine.dispose()


@contextlib.contextmanager
def alias_lock(params: Params) -> Iterator[None]:
    """Serialize the alias moves of ``base.model_name`` (held for one move: well under a second)."""
    kind, where = lock_target(params)
    name, timeout = params.base.model_name, params.register.lock_timeout_s
    if kind == "postgresql":
        with _pg_lock(where, name, timeout):
            yield
        return
    from filelock import FileLock, Timeout

    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    # flock: the kernel releases it when the holder dies (kill -9 included); the file stays (no unlink race)
    lock = FileLock(str(path), timeout=timeout, preserve_lock_file=True, fallback_to_soft=False)
    try:
        lock.acquire()
    except Timeout:
        raise RegistryError(
            f"another alias move of '{name}' held the registry lock {path} for more than "
            f"register.lock_timeout_s={timeout:g}; nothing changed"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _experiment(params: Params) -> str:
    return f"{params.base.experiment}-registry"


def _audit_runs(client, params: Params, where: str = "", max_results: int | None = None) -> list:
    """The audit runs of this model (matching ``where``), newest first (by sequence number, then start)."""
    exp = client.get_experiment_by_name(_experiment(params))
    if exp is None:
        return []
    name = params.base.model_name.replace("'", "\\'")
    flt = f"tags.`{_AUDIT}model` = '{name}'" + (f" and {where}" if where else "")
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=flt,
            order_by=["attributes.start_time DESC"],
            max_results=min(max_results or 1000, 1000),
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token or (max_results and len(runs) >= max_results):
            break
    return sorted(runs, key=_order, reverse=True)


def _order(run) -> tuple[int, int]:
    seq = run.data.tags.get(_AUDIT + "seq", "")
    return (int(seq) if seq.isdigit() else 0, run.info.start_time or 0)


def _record(run) -> dict:
    rec = {k.removeprefix(_AUDIT): v for k, v in run.data.tags.items() if k.startswith(_AUDIT)}
    for key in ("from_version", "to_version"):
        rec[key] = _norm(rec.get(key))
    rec.setdefault("state", COMMITTED)  # records written before intent/commit existed
    rec["seq"] = _order(run)[0]
    try:
        rec["evidence"] = json.loads(run.data.params.get("evidence", "{}") or "{}")
    except json.JSONDecodeError:  # cut by the store's size limit
        rec["evidence"] = {"truncated": run.data.params["evidence"]}
    rec["run_id"] = run.info.run_id
    return rec


def _chain(client, params: Params, alias: str) -> list[dict]:
    """Committed moves of ``alias``, newest first."""
    runs = _audit_runs(client, params, f"tags.`{_AUDIT}alias` = '{alias}'")
    return [r for r in map(_record, runs) if r["state"] == COMMITTED]


def _tag_version(client, name: str, record: dict) -> None:
    prefix = f"driftloop.{record['alias']}."
    for key, value in (
        ("moved_at", record["when"]),
        ("moved_by", record["who"]),
        ("reason", record["reason"]),
        ("action", record["action"]),
        ("previous_version", _show(record["from_version"])),
        ("audit_run_id", record.get("run_id", "")),
        ("evidence", json.dumps(record.get("evidence") or {}, default=str)),
    ):
        client.set_model_version_tag(name, record["to_version"], prefix + key, str(value)[:5000])


def _commit(client, run_id: str) -> None:
    client.set_tag(run_id, _STATE, COMMITTED)  # the commit point: the state tag is the truth
    client.set_terminated(run_id, "FINISHED")


def _abort(client, run_id: str, note: str) -> None:
    from driftloop import tracking

    tracking.log_batch(client, run_id, tags={_STATE: ABORTED, _AUDIT + "note": note})
    client.set_terminated(run_id, "FAILED")


def recover(client, params: Params) -> list[dict]:
    """Finish what a killed alias move left: an intent whose alias was set is committed (roll forward), one whose
    alias never moved is aborted. Cheap when there is nothing to do (one search); call it before reading
    ``@champion`` for monitoring or scoring. Returns the records it resolved."""
    if not _audit_runs(client, params, "attributes.status = 'RUNNING'"):
        return []
    with alias_lock(params):
        return _recover_locked(client, params)


def _recover_locked(client, params: Params) -> list[dict]:
    name = params.base.model_name
    resolved = []
    for run in reversed(_audit_runs(client, params, "attributes.status = 'RUNNING'")):  # oldest first
        rec = _record(run)
        if rec["state"] == COMMITTED:  # killed between the commit tag and the run's end
            client.set_terminated(rec["run_id"], "FINISHED")
            continue
        if rec["state"] != INTENT:
            client.set_terminated(rec["run_id"], "FAILED")
            continue
        cur = current_version(client, name, rec["alias"])
        current = str(cur.version) if cur else None
        if current == rec["to_version"]:  # the alias moved: finish the version tags, commit
            _tag_version(client, name, rec)
            fault_point(RECOVER_BEFORE_COMMIT)
            _commit(client, rec["run_id"])
            resolved.append({**rec, "state": COMMITTED, "recovery": "rolled forward"})
        else:
            note = (
                "interrupted before the alias moved"
                if current == rec["from_version"]
                else f"interrupted; @{rec['alias']} is {_show(current)}, neither {_show(rec['from_version'])} "
                f"nor {_show(rec['to_version'])}"
            )
            _abort(client, rec["run_id"], note)
            resolved.append({**rec, "state": ABORTED, "note": note, "recovery": "discarded"})
    return resolved


def record_move(
    client,
    params: Params,
    *,
    alias: str,
    to_version: str | Callable[[str | None], str],
    action: str,
    reason: str,
    evidence: dict | None = None,
    expect=ANY,
    since: str = "it was read",
) -> dict:
    """Move ``alias`` to ``to_version`` as a compare-and-set under the model's lock, intent then commit.

    ``expect``: the version the caller believes holds the alias (None: no version); if the alias holds another,
    RegistryError and nothing is written. ``to_version`` may be a function of the current version (evaluated
    inside the lock; it raises RegistryError to refuse).
    """
    from driftloop import tracking

    name = params.base.model_name
    points = FAULTS[action]
    with alias_lock(params):
        _recover_locked(client, params)
        cur = current_version(client, name, alias)
        current = str(cur.version) if cur else None
        if expect is not ANY and _norm(expect) != current:
            raise RegistryError(
                f"@{alias} of '{name}' moved from {_show(_norm(expect))} to {_show(current)} since {since}; "
                "nothing changed"
            )
        target = str(to_version(current) if callable(to_version) else to_version)
        latest = _audit_runs(client, params, max_results=20)
        record = {
            "model": name,
            "alias": alias,
            "action": action,
            "to_version": target,
            "from_version": current,
            "reason": reason,
            "who": getpass.getuser(),
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seq": (_order(latest[0])[0] if latest else 0) + 1,
            "evidence": evidence or {},
        }
        tags = {f"{_AUDIT}{k}": _show(v) for k, v in record.items() if k not in ("evidence", "seq")}
        tags |= {_AUDIT + "seq": f"{record['seq']:010d}", _STATE: INTENT, "driftloop.audit": "alias_move"}
        # 1. intent: the full record, before anything moves
        run = tracking.start_run(
            client, params, experiment=_experiment(params), run_name=f"{action}-{alias}-v{target}", tags=tags
        )
        record["run_id"] = run.info.run_id
        metrics = {
            k: v for k, v in record["evidence"].items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        evidence_json = json.dumps(record["evidence"], default=str)
        tracking.log_batch(client, run.info.run_id, metrics=metrics, params={"evidence": evidence_json})
        fault_point(points["after_intent"])
        # 2. the move
        client.set_registered_model_alias(name, alias, target)
        fault_point(points["after_alias"])
        _tag_version(client, name, record)
        fault_point(points["after_tags"])
        fault_point(points["before_commit"])
        # 3. commit
        _commit(client, run.info.run_id)
        record["state"] = COMMITTED
    return record


def history(client, params: Params, max_results: int = 50, include_aborted: bool = False) -> list[dict]:
    """Committed alias moves (with ``include_aborted``, interrupted ones too, marked by ``state``), newest first."""
    recover(client, params)
    out = []
    for run in _audit_runs(client, params):
        rec = _record(run)
        if rec["state"] == COMMITTED or include_aborted:
            out.append(rec)
        if len(out) >= max_results:
            break
    return out


def gate_record(client, params: Params, version: str) -> dict | None:
    """The committed gate move that registered ``version`` (None: the version was never gated)."""
    runs = _audit_runs(client, params, f"tags.`{_AUDIT}to_version` = '{version}' and tags.`{_AUDIT}action` = 'gate'")
    return next((r for r in map(_record, runs) if r["state"] == COMMITTED), None)


def promote(client, params: Params, version: str, reason: str, expect=ANY) -> dict:
    """Make ``version`` the @champion; with ``expect``, only if @champion is still that version."""
    name, version = params.base.model_name, str(version).strip()

    def target(current: str | None) -> str:
        try:
            client.get_model_version(name, version)
        except Exception:
            raise RegistryError(f"model '{name}' has no version {version}") from None
        if current == version:
            raise RegistryError(f"version {version} of '{name}' is already @champion")
        return version

    since = f"you read it (--expect-current {_show(_norm(expect))})"
    return record_move(
        client,
        params,
        alias=CHAMPION,
        to_version=target,
        action="manual_promote",
        reason=reason,
        expect=expect,
        since=since,
    )


def rollback_target(chain: list[dict]) -> dict | None:
    """The move a rollback undoes: the newest committed move not undone by a later rollback (``chain``: newest
    first). A rollback undoes one move; rolling back twice undoes two."""
    undone = 0
    for rec in chain:
        if rec["action"] == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return rec
    return None


def rollback(client, params: Params, reason: str, expect=ANY) -> dict:
    """Move @champion back to the version it replaced, read from the audit chain (not from a version tag)."""
    name = params.base.model_name

    def target(current: str | None) -> str:
        if current is None:
            raise RegistryError(f"model '{name}' has no @champion to roll back")
        chain = _chain(client, params, CHAMPION)
        if not chain or chain[0]["to_version"] != current:
            last = _show(chain[0]["to_version"]) if chain else "nothing"
            raise RegistryError(
                f"@champion of '{name}' is version {current} but its audit chain ends at {last}: the alias was "
                "moved outside driftloop; use `driftloop promote VERSION` to set it explicitly"
            )
        undo = rollback_target(chain)
        if undo is None or undo["from_version"] is None:
            raise RegistryError(f"@champion (version {current}) of '{name}' has no previous champion to roll back to")
        try:
            client.get_model_version(name, undo["from_version"])
        except Exception:
            raise RegistryError(
                f"cannot roll back @champion of '{name}' to version {undo['from_version']}: it no longer exists"
            ) from None
        return undo["from_version"]

    since = f"you read it (--expect-current {_show(_norm(expect))})"
    return record_move(
        client, params, alias=CHAMPION, to_version=target, action="rollback", reason=reason, expect=expect,
        since=since,
    )  # fmt: skip


def version_of_run(client, name: str, run_id: str):
    """The newest version of ``name`` registered from ``run_id`` (None: none yet)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return max(found, key=lambda mv: int(mv.version), default=None)


def dummy_baseline(
    params: Params, model: DriftloopModel, train_df: pd.DataFrame, test_df: pd.DataFrame, evaluated: dict
) -> tuple[float, np.ndarray]:
    """(the dummy baseline's gate metric on the test rows, its scores row by row).

    The value is the evaluate stage's (``metrics.json``: ``baselines.dummy``) when it scored these test rows;
    otherwise the training prior's, as the dummy baseline predicts."""
    from driftloop.evaluate import metric_value

    task, metric = model.task, gate_metric(params, model.task)
    scores = dummy_scores(task, model.encoder.encode(train_df[model.target]), len(test_df), len(model.encoder.classes))
    value = None
    if evaluated.get("rows") == len(test_df) and evaluated.get("task") == task:
        value = evaluated.get("baselines", {}).get("dummy", {}).get(metric)
    if value is None:
        value = metric_value(task, metric, model.encoder.encode(test_df[model.target]), scores, None)
    return float(value), scores
