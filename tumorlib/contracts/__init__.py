"""The names and file layouts every layer agrees on; pure Python, no TensorFlow.

The four classes and their display names, the serving contract (signature names, input/output
keys, the model's name and base path, the verdict wording), the run-folder layout, and how a
command reports errors and exits. Everything else in the library builds on these.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "CLASS_NAMES": "classes",
    "NUM_CLASSES": "classes",
    "DISPLAY_NAMES": "classes",
    "class_index": "classes",
    "MODEL_NAME": "serving_contract",
    "MODEL_BASE_PATH": "serving_contract",
    "SERVING_SIGNATURE": "serving_contract",
    "INPUT_KEY": "serving_contract",
    "OUTPUT_KEYS": "serving_contract",
    "Run": "runs",
    "RunNotFoundError": "runs",
    "load_run": "runs",
    "write_json": "runs",
    "CommandError": "cli",
    "EXPECTED_ERRORS": "cli",
    "run_command": "cli",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
