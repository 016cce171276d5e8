"""Target encoding, metrics on hand-checked arrays, a tiny LightGBM fit, and the promotion gate."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest

from driftloop.config import Params
from driftloop.data.simulate import simulate
from driftloop.data.split import split
from driftloop.errors import DataError
from driftloop.evaluate import compute_metrics, evaluate, shap_values
from driftloop.model import DriftloopModel, TargetEncoder
from driftloop.register import CHALLENGER, CHAMPION, bootstrap_improvement, decide
from driftloop.train import baseline_scores, train
from driftloop.tune import LGBM_DEFAULTS, lgb_params

# --------------------------------------------------------------------------- TargetEncoder


def test_encoder_good_bad_default_positive_is_the_minority():
    y = pd.Series(["good", "bad", "good", "good"])
    enc = TargetEncoder.fit(y, "binary")
    assert enc.classes == ["good", "bad"] and enc.positive_rule == "minority"
    assert enc.encode(y).tolist() == [0, 1, 0, 0]
    assert enc.decode(np.array([0, 1])).tolist() == ["good", "bad"]


def test_encoder_positive_class_moves_to_code_1():
    y = pd.Series(["good", "bad", "good", "good"])
    enc = TargetEncoder.fit(y, "binary", positive_class="good")
    assert enc.classes == ["bad", "good"]
    assert enc.encode(y).tolist() == [1, 0, 1, 1]
    assert enc.decode(enc.encode(y)).tolist() == y.tolist()


def test_encoder_positive_class_given_as_text_for_int_target():
    y = pd.Series([1, 0, 0, 1])
    enc = TargetEncoder.fit(y, "binary", positive_class="0")
    assert enc.classes == [1, 0]
    assert enc.encode(y).tolist() == [0, 1, 1, 0]


def test_encoder_unknown_positive_class():
    with pytest.raises(DataError) as exc:
        TargetEncoder.fit(pd.Series(["good", "bad"]), "binary", positive_class="Good")
    assert "base.positive_class 'Good'" in str(exc.value)
    assert "bad" in str(exc.value) and "good" in str(exc.value)


def test_encoder_unseen_label_at_encode():
    enc = TargetEncoder.fit(pd.Series(["a", "b", "c"]), "multiclass")
    assert enc.encode(pd.Series(["c", "a"])).tolist() == [2, 0]
    with pytest.raises(DataError, match="'d'"):
        enc.encode(pd.Series(["a", "d"]))


def test_encoder_regression_passthrough():
    enc = TargetEncoder.fit(pd.Series([1.5, 2.0]), "regression")
    assert enc.classes == []
    assert enc.encode(pd.Series([1, 2.5])).dtype == np.float64


# --------------------------------------------------------------------------- compute_metrics


def test_binary_metrics_perfect():
    y = np.array([0, 0, 1, 1, 0])
    p = np.array([0.0, 0.1, 0.9, 1.0, 0.2])
    m = compute_metrics("binary", y, p)
    assert m["roc_auc"] == 1.0
    assert m["pr_auc"] == 1.0
    assert m["precision"] == m["recall"] == m["f1"] == 1.0
    assert m["log_loss"] < 0.2
    assert m["brier"] == pytest.approx((0.01 + 0.01 + 0.04) / 5)
    assert m["threshold"] == 0.5


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = compute_metrics("binary", y, p)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered correctly
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    assert (m["precision"], m["recall"]) == (1.0, 0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    # a lower threshold flips one prediction
    m = compute_metrics("binary", y, p, threshold=0.3)
    assert (m["precision"], m["recall"], m["threshold"]) == (pytest.approx(2 / 3), 1.0, 0.3)


@pytest.mark.filterwarnings("ignore:Only one class")
def test_binary_metrics_single_class_gives_nan_not_crash():
    m = compute_metrics("binary", np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]))
    assert math.isnan(m["roc_auc"])
    assert m["recall"] == pytest.approx(2 / 3)


def test_multiclass_metrics():
    y = np.array([0, 1, 2, 2])
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]])
    m = compute_metrics("multiclass", y, scores)
    assert m["accuracy"] == 0.75
    # per class F1: class 0 = 1, class 1 = 2/3 (P 1/2, R 1), class 2 = 2/3 (P 1, R 1/2)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 1.0])))
    perfect = compute_metrics("multiclass", y, np.eye(3)[y])
    assert perfect["accuracy"] == perfect["macro_f1"] == 1.0
    assert perfect["log_loss"] < 1e-10


def test_regression_metrics():
    m = compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / 2)
    assert compute_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 2.0])) == {
        "rmse": 0.0,
        "mae": 0.0,
        "r2": 1.0,
    }


# --------------------------------------------------------------------------- a tiny LightGBM model

TUNE = {"max_rounds": 50, "early_stopping_rounds": 10, "num_threads": 1}


def make_params(**register) -> Params:
    return Params.model_validate(
        {
            "base": {"target": "default", "seed": 3},
            "tune": TUNE,
            # the gate's tests compare fixed models on 300 test rows: the train-only fits they were written with
            "train": {"refit": False, "candidates": []},  # and LightGBM always: these test its model
            "register": {"n_bootstrap": 10, **register},
        }
    )


def fit(params: Params, train_df: pd.DataFrame, valid_df: pd.DataFrame, task: str = "binary"):
    n_classes = train_df[params.base.target].nunique() if task == "multiclass" else 2
    return train(
        train_df,
        valid_df,
        params,
        task,
        lgb_params(task, n_classes, params.tune, params.base.seed, dict(LGBM_DEFAULTS)),
    )


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    df = simulate(1500, seed=11).drop(columns=["application_id"])
    return split(df, make_params(), "binary")


@pytest.fixture(scope="module")
def trained(splits):
    return fit(make_params(), splits["train"], splits["valid"])


def test_train_produces_a_model_that_beats_the_dummy(trained, splits):
    model = trained.model
    assert isinstance(model, DriftloopModel)
    assert model.task == "binary"
    assert model.encoder.classes == [0, 1]
    assert 0 < model.threshold < 1
    assert set(trained.baselines) == {"dummy", "logistic"}
    valid = trained.valid_metrics
    assert valid["dummy"]["roc_auc"] == pytest.approx(0.5)
    assert valid["lightgbm"]["roc_auc"] > 0.6
    assert valid["lightgbm"]["roc_auc"] > valid["dummy"]["roc_auc"] + 0.1
    # ... and on the untouched test split
    test = splits["test"]
    y = model.encoder.encode(test["default"])
    lgbm = compute_metrics("binary", y, model.predict_scores(test))
    dummy = compute_metrics(
        "binary", y, baseline_scores(trained.baselines["dummy"]["estimator"], model.features(test), "binary")
    )
    assert lgbm["roc_auc"] > dummy["roc_auc"] + 0.1
    assert lgbm["log_loss"] < dummy["log_loss"]


def test_evaluate_writes_every_output_and_computes_features_once(trained, splits, tmp_path, monkeypatch):
    model = trained.model
    test = splits["test"]
    # the features are computed once and reused for the scores, the baselines and the SHAP sample
    np.testing.assert_array_equal(model.scores_from_features(model.features(test)), model.predict_scores(test))
    calls = []
    transform = type(model.preprocessor).transform
    monkeypatch.setattr(
        type(model.preprocessor), "transform", lambda self, X: calls.append(len(X)) or transform(self, X)
    )
    result = evaluate(
        model, trained.baselines, test, plots_dir=tmp_path, shap_rows=100, curve_points=50, calibration_bins=5, seed=1
    )
    assert calls == [len(test)]
    assert set(result) == {"task", "rows", "test", "baselines", "warnings", "positive_class", "positive_rule"} | {
        "calibration",
        "model",
        "algorithm",
    }
    assert result["model"] == "lightgbm (tuned)" and result["algorithm"] == "lightgbm"
    assert result["positive_class"] == "1" and result["positive_rule"] == "minority"  # 14 % defaults
    y = model.encoder.encode(test["default"])
    expected = compute_metrics("binary", y, model.predict_scores(test), model.threshold)
    assert result["test"] == {**expected, "ece": result["calibration"]["ece"]}
    assert 0 <= result["test"]["ece"] < 0.2 and "ece" in result["baselines"]["logistic"]
    assert set(result["baselines"]) == {"dummy", "logistic"}
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {
        "roc.csv",
        "precision_recall.csv",
        "calibration.csv",
        "confusion.csv",
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion.png",
        "feature_importance.png",
        "shap_summary.png",
    }
    assert list(pd.read_csv(tmp_path / "roc.csv").columns) == ["fpr", "tpr"]
    assert list(pd.read_csv(tmp_path / "confusion.csv").columns) == ["actual", "predicted"]


def test_shap_sample_from_precomputed_features_is_the_same(trained, splits):
    model = trained.model
    test = splits["test"].set_axis(splits["test"].index * 3 + 7)  # any index
    contrib, X = shap_values(model, test, 60, seed=5)
    contrib2, X2 = shap_values(model, test, 60, seed=5, features=model.features(test))
    pd.testing.assert_frame_equal(contrib, contrib2)
    pd.testing.assert_frame_equal(X, X2)
    assert X.index.equals(test.sample(n=60, random_state=5).index)  # the rows raw.sample would pick
    # TreeSHAP contributions plus the bias term add up to the raw score
    raw_score = model.booster.predict(model.features(test.loc[X.index]), raw_score=True)
    full = model.booster.predict(model.features(test.loc[X.index]), pred_contrib=True)
    np.testing.assert_allclose(contrib.to_numpy(), full[:, :-1])
    np.testing.assert_allclose(full.sum(axis=1), raw_score, rtol=1e-6, atol=1e-9)


def test_predict_frame_on_raw_rows(trained, splits):
    model = trained.model
    raw = splits["test"].drop(columns=["default"]).head(50)
    raw.index = raw.index + 1000
    out = model.predict_frame(raw)
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    assert out.index.equals(raw.index)
    np.testing.assert_allclose(out["proba_0"] + out["proba_1"], 1.0)
    assert out["proba_1"].between(0, 1).all()
    assert set(out["prediction"]) <= {0, 1}
    assert (out["prediction"] == (out["proba_1"] >= model.threshold).astype(int)).all()


def test_predict_frame_handles_unseen_category_and_extra_columns(trained, splits):
    model = trained.model
    raw = splits["test"].head(20).copy()
    raw["state"] = raw["state"].astype(object)
    raw.loc[raw.index[:5], "state"] = "Atlantis"
    raw["loan_purpose"] = raw["loan_purpose"].astype(object)
    raw.loc[raw.index[5], "loan_purpose"] = None
    raw["brand_new_column"] = 1
    out = model.predict_frame(raw)
    assert out[["proba_0", "proba_1"]].notna().all().all()
    assert len(out) == 20


def test_predict_frame_missing_column_is_a_clear_keyerror(trained, splits):
    with pytest.raises(KeyError, match="credit_score"):
        trained.model.predict_frame(splits["test"].drop(columns=["credit_score"]))


def test_string_target_with_positive_class(splits):
    params = Params.model_validate(
        {"base": {"target": "default", "seed": 3, "positive_class": "bad"}, "tune": TUNE, "train": {"baselines": []}}
    )
    labelled = {k: v.assign(default=v["default"].map({0: "good", 1: "bad"})) for k, v in splits.items()}
    result = fit(params, labelled["train"], labelled["valid"])
    model = result.model
    assert model.encoder.classes == ["good", "bad"]
    out = model.predict_frame(labelled["test"])
    assert list(out.columns) == ["prediction", "proba_good", "proba_bad"]
    assert set(out["prediction"]) <= {"good", "bad"}
    # proba_bad is the model's score for the event
    np.testing.assert_allclose(out["proba_bad"], model.predict_scores(labelled["test"]))
    assert result.valid_metrics["lightgbm"]["roc_auc"] > 0.6


def test_multiclass_model(splits):
    params = Params.model_validate(
        {"base": {"target": "grade", "seed": 3}, "tune": TUNE, "train": {"baselines": ["dummy"]}}
    )
    labelled = {
        k: v.assign(grade=pd.cut(v["credit_score"], [0, 640, 720, 2000], labels=["C", "B", "A"]).astype(str)).drop(
            columns=["credit_score"]
        )
        for k, v in splits.items()
    }
    result = fit(params, labelled["train"], labelled["valid"], task="multiclass")
    out = result.model.predict_frame(labelled["test"])
    assert list(out.columns) == ["prediction", "proba_A", "proba_B", "proba_C"]
    np.testing.assert_allclose(out[["proba_A", "proba_B", "proba_C"]].sum(axis=1), 1.0)
    assert result.valid_metrics["lightgbm"]["log_loss"] < result.valid_metrics["dummy"]["log_loss"]


def test_regression_model(splits):
    params = Params.model_validate(
        {"base": {"target": "interest_rate", "seed": 3}, "tune": TUNE, "train": {"baselines": ["dummy", "linear"]}}
    )
    result = fit(params, splits["train"], splits["valid"], task="regression")
    out = result.model.predict_frame(splits["test"])
    assert list(out.columns) == ["prediction"]
    assert result.model.threshold is None
    assert result.valid_metrics["lightgbm"]["rmse"] < result.valid_metrics["dummy"]["rmse"]


# --------------------------------------------------------------------------- register.decide


@pytest.fixture(scope="module")
def worse(splits):
    rng = np.random.default_rng(0)
    shuffled = {k: v.assign(default=rng.permutation(v["default"].to_numpy())) for k, v in splits.items()}
    return fit(make_params(), shuffled["train"], shuffled["valid"]).model


def test_decide_without_champion(trained, splits):
    d = decide(trained.model, None, None, splits["test"], make_params())
    assert d.alias == CHAMPION
    assert d.metric == "roc_auc"
    assert d.new_value > 0.6
    assert d.test_rows == len(splits["test"])
    assert d.improvement is None


def test_decide_takes_the_evaluate_stage_value_and_rescores_only_against_a_champion(trained, worse, splits):
    from driftloop.evaluate import compute_metrics

    model, test = trained.model, splits["test"]
    evaluated = compute_metrics(
        model.task, model.encoder.encode(test[model.target]), model.predict_scores(test), model.threshold
    )
    assert decide(model, None, None, test, make_params()).new_value == evaluated["roc_auc"]  # the same figure

    class Counting(type(model)):
        calls = 0

        def predict_scores(self, df):
            type(self).calls += 1
            return super().predict_scores(df)

    counted = copy.copy(model)
    counted.__class__ = Counting
    first = decide(counted, None, None, test, make_params(), new_value=evaluated["roc_auc"])
    assert (first.alias, first.new_value, Counting.calls) == (CHAMPION, evaluated["roc_auc"], 0)  # nothing rescored
    against = decide(counted, worse, "3", test, make_params(), new_value=0.123)
    assert Counting.calls == 1  # the bootstrap needs the scores row by row: computed, and they set the value
    assert against.new_value == pytest.approx(evaluated["roc_auc"]) and against.alias == CHAMPION


def test_decide_worse_champion_is_replaced(trained, worse, splits):
    d = decide(trained.model, worse, "3", splits["test"], make_params())
    assert d.alias == CHAMPION
    assert d.champion_version == "3"
    assert d.champion_value < d.new_value
    assert d.improvement == pytest.approx(d.new_value - d.champion_value)
    assert d.improvement > 0.1
    assert d.ci_low is not None and d.ci_high is not None
    assert 0 < d.ci_low <= d.improvement <= d.ci_high
    assert "improves" in d.reason
    assert d.to_dict()["alias"] == CHAMPION


def test_decide_on_pr_auc_when_register_metric_says_so(trained, worse, splits):
    from sklearn.metrics import average_precision_score

    test = splits["test"]
    d = decide(trained.model, worse, "3", test, make_params(metric="pr_auc"))
    y = trained.model.encoder.encode(test["default"])
    assert d.metric == "pr_auc" and d.alias == CHAMPION
    assert d.new_value == pytest.approx(average_precision_score(y, trained.model.predict_scores(test)))
    assert d.champion_value == pytest.approx(average_precision_score(y, worse.predict_scores(test)))
    assert "pr_auc improves" in d.reason
    assert decide(worse, trained.model, "3", test, make_params(metric="pr_auc")).alias == CHALLENGER


def test_decide_better_champion_keeps_its_place(trained, worse, splits):
    d = decide(worse, trained.model, "3", splits["test"], make_params())
    assert d.alias == CHALLENGER
    assert d.improvement < 0


def test_decide_same_model_is_challenger(trained, splits):
    d = decide(trained.model, copy.deepcopy(trained.model), "4", splits["test"], make_params())
    assert d.alias == CHALLENGER
    assert d.improvement == 0.0
    assert d.ci_low == d.ci_high == 0.0
    assert "does not reach" in d.reason


def test_decide_min_improvement_and_significance(trained, worse, splits):
    d = decide(trained.model, worse, "3", splits["test"], make_params(min_improvement=0.9, n_bootstrap=0))
    assert d.alias == CHALLENGER
    assert "min_improvement=0.9" in d.reason
    d = decide(trained.model, worse, "3", splits["test"], make_params(require_significant=True))
    assert d.alias == CHAMPION  # a clear improvement is significant


def test_decide_champion_that_cannot_score(trained, splits):
    params = make_params()
    extra = {k: v.assign(legacy_score=np.arange(len(v), dtype=float)) for k, v in splits.items()}
    old = fit(params, extra["train"], extra["valid"]).model
    d = decide(trained.model, old, "2", splits["test"], params)
    assert d.alias == CHALLENGER
    assert "cannot score" in d.reason
    assert "legacy_score" in d.reason
    assert d.improvement is None


def test_decide_champion_that_could_not_be_loaded(trained, splits):
    d = decide(trained.model, None, "5", splits["test"], make_params(), champion_error="artifact missing")
    assert d.alias == CHALLENGER
    assert "artifact missing" in d.reason


def test_decide_champion_with_other_classes(trained, splits):
    other = copy.deepcopy(trained.model)
    other.encoder = TargetEncoder("binary", ["no", "yes"])
    d = decide(trained.model, other, "6", splits["test"], make_params())
    assert d.alias == CHALLENGER
    assert "cannot score" in d.reason


def test_bootstrap_improvement_direction():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    good = np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)
    noise = rng.random(200)
    point, lo, hi = bootstrap_improvement("binary", "roc_auc", y, good, noise, n=10, confidence=0.9, seed=0)
    assert point > 0.3 and lo > 0 and lo <= point <= hi
    # lower-is-better metrics flip the sign so that positive still means "new is better"
    point, lo, hi = bootstrap_improvement("binary", "log_loss", y, good, noise, n=0, confidence=0.9, seed=0)
    assert point > 0
    assert math.isnan(lo) and math.isnan(hi)


# --------------------------------------------------------------------------- the declarative (no-pickle) form


def _round_trip(model):
    import json

    data = json.loads(json.dumps(model.to_dict(), allow_nan=False))
    return DriftloopModel.from_parts(data, model.booster_text())


def test_json_and_text_round_trip_predicts_identically(trained, splits):
    model = trained.model
    raw = splits["test"].drop(columns=["default"]).copy()
    raw["state"] = raw["state"].astype(object)
    raw.loc[raw.index[:5], "state"] = "Atlantis"  # unseen category
    clone = _round_trip(model)
    assert clone.preprocessor == model.preprocessor
    assert (clone.threshold, clone.best_iteration, clone.encoder) == (
        model.threshold,
        model.best_iteration,
        model.encoder,
    )
    pd.testing.assert_frame_equal(clone.predict_frame(raw), model.predict_frame(raw), check_exact=True)
    assert clone.contract() == model.contract()


def test_round_trip_multiclass_string_labels_and_regression(splits):
    params = Params.model_validate({"base": {"target": "grade", "seed": 3}, "tune": TUNE, "train": {"baselines": []}})
    labelled = {
        k: v.assign(grade=pd.cut(v["credit_score"], [0, 640, 720, 2000], labels=["C", "B", "A"]).astype(str))
        for k, v in splits.items()
    }
    multi = fit(params, labelled["train"], labelled["valid"], task="multiclass").model
    pd.testing.assert_frame_equal(
        _round_trip(multi).predict_frame(labelled["test"]), multi.predict_frame(labelled["test"]), check_exact=True
    )
    params = Params.model_validate(
        {"base": {"target": "interest_rate", "seed": 3}, "tune": TUNE, "train": {"baselines": []}}
    )
    reg_model = fit(params, splits["train"], splits["valid"], task="regression").model
    pd.testing.assert_frame_equal(
        _round_trip(reg_model).predict_frame(splits["test"]), reg_model.predict_frame(splits["test"]), check_exact=True
    )


def test_integer_labels_keep_their_type_through_json():
    enc = TargetEncoder.fit(pd.Series([1, 0, 0, 1]), "binary", positive_class="0")
    import json

    back = TargetEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back == enc and [type(c) for c in back.classes] == [int, int]


def test_label_json_cannot_hold_is_a_named_error():
    enc = TargetEncoder("binary", [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")])
    with pytest.raises(DataError, match="2024-01-01"):
        enc.to_dict()


def test_unknown_model_format_is_refused(trained):
    from driftloop.errors import RegistryError

    data = {**trained.model.to_dict(), "format": "driftloop.model/99"}
    with pytest.raises(RegistryError, match="driftloop.model/99"):
        DriftloopModel.from_parts(data, trained.model.booster_text())


def test_gate_refuses_to_judge_on_thin_evidence(trained, splits):
    """The reported case: a test split with 2 positives promoted a model on "+0.3357 ROC AUC"."""
    test = splits["test"]
    pos = test[test["default"] == 1]
    thin = pd.concat([test[test["default"] == 0], pos.head(2)])
    d = decide(trained.model, None, None, thin, make_params(min_test_events=30))
    assert (d.alias, d.decision) == (CHALLENGER, "insufficient_evidence")
    assert "the test split has 2 positives (1)" in d.reason and "register.min_test_events=30" in d.reason
    assert d.events["test"] == {"0": int((test["default"] == 0).sum()), "1": 2}
    # the validation split counts too: thin there is refused even with a rich test split
    d = decide(trained.model, None, None, test, make_params(min_test_events=5), valid_df=pos.head(3))
    assert d.decision == "insufficient_evidence" and "the validation split has 3 positives" in d.reason
    # enough events on both: judged as usual
    d = decide(trained.model, None, None, test, make_params(min_test_events=5), valid_df=splits["valid"])
    assert (d.alias, d.decision) == (CHAMPION, "promoted")
    # 0 disables the check
    assert decide(trained.model, None, None, thin, make_params(min_test_events=0)).decision == "promoted"


def test_a_model_no_better_than_the_dummy_is_never_promoted(trained, splits):
    test = splits["test"]
    d = decide(trained.model, None, None, test, make_params(), baseline_value=0.999)
    assert (d.alias, d.decision) == (CHALLENGER, "below_baseline")
    assert "does not beat the dummy baseline's 0.9990" in d.reason
    d = decide(trained.model, None, None, test, make_params(), baseline_value=0.5)
    assert (d.alias, d.decision) == (CHAMPION, "promoted") and "beats the dummy baseline's 0.5000" in d.reason
