"""Fitting the network: the settings, the two phases, epoch sampling, distribution, ensembles.

``python -m tumorlib.train`` runs :func:`train`; everything it writes lands in a run folder
(:mod:`tumorlib.contracts.runs`).
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "train": "train",
    "TrainConfig": "train_config",
    "load_hparams": "train_config",
    "SamplingPlan": "sampling",
    "plan_sampling": "sampling",
    "split_plan": "sampling",
    "balanced_class_weights": "class_weights",
    "cached_features": "features",
    "make_strategy": "distribute",
    "make_ensemble_run": "ensemble_run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
