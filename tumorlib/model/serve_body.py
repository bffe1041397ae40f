"""The one serving body: encoded image bytes -> the serving contract's outputs.

Every signature the export writes runs the same steps, written once here:

    image_bytes --preprocess_bytes_batch--> images --forward--> probabilities (+ extra outputs)
      --apply_temperature--> probabilities --argmax--> class_index --CLASS_NAMES--> class_name

What differs between signatures is only the *forward* step, so that is what callers pass in:

- :func:`model_forward`: the Keras model alone (plain ``serving_default``);
- ``tumorlib.safety.gate_graph.gated_forward``: one backbone pass that also yields the input gate's
  ``in_distribution`` and ``gate_score``;
- ``tumorlib.model.gradcam.gradcam_forward``: the model under a gradient tape, adding ``heatmap``
  (the ``explain`` signature).

:func:`with_confidence` then adds ``confidence`` and, when the run measured a threshold,
``abstain``, so TF Serving, the page and the CLI cannot disagree about which answers to withhold.
Output names come from :mod:`tumorlib.contracts.serving_contract`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tensorflow as tf

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import (
    ABSTAIN_KEY,
    CLASS_INDEX_KEY,
    CLASS_NAME_KEY,
    CONFIDENCE_KEY,
    INPUT_KEY,
    OUTPUT_KEYS,
    PROBABILITIES_KEY,
)
from tumorlib.images.preprocessing import preprocess_bytes_batch
from tumorlib.model.calibration import apply_temperature

Outputs = dict[str, tf.Tensor]
# Normalised images [N, S, S, 3] -> (untempered probabilities [N, C], extra named outputs).
Forward = Callable[[tf.Tensor], tuple[tf.Tensor, Outputs]]


class ServeFn(Protocol):
    """A ``tf.function`` on ``image_bytes [None]``; the export saves its concrete function."""

    def __call__(self, image_bytes: tf.Tensor) -> Outputs: ...

    def get_concrete_function(self, *args: Any, **kwargs: Any) -> Any: ...


BYTES_SPEC = tf.TensorSpec([None], tf.string, name=INPUT_KEY)


def model_forward(model) -> Forward:
    """The plain forward step: the classifier in inference mode, no extra outputs."""

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        return model(images, training=False), {}

    return forward


def serve_outputs(
    image_bytes: tf.Tensor,
    forward: Forward,
    *,
    image_size: int,
    temperature: float,
    keys: Sequence[str] = OUTPUT_KEYS,
) -> Outputs:
    """Decode, run ``forward``, temperature-scale and name the class.

    Returns the classification outputs named in ``keys`` (a subset of
    :data:`~tumorlib.contracts.serving_contract.OUTPUT_KEYS`; ``explain`` has no ``class_name``)
    followed by ``forward``'s extra outputs.
    """
    images = preprocess_bytes_batch(image_bytes, image_size)
    probabilities, extra = forward(images)
    probabilities = apply_temperature(probabilities, temperature)
    class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
    outputs: Outputs = {PROBABILITIES_KEY: probabilities, CLASS_INDEX_KEY: class_index}
    if CLASS_NAME_KEY in keys:
        outputs[CLASS_NAME_KEY] = tf.gather(tf.constant(CLASS_NAMES), class_index)
    return {**{key: outputs[key] for key in keys}, **extra}


def make_serve_fn(
    forward: Forward,
    *,
    image_size: int,
    temperature: float,
    keys: Sequence[str] = OUTPUT_KEYS,
) -> ServeFn:
    """:func:`serve_outputs` as a ``tf.function`` on ``image_bytes`` ``tf.string [None]``.

    Attach it (and whatever owns the variables ``forward`` uses) to the exporter's ``tf.Module``
    before ``tf.saved_model.save``, so those variables are saved with it.
    """
    keys = tuple(keys)

    @tf.function(input_signature=[BYTES_SPEC])
    def serve(image_bytes):
        return serve_outputs(
            image_bytes, forward, image_size=image_size, temperature=temperature, keys=keys
        )

    return serve


def with_confidence(base: ServeFn, *, threshold: float | Sequence[float] | None) -> ServeFn:
    """``serving_default``: ``base``'s outputs plus ``confidence`` (the top probability) and,
    when ``threshold`` is given, ``abstain = confidence < threshold`` — one number, or one per
    class applied to the predicted class
    (:func:`tumorlib.safety.abstention.choose_class_thresholds`)."""

    @tf.function(input_signature=[BYTES_SPEC])
    def serve(image_bytes):
        outputs = dict(base(image_bytes))
        confidence = tf.reduce_max(outputs[PROBABILITIES_KEY], axis=-1)
        outputs[CONFIDENCE_KEY] = confidence
        if threshold is not None:
            limit = tf.constant(threshold, tf.float32)
            if limit.shape.rank:
                limit = tf.gather(limit, tf.argmax(outputs[PROBABILITIES_KEY], axis=-1))
            outputs[ABSTAIN_KEY] = confidence < limit
        return outputs

    return serve
