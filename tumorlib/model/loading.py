"""A run folder's trained Keras model, loaded for inference.

Apart from :mod:`tumorlib.contracts.runs` (which only reads a run's files and stays free of
TensorFlow) because loading needs this package's custom layers registered first: the ensemble's
``Resize`` and ``HorizontalFlip`` (:mod:`tumorlib.model.ensemble`).
"""

from __future__ import annotations

from tumorlib.contracts.runs import MODEL_FILE, Run


def load_run_model(run: Run):
    """The trained Keras model of ``run`` (compiled state is not needed for inference)."""
    import keras  # deferred: importing this module must not pay TensorFlow's import cost

    from tumorlib.model import ensemble  # noqa: F401  registers the ensemble's layers

    return keras.models.load_model(run.path / MODEL_FILE, compile=False)
