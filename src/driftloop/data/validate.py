"""Validate stage: the data contract (pandera) and data-quality warnings.

Errors stop the pipeline before anything is written: missing target, missing/NaN/infinite
target values, a classification target with one class, fewer rows than the split and folds
need. Warnings go to ``reports/validation.json`` (and MLflow): duplicated rows, constant and
all-missing columns (dropped), ID-like columns (dropped), leakage suspects (a single feature
that alone predicts the target almost perfectly; error, warning or drop by
``validate.on_leakage``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.errors import DataError

MAX_CLASSES = 50
# the leakage check: cross-validation folds, tree depth, rows a leaf (and a category) needs, histogram bins
LEAKAGE_FOLDS = 3
LEAKAGE_TREE_DEPTH = 6
LEAKAGE_MIN_LEAF = 5
LEAKAGE_MAX_BIN = 1023  # fine bins: a narrow gap between classes keeps a bin boundary of its own
LEAKAGE_MAX_CATEGORIES = 1000


@dataclass
class Issue:
    check: str
    message: str
    column: str | None = None
    action: str = "none"  # none | dropped | rows_dropped


@dataclass
class ValidationReport:
    task: str
    rows: int
    columns: int
    warnings: list[Issue] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_warnings"] = len(self.warnings)
        return d


def infer_task(y: pd.Series, task: str = "auto") -> str:
    """binary / multiclass / regression; ``auto`` looks at the target's type and values."""
    if task != "auto":
        return task
    y = y.dropna()
    n_unique = y.nunique()
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "binary" if n_unique <= 2 else "multiclass"
    values = y.to_numpy(dtype="float64", na_value=np.nan)
    integer_valued = bool(np.all(np.isfinite(values)) and np.all(np.mod(values, 1) == 0))
    if n_unique <= 2:
        return "binary"
    if integer_valued and n_unique <= 20:
        return "multiclass"
    return "regression"


def required_rows_per_class(params: Params) -> int:
    """Rows the smallest class needs so every split (and every CV fold) sees it."""
    s = params.split
    train_share = max(1.0 - s.test_size - s.valid_size, 0.05)
    smallest_share = min(s.test_size, s.valid_size, train_share)
    folds = max(params.tune.cv_folds, 2)
    return max(math.ceil(folds / train_share), math.ceil(2 / smallest_share))


def check_contract(df: pd.DataFrame, params: Params, *, source: str) -> str:
    """Raise ``DataError`` naming the file and column when the target contract fails; return the task."""
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

    target = params.base.target
    if target not in df.columns:
        close = [c for c in df.columns if str(c).strip().lower() == target.strip().lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{source}: target column '{target}' (base.target) not found{hint}; columns: {list(df.columns)[:20]}"
        )
    y = df[target]
    if y.isna().all():
        raise DataError(f"{source}: target column '{target}' has no values")
    task = infer_task(y, params.base.task)
    checks = []
    if task == "regression":
        checks.append(
            pa.Check(
                # a Series, not an ndarray: pandera cannot post-process ndarray check results
                lambda s: pd.Series(
                    np.isfinite(pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)),
                    index=s.index,
                ),
                name="finite",
                error="must be a finite number (no inf, no text)",
            )
        )
    else:
        checks.append(
            pa.Check(lambda s: s.nunique() >= 2, name="at_least_two_classes", error="needs at least two classes")
        )
        checks.append(
            pa.Check(
                lambda s: s.nunique() <= MAX_CLASSES,
                name="at_most_50_classes",
                error=f"has more than {MAX_CLASSES} classes; set base.task: regression if it is numeric",
            )
        )
        if pd.api.types.is_float_dtype(y):
            checks.append(pa.Check(lambda s: np.isfinite(s), name="finite", error="must be finite (no inf)"))
    schema = pa.DataFrameSchema(
        {target: pa.Column(nullable=False, checks=checks, required=True)},
        checks=[
            pa.Check(
                lambda d: len(d) >= params.validate_params.min_rows,
                name="min_rows",
                error=f"needs at least validate.min_rows={params.validate_params.min_rows} rows",
            )
        ],
    )
    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as exc:
        raise DataError(_format_schema_errors(exc, source, target, len(df))) from None
    if task != "regression":
        counts = y.value_counts()
        need = required_rows_per_class(params)
        if counts.min() < need:
            raise DataError(
                f"{source}: target column '{target}': class {str(counts.idxmin())!r} has {counts.min()} rows; "
                f"the split (test_size={params.split.test_size}, valid_size={params.split.valid_size}) and "
                f"tune.cv_folds={params.tune.cv_folds} need at least {need} rows per class"
            )
    return task


def _format_schema_errors(exc, source: str, target: str, n_rows: int) -> str:
    fc = exc.failure_cases
    lines = [f"{source}: the data contract failed ({n_rows} rows):"]
    for (column, check), group in fc.groupby(["column", "check"], dropna=False, sort=False):
        col = target if column is None or (isinstance(column, float) and math.isnan(column)) else column
        examples = [str(v) for v in group["failure_case"].head(3).tolist()]
        check = str(check)
        if check == "not_nullable":
            rows = group["index"].head(3).tolist()
            lines.append(f"  column '{col}': {len(group)} missing (NaN/null) target values, e.g. rows {rows}")
        elif "column_in_dataframe" in check:
            lines.append(f"  column '{col}' is missing")
        else:
            n = "" if check in ("at_least_two_classes", "min_rows") else f"{len(group)} rows, e.g. {examples}: "
            lines.append(f"  column '{col}': {n}{check}")
    # attach the human messages of our named checks
    for err in exc.schema_errors:
        msg = getattr(getattr(err, "check", None), "error", None)
        if msg:
            lines.append(f"    -> {msg}")
    return "\n".join(dict.fromkeys(lines))


def _held_out_score(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The score of held-out predictions: ROC AUC / accuracy / R^2 (NaN when ``y`` is constant).

    binary: ``pred`` is a score, AUC by the rank formula (ties count half; sklearn's ``roc_auc_score``
    is ten times slower on these sizes); multiclass: ``pred`` is a class index.
    """
    if task == "binary":
        rank, pos = pd.Series(pred).rank().to_numpy(), y == 1
        n_pos = pos.sum()
        return float((rank[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos)))
    if task == "multiclass":
        return float((pred == y).mean())
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def _group_prediction(task: str, g_tr: np.ndarray, y_tr: np.ndarray, g_te: np.ndarray, m: int, k: int) -> np.ndarray:
    """Predict each held-out row's group (category) training statistic: the majority class, else the mean.

    Groups without training rows predict the prior.
    """
    count = np.bincount(g_tr, minlength=m)
    if task == "multiclass":
        table = np.bincount(g_tr * k + y_tr, minlength=m * k).reshape(m, k)
        pred = np.where(count > 0, table.argmax(axis=1), np.bincount(y_tr, minlength=k).argmax())
    else:
        pred = np.where(count > 0, np.bincount(g_tr, weights=y_tr, minlength=m) / np.maximum(count, 1), y_tr.mean())
    return pred[g_te]


def _single_feature_scores(df: pd.DataFrame, y: pd.Series, task: str, params: Params) -> dict[str, float]:
    """Cross-validated score of each feature alone (AUC / accuracy / R^2), on a seeded sample.

    Numeric (and boolean) features: one LightGBM tree (depth 6, min 5 rows a leaf, 1023 bins; missing
    values go to whichever side of each split fits them best). Categorical features: each category's
    training statistic (categories with fewer than 5 rows pooled, at most ``LEAKAGE_MAX_CATEGORIES``;
    missing its own group), so a high-cardinality code that maps to the target is caught whatever the
    order of its labels. 3 folds, stratified by class.
    """
    import lightgbm as lgb

    n = min(len(df), params.validate_params.leakage_sample_rows)
    sample = df.sample(n=n, random_state=params.base.seed) if n < len(df) else df
    ys = y.loc[sample.index]
    rng = np.random.default_rng(params.base.seed)
    if task == "regression":
        yv, k = ys.to_numpy(dtype="float64"), 1
        order = rng.permutation(n)
    else:
        yv, classes = pd.factorize(ys.astype(str), sort=True)
        k = len(classes)
        if np.bincount(yv, minlength=k).min() < LEAKAGE_FOLDS:
            return {}
        order = np.lexsort((rng.random(n), yv))  # by class, shuffled within: stratified folds
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % LEAKAGE_FOLDS
    tree = {  # one tree at learning rate 1: each leaf predicts its rows' positive rate / class shares / mean
        "objective": task,  # binary | multiclass | regression
        "num_class": k if task == "multiclass" else 1,
        "learning_rate": 1.0,
        "num_leaves": 2**LEAKAGE_TREE_DEPTH,
        "max_depth": LEAKAGE_TREE_DEPTH,
        "min_data_in_leaf": LEAKAGE_MIN_LEAF,
        "max_bin": LEAKAGE_MAX_BIN,
        "num_threads": 1,
        "deterministic": True,
        "seed": params.base.seed,
        "verbosity": -1,
    }
    categorical = set(params.validate_params.categorical_columns)
    scores = {}
    for col in sample.columns:
        s = sample[col]
        if pd.api.types.is_datetime64_any_dtype(s):
            continue
        numeric = (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) and col not in categorical
        if numeric:
            x = s.to_numpy(dtype="float64", na_value=np.nan)[:, None]
        else:
            codes, uniques = pd.factorize(s)
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            keep = np.argsort(-counts, kind="stable")[:LEAKAGE_MAX_CATEGORIES]
            keep = keep[counts[keep] >= LEAKAGE_MIN_LEAF]
            m = len(keep) + 2
            remap = np.full(len(uniques) + 1, m - 2)  # rare categories: one pooled group
            remap[keep] = np.arange(len(keep))
            remap[-1] = m - 1  # missing (code -1)
            groups = remap[codes]
        fold_scores = []
        for f in range(LEAKAGE_FOLDS):
            test = fold == f
            if numeric:
                # keep_training_booster skips a needless model-to-string round trip
                booster = lgb.train(
                    tree, lgb.Dataset(x[~test], yv[~test]), num_boost_round=1, keep_training_booster=True
                )
                pred = booster.predict(x[test], num_threads=1)
                pred = pred.argmax(axis=1) if task == "multiclass" else pred
            else:
                pred = _group_prediction(task, groups[~test], yv[~test], groups[test], m, k)
            fold_scores.append(_held_out_score(task, yv[test], pred))
        if np.all(np.isfinite(fold_scores)):
            scores[col] = float(np.mean(fold_scores))
    return scores


def validate(df: pd.DataFrame, params: Params, *, source: str) -> tuple[pd.DataFrame, ValidationReport]:
    """Check the contract (raises) and return the cleaned frame plus a report of warnings."""
    task = check_contract(df, params, source=source)
    vp = params.validate_params
    target = params.base.target
    report = ValidationReport(task=task, rows=len(df), columns=df.shape[1])

    def drop(col: str, check: str, message: str) -> None:
        if col not in report.dropped_columns:
            report.dropped_columns.append(col)
            report.warnings.append(Issue(check, message, col, "dropped"))

    for col in vp.ignore_columns:
        if col not in df.columns:
            raise DataError(f"{source}: validate.ignore_columns names column '{col}', which is not in the data")
        report.dropped_columns.append(col)
    for key in ("categorical_columns", "date_columns", "id_columns"):
        for col in getattr(vp, key):
            if col not in df.columns:
                raise DataError(f"{source}: validate.{key} names column '{col}', which is not in the data")
    if params.split.time_column and params.split.time_column not in df.columns:
        raise DataError(f"{source}: split.time_column '{params.split.time_column}' is not in the data")
    if params.split.group_column and params.split.group_column not in df.columns:
        raise DataError(f"{source}: split.group_column '{params.split.group_column}' is not in the data")
    for col in vp.id_columns:
        drop(col, "id_column", f"column '{col}' is listed in validate.id_columns")

    features = [c for c in df.columns if c != target and c not in report.dropped_columns]
    keep_for_split = {params.split.time_column, params.split.group_column} - {None}
    n = len(df)
    nulls = df[features].isna().sum()
    for col in features:
        s = df[col]
        if nulls[col] == n:
            drop(col, "all_missing", f"column '{col}' has no values")
            continue
        n_unique = s.nunique(dropna=False)
        if n_unique <= 1:
            drop(col, "constant", f"column '{col}' is constant ({s.iloc[0]!r})")
            continue
        is_id_type = (
            pd.api.types.is_integer_dtype(s) or pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s)
        ) and not pd.api.types.is_bool_dtype(s)
        if (
            col not in keep_for_split
            and col not in vp.categorical_columns
            and is_id_type
            and n >= 50
            and n_unique >= vp.id_unique_fraction * n
        ):
            drop(
                col,
                "id_like",
                f"column '{col}' is unique per row ({n_unique} values in {n} rows): an ID, not a feature",
            )

    features = [c for c in df.columns if c != target and c not in report.dropped_columns and c not in keep_for_split]
    n_dup = (
        int(df.duplicated().sum()) if n <= 5_000_000 else int(df.sample(5_000_000, random_state=0).duplicated().sum())
    )
    if n_dup:
        action = "rows_dropped" if vp.on_duplicate_rows == "drop" else "none"
        report.warnings.append(Issue("duplicate_rows", f"{n_dup} duplicated rows", None, action))
    scores = _single_feature_scores(df[features], df[target], task, params) if features else {}
    suspects = {c: s for c, s in scores.items() if s >= vp.leakage_threshold}
    for col, score in suspects.items():
        msg = (
            f"column '{col}' alone predicts the target (cross-validated score {score:.4f} >= "
            f"validate.leakage_threshold={vp.leakage_threshold}): likely leakage"
        )
        if vp.on_leakage == "error":
            raise DataError(f"{source}: {msg}. Add it to validate.ignore_columns, or set validate.on_leakage.")
        if vp.on_leakage == "drop":
            drop(col, "leakage", msg)
        else:
            report.warnings.append(Issue("leakage", msg, col))

    clean = df.drop(columns=report.dropped_columns)
    if vp.on_duplicate_rows == "drop" and n_dup:
        clean = clean.drop_duplicates(ignore_index=True)
    return clean, report
