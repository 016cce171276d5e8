"""Typed configuration: ``params.yaml`` parsed into frozen pydantic models.

Every section rejects unknown keys, so a typo fails before any work with a message naming
the key. Only connection settings may be overridden from the environment (see
``ENV_OVERRIDES``); model settings come from ``params.yaml`` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftloop.errors import DriftloopError


class ConfigError(DriftloopError, ValueError):
    """Invalid or unreadable configuration; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Task = Literal["auto", "binary", "multiclass", "regression"]


class BaseParams(_Section):
    seed: int = 42
    task: Task = "auto"
    target: str = "default"
    positive_class: str | None = None  # binary: the event label (default: the minority label, see model.py)
    experiment: str = "driftloop"
    model_name: str = "driftloop"
    tracking_uri: str = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    artifact_location: str = "mlartifacts"


class DriftParams(_Section):
    """A drift scenario for simulated production periods; 0 means none, 1 the documented size."""

    covariate_shift: float = Field(0.0, ge=0, le=3)
    new_category: float = Field(0.0, ge=0, le=1)
    concept_drift: float = Field(0.0, ge=0, le=3)
    prior_shift: float = Field(0.0, ge=0, le=3)


class SimulateParams(_Section):
    n_rows: int = Field(20_000, ge=1_000, le=10_000_000)
    start_date: str = "2024-01-01"
    months: int = Field(12, ge=1, le=120)
    default_rate: float = Field(0.14, gt=0.01, lt=0.5)
    chunk_rows: int = Field(250_000, ge=1_000)
    drift: DriftParams = DriftParams()


class SqlParams(_Section):
    url: str | None = None  # may come from DRIFTLOOP_SQL_URL
    query: str | None = None
    table: str | None = None


class IngestParams(_Section):
    source: Literal["simulate", "csv", "parquet", "sql"] = "simulate"
    path: str | None = None
    read_options: dict[str, Any] = {}
    sql: SqlParams = SqlParams()
    chunk_rows: int = Field(250_000, ge=1_000)
    labeled_dir: str | None = "data/labeled"  # labeled production batches appended by retraining (DVC-tracked)

    @model_validator(mode="after")
    def _source_needs(self) -> IngestParams:
        if self.source in ("csv", "parquet") and not self.path:
            raise ValueError(f"ingest.path is required when ingest.source is '{self.source}'")
        if self.source == "sql" and not (self.sql.query or self.sql.table):
            raise ValueError("ingest.sql.query or ingest.sql.table is required when ingest.source is 'sql'")
        return self


class ValidateParams(_Section):
    ignore_columns: list[str] = []
    categorical_columns: list[str] = []
    date_columns: list[str] = []
    id_columns: list[str] = []
    min_rows: int = Field(100, ge=10)
    id_unique_fraction: float = Field(0.99, gt=0.5, le=1.0)
    leakage_threshold: float = Field(0.99, gt=0.5, le=1.0)
    on_leakage: Literal["error", "warn", "drop"] = "error"
    on_duplicate_rows: Literal["warn", "drop"] = "warn"
    leakage_sample_rows: int = Field(20_000, ge=500)
    # pairs of these many numeric columns (the best alone) are checked together (k*(k-1)/2 pairs); 0 = off
    leakage_pair_columns: int = Field(12, ge=0, le=60)
    min_class_share: float = Field(0.05, ge=0, lt=0.5)  # a smaller class (share of the rows) is warned about
    # date_columns / split.time_column whose day/month order is unsafe (mixed formats, dd/mm vs mm/dd)
    on_ambiguous_dates: Literal["error", "warn"] = "error"


class SplitParams(_Section):
    test_size: float = Field(0.2, gt=0, lt=0.9)
    valid_size: float = Field(0.2, gt=0, lt=0.9)
    time_column: str | None = None
    # time split: the share of the latest test_size period's rows held out as test (stratified, seeded); the rest
    # of that period joins validation. 1.0: the whole latest period is test (the classic time split)
    time_test_share: float = Field(1.0, gt=0, le=1)
    group_column: str | None = None
    stratify: bool = True


class FeaturesParams(_Section):
    max_categories: int = Field(1000, ge=2)
    min_category_count: int = Field(1, ge=1)
    date_parts: list[Literal["year", "month", "day", "dayofweek", "dayofyear", "hour"]] = [
        "year",
        "month",
        "dayofweek",
    ]


# rows of train + valid at or below which ``tune.cv_folds: auto`` cross-validates (above: the validation split)
# 10,000: on statsmodels' randhie (16k train+valid rows) 5-fold CV left time for 4-5 trials under the auto budget
# and ended 1.7 % RMSE behind FLAML; the validation split ran 30 trials and ended 2.8 % ahead (benchmarks/README.md)
CV_AUTO_MAX_ROWS = 10_000
CV_AUTO_FOLDS = 5

Range = tuple[float, float]


class SpaceParams(_Section):
    """The search space of the tune stage: ``[low, high]`` per LightGBM parameter (log-uniform where noted in
    ``driftloop.tune.LOG_SCALE``); ``max_bin`` is a list of choices. ``low == high`` fixes a parameter."""

    learning_rate: Range = (0.01, 0.3)
    num_leaves: tuple[int, int] = (4, 256)
    min_child_samples: tuple[int, int] = (2, 200)
    max_bin: list[int] = [31, 63, 127, 255]
    feature_fraction: Range = (0.4, 1.0)
    bagging_fraction: Range = (0.4, 1.0)
    lambda_l1: Range = (1e-8, 10.0)
    lambda_l2: Range = (1e-8, 10.0)
    min_split_gain: Range = (1e-8, 1.0)
    cat_smooth: Range = (1.0, 100.0)

    @model_validator(mode="after")
    def _ordered(self) -> SpaceParams:
        for name, value in self:
            if isinstance(value, tuple) and not value[0] <= value[1]:
                raise ValueError(f"tune.space.{name}: low {value[0]} is above high {value[1]}")
            if isinstance(value, tuple) and value[0] <= 0 and name != "feature_fraction":
                raise ValueError(f"tune.space.{name}: bounds must be > 0 (got {list(value)})")
        if not self.max_bin or any(not 7 <= b <= 1023 for b in self.max_bin):
            raise ValueError(f"tune.space.max_bin: a non-empty list of values in 7..1023 (got {self.max_bin})")
        for name in ("feature_fraction", "bagging_fraction"):
            if not 0 < getattr(self, name)[0] <= getattr(self, name)[1] <= 1:
                raise ValueError(f"tune.space.{name}: bounds must lie in (0, 1] (got {list(getattr(self, name))})")
        return self


class TuneParams(_Section):
    n_trials: int = Field(30, ge=1)
    # auto: scaled to the data (driftloop.tune.auto_timeout: 30 s + 50 s per million train+valid cells, at most
    # 600 s); null: no time budget (n_trials only). A trial that started before the budget ran out finishes.
    timeout_seconds: float | Literal["auto"] | None = "auto"
    metric: Literal["auto", "auc", "binary_logloss", "multi_logloss", "rmse", "l2", "l1"] = "auto"
    # auto: stratified k-fold CV (cv_auto_folds) over train+valid when they hold at most cv_auto_max_rows rows,
    # the validation split above; 0 = the validation split; >= 2 = that many folds. Grouped folds when
    # split.group_column is set, time-ordered (expanding window) when split.time_column is.
    cv_folds: int | Literal["auto"] = "auto"
    cv_auto_max_rows: int = Field(CV_AUTO_MAX_ROWS, ge=0)
    cv_auto_folds: int = Field(CV_AUTO_FOLDS, ge=2, le=20)
    sampler: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    # sampler grid: the values tried per parameter (the cartesian product; parameters not listed keep
    # LightGBM's default); the study stops when the grid is done or n_trials is reached
    grid: dict[str, list[float]] = {}
    space: SpaceParams = SpaceParams()
    low_cost_start: bool = True  # enqueue cheap configurations (few leaves, large learning rate) first
    storage: str = "memory"  # memory | a journal file path | a database URL
    study_name: str | None = None
    max_rounds: int = Field(1000, ge=10)
    early_stopping_rounds: int = Field(50, ge=5)
    # auto: prune on the validation split only (cross-validated trials on small data are cheap, and a single
    # small validation split is too noisy to judge a curve by)
    pruning: bool | Literal["auto"] = "auto"
    # best_curve: prune a trial clearly behind the best finished trial at the same round (driftloop.pruners);
    # median: Optuna's median pruner (more trials per minute, and a lower best score: benchmarks/README.md)
    pruner: Literal["best_curve", "median"] = "best_curve"
    pruner_margin: float = Field(0.006, ge=0, le=1)  # best_curve: tolerated shortfall, a fraction of the best's value
    pruner_startup_trials: int = Field(5, ge=0)
    pruner_warmup_rounds: int = Field(30, ge=0)
    report_every: int = Field(5, ge=1)
    n_startup_trials: int = Field(8, ge=1)
    warm_start: bool = True
    num_threads: int = Field(0, ge=0)  # 0: one thread below 20,000 train+valid rows, all cores above
    max_bin: int = Field(255, ge=15, le=1023)  # the default trial's (and an unsearched) max_bin

    @property
    def max_cv_folds(self) -> int:
        """The most folds this config may cross-validate with (validation checks every class can fill them)."""
        return self.cv_auto_folds if self.cv_folds == "auto" else self.cv_folds

    @model_validator(mode="after")
    def _valid_choices(self) -> TuneParams:
        if isinstance(self.cv_folds, int) and (self.cv_folds == 1 or not 0 <= self.cv_folds <= 20):
            raise ValueError(f"tune.cv_folds: 'auto', 0 (the validation split) or 2..20 folds (got {self.cv_folds})")
        known = set(SpaceParams.model_fields)
        unknown = sorted(set(self.grid) - known)
        if unknown:
            raise ValueError(f"tune.grid: unknown parameters {unknown}; searchable: {sorted(known)}")
        empty = sorted(k for k, v in self.grid.items() if not v)
        if empty:
            raise ValueError(f"tune.grid: {empty} need at least one value")
        if self.sampler == "grid" and not self.grid:
            raise ValueError("tune.sampler 'grid' needs tune.grid: a list of values per parameter to try")
        return self

    @model_validator(mode="after")
    def _no_password_in_storage(self) -> TuneParams:
        # DVC copies the values of params.yaml into dvc.lock (git-tracked): a password there would be committed.
        # The same URL from the environment (DRIFTLOOP_OPTUNA_STORAGE) is fine: it never reaches a file.
        secret = "://" in self.storage and mask_url(self.storage) != self.storage  # (mask_url: below)
        if secret and self.storage != os.environ.get("DRIFTLOOP_OPTUNA_STORAGE"):
            raise ValueError(
                "tune.storage holds a password, which DVC would copy into dvc.lock: set the URL in the "
                "DRIFTLOOP_OPTUNA_STORAGE environment variable instead (it overrides params.yaml), "
                "or use a password-less URL with the password in ~/.pgpass"
            )
        return self


class TrainParams(_Section):
    # "linear": the regularized linear model of the task, named as what is fitted: "logistic" (logistic
    # regression) for classification, "ridge" for regression; "logistic" and "ridge" are accepted for it
    baselines: list[Literal["dummy", "linear", "logistic", "ridge"]] = ["dummy", "linear"]
    # refit the tuned LightGBM on train + valid with the tuned rounds scaled to the larger data (driftloop.train);
    # false: the model fitted on train with early stopping on valid (the validation metrics' model)
    refit: bool = True
    # none; balanced: binary scale_pos_weight = negatives/positives, multiclass rows weighted n/(k * n_class);
    # auto: binary with a minority share below minority_share_auto: the study is unweighted, then the train stage
    # scores scale_pos_weight 1, sqrt(neg/pos) and neg/pos on held-out PR AUC (CV folds or the validation split) and
    # takes a weight only when its gain's bootstrap 5 % quantile is above 0 (driftloop.train._choose_scale_pos_weight).
    # Default none: see the README's imbalance figures (benchmarks/bench_quality.py --imbalance)
    class_weight: Literal["none", "balanced", "auto"] = "none"
    # compared with the tuned LightGBM on the validation split (driftloop.train.select); the best of lightgbm and
    # linear (stored as JSON coefficients) is the model; hist_gradient_boosting is compared only (scikit-learn can
    # store it only by pickle, which driftloop never loads)
    candidates: list[Literal["linear", "hist_gradient_boosting"]] = ["linear", "hist_gradient_boosting"]
    minority_share_auto: float = Field(0.2, gt=0, le=0.5)
    # binary decision threshold, chosen on validation rows: f1 (best F1), youden (best TPR - FPR), recall_floor (the
    # best precision with recall >= threshold_min_recall), cost (the least threshold_cost_fp * FP + _fn * FN)
    threshold_metric: Literal["f1", "youden", "recall_floor", "cost"] = "f1"
    threshold_min_recall: float = Field(0.8, gt=0, le=1)
    threshold_cost_fp: float = Field(1.0, gt=0)
    threshold_cost_fn: float = Field(1.0, gt=0)
    baseline_max_rows: int = Field(500_000, ge=1_000)  # baselines are fitted on a seeded sample above this


class RetrainParams(_Section):
    """What a training (the first one and every retrain) fits on, and the retrain's tuning budget.

    ``all``: every training row, equal weights. ``window``: only the newest ``window_rows`` rows of train (and of
    valid) by ``time_column``. ``recency``: every row, weighted ``0.5 ** (age_days / half_life_days)`` (age from the
    newest train/valid row; LightGBM sample weights, in tuning and training). benchmarks/bench_judgment.py compares
    them on the simulator's drift scenarios (README, issue 12).
    """

    training_data: Literal["all", "window", "recency"] = "all"
    # the rows' time for window/recency; null: split.time_column, else the data's only datetime column; none: all
    # rows, equal weights (the tune/train runs log a note); a named column missing from the data is an error
    time_column: str | None = None
    window_rows: int = Field(5_000, ge=100)
    half_life_days: float = Field(30.0, gt=0)
    # trials when a champion exists (a retrain: its parameters are enqueued first, the warm start), at most
    # tune.n_trials; null: tune.n_trials
    n_trials: int | None = Field(10, ge=1)
    # monitoring with retraining on (`monitor --retrain`, the flow, the demo): a labeled batch that does not trigger
    # a retrain (ok, warn, cooldown) still joins the training data as a DVC data version; the next retrain uses it
    keep_labeled_batches: bool = True
    # a training split larger than this is fitted (tuned and trained) on a weighted coreset of this many rows:
    # stratified by target and by a pilot model's score bins, more rows where the score is uncertain, inverse-
    # probability weights (driftloop.training_data.coreset); null: every row
    coreset_rows: int | None = Field(None, ge=1_000)
    coreset_bins: int = Field(10, ge=1, le=100)
    # binary, time split with split.time_test_share < 1: revise the model fitted on the older rows on the newest
    # period's training rows (each feature's contribution re-weighted, shrunk toward the old model) and average it
    # with the retrain, when the revision's out-of-fold log loss there is significantly better (driftloop.adapt);
    # none: the retrain alone
    adapt: Literal["none", "revise"] = "revise"
    adapt_min_rows: int = Field(500, ge=50)  # fewer newest-period training rows than this: no revision is tried


class EvaluateParams(_Section):
    shap_sample_rows: int = Field(1000, ge=100)
    curve_points: int = Field(200, ge=10)
    calibration_bins: int = Field(10, ge=2)
    max_ece: float = Field(0.05, gt=0, lt=1)  # classification: a larger calibration error on test is warned about


class RegisterParams(_Section):
    enabled: bool = True
    metric: Literal["auto", "roc_auc", "pr_auc", "log_loss", "macro_f1", "accuracy", "rmse", "mae", "r2"] = "auto"
    min_improvement: float = Field(0.0, ge=0)
    n_bootstrap: int = Field(300, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    require_significant: bool = False
    # the gate refuses to judge on thin evidence: binary = positives AND negatives, multiclass = rows of every
    # class, regression = rows, in the test split (and the validation split); fewer -> @challenger, not promoted
    min_test_events: int = Field(30, ge=0)
    lock_timeout_s: float = Field(120.0, gt=0)  # wait at most this long for another alias move to finish


class MonitorParams(_Section):
    experiment: str = "driftloop-monitoring"
    reference_rows: int = Field(20_000, ge=500)
    # recent: a retrained model's drift reference is its training rows the previous champion never saw (the
    # drift it absorbed), given at least reference_min_rows of them; all: a sample of all its training rows
    reference: Literal["recent", "all"] = "recent"
    reference_min_rows: int = Field(1000, ge=100)
    sample_rows: int = Field(50_000, ge=500)
    drift_share_warn: float = Field(0.2, ge=0, le=1)
    drift_share_retrain: float = Field(0.4, ge=0, le=1)
    prediction_drift_retrain: bool = True
    performance_drop_retrain: float = Field(0.03, ge=0)
    # a drop >= performance_drop_retrain retrains only if its interval (batch + reference metric noise) excludes 0
    performance_drop_significant: bool = True
    performance_confidence: float = Field(0.95, gt=0.5, lt=1)
    performance_bootstrap: int = Field(200, ge=0)  # resamples for the batch metric's noise (not ROC AUC: DeLong)
    # binary: an estimated (label-free, CBPE) ROC AUC drop this large, with its interval above 0, retrains; None: off
    estimated_drop_retrain: float | None = Field(0.03, ge=0)
    # Distance-based tests (Evidently's defaults for samples above 1,000 rows) at every sample size: p-value tests
    # (K-S, chi-square) flag negligible differences on large batches and chi-square over-flags high-cardinality
    # columns on small ones (measured in benchmarks/bench_monitoring.py). None = Evidently's own choice.
    num_stattest: str | None = "wasserstein"
    cat_stattest: str | None = "jensenshannon"
    num_threshold: float | None = Field(0.1, gt=0)
    cat_threshold: float | None = Field(0.1, gt=0)
    cooldown_batches: int = Field(2, ge=0)
    # fewer rows: decision insufficient_data (no drift test, never a retrain, never a cooldown); 0 disables
    min_rows: int = Field(200, ge=0)
    output_dir: str = "reports/monitoring"


class AlertsParams(_Section):
    urls: list[str] = []  # Apprise URLs; DRIFTLOOP_ALERT_URLS (comma separated) adds more
    log_path: str = "reports/alerts.jsonl"
    notify_on: list[Literal["warn", "insufficient_data", "retrain", "schema_violation", "error"]] = [
        "warn",
        "retrain",
        "schema_violation",
        "error",
    ]


class ServeParams(_Section):
    """``driftloop serve``: the REST server of a registered alias (see docs/serving.md)."""

    host: str = "127.0.0.1"  # loopback unless told otherwise (--host 0.0.0.0 in a container)
    port: int = Field(8000, ge=1, le=65535)
    alias: str = "champion"
    max_body_bytes: int = Field(10_000_000, ge=1_000)  # a larger request body gets HTTP 413
    max_rows: int = Field(10_000, ge=1)  # more rows in one request get HTTP 413
    poll_interval_s: float = Field(5.0, gt=0)  # how often the alias is read for a hot swap
    registry_timeout_s: float = Field(10.0, gt=0)  # an HTTP registry's request timeout (no retries while serving)
    token_env: str = "DRIFTLOOP_SERVE_TOKEN"  # when this variable is set, requests need "Authorization: Bearer <it>"
    debug: bool = False  # errors name the contract's kinds and the offending values (never in production)
    log_predictions: bool = True
    log_dir: str = "data/predictions"  # partitioned Parquet log: <log_dir>/date=YYYY-MM-DD/part-*.parquet
    log_flush_rows: int = Field(5_000, ge=1)  # the writer flushes at this many buffered rows...
    log_flush_s: float = Field(2.0, gt=0)  # ...or after this many seconds
    log_max_buffered_rows: int = Field(1_000_000, ge=1)  # beyond this, rows are dropped (counted in /metrics)
    graceful_shutdown_s: float = Field(10.0, ge=0)  # in-flight requests get this long to finish on SIGTERM
    num_threads: int = Field(1, ge=0)  # LightGBM threads per request (0 = LightGBM's default: all cores)


class DemoParams(_Section):
    months: int = Field(12, ge=2, le=36)
    rows_per_month: int = Field(5_000, ge=500)
    initial_rows: int = Field(20_000, ge=1_000)
    drift_from_month: int = Field(6, ge=1)
    drift: DriftParams = DriftParams(covariate_shift=1.0, concept_drift=1.0)
    n_trials: int = Field(8, ge=1)
    # the oracle line: a model trained on this many post-drift rows (the first model's tuned parameters, all rows)
    oracle_rows: int = Field(20_000, ge=1_000)
    output_dir: str = "reports/demo"


with warnings.catch_warnings():
    # `register` is also an attribute of pydantic's metaclass (ABCMeta.register); the field wins on instances.
    warnings.simplefilter("ignore", UserWarning)

    class Params(_Section):
        base: BaseParams = BaseParams()
        simulate: SimulateParams = SimulateParams()
        ingest: IngestParams = IngestParams()
        validate_: ValidateParams = Field(ValidateParams(), alias="validate")
        split: SplitParams = SplitParams()
        features: FeaturesParams = FeaturesParams()
        tune: TuneParams = TuneParams()
        train: TrainParams = TrainParams()
        retrain: RetrainParams = RetrainParams()
        evaluate: EvaluateParams = EvaluateParams()
        register: RegisterParams = RegisterParams()
        monitor: MonitorParams = MonitorParams()
        alerts: AlertsParams = AlertsParams()
        serve: ServeParams = ServeParams()
        demo: DemoParams = DemoParams()

        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

        @property
        def validate_params(self) -> ValidateParams:
            return self.validate_

        def hash(self, *sections: str) -> str:
            """A stable hash of the given sections (all model sections by default)."""
            data = self.model_dump(mode="json", by_alias=True)
            keys = sections or MODEL_SECTIONS
            payload = {k: data[k] for k in keys}
            payload["base"] = {k: v for k, v in payload.get("base", {}).items() if k not in _CONNECTION_KEYS}
            if "tune" in payload:  # tune.storage is a connection setting (DRIFTLOOP_OPTUNA_STORAGE)
                payload["tune"] = {k: v for k, v in payload["tune"].items() if k != "storage"}
            return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_CONNECTION_KEYS = {"tracking_uri", "registry_uri", "artifact_location"}
# the sections that define a model (Params.hash)
MODEL_SECTIONS = ("base", "simulate", "ingest", "validate", "split", "features", "tune", "train", "retrain")

# Environment variables that may override connection settings (never model settings).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "MLFLOW_TRACKING_URI": ("base", "tracking_uri"),
    "MLFLOW_REGISTRY_URI": ("base", "registry_uri"),
    "DRIFTLOOP_OPTUNA_STORAGE": ("tune", "storage"),
}


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"invalid params in {path}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "validate_") or "(top level)"
        loc = loc.replace("validate_", "validate")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `driftloop config --schema` lists the keys)"
        elif e["type"] == "literal_error" and e.get("ctx", {}).get("expected"):
            msg = f"must be one of {e['ctx']['expected']} (got {e.get('input')!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_params(path: str | Path = "params.yaml", env: dict[str, str] | None = None) -> Params:
    """Read and validate ``params.yaml``; apply connection overrides from the environment."""
    path = Path(path)
    env = dict(os.environ) if env is None else env
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw = {k: ({} if v is None else v) for k, v in raw.items()}  # a section with every key commented out
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sect = raw.setdefault(section, {}) or {}
            raw[section] = {**sect, key: env[var]}
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None


def params_schema() -> dict[str, Any]:
    return Params.model_json_schema(by_alias=True)


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the block; restore them afterwards."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key")


def redact_url_parts(url: str) -> str:
    """A URL safe to print or record: no password (user kept) and no query string. Pandas-free on purpose: the
    source stage (a cheap ``stat`` on every run) and ``driftloop.io.redact_url`` share it."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if parts.username:
            host = f"{parts.username}:***@{host}" if parts.password else f"{parts.username}@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "<redacted>" if parts.query else "", ""))
    except ValueError:
        return "<unparseable URL>"


def mask_url(value: str) -> str:
    """``scheme://user:secret@host/db?password=x`` → ``scheme://user:***@host/db?password=***``; other text unchanged.

    For every place a connection setting may be shown: printed config, logs, error messages, MLflow tags.
    """
    if not isinstance(value, str) or "://" not in value:
        return value
    scheme, _, rest = value.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")  # the last "@": a password may contain "@"
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:***@{host}"
    value = f"{scheme}://{authority}{slash}{path}"
    keys = "|".join(_SECRET_QUERY_KEYS)
    return re.sub(rf"([?&](?:{keys})=)[^&#\s]*", r"\1***", value, flags=re.IGNORECASE)


def mask_secrets(obj: Any) -> Any:
    """``mask_url`` applied to every string of a nested dict/list (e.g. a dumped ``Params``)."""
    if isinstance(obj, dict):
        return {k: mask_secrets(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_secrets(v) for v in obj]
    return mask_url(obj) if isinstance(obj, str) else obj
