"""Measuring a trained run: predictions over a split, metrics, plots, calibration, the card.

Everything here reads a run folder and a dataset split and writes reports; nothing trains.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "predict_split": "predictions",
    "split_labels": "predictions",
    "split_groups": "predictions",
    "evaluate": "evaluate",
    "compute_metrics": "evaluate",
    "calibrate_on_validation": "run_calibration",
    "bootstrap_metrics": "bootstrap",
    "write_card": "model_card",
    "build_card": "model_card",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
