"""Validate stage: the data contract (pandera) and data-quality warnings.

Errors stop the pipeline before anything is written: missing target, missing/NaN/infinite
target values, a classification target with one class, fewer rows than the split and folds
need, day/month orders that cannot be read safely in a date column (``validate.on_ambiguous_dates``).
Warnings go to ``reports/validation.json`` (and MLflow): infinite or huge (|x| >= 1e300) feature
values (made missing, per column with counts), duplicated rows (counted once ID-like columns are
set aside; kept or dropped by ``validate.on_duplicate_rows``), constant and all-missing columns
(dropped), ID-like columns (dropped), leakage suspects (a feature that alone, or a pair of numeric
features (with their difference, sum, product, ratio; or such a pair and one more column) that together
predicts the target almost perfectly;
``driftloop.data.leakage``; every suspect is named at once with its score; error, warning or drop by
``validate.on_leakage``), the positive class and a rare class (``validate.min_class_share``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from driftloop.config import Params
from driftloop.data.leakage import combination_scores, single_feature_scores
from driftloop.errors import DataError
from driftloop.faults import register_point

BEFORE_WRITE = register_point("validate.before_write", "driftloop validate: data checked, before validated.parquet")
BEFORE_REPORT = register_point(
    "validate.before_report", "driftloop validate: validated.parquet written, before validation.json"
)

MAX_CLASSES = 50
HUGE = 1e300  # |x| at or above this is treated as missing: no model or scaler computes with it
DATE_SAMPLE = 200_000  # distinct values of a date column examined for its format


@dataclass
class Issue:
    check: str
    message: str
    column: str | None = None
    action: str = "none"  # none | dropped | rows_dropped | values_missing
    count: int | None = None  # values or rows concerned
    score: float | None = None  # leakage: the column's cross-validated score alone


@dataclass
class ValidationReport:
    task: str
    rows: int
    columns: int
    warnings: list[Issue] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    class_shares: dict[str, float] | None = None  # classification: each label's share of the rows
    positive_class: str | None = None  # binary: the event label (base.positive_class, else the minority label)
    positive_rule: str | None = None  # base.positive_class | minority | sorted_last (labels near balance)
    notes: list[str] = field(default_factory=list)  # facts worth stating that are not warnings

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
    folds = max(params.tune.max_cv_folds, 2)
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


def class_balance(y: pd.Series, task: str, params: Params, report: ValidationReport) -> list[Issue]:
    """Fill the report's class shares and positive class; warn when the smallest class is rare.

    Binary: the positive class is ``base.positive_class``, else the minority label (the last in sorted
    order when the labels are near balance), the rule ``TargetEncoder.fit`` applies to the training split.
    A class under ``validate.min_class_share`` of the rows is a warning naming it and its share.
    """
    if task == "regression":
        return []
    from driftloop.model import TargetEncoder

    shares = y.astype(str).value_counts(normalize=True).sort_index()
    report.class_shares = {str(k): round(float(v), 6) for k, v in shares.items()}
    issues = []
    if task == "binary":
        enc = TargetEncoder.fit(y, task, params.base.positive_class)
        report.positive_class, report.positive_rule = str(enc.positive_class), enc.positive_rule
        report.notes.append(enc.describe_positive(y))
    smallest, share = str(shares.idxmin()), float(shares.min())
    threshold = params.validate_params.min_class_share
    if share < threshold:
        n = int(round(share * len(y)))
        issues.append(
            Issue(
                "class_imbalance",
                f"target '{params.base.target}': class {smallest!r} is {share:.2%} of the rows ({n} rows) < "
                f"validate.min_class_share={threshold}: imbalanced. Judge by PR AUC (register.metric: pr_auc), "
                "choose the decision threshold for the cost of errors (train.threshold_metric), and make sure "
                "the test split holds register.min_test_events of them",
                params.base.target,
                count=n,
                score=share,
            )
        )
    return issues


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


def non_finite_to_missing(df: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[Issue]]:
    """Infinite and huge (|x| >= 1e300) values of numeric ``columns`` become NaN; one issue per column."""
    issues, changed = [], {}
    for col in columns:
        s = df[col]
        if not pd.api.types.is_float_dtype(s):  # integers cannot hold inf, nor reach 1e300
            continue
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            inf = np.isinf(values)
            huge = ~inf & (np.abs(values) >= HUGE)
        n_inf, n_huge = int(inf.sum()), int(huge.sum())
        if not (n_inf or n_huge):
            continue
        parts = [f"{n_inf} infinite"] if n_inf else []
        parts += [f"{n_huge} huge (|x| >= {HUGE:g})"] if n_huge else []
        issues.append(
            Issue(
                "non_finite",
                f"column '{col}': {' and '.join(parts)} value(s) treated as missing",
                col,
                "values_missing",
                n_inf + n_huge,
            )
        )
        changed[col] = s.mask(inf | huge)
    if changed:
        df = df.assign(**changed)
    return df, issues


_YEAR_FIRST = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:$|[ T])")
_DAY_MONTH = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{2}|\d{4})(?:$|[ T])")


def date_format_issues(s: pd.Series, column: str) -> tuple[list[str], list[str]]:
    """Problems reading text dates of ``column``: (unsafe, ambiguous) messages.

    Unsafe: the values mix formats (year-first ``2024-04-03`` with ``03/04/2024`` or text), or both
    day-first and month-first values occur (``13/04`` and ``04/13``), or some values are day-first
    (``13/04/2024``): parsed one by one, ``03/04/2024`` would then be read as 4 March while ``13/04/2024``
    is 13 April, a silent swap. Ambiguous: every ``nn/nn/yyyy`` value has both parts <= 12, so the order
    cannot be told; pandas reads them month-first.
    """
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return [], []
    values = pd.Series(pd.unique(s.dropna().astype(str).str.strip()))
    values = values[values != ""].head(DATE_SAMPLE)
    if values.empty:
        return [], []
    year_first = values.str.match(_YEAR_FIRST)
    parts = values.str.extract(_DAY_MONTH)
    day_month = parts[0].notna()
    other = ~year_first & ~day_month
    families = {
        name: values[mask].iloc[0]
        for name, mask in (("year-first", year_first), ("day/month", day_month), ("other", other))
        if mask.any()
    }
    unsafe, ambiguous = [], []
    if len(families) > 1:
        examples = ", ".join(f"{name} {ex!r}" for name, ex in families.items())
        unsafe.append(f"column '{column}' mixes date formats ({examples})")
    if day_month.any():
        a = parts.loc[day_month, 0].astype(int)
        b = parts.loc[day_month, 1].astype(int)
        first_is_day, second_is_day = a > 12, b > 12
        if first_is_day.any() and second_is_day.any():
            unsafe.append(
                f"column '{column}' has day-first ({values[day_month][first_is_day].iloc[0]!r}) and month-first "
                f"({values[day_month][second_is_day].iloc[0]!r}) dates: the day/month order cannot be told"
            )
        elif first_is_day.any() and ((a <= 12) & (a != b)).any():
            ex = values[day_month][(a <= 12) & (a != b)].iloc[0]
            unsafe.append(
                f"column '{column}' has day-first dates (e.g. {values[day_month][first_is_day].iloc[0]!r}), but "
                f"{ex!r} would be read month-first (day and month swapped)"
            )
        elif not second_is_day.any() and (a != b).any():
            ambiguous.append(
                f"column '{column}': every day/month date has both parts <= 12 (e.g. "
                f"{values[day_month][a != b].iloc[0]!r}): the order cannot be told, read as month-first (mm/dd)"
            )
    return unsafe, ambiguous


DATE_FIX = (
    "Write the dates as YYYY-MM-DD, or give the format when reading: ingest.read_options "
    "{parse_dates: [<column>], date_format: {<column>: '%d/%m/%Y'}}; or set validate.on_ambiguous_dates: warn"
)


def validate(df: pd.DataFrame, params: Params, *, source: str) -> tuple[pd.DataFrame, ValidationReport]:
    """Check the contract (raises) and return the cleaned frame plus a report of warnings."""
    task = check_contract(df, params, source=source)
    vp = params.validate_params
    target = params.base.target
    report = ValidationReport(task=task, rows=len(df), columns=df.shape[1])
    report.warnings += class_balance(df[target], task, params, report)

    def drop(col: str, check: str, message: str, score: float | None = None) -> None:
        if col not in report.dropped_columns:
            report.dropped_columns.append(col)
            report.warnings.append(Issue(check, message, col, "dropped", score=score))

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

    # dates read one by one would swap day and month: refuse (or warn) naming the column
    date_columns = list(
        dict.fromkeys([*vp.date_columns, *([params.split.time_column] if params.split.time_column else [])])
    )
    unsafe: list[Issue] = []
    for col in date_columns:
        bad, ambiguous = date_format_issues(df[col], col)
        unsafe += [Issue("ambiguous_dates", m, col) for m in bad]
        report.warnings += [Issue("ambiguous_dates", m, col) for m in ambiguous]
    if unsafe and vp.on_ambiguous_dates == "error":
        raise DataError(f"{source}: " + "; ".join(i.message for i in unsafe) + f". {DATE_FIX}.")
    report.warnings += unsafe

    # infinite and huge feature values: missing, before any other check looks at them
    df, issues = non_finite_to_missing(df, [c for c in df.columns if c != target])
    report.warnings += issues

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
    scores = single_feature_scores(df[features], df[target], task, params) if features else {}
    threshold = f"validate.leakage_threshold={vp.leakage_threshold}"
    found: list[tuple[tuple[str, ...], float, str]] = []  # (columns, score, message) of every suspect
    for col, score in sorted(scores.items(), key=lambda cs: -cs[1]):
        if score >= vp.leakage_threshold:
            msg = f"column '{col}' alone predicts the target (cross-validated score {score:.4f} >= {threshold})"
            found.append(((col,), score, msg))
    single = {cols[0] for cols, _, _ in found}
    rest = [c for c in features if c not in single]
    for score, cols in combination_scores(df[rest], df[target], task, params, scores) if len(rest) > 1 else []:
        named = ", ".join(f"'{c}'" for c in cols[:-1]) + f" and '{cols[-1]}'"
        alone = ", ".join(f"{scores.get(c, float('nan')):.4f}" for c in cols)
        msg = (
            f"columns {named} together (with the pair's difference, sum, product, ratio) predict the target "
            f"(cross-validated score {score:.4f} >= {threshold}; alone {alone})"
        )
        found.append((cols, score, msg))
    if found and vp.on_leakage == "error":
        named = "; ".join(msg for _, _, msg in found)
        columns = list(dict.fromkeys(c for cols, _, _ in found for c in cols))
        raise DataError(
            f"{source}: {len(found)} leakage suspect(s): {named}. Likely leakage: add {columns} to "
            "validate.ignore_columns (or drop the column a target was computed from), or set validate.on_leakage."
        )
    for cols, score, msg in found:
        msg += ": likely leakage"
        for col in cols:
            if vp.on_leakage == "drop":
                drop(col, "leakage", msg, score)
            else:
                report.warnings.append(Issue("leakage", msg, col, score=score))

    clean = df.drop(columns=report.dropped_columns)
    # duplicates among the rows as they go on, ID-like and dropped columns set aside (an ID hides them)
    dup = clean.duplicated() if n <= 5_000_000 else clean.sample(5_000_000, random_state=0).duplicated()
    n_dup = int(dup.sum())
    if n_dup:
        action = "rows_dropped" if vp.on_duplicate_rows == "drop" else "none"
        how = "dropped" if action == "rows_dropped" else "kept (the split keeps copies of a row together)"
        set_aside = [c for c in report.dropped_columns if c in df.columns]
        aside = f", once {set_aside} are set aside" if set_aside else ""
        report.warnings.append(Issue("duplicate_rows", f"{n_dup} duplicated rows{aside}: {how}", None, action, n_dup))
        if action == "rows_dropped":
            clean = clean.drop_duplicates(ignore_index=True)
    return clean, report
