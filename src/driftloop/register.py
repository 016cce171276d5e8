"""Register stage: the promotion gate and every alias move, recorded.

A new version becomes ``@champion`` only if it beats the current champion on the *same* test
set by ``register.min_improvement`` (optionally with a bootstrap interval above zero);
otherwise it becomes ``@challenger``. The comparison is computed before anything is written,
so a failure leaves the registry and aliases as they were. Each alias move is a tagged run in
the ``<experiment>-registry`` experiment (who, when, from which version, why, the evidence)
plus tags on the model version.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import RegistryError
from driftloop.model import HIGHER_IS_BETTER, PRIMARY_METRIC, DriftloopModel

CHAMPION, CHALLENGER = "champion", "challenger"


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

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    new: DriftloopModel,
    champion: DriftloopModel | None,
    champion_version: str | None,
    test_df: pd.DataFrame,
    params: Params,
    champion_error: str | None = None,
    new_value: float | None = None,
) -> Decision:
    """Compare the new model with the champion on the same test set (no writes).

    ``new_value``: the new model's gate metric on this test set when the caller has it already (the
    evaluate stage's metrics); the new model then scores the test rows only if there is a champion to
    compare it with (the paired bootstrap needs the scores row by row).
    """
    from driftloop.evaluate import metric_value

    task, rp = new.task, params.register
    metric = gate_metric(params, task)
    y = new.encoder.encode(test_df[new.target])
    new_scores = None
    if champion is not None or new_value is None:
        new_scores = new.predict_scores(test_df)
        new_value = metric_value(task, metric, y, new_scores, new.threshold)
    base = {"metric": metric, "new_value": new_value, "test_rows": len(test_df), "champion_version": champion_version}
    if champion_version is None:
        return Decision(CHAMPION, "first model: no current champion", **base)
    if champion is None:
        return Decision(CHALLENGER, f"the champion cannot be compared on this test set: {champion_error}", **base)
    try:
        if champion.task != task or [str(c) for c in champion.encoder.classes] != [str(c) for c in new.encoder.classes]:
            raise ValueError(f"champion task/classes {champion.task}/{champion.encoder.classes} differ")
        old_scores = champion.predict_scores(test_df)
    except (KeyError, ValueError) as exc:
        return Decision(CHALLENGER, f"the champion cannot score this test set: {exc}", **base)
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
        return Decision(CHAMPION, reason, **evidence)
    reason = f"{metric} improvement {point:+.4f} ({ci}) does not reach register.min_improvement={rp.min_improvement}"
    if rp.require_significant and point >= rp.min_improvement:
        reason = f"{metric} improvement {point:+.4f} is not significant ({ci}); register.require_significant is set"
    return Decision(CHALLENGER, reason, **evidence)


def current_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(name: str, version: str) -> DriftloopModel:
    import mlflow

    # suppress_warnings: skip the check of the model's pip requirements against the installed distributions
    # (a scan of site-packages, ~1-2 s, cached per process) and the Python-version warning: warnings only.
    # (mlflow.pyfunc.log_model runs that scan with no opt-out; `driftloop run` does it on its warm-up thread.)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}", suppress_warnings=True).unwrap_python_model().model


def record_move(
    client,
    params: Params,
    *,
    alias: str,
    to_version: str,
    from_version: str | None,
    action: str,
    reason: str,
    evidence: dict | None = None,
) -> dict:
    """Set the alias and write the audit record (a run in ``<experiment>-registry`` + version tags)."""
    from driftloop import tracking

    name = params.base.model_name
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    who = getpass.getuser()
    record = {
        "model": name,
        "alias": alias,
        "action": action,
        "to_version": str(to_version),
        "from_version": None if from_version is None else str(from_version),
        "reason": reason,
        "who": who,
        "when": now,
        "evidence": evidence or {},
    }
    client.set_registered_model_alias(name, alias, str(to_version))
    prefix = f"{tracking.TAG}{alias}."
    for key, value in (
        ("moved_at", now),
        ("moved_by", who),
        ("reason", reason),
        ("action", action),
        ("previous_version", record["from_version"] or "none"),
        ("evidence", json.dumps(evidence or {}, default=str)),
    ):
        client.set_model_version_tag(name, str(to_version), prefix + key, str(value)[:5000])
    run = tracking.start_run(
        client,
        params,
        experiment=f"{params.base.experiment}-registry",
        run_name=f"{action}-{alias}-v{to_version}",
        tags={
            f"{tracking.TAG}audit": "alias_move",
            **{f"{tracking.TAG}audit.{k}": str(v) for k, v in record.items() if k != "evidence"},
        },
    )
    metrics = {k: v for k, v in (evidence or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}
    tracking.log_batch(
        client, run.info.run_id, metrics=metrics, params={"evidence": json.dumps(evidence or {}, default=str)}
    )
    client.set_terminated(run.info.run_id)
    return record


def history(client, params: Params, max_results: int = 50) -> list[dict]:
    """Alias moves, newest first."""
    from driftloop import tracking

    exp = client.get_experiment_by_name(f"{params.base.experiment}-registry")
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tracking.TAG}audit.model` = '{params.base.model_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )
    out = []
    for r in runs:
        rec = {
            k.removeprefix(f"{tracking.TAG}audit."): v
            for k, v in r.data.tags.items()
            if k.startswith(f"{tracking.TAG}audit.")
        }
        rec["evidence"] = json.loads(r.data.params.get("evidence", "{}"))
        out.append(rec)
    return out


def promote(client, params: Params, version: str, reason: str) -> dict:
    name = params.base.model_name
    try:
        client.get_model_version(name, str(version))
    except Exception:
        raise RegistryError(f"model '{name}' has no version {version}") from None
    current = current_version(client, name, CHAMPION)
    if current is not None and str(current.version) == str(version):
        raise RegistryError(f"version {version} of '{name}' is already @champion")
    return record_move(
        client,
        params,
        alias=CHAMPION,
        to_version=version,
        from_version=str(current.version) if current else None,
        action="manual_promote",
        reason=reason,
    )


def rollback(client, params: Params, reason: str) -> dict:
    """Move @champion back to the version it replaced."""
    name = params.base.model_name
    current = current_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"model '{name}' has no @champion to roll back")
    previous = current.tags.get(f"driftloop.{CHAMPION}.previous_version", "none")
    if previous == "none":
        raise RegistryError(
            f"@champion (version {current.version}) of '{name}' has no previous champion to roll back to"
        )
    return record_move(
        client,
        params,
        alias=CHAMPION,
        to_version=previous,
        from_version=str(current.version),
        action="rollback",
        reason=reason,
    )
