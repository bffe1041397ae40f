"""A local stand-in for ``tensorflow_model_server``: ``python -m serving.local``.

TF Serving's REST and gRPC APIs over one core (same endpoints and services, bodies, statuses,
codes and words), every ``tensorflow_model_server`` flag, its model config (polled) and batching
parameters, warm-up records replayed at load, the Prometheus page, the model manager that loads
new versions, and bounded cost for hostile clients.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "main": "local",
    "build_arg_parser": "local",
    "ModelManager": "model_manager",
    "ServingCore": "core",
    "load_model_config_file": "config",
    "parse_batching_parameters": "config",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
