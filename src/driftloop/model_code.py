"""MLflow "models from code" file of the driftloop pyfunc model; never imported by driftloop itself.

``tracking.log_model`` hands this file's path to ``mlflow.pyfunc.log_model(python_model=...)``; MLflow copies it
into the logged model and executes it on ``mlflow.pyfunc.load_model`` (that is its only code: no pickle). The
model itself comes from the JSON and LightGBM text artifacts in ``DriftloopPyfunc.load_context``.
``driftloop.artifacts.load_model`` verifies this file's SHA-256 (with every other file) before anything loads.
"""

import mlflow

from driftloop.pyfunc import DriftloopPyfunc

mlflow.models.set_model(DriftloopPyfunc())
