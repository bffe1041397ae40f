"""The ensemble as one Keras model: members at their own input sizes, optional flip TTA.

Kept apart from :mod:`tumorlib.training.ensemble_run` (which makes ensemble *run folders* and needs
training code) so that loading any run — :mod:`tumorlib.contracts.runs` registers these layers —
needs only Keras.

    image [N, S, S, 3] in [-1, 1], S = the largest member size
      -> per member: Resize(member size, antialiased) -> member_i(image) [, member_i(flip(image))]
      -> Average
"""

from __future__ import annotations

import keras

MEMBER_PREFIX = "member_"
FLIP_PREFIX = "flip_"
ENSEMBLE_NAME = "brain_mri_ensemble"


@keras.saving.register_keras_serializable(package="tumorlib")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left-right, deterministically (``keras.layers.RandomFlip`` is random)."""

    def call(self, images):
        return keras.ops.flip(images, axis=-2)


@keras.saving.register_keras_serializable(package="tumorlib")
class Resize(keras.layers.Layer):
    """Bilinear, antialiased resize to ``size`` × ``size`` (the interpolation that
    tumorlib.images.preprocessing's ``resize`` uses). Not ``keras.layers.Resizing``: that layer
    carries
    a random seed generator whose state ``tf.saved_model.save`` cannot reach from an ensemble."""

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images):
        return keras.ops.image.resize(
            images, (self.size, self.size), interpolation="bilinear", antialias=True
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


def build_ensemble(members: list[keras.Model], *, tta: bool = False) -> keras.Model:
    """One model averaging the softmax outputs of ``members`` (and of their flipped views).

    Each member keeps its own input size; the ensemble's input is the largest of them and is
    resized (antialiased) down for smaller members.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    size = max(int(m.input_shape[1]) for m in members)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    wrapped = [
        keras.Model(member.inputs, member.outputs[0], name=f"{MEMBER_PREFIX}{i}")
        for i, member in enumerate(members)
    ]
    return keras.Model(inputs, average_views(wrapped, inputs, tta=tta), name=ENSEMBLE_NAME)


def average_views(members: list[keras.Model], inputs, *, tta: bool, unflipped: dict | None = None):
    """The ensemble's output on ``inputs``: every member on its own view (and mirrored view),
    averaged, in a fixed order (member 0, its mirror, member 1, ...).

    ``unflipped``: member index -> ``(view, output)`` of that member on its unflipped view, for
    passes the caller has already run — the input gate taps member 0's backbone
    (:func:`tumorlib.safety.gate_features.feature_extractor`), Grad-CAM differentiates every
    member's (:func:`tumorlib.model.gradcam.gradcam`) — so they are not run twice.
    """
    unflipped = unflipped or {}
    outputs = []
    for i, member in enumerate(members):
        if i in unflipped:
            x, output = unflipped[i]
        else:
            x = member_view(inputs, int(member.input_shape[1]), name=f"resize_{i}")
            # Members are finished models: always in inference mode (no dropout), even when
            # the ensemble is called without ``training`` — a loaded nested model would
            # otherwise leave it unset.
            output = member(x, training=False)
        outputs.append(output)
        if tta:
            outputs.append(member(HorizontalFlip(name=f"{FLIP_PREFIX}{i}")(x), training=False))
    return outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean")(outputs)


def member_view(inputs, member_size: int, name: str | None = None):
    """What a member sees of the ensemble's input: the input itself at the member's size, else
    the ensemble's own :class:`Resize` of it."""
    if int(inputs.shape[1]) == member_size:
        return inputs
    return Resize(member_size, name=name)(inputs)


def has_tta(model: keras.Model) -> bool:
    """Whether an ensemble averages mirrored views too."""
    return any(layer.name.startswith(FLIP_PREFIX) for layer in model.layers)


def is_ensemble(model: keras.Model) -> bool:
    return any(layer.name.startswith(MEMBER_PREFIX) for layer in model.layers)


def members(model: keras.Model) -> list[keras.Model]:
    """An ensemble's member classifiers (each with ``backbone`` and ``head``); else ``[model]``."""
    if not is_ensemble(model):
        return [model]
    found = [layer for layer in model.layers if layer.name.startswith(MEMBER_PREFIX)]
    return sorted(found, key=lambda layer: int(layer.name[len(MEMBER_PREFIX) :]))
