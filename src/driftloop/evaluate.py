"""Evaluate stage: test-set metrics for the registered model (the algorithm selection's choice: the tuned
LightGBM or the linear model) and the baselines, and the plots.

Metrics by task: binary (ROC AUC, PR AUC, log loss, Brier, precision/recall/F1 at the
threshold chosen on validation data), multiclass (macro F1, log loss, accuracy),
regression (RMSE, MAE, R^2). Curves (ROC, precision-recall, calibration, confusion; predicted vs actual for
regression) are written as CSV for ``dvc plots`` and as PNG beside them (MLflow shows images; the run logs
the whole folder); feature importance and the SHAP summary (LightGBM's own contributions) as PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.model import DriftloopModel


def model_label(model: DriftloopModel) -> str:
    """The model's row name in the test table, ``metrics.json`` and the CLI: its algorithm, as the train stage's
    selection chose it (``lightgbm (tuned)``; a selected linear model: ``logistic (selected)`` / ``ridge
    (selected)``, the baselines' names for the same kind of model)."""
    if getattr(model, "algorithm", "lightgbm") == "linear":
        from driftloop.train import baseline_name

        return f"{baseline_name(model.task, 'linear')} (selected)"
    return "lightgbm (tuned)"


def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except ValueError:  # e.g. a single class in a tiny split
        return float("nan")


def compute_metrics(task: str, y: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "regression":
        return {
            "rmse": float(np.sqrt(m.mean_squared_error(y, scores))),
            "mae": float(m.mean_absolute_error(y, scores)),
            "r2": _safe(m.r2_score, y, scores),
        }
    if task == "binary":
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        t = 0.5 if threshold is None else threshold
        pred = (scores >= t).astype(int)
        return {
            "roc_auc": _safe(m.roc_auc_score, y, p),
            "pr_auc": _safe(m.average_precision_score, y, p),
            "log_loss": _safe(m.log_loss, y, p, labels=[0, 1]),
            "brier": float(m.brier_score_loss(y, p)),
            "precision": float(m.precision_score(y, pred, zero_division=0)),
            "recall": float(m.recall_score(y, pred, zero_division=0)),
            "f1": float(m.f1_score(y, pred, zero_division=0)),
            "threshold": float(t),
        }
    k = scores.shape[1]
    pred = scores.argmax(axis=1)
    return {
        "macro_f1": float(m.f1_score(y, pred, average="macro", zero_division=0)),
        "log_loss": _safe(m.log_loss, y, np.clip(scores, 1e-15, 1), labels=list(range(k))),
        "accuracy": float(m.accuracy_score(y, pred)),
    }


def metric_value(task: str, name: str, y: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> float:
    """One metric (the registry gate's bootstrap calls this hundreds of times)."""
    from sklearn import metrics as m

    if task == "binary" and name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        p = np.clip(scores, 1e-15, 1 - 1e-15)
        fn = {
            "roc_auc": m.roc_auc_score,
            "pr_auc": m.average_precision_score,
            "brier": m.brier_score_loss,
            "log_loss": lambda a, b: m.log_loss(a, b, labels=[0, 1]),
        }[name]
        return _safe(fn, y, p)
    if task == "regression" and name in ("rmse", "mae"):
        err = np.asarray(y, dtype=float) - np.asarray(scores, dtype=float)
        return float(np.sqrt(np.mean(err**2))) if name == "rmse" else float(np.mean(np.abs(err)))
    return compute_metrics(task, y, scores, threshold)[name]


def expected_calibration_error(task: str, y: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE: the row-weighted mean |mean predicted - observed rate| over equal-count bins of the score.

    binary: P(positive) against the positive rate; multiclass: the top class's probability against how often
    it is right. NaN for regression or no rows.
    """
    y = np.asarray(y)
    if task == "regression" or not len(y):
        return float("nan")
    s = np.asarray(scores, dtype=float)
    if task == "binary":
        conf, hit = s, (y == 1).astype(float)
    else:
        conf, hit = s.max(axis=1), (s.argmax(axis=1) == y).astype(float)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(bins, len(y))):
        total += abs(conf[idx].mean() - hit[idx].mean()) * len(idx)
    return float(total / len(y))


def calibration_check(
    task: str, y: np.ndarray, scores: np.ndarray, *, bins: int, max_ece: float, seed: int, draws: int = 100
) -> dict:
    """ECE on test rows against ``max_ece`` and against the ECE a perfectly calibrated model shows on as many rows.

    Labels drawn from the model's own probabilities (``draws`` seeded resamples) give the ECE of pure noise; the
    check is ``poor`` only when the ECE exceeds both ``max_ece`` and that noise's 95th percentile, so a small test
    split does not raise a false alarm.
    """
    ece = expected_calibration_error(task, y, scores, bins)
    if not np.isfinite(ece):
        return {}
    rng = np.random.default_rng(seed)
    s = np.asarray(scores, dtype=float)
    noise = []
    for _ in range(draws):
        if task == "binary":
            fake = (rng.random(len(s)) < s).astype(int)
        else:  # a class drawn from each row's probabilities
            fake = (rng.random(len(s))[:, None] > np.cumsum(s / s.sum(axis=1, keepdims=True), axis=1)).sum(axis=1)
            fake = np.minimum(fake, s.shape[1] - 1)
        noise.append(expected_calibration_error(task, fake, s, bins))
    noise_95 = float(np.quantile(noise, 0.95))
    poor = bool(ece > max_ece and ece > noise_95)
    out = {"ece": ece, "ece_noise_95": noise_95, "max_ece": max_ece, "bins": bins, "poor": poor}
    if poor:
        out["warning"] = (
            f"calibration is poor: expected calibration error {ece:.4f} on the test split > evaluate.max_ece="
            f"{max_ece} and above what a calibrated model shows on {len(s)} rows (95th percentile {noise_95:.4f}): "
            "the probabilities are not frequencies (see plots/calibration.png)"
        )
    return out


def _thin(df: pd.DataFrame, n: int) -> pd.DataFrame:
    if len(df) <= n:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, n).round().astype(int))
    return df.iloc[idx]


def write_curves(
    task: str,
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    classes: list,
    out: Path,
    points: int,
    bins: int,
    images: bool = True,
) -> list[Path]:
    """CSV files for ``dvc plots`` and, with ``images``, the same curves as PNG (``<name>.png`` beside each
    ``<name>.csv``: one small figure each); returns the paths written."""
    from sklearn import metrics as m

    out.mkdir(parents=True, exist_ok=True)
    written = []
    frames: dict[str, pd.DataFrame] = {}
    if task == "binary":
        fpr, tpr, _ = m.roc_curve(y, scores)
        roc = _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr}), points)
        precision, recall, _ = m.precision_recall_curve(y, scores)
        prc = _thin(pd.DataFrame({"recall": recall, "precision": precision}), points)
        from sklearn.calibration import calibration_curve

        frac, mean_pred = calibration_curve(y, scores, n_bins=bins, strategy="quantile")
        cal = pd.DataFrame({"mean_predicted": mean_pred, "fraction_positive": frac})
        for name, frame in (("roc", roc), ("precision_recall", prc), ("calibration", cal)):
            path = out / f"{name}.csv"
            frame.round(6).to_csv(path, index=False)
            written.append(path)
            frames[name] = frame
        pred = (scores >= (0.5 if threshold is None else threshold)).astype(int)
    elif task == "multiclass":
        pred = scores.argmax(axis=1)
    else:
        sample = _thin(pd.DataFrame({"actual": y, "predicted": scores}).sort_values("actual"), points * 5)
        path = out / "predicted_vs_actual.csv"
        sample.round(6).to_csv(path, index=False)
        written.append(path)
        if images:
            written.append(plot_predicted_vs_actual(sample, out / "predicted_vs_actual.png"))
        return written
    labels = np.asarray([str(c) for c in classes], dtype=object)
    conf = pd.DataFrame({"actual": labels[y], "predicted": labels[pred]})
    path = out / "confusion.csv"
    conf.to_csv(path, index=False)
    written.append(path)
    if images:
        base_rate = float(np.mean(y)) if task == "binary" else None
        written += plot_curves(frames, out, base_rate=base_rate)
        written.append(plot_confusion(m.confusion_matrix(y, pred, labels=range(len(labels))), labels, out))
    return written


def _figure(size=(4.8, 4.2)):
    """A figure with fixed margins (no layout pass: a quarter of the drawing time of ``tight_layout``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.13, top=0.91)
    return fig, ax


def _save_as_is(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(frames: dict[str, pd.DataFrame], out: Path, base_rate: float | None = None) -> list[Path]:
    """ROC, precision-recall and calibration curves (the frames ``write_curves`` wrote as CSV) as PNG."""
    written = []
    if "roc" in frames:
        f = frames["roc"]
        fig, ax = _figure()
        ax.plot(f["fpr"], f["tpr"], color="#3b75af", lw=1.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (test set)")
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        _save_as_is(fig, out / "roc.png")
        written.append(out / "roc.png")
    if "precision_recall" in frames:
        f = frames["precision_recall"]
        fig, ax = _figure()
        ax.plot(f["recall"], f["precision"], color="#3b75af", lw=1.6, drawstyle="steps-post")
        if base_rate is not None:
            ax.axhline(base_rate, color="grey", lw=0.8, ls="--", label=f"base rate {base_rate:.3f}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve (test set)")
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        _save_as_is(fig, out / "precision_recall.png")
        written.append(out / "precision_recall.png")
    if "calibration" in frames:
        f = frames["calibration"]
        fig, ax = _figure()
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
        ax.plot(f["mean_predicted"], f["fraction_positive"], marker="o", ms=4, color="#3b75af", label="model")
        ax.set(xlabel="mean predicted probability", ylabel="fraction of positives", title="Calibration (test set)")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
        _save_as_is(fig, out / "calibration.png")
        written.append(out / "calibration.png")
    return written


def plot_confusion(matrix: np.ndarray, labels, out: Path, max_labels: int = 30) -> Path:
    """The confusion matrix (rows: actual, columns: predicted) with its counts, as PNG."""
    k = len(labels)
    fig, ax = _figure((min(3.2 + 0.45 * k, 12), min(2.8 + 0.45 * k, 11)))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(k) if k <= max_labels else []
    names = [str(x)[:20] for x in labels] if k <= max_labels else []
    ax.set_xticks(ticks, names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    if k <= max_labels:
        lo, hi = (matrix.min(), matrix.max()) if matrix.size else (0, 0)
        for i in range(k):
            for j in range(k):  # white on the darker half of the colour scale
                color = "white" if hi > lo and matrix[i, j] - lo > (hi - lo) / 2 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test set)")
    path = out / "confusion.png"
    (_save if k > 4 else _save_as_is)(fig, path)  # long rotated labels need the layout pass
    return path


def plot_predicted_vs_actual(sample: pd.DataFrame, path: Path) -> Path:
    fig, ax = _figure()
    ax.scatter(sample["actual"], sample["predicted"], s=6, alpha=0.5, linewidths=0, color="#3b75af")
    lo = float(min(sample["actual"].min(), sample["predicted"].min()))
    hi = float(max(sample["actual"].max(), sample["predicted"].max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test set)")
    _save_as_is(fig, path)
    return path


def plot_importance(model: DriftloopModel, path: Path, top: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imp = model.feature_importance().head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(imp) + 1.2))
    ax.barh(range(len(imp)), imp.to_numpy(), color="#3b75af")
    ax.set_yticks(range(len(imp)), [str(i)[:40] for i in imp.index], fontsize=8)
    if getattr(model, "algorithm", "lightgbm") == "linear":
        ax.set_xlabel("|coefficient| on the standardised design columns, summed per feature")
        ax.set_title(f"Feature importance: {model_label(model)}")
    else:
        ax.set_xlabel("total gain")
        ax.set_title("LightGBM feature importance (gain)")
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine, which makes savefig draw the whole figure once more
    # (a dry run) before rendering; the layout is already done, so drop it (the PNG is pixel-identical)
    fig.set_layout_engine("none")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def shap_values(
    model: DriftloopModel, raw: pd.DataFrame, n: int, seed: int, features: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model's own contributions on a sample (LightGBM: TreeSHAP; the linear model: exact, coefficient x
    centred column); multiclass sums |contribution| over classes.

    ``features``: ``model.features(raw)`` when the caller has it already (the sample is then taken from
    it, the same rows ``raw.sample`` would give). LightGBM predicts on all cores by default (the
    training ``num_threads`` does not apply to ``predict``).
    """
    rows = pd.RangeIndex(len(raw)).to_series().sample(n=min(n, len(raw)), random_state=seed).to_numpy()
    X = model.features(raw.iloc[rows]) if features is None else features.iloc[rows]
    contrib = model.booster.predict(X, pred_contrib=True)
    k = len(model.preprocessor.feature_names)
    if model.task == "multiclass":
        contrib = np.abs(contrib.reshape(len(X), -1, k + 1)).sum(axis=1)
    names = [model.preprocessor.original_name[f] for f in model.booster.feature_name()]
    return pd.DataFrame(contrib[:, :k], columns=names, index=X.index), X.set_axis(names, axis=1)


def plot_shap(
    model: DriftloopModel,
    raw: pd.DataFrame,
    path: Path,
    n: int,
    seed: int,
    top: int = 15,
    features: pd.DataFrame | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contrib, X = shap_values(model, raw, n, seed, features)
    order = contrib.abs().mean().sort_values(ascending=False).index[:top][::-1]
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(order) + 1.5))
    xs, ys, colors = [], [], []
    for i, col in enumerate(order):
        x = contrib[col].to_numpy()
        v = X[col]
        if isinstance(v.dtype, pd.CategoricalDtype):
            colors.append(np.full(len(v), 0.5))
        else:
            colors.append(v.rank(pct=True).fillna(0.5).to_numpy())
        xs.append(x)
        ys.append(i + rng.uniform(-0.3, 0.3, len(x)))
    # one collection, drawn in the same order as one per feature; unstroked markers (s=9: the size of the
    # stroked s=4 ones) halve the rendering work
    ax.scatter(
        np.concatenate(xs),
        np.concatenate(ys),
        c=np.concatenate(colors),
        cmap="coolwarm",
        s=9,
        linewidths=0,
        alpha=0.6,
        vmin=0,
        vmax=1,
    )
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(order)), [str(c)[:40] for c in order], fontsize=8)
    ax.set_xlabel(
        "SHAP value (contribution to the raw score)\ncolour: feature value, low blue to high red; grey: categorical"
    )
    ax.set_title("SHAP summary")
    _save(fig, path)
    return path


def evaluate(
    model: DriftloopModel,
    baselines: dict,
    test_df: pd.DataFrame,
    *,
    plots_dir: Path,
    shap_rows: int,
    curve_points: int,
    calibration_bins: int,
    seed: int,
    max_ece: float = 0.05,
) -> dict:
    """Metrics of the model and the baselines on the test split; writes the plot files.

    ``model`` names the model's row (``model_label``: its algorithm) and ``algorithm`` its family.

    Classification adds ``ece`` (expected calibration error) to every model's metrics and a calibration check of
    the model (``calibration``; a ``warnings`` entry when poor); binary states the positive class.
    """
    from driftloop.train import baseline_scores

    task = model.task
    y = model.encoder.encode(test_df[model.target])
    X = model.features(test_df)  # once: the model's scores, the baselines and the SHAP sample
    scores = model.scores_from_features(X)
    result = {
        "task": task,
        "rows": len(test_df),
        "model": model_label(model),
        "algorithm": getattr(model, "algorithm", "lightgbm"),
        "test": compute_metrics(task, y, scores, model.threshold),
        "baselines": {},
        "warnings": [],
    }
    if model.encoder.positive_class is not None:
        result["positive_class"] = str(model.encoder.positive_class)
        result["positive_rule"] = model.encoder.positive_rule
    if task != "regression":
        check = calibration_check(task, y, scores, bins=calibration_bins, max_ece=max_ece, seed=seed)
        result["calibration"] = check
        result["test"]["ece"] = check["ece"]
        if check.get("warning"):
            result["warnings"].append(check["warning"])
    for name, b in baselines.items():
        s = baseline_scores(b["estimator"], X, task)
        result["baselines"][name] = compute_metrics(task, y, s, b["threshold"])
        if task != "regression":
            result["baselines"][name]["ece"] = expected_calibration_error(task, y, s, calibration_bins)
    plots_dir = Path(plots_dir)
    write_curves(task, y, scores, model.threshold, model.encoder.classes, plots_dir, curve_points, calibration_bins)
    plot_importance(model, plots_dir / "feature_importance.png")
    plot_shap(model, test_df, plots_dir / "shap_summary.png", shap_rows, seed, features=X)
    return result


def write_json(obj, path: str | Path) -> None:
    from driftloop.data.ingest import write_bytes_atomic

    write_bytes_atomic((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), path)
