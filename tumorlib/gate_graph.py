"""The input gate inside the exported graph: its statistics as constants, its verdict as outputs.

The fitted :class:`~tumorlib.gate.InputGate` becomes graph constants, so nothing besides the
SavedModel is needed to serve. :func:`gated_forward` is the serve body's forward step
(:mod:`tumorlib.serve_body`) that taps the backbone once for both the gate's features and the
probabilities, and adds ``in_distribution`` and ``gate_score`` (the largest distance/threshold
ratio over layers; accepted when <= 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tumorlib.gate import InputGate
from tumorlib.gate_features import feature_extractor
from tumorlib.serve_body import Forward, Outputs, ServeFn, make_serve_fn
from tumorlib.serving_contract import GATE_SCORE_KEY, IN_DISTRIBUTION_KEY


def gate_score_tf(pooled: Sequence, gate: InputGate) -> tf.Tensor:
    """The gate score ``[N]`` as TF ops from pooled features in ``gate.layers`` order."""
    ratios = []
    for g, feats in zip(gate.layers, pooled):
        centred = tf.cast(feats, tf.float32) - tf.constant(g.mean, tf.float32)
        d2 = tf.reduce_sum(tf.matmul(centred, tf.constant(g.precision, tf.float32)) * centred, -1)
        ratios.append(tf.sqrt(tf.maximum(d2, 0.0)) / g.threshold)
    return tf.reduce_max(tf.stack(ratios, axis=0), axis=0)


def gated_forward(extractor, gate: InputGate) -> Forward:
    """Forward step for :func:`tumorlib.serve_body.serve_outputs`: the probabilities of
    ``extractor`` (:func:`~tumorlib.gate_features.feature_extractor`) plus the gate's verdict."""

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        *pooled, probabilities = extractor(images, training=False)
        score = gate_score_tf(pooled, gate)
        return probabilities, {IN_DISTRIBUTION_KEY: score <= 1.0, GATE_SCORE_KEY: score}

    return forward


def make_gated_serve_fn(model, gate: InputGate, *, image_size: int, temperature: float = 1.0):
    """The serve body with the gate: ``image_bytes`` ``tf.string [None]`` -> ``probabilities``
    ``[None, 4]`` (temperature-scaled), ``class_index`` ``int64``, ``class_name`` ``string``,
    ``in_distribution`` ``bool``, ``gate_score`` ``float32``.

    Returns ``(serve, extractor)``: attach both to the exporter's ``tf.Module``
    (``module.gate_features = extractor; module.serve = serve``) so their variables — the
    classifier's own — are tracked and saved. Raises :class:`~tumorlib.gate.GateError` when the
    model's backbone lacks the gate's layers.
    """
    extractor = feature_extractor(model, gate.layer_names)
    serve: ServeFn = make_serve_fn(
        gated_forward(extractor, gate), image_size=image_size, temperature=temperature
    )
    return serve, extractor
