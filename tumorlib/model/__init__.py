"""The network and what runs around it when it serves.

MobileNetV2 + a small head, the ensemble wrapper, temperature scaling, the one serving body
(bytes -> preprocess -> model -> temperature -> class), Grad-CAM, and loading a run's model.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "build_model": "classifier",
    "build_backbone": "classifier",
    "build_head": "classifier",
    "set_phase": "classifier",
    "backbone_of": "classifier",
    "head_of": "classifier",
    "WeightsError": "classifier",
    "build_ensemble": "ensemble",
    "members": "ensemble",
    "is_ensemble": "ensemble",
    "apply_temperature": "calibration",
    "fit_temperature": "calibration",
    "expected_calibration_error": "calibration",
    "make_serve_fn": "serve_body",
    "serve_outputs": "serve_body",
    "gradcam": "gradcam",
    "make_gradcam_fn": "gradcam",
    "make_explain_fn": "gradcam",
    "load_run_model": "loading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
