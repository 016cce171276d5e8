"""The MLflow pyfunc wrapper: ``mlflow.pyfunc.load_model("models:/<name>@champion").predict(raw_rows)``.

Logged as MLflow "models from code" (``driftloop/model_code.py`` is the code file), never pickled:
``load_context`` rebuilds the ``DriftloopModel`` from the model's JSON and LightGBM text artifacts.
Loading needs driftloop installed in the loading environment (the code file imports this module).
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

# names of the pyfunc artifacts (context.artifacts keys) and their files in the logged model
MODEL_JSON = "model_json"
BOOSTER = "booster"
FILES = {MODEL_JSON: "model.json", BOOSTER: "booster.txt"}


class DriftloopPyfunc(mlflow.pyfunc.PythonModel):
    """Scores raw rows: returns ``prediction`` plus ``proba_<class>`` columns for classifiers."""

    def __init__(self, model=None):
        self.model = model

    def load_context(self, context) -> None:
        from driftloop.artifacts import read_model_files

        if self.model is not None and MODEL_JSON not in context.artifacts:
            return  # a wrapper pickled by an older driftloop carries its model (loaded only with allow_unverified)

        self.model = read_model_files(context.artifacts[MODEL_JSON], context.artifacts[BOOSTER])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict_frame(model_input)
