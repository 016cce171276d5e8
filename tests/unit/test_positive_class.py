"""The binary positive class: the minority label by default (stated in the validation report, model.json and
metrics.json), ``base.positive_class`` overrides; the class-imbalance warning; the calibration check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.validate import validate
from driftloop.errors import DataError
from driftloop.evaluate import calibration_check, expected_calibration_error
from driftloop.model import TargetEncoder


def params(**opts) -> Params:
    return Params.model_validate(
        {
            "base": {"target": "y", "seed": 3, **opts.pop("base", {})},
            "validate": {"min_rows": 10, **opts.pop("validate", {})},
            **opts,
        }
    )


def minority_first(n: int = 400, bad_share: float = 0.25, seed: int = 0) -> pd.DataFrame:
    """'bad' (the minority) sorts before 'good': the old default (last in sorted order) picked the majority."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < bad_share, "bad", "good")
    x = rng.normal(size=n) + (y == "bad") * 1.0
    return pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": y})


def test_minority_label_is_positive_even_when_it_sorts_first():
    df = minority_first()
    enc = TargetEncoder.fit(df["y"], "binary")
    assert enc.positive_class == "bad" and enc.classes == ["good", "bad"] and enc.positive_rule == "minority"
    assert list(enc.encode(df["y"])[:5]) == [int(v == "bad") for v in df["y"][:5]]
    assert "'bad'" in enc.describe_positive(df["y"]) and "minority" in enc.describe_positive(df["y"])
    d = enc.to_dict()
    assert d["positive_class"] == "bad" and d["positive_rule"] == "minority"
    again = TargetEncoder.from_dict(d)
    assert again.classes == ["good", "bad"] and again.positive_rule == "minority"


def test_positive_class_param_overrides_the_minority_default():
    df = minority_first()
    enc = TargetEncoder.fit(df["y"], "binary", "good")
    assert enc.positive_class == "good" and enc.positive_rule == "base.positive_class"
    with pytest.raises(DataError, match="base.positive_class 'ugly' is not a value"):
        TargetEncoder.fit(df["y"], "binary", "ugly")


def test_near_balance_keeps_the_last_sorted_label_so_a_retrain_does_not_flip_it():
    for share in (0.47, 0.5, 0.53):  # either label may be the minority: the choice must not depend on it
        y = pd.Series(["no"] * int(1000 * (1 - share)) + ["yes"] * int(1000 * share))
        enc = TargetEncoder.fit(y, "binary")
        assert enc.positive_class == "yes" and enc.positive_rule == "sorted_last", share
    y = pd.Series(["no"] * 560 + ["yes"] * 440)  # 44 %: below the band, the minority again
    assert TargetEncoder.fit(y, "binary").positive_class == "yes"
    y = pd.Series(["no"] * 440 + ["yes"] * 560)
    assert TargetEncoder.fit(y, "binary").positive_class == "no"


def test_integer_labels_keep_one_as_positive_when_it_is_the_minority():
    y = pd.Series([0] * 86 + [1] * 14)
    assert TargetEncoder.fit(y, "binary").positive_class == 1
    y = pd.Series([0] * 14 + [1] * 86)  # 0 is the event here
    assert TargetEncoder.fit(y, "binary").positive_class == 0


def test_validation_report_states_the_positive_class_and_class_shares():
    df = minority_first()
    _, report = validate(df, params(), source="credit.csv")
    d = report.to_dict()
    assert d["positive_class"] == "bad" and d["positive_rule"] == "minority"
    assert set(d["class_shares"]) == {"bad", "good"} and d["class_shares"]["bad"] < 0.35
    assert any("positive class 'bad'" in n for n in d["notes"])
    assert not [w for w in report.warnings if w.check == "class_imbalance"]
    _, report = validate(df, params(base={"positive_class": "good"}), source="credit.csv")
    assert report.positive_class == "good" and report.positive_rule == "base.positive_class"


def test_rare_class_is_warned_about_with_its_share_and_the_threshold():
    df = minority_first(n=2000, bad_share=0.03)
    _, report = validate(df, params(), source="fraud.csv")
    (w,) = [w for w in report.warnings if w.check == "class_imbalance"]
    assert "'bad'" in w.message and "validate.min_class_share=0.05" in w.message
    assert w.count == (df["y"] == "bad").sum() and w.score == pytest.approx(w.count / len(df))
    _, report = validate(df, params(validate={"min_class_share": 0.02}), source="fraud.csv")
    assert not [w for w in report.warnings if w.check == "class_imbalance"]


def test_multiclass_rare_class_is_warned_about():
    rng = np.random.default_rng(1)
    y = rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.38, 0.02])
    df = pd.DataFrame({"x": rng.normal(size=3000), "y": y})
    _, report = validate(df, params(), source="m.csv")
    (w,) = [w for w in report.warnings if w.check == "class_imbalance"]
    assert "'c'" in w.message and report.positive_class is None


# --------------------------------------------------------------------------- the calibration check
def test_calibrated_scores_pass_and_miscalibrated_ones_are_flagged():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 5, 3000)
    y = (rng.random(3000) < p).astype(int)
    good = calibration_check("binary", y, p, bins=10, max_ece=0.05, seed=1)
    assert good["ece"] < 0.03 and not good["poor"] and "warning" not in good
    squashed = np.clip(p * 2.5, 0, 1)  # same ranking, probabilities far too high
    bad = calibration_check("binary", y, squashed, bins=10, max_ece=0.05, seed=1)
    assert bad["poor"] and bad["ece"] > 0.1 and "evaluate.max_ece=0.05" in bad["warning"]
    assert expected_calibration_error("binary", y, squashed) == pytest.approx(bad["ece"])


def test_small_test_split_noise_is_not_called_poor_calibration():
    rng = np.random.default_rng(2)
    p = rng.beta(1, 5, 120)  # 12 rows a bin: the ECE of a perfect model is mostly noise here
    y = (rng.random(120) < p).astype(int)
    check = calibration_check("binary", y, p, bins=10, max_ece=0.05, seed=1)
    assert check["ece_noise_95"] > 0.05 and not check["poor"]


def test_multiclass_calibration_uses_the_top_class_confidence():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2000, 3)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert not calibration_check("multiclass", y, p, bins=10, max_ece=0.05, seed=1)["poor"]
    sharp = np.exp(logits * 4) / np.exp(logits * 4).sum(axis=1, keepdims=True)  # overconfident
    assert calibration_check("multiclass", y, sharp, bins=10, max_ece=0.05, seed=1)["poor"]
