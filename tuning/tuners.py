"""KerasTuner tuners for the head search, and whether this process is a distributed worker.

Distributed: with ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``
set, the process whose tuner id contains ``chief`` serves the oracle and the others run trials.
"""

from __future__ import annotations

import os
from typing import Any

from tuning.cli_args import (
    DEFAULT_DIRECTORY,
    DEFAULT_MAX_TRIALS,
    DEFAULT_PROJECT,
    OBJECTIVES,
    TUNER_KINDS,
)


def is_distributed() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ


def is_chief() -> bool:
    return is_distributed() and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def _tuner_classes() -> dict[str, type]:
    """KerasTuner's tuners, minus their unconditional ``tensorboard`` import.

    On the TensorFlow backend KerasTuner 1.4.8 imports the ``tensorboard`` package in every trial
    only to attach its HParams plugin to ``TensorBoard`` callbacks. The search passes none, and
    ``tensorboard`` is not a dependency of this project (TensorFlow 2.21 no longer pulls it in), so
    the hook is skipped unless a ``TensorBoard`` callback is actually given.
    """
    import keras_tuner

    class SkipHParamsHook:
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            if any(type(cb).__name__ == "TensorBoard" for cb in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    return {
        "hyperband": type("Hyperband", (SkipHParamsHook, keras_tuner.Hyperband), {}),
        "bayesian": type(
            "BayesianOptimization", (SkipHParamsHook, keras_tuner.BayesianOptimization), {}
        ),
        "random": type("RandomSearch", (SkipHParamsHook, keras_tuner.RandomSearch), {}),
    }


def make_tuner(
    kind: str,
    hypermodel,
    *,
    objective: str = "val_accuracy",
    max_trials: int | None = None,
    max_epochs: int = 20,
    factor: int = 3,
    directory: str | os.PathLike = DEFAULT_DIRECTORY,
    project_name: str = DEFAULT_PROJECT,
    seed: int = 0,
    overwrite: bool = False,
):
    """A KerasTuner tuner of ``kind`` (hyperband, bayesian or random) over ``hypermodel``.

    With ``overwrite=False`` an existing project in ``directory/project_name`` is reloaded and
    its finished trials are kept (KerasTuner's own resume).
    """
    import keras_tuner

    if kind not in TUNER_KINDS:
        raise ValueError(f"unknown tuner {kind!r}; expected one of {', '.join(TUNER_KINDS)}")
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
        )
    classes = _tuner_classes()
    common: dict[str, Any] = {
        "hypermodel": hypermodel,
        "objective": keras_tuner.Objective(objective, direction=OBJECTIVES[objective]),
        "seed": seed,
        "directory": str(directory),
        "project_name": project_name,
        "overwrite": overwrite,
    }
    if kind == "hyperband":
        tuner = classes["hyperband"](max_epochs=max_epochs, factor=factor, **common)
        if max_trials is not None:
            # HyperbandOracle takes no max_trials, but the base Oracle honours the attribute:
            # `create_trial` stops once that many trials exist.
            tuner.oracle.max_trials = max_trials
        return tuner
    if max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS
    if kind == "bayesian":
        return classes["bayesian"](max_trials=max_trials, **common)
    return classes["random"](max_trials=max_trials, **common)
