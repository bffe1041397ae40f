r"""Asking a model: TF Serving's REST or gRPC API or the SavedModel in this process, one interface.

A :class:`Backend` answers images with :class:`Prediction`\ s (and Grad-CAM explanations);
:func:`classify_series` runs a study's slices through one. The REST client stays
TensorFlow-free (an import-linter contract), so light installs can use it.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "Backend": "backend",
    "BackendError": "backend",
    "RestBackend": "backend",
    "InProcessBackend": "backend",
    "make_backend": "backend",
    "TFServingClient": "rest",
    "TFServingGrpcClient": "grpc_client",
    "TFServingError": "rest",
    "InProcessModel": "inprocess",
    "Prediction": "prediction",
    "Explanation": "prediction",
    "classify_series": "study",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
