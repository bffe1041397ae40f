"""The KerasTuner search space: the project's classification head on cached backbone features.

Why the head alone: phase one of training (``tumorlib.training.train``) fits the head on a frozen
backbone, so the backbone's pooled features are fixed inputs. Computing them once
(:func:`tumorlib.training.features.cached_features`) and tuning the head on them gives the same
objective at a fraction of the cost of running MobileNetV2 in every trial (see ``bench/tuning.py``).

The model itself comes from :func:`tumorlib.model.classifier.build_head` -- the very head that
:func:`tumorlib.model.classifier.build_model` puts on the backbone -- so what is tuned is what is
trained.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner

from tumorlib.training.train_config import (
    HPARAM_KEYS,
)  # the keys `tumorlib.training.train --hparams` reads

# The search space, kept as data so docs, tests and the CLI agree on it.
HEAD_UNITS_CHOICES: tuple[int, ...] = (0, 64, 128, 256, 512)  # 0 = no hidden layer
DROPOUT_RANGE: tuple[float, float, float] = (0.0, 0.5, 0.1)  # min, max, step
LEARNING_RATE_RANGE: tuple[float, float] = (1e-4, 1e-2)  # log-uniform
LABEL_SMOOTHING_RANGE: tuple[float, float, float] = (0.0, 0.2, 0.05)


def declare_search_space(hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """Declare (or read) the searched hyperparameters on ``hp``; returns their current values."""
    lo, hi, step = DROPOUT_RANGE
    ls_lo, ls_hi, ls_step = LABEL_SMOOTHING_RANGE
    lr_lo, lr_hi = LEARNING_RATE_RANGE
    return {
        "head_units": hp.Choice("head_units", list(HEAD_UNITS_CHOICES), default=0),
        "dropout": hp.Float("dropout", lo, hi, step=step, default=0.2),
        "learning_rate": hp.Float("learning_rate", lr_lo, lr_hi, sampling="log", default=1e-3),
        "label_smoothing": hp.Float("label_smoothing", ls_lo, ls_hi, step=ls_step, default=0.0),
    }


def compile_for_search(model: keras.Model, values: dict[str, Any]) -> keras.Model:
    """Adam + categorical cross-entropy (label smoothing) + accuracy, as phase one of training."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=values["learning_rate"]),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=values["label_smoothing"]),
        metrics=["accuracy"],
    )
    return model


class HeadHyperModel(keras_tuner.HyperModel):
    """Builds and fits :func:`tumorlib.model.classifier.build_head` for one set of hyperparameters.

    ``feature_dim`` is the width of the pooled backbone features (1280 for MobileNetV2 at
    alpha <= 1). ``class_weight`` (``{index: weight}``, from
    :func:`tumorlib.training.class_weights.balanced_class_weights`), when given, is passed to every
    ``fit`` so rare classes count as much in the search as in training.
    """

    def __init__(
        self,
        feature_dim: int,
        *,
        class_weight: dict[int, float] | None = None,
        batch_size: int = 32,
        name: str = "head_search",
    ) -> None:
        super().__init__(name=name, tunable=True)
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.feature_dim = int(feature_dim)
        self.class_weight = class_weight
        self.batch_size = int(batch_size)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        from tumorlib.model.classifier import build_head  # the project's one head builder

        values = declare_search_space(hp)
        model = build_head(
            self.feature_dim, dropout=values["dropout"], head_units=values["head_units"]
        )
        return compile_for_search(model, values)

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs) -> Any:
        kwargs.setdefault("batch_size", self.batch_size)
        if self.class_weight is not None:
            kwargs.setdefault("class_weight", self.class_weight)
        return model.fit(*args, **kwargs)


def hparams_dict(hp: keras_tuner.HyperParameters) -> dict[str, float | int]:
    """The tuned values as plain JSON types, keyed as ``tumorlib.training.train --hparams``
    expects."""
    values = hp.values
    missing = [k for k in HPARAM_KEYS if k not in values]
    if missing:
        raise ValueError(f"trial has no value for {', '.join(missing)}")
    return {
        "head_units": int(values["head_units"]),
        "dropout": round(float(values["dropout"]), 6),
        "learning_rate": float(values["learning_rate"]),
        "label_smoothing": round(float(values["label_smoothing"]), 6),
    }
