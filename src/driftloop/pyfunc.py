"""The MLflow pyfunc wrapper: ``mlflow.pyfunc.load_model("models:/<name>@champion").predict(raw_rows)``."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class DriftloopPyfunc(mlflow.pyfunc.PythonModel):
    """Scores raw rows: returns ``prediction`` plus ``proba_<class>`` columns for classifiers."""

    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict_frame(model_input)
