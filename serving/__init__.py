"""Deployment: export a trained run as a TF Serving SavedModel and serve it over REST.

- :mod:`serving.export` writes ``models/brain_mri/<version>/`` (TF Serving's layout; the
  names and defaults are :mod:`tumorlib.serving_contract`'s).
- :mod:`serving.client` talks to TensorFlow Serving's REST API (or the local stand-in).
- :mod:`serving.inprocess` runs the same SavedModel in this process, behind the same interface.
- :mod:`serving.local` is a local REST server speaking TF Serving's API, for machines without
  the ``tensorflow_model_server`` binary.

Nothing here imports TensorFlow at package import time, so ``serving.client`` stays light.
"""
