"""The safety layer: when the model should not answer, and what it was never meant to see.

Abstention ("uncertain — refer" thresholds chosen on validation), the input gate (is this a brain
MRI at all? does it look like the training data?), and robustness to acquisition changes.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "run_abstention": "abstention_report",
    "choose_class_thresholds": "abstention",
    "abstain": "abstention",
    "InputGate": "gate",
    "GateError": "gate",
    "fit_gate": "gate",
    "run_gate": "input_gate",
    "run_robustness": "robustness",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
