"""The input gate inside the exported graph: its statistics as constants, its verdict as outputs.

The fitted :class:`~tumorlib.safety.gate.InputGate` becomes graph constants, so nothing besides the
SavedModel is needed to serve. :func:`gated_forward` is the serve body's forward step
(:mod:`tumorlib.model.serve_body`) that taps the backbone once for both the gate's features and the
probabilities, and adds ``in_distribution`` and ``gate_score`` (the largest distance/threshold
ratio over layers; accepted when <= 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tumorlib.contracts.serving_contract import (
    FAMILIAR_KEY,
    FAMILIARITY_SCORE_KEY,
    GATE_SCORE_KEY,
    IN_DISTRIBUTION_KEY,
)
from tumorlib.model.serve_body import Forward, Outputs, ServeFn, make_serve_fn
from tumorlib.safety.gate import MAX_LOG_SCORE, GateError, InputGate
from tumorlib.safety.gate_features import feature_extractor


def gate_score_tf(pooled: Sequence, gate: InputGate) -> tf.Tensor:
    """The gate score ``[N]`` as TF ops from pooled features in ``gate.layers`` order."""
    ratios = []
    for g, feats in zip(gate.layers, pooled):
        centred = tf.cast(feats, tf.float32) - tf.constant(g.mean, tf.float32)
        d2 = tf.reduce_sum(tf.matmul(centred, tf.constant(g.precision, tf.float32)) * centred, -1)
        ratios.append(tf.sqrt(tf.maximum(d2, 0.0)) / g.threshold)
    if gate.linear is not None:
        by_layer = dict(zip(gate.layer_names, pooled))
        x = tf.concat([tf.cast(by_layer[name], tf.float32) for name in gate.linear.layers], -1)
        w = tf.constant(gate.linear.weights[:, None], tf.float32)
        logit = tf.squeeze(tf.matmul(x, w), -1) + gate.linear.bias
        ratios.append(tf.exp(tf.minimum(gate.linear.threshold - logit, MAX_LOG_SCORE)))
    return tf.reduce_max(tf.stack(ratios, axis=0), axis=0)


def gated_forward(extractor, gate: InputGate, familiarity: InputGate | None = None) -> Forward:
    """Forward step for :func:`tumorlib.model.serve_body.serve_outputs`: the probabilities of
    ``extractor`` (:func:`~tumorlib.safety.gate_features.feature_extractor`) plus the gate's
    verdict,
    and the familiarity check's when given (both read the same pooled features)."""

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        *pooled, probabilities = extractor(images, training=False)
        score = gate_score_tf(pooled, gate)
        outputs = {IN_DISTRIBUTION_KEY: score <= 1.0, GATE_SCORE_KEY: score}
        if familiarity is not None:
            familiar = gate_score_tf(pooled, familiarity)
            outputs |= {FAMILIAR_KEY: familiar <= 1.0, FAMILIARITY_SCORE_KEY: familiar}
        return probabilities, outputs

    return forward


def make_gated_serve_fn(
    model,
    gate: InputGate,
    *,
    image_size: int,
    temperature: float = 1.0,
    familiarity: InputGate | None = None,
):
    """The serve body with the gate: ``image_bytes`` ``tf.string [None]`` -> ``probabilities``
    ``[None, 4]`` (temperature-scaled), ``class_index`` ``int64``, ``class_name`` ``string``,
    ``in_distribution`` ``bool``, ``gate_score`` ``float32``.

    Returns ``(serve, extractor)``: attach both to the exporter's ``tf.Module``
    (``module.gate_features = extractor; module.serve = serve``) so their variables — the
    classifier's own — are tracked and saved. Raises :class:`~tumorlib.safety.gate.GateError` when
    the model's backbone lacks the gate's layers, or when ``familiarity`` gates other layers.
    With ``familiarity``, also ``familiar`` ``bool`` and ``familiarity_score`` ``float32``.
    """
    if familiarity is not None and familiarity.layer_names != gate.layer_names:
        raise GateError(
            f"the familiarity check gates {list(familiarity.layer_names)}, the input gate "
            f"{list(gate.layer_names)}: fit both with one `python -m tumorlib.input_gate RUN`"
        )
    extractor = feature_extractor(model, gate.layer_names)
    serve: ServeFn = make_serve_fn(
        gated_forward(extractor, gate, familiarity), image_size=image_size, temperature=temperature
    )
    return serve, extractor
