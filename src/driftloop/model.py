"""The trained model: preprocessing + LightGBM booster + label mapping, scoring raw rows.

In the MLflow model it is stored without pickle: the booster as LightGBM's text model
(``booster_text``) and everything else as JSON (``to_dict``); ``from_parts`` rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from driftloop.features import Preprocessor

# the declarative format of the logged model (model.json + booster.txt); bump when either changes incompatibly
MODEL_FORMAT = "driftloop.model/1"

# primary metric per task and whether higher is better
PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "macro_f1": True,
    "accuracy": True,
    "rmse": False,
    "mae": False,
    "r2": True,
    "f1": True,
    "precision": True,
    "recall": True,
}


# binary without base.positive_class: the minority label is the event, unless the labels are near balance (the
# smaller one holds at least this share of the rows): then the last in sorted order, so that a retrain on a
# slightly different mix does not flip which label the scores describe
BALANCED_SHARE = 0.45


@dataclass
class TargetEncoder:
    """Maps target labels to what LightGBM needs (class codes 0..k-1, or floats).

    Binary: ``classes[-1]`` is the positive (event) class; ``positive_rule`` says how it was chosen.
    """

    task: str
    classes: list = field(default_factory=list)
    positive_rule: str = ""  # binary: base.positive_class | minority | sorted_last (near balance)

    @classmethod
    def fit(cls, y: pd.Series, task: str, positive_class: str | None = None) -> TargetEncoder:
        if task == "regression":
            return cls(task)
        classes = sorted(pd.unique(y.dropna()).tolist(), key=lambda v: (str(type(v)), v))
        if task != "binary" or len(classes) != 2:
            return cls(task, classes)
        if positive_class is not None:
            matches = [c for c in classes if str(c) == str(positive_class)]
            if not matches:
                from driftloop.errors import DataError

                raise DataError(
                    f"base.positive_class {positive_class!r} is not a value of the target (values: {classes})"
                )
            positive, rule = matches[0], "base.positive_class"
        else:
            counts = y.value_counts()
            shares = [float(counts.get(c, 0)) / max(int(counts.sum()), 1) for c in classes]
            minority = int(np.argmin(shares))
            if shares[minority] < BALANCED_SHARE:
                positive, rule = classes[minority], "minority"
            else:
                positive, rule = classes[-1], "sorted_last"
        return cls(task, [c for c in classes if c != positive] + [positive], rule)

    @property
    def positive_class(self):
        """Binary: the event label (the scores are P(this label)); None otherwise."""
        return self.classes[-1] if self.task == "binary" and len(self.classes) == 2 else None

    def describe_positive(self, y: pd.Series | None = None) -> str:
        """One sentence naming the positive class and why (with its share of ``y`` when given)."""
        if self.positive_class is None:
            return ""
        share = ""
        if y is not None and len(y):
            share = f", {float((y.astype(str) == str(self.positive_class)).mean()):.1%} of rows"
        why = {
            "base.positive_class": "set by base.positive_class",
            "minority": "the minority label",
            "sorted_last": f"labels near balance (each >= {BALANCED_SHARE:.0%}): the last in sorted order",
        }.get(self.positive_rule, "the last label of the model")
        return (
            f"positive class {self.positive_class!r} ({why}{share}); precision, recall, F1 and PR AUC describe it; "
            "set base.positive_class to choose another"
        )

    def encode(self, y: pd.Series) -> np.ndarray:
        if self.task == "regression":
            return pd.to_numeric(y).to_numpy(dtype="float64")
        mapping = {c: i for i, c in enumerate(self.classes)}
        codes = y.map(mapping)
        if codes.isna().any():
            unseen = sorted(map(str, y[codes.isna()].unique()))[:5]
            from driftloop.errors import DataError

            raise DataError(f"target has labels not seen in training: {unseen}")
        return codes.to_numpy(dtype="int64")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[codes]

    def to_dict(self) -> dict:
        classes = []
        for c in self.classes:
            if isinstance(c, np.generic):
                c = c.item()
            if c is not None and not isinstance(c, str | bool | int | float):
                from driftloop.errors import DataError

                raise DataError(
                    f"target label {c!r} ({type(c).__name__}) cannot be stored in the model's JSON: "
                    "use text, integer, float or boolean labels"
                )
            classes.append(c)
        out = {"task": self.task, "classes": classes}
        if self.positive_class is not None:
            out.update(positive_class=classes[-1], positive_rule=self.positive_rule)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TargetEncoder:
        return cls(str(data["task"]), list(data.get("classes") or []), str(data.get("positive_rule") or ""))


@dataclass
class DriftloopModel:
    """Everything needed to score raw rows; JSON + LightGBM text inside the MLflow model (``to_dict``)."""

    preprocessor: Preprocessor
    booster: object  # lightgbm.Booster
    encoder: TargetEncoder
    target: str
    threshold: float | None = None  # binary decision threshold chosen on validation data
    best_iteration: int | None = None
    ignored: list = field(default_factory=list)  # columns dropped by validation (IDs, constants...)
    calibration: dict | None = None  # binary: score -> P(positive), fitted on validation rows (driftloop.calibration)
    threshold_objective: str | None = None  # binary: what ``threshold`` was chosen for (train.threshold_metric ...)
    # lightgbm: ``booster`` is a LightGBM booster (booster.txt: its text model); linear: a driftloop.linear.LinearModel
    # (booster.txt: its JSON coefficients), chosen by the train stage's algorithm selection
    algorithm: str = "lightgbm"
    # retrain.adapt: the model revision's evidence on the newest period's rows (driftloop.adapt), for the record; when
    # adopted, ``booster`` already holds the merged trees (an ordinary LightGBM model)
    adaptation: dict | None = None

    # ------------------------------------------------------------------ declarative form (no pickle)
    def to_dict(self) -> dict:
        """Everything but the booster, as JSON-ready data (``booster_text`` holds the trees)."""
        return {
            "format": MODEL_FORMAT,
            "target": self.target,
            "threshold": None if self.threshold is None else float(self.threshold),
            "best_iteration": None if self.best_iteration is None else int(self.best_iteration),
            "ignored": list(getattr(self, "ignored", []) or []),
            "encoder": self.encoder.to_dict(),
            "preprocessor": self.preprocessor.to_dict(),
            **({"calibration": self.calibration} if getattr(self, "calibration", None) else {}),
            **({"threshold_objective": self.threshold_objective} if getattr(self, "threshold_objective", None) else {}),
            **({"algorithm": self.algorithm} if getattr(self, "algorithm", "lightgbm") != "lightgbm" else {}),
            **({"adaptation": self.adaptation} if getattr(self, "adaptation", None) else {}),
        }

    def booster_text(self) -> str:
        """LightGBM's text model with every iteration (``best_iteration`` is applied at predict time)."""
        return self.booster.model_to_string(num_iteration=-1)

    @classmethod
    def from_parts(cls, data: dict, booster_text: str) -> DriftloopModel:
        """Rebuild from ``to_dict`` (parsed JSON) and ``booster_text``: no code from the files runs."""
        import lightgbm as lgb

        fmt = data.get("format")
        if fmt != MODEL_FORMAT:
            from driftloop.errors import RegistryError

            raise RegistryError(f"model format {fmt!r} is not supported by this driftloop (it reads {MODEL_FORMAT!r})")
        algorithm = data.get("algorithm", "lightgbm")
        if algorithm == "linear":
            from driftloop.linear import LinearModel

            booster = LinearModel.from_string(booster_text)
        elif algorithm == "lightgbm":
            booster = lgb.Booster(model_str=booster_text)
        else:
            from driftloop.errors import RegistryError

            raise RegistryError(f"model algorithm {algorithm!r} is not supported by this driftloop")
        return cls(
            preprocessor=Preprocessor.from_dict(data["preprocessor"]),
            booster=booster,
            algorithm=algorithm,
            encoder=TargetEncoder.from_dict(data["encoder"]),
            target=data["target"],
            threshold=data.get("threshold"),
            best_iteration=data.get("best_iteration"),
            ignored=list(data.get("ignored") or []),
            calibration=data.get("calibration"),
            threshold_objective=data.get("threshold_objective"),
            adaptation=data.get("adaptation"),
        )

    def contract(self) -> dict:
        """The data contract of the raw rows this model takes (monitoring checks batches against it)."""
        return self.preprocessor.contract(self.target, self.task, getattr(self, "ignored", []))

    @property
    def task(self) -> str:
        return self.encoder.task

    @property
    def revised(self) -> bool:
        """A retrain adapted to the newest regime (retrain.adapt): its trees are the retrain's and the revised older
        model's, merged (driftloop.adapt)."""
        return bool((getattr(self, "adaptation", None) or {}).get("adopted"))

    def features(self, raw: pd.DataFrame) -> pd.DataFrame:
        return self.preprocessor.transform(raw)

    def predict_scores(self, raw: pd.DataFrame, num_threads: int | None = None) -> np.ndarray:
        """Binary: P(positive); multiclass: (n, k) probabilities; regression: the prediction.

        ``num_threads`` changes the speed, never the values (the server scores small requests on one thread).
        """
        return self.scores_from_features(self.features(raw), num_threads)

    def scores_from_features(self, X: pd.DataFrame, num_threads: int | None = None) -> np.ndarray:
        """``predict_scores`` on rows already transformed by ``features`` (callers that need both)."""
        extra = {} if num_threads is None else {"num_threads": num_threads}
        return self.booster.predict(X, num_iteration=self.best_iteration, **extra)

    def predict_frame(self, raw: pd.DataFrame, num_threads: int | None = None) -> pd.DataFrame:
        return pd.DataFrame(self.outputs(self.predict_scores(raw, num_threads)), index=raw.index)

    def outputs(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """The prediction columns of ``scores``: ``prediction`` (label or value) and ``proba_<class>``."""
        if self.task == "regression":
            return {"prediction": scores}
        if self.task == "binary":
            proba = np.column_stack([1 - scores, scores])
            threshold = 0.5 if self.threshold is None else self.threshold
            codes = (scores >= threshold).astype(int)
        else:
            proba = scores
            codes = proba.argmax(axis=1)
        out = {"prediction": self.encoder.decode(codes)}
        for i, c in enumerate(self.encoder.classes):
            out[f"proba_{c}"] = proba[:, i]
        return out

    def feature_importance(self) -> pd.Series:
        gain = self.booster.feature_importance(importance_type="gain")
        names = [self.preprocessor.original_name[n] for n in self.booster.feature_name()]
        return pd.Series(gain, index=names).sort_values(ascending=False)
