"""driftloop: a reproducible, observable, self-correcting MLOps pipeline for tabular models."""

__version__ = "0.1.0"
