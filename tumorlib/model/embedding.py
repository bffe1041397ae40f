"""What "looks like" means for similar confirmed cases: the head's penultimate features.

Why these features: they are what the classifier's last layer separates the classes with, so two
slices close here are close *for this model* — the neighbours a radiologist is shown are the
cases the answer actually leans on, not slices that merely share brightness. Each member's
features (the input of the head's final softmax ``Dense``: the pooled backbone output for a
linear head, the hidden layer's activations otherwise) are L2-normalised; an ensemble's embedding
is the concatenation of its members', divided by ``sqrt(M)``, so it has unit norm and the cosine
of two embeddings is the mean of the members' cosines.

:func:`embedding_forward` is a forward step for :mod:`tumorlib.model.serve_body`: one backbone pass
per member gives both the probabilities (identical to ``model(images)``) and the embedding, so the
``similar_cases`` signature classifies and retrieves without running the network twice.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tumorlib.contracts.serving_contract import EMBEDDING_KEY
from tumorlib.model.classifier import backbone_of, head_of
from tumorlib.model.ensemble import average_views, has_tta, member_view, members
from tumorlib.model.serve_body import Forward, Outputs

_EPS = 1e-12


def head_layers(head: keras.Model) -> tuple[list, keras.layers.Dense]:
    """The head's layers before its final ``Dense`` (in order), and that ``Dense``."""
    layers = [layer for layer in head.layers if not isinstance(layer, keras.layers.InputLayer)]
    last = layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"the head must end in a Dense layer, found {type(last).__name__}")
    return layers[:-1], last


def head_features(head: keras.Model, pooled: tf.Tensor) -> tf.Tensor:
    """The input of the head's final ``Dense`` for pooled backbone features (inference mode)."""
    x = pooled
    for layer in head_layers(head)[0]:
        x = layer(x, training=False)
    return x


def final_logits(head: keras.Model, features: tf.Tensor) -> tf.Tensor:
    """The head's pre-softmax scores ``[N, C]`` from its penultimate ``features``."""
    last = head_layers(head)[1]
    return tf.matmul(features, tf.cast(last.kernel, features.dtype)) + tf.cast(
        last.bias, features.dtype
    )


def member_pass(member: keras.Model, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One classifier's penultimate features ``[N, D]`` and softmax ``[N, C]``, one pass."""
    pooled = tf.reduce_mean(backbone_of(member)(images, training=False), axis=[1, 2])
    features = head_features(head_of(member), pooled)
    return features, tf.nn.softmax(final_logits(head_of(member), features), axis=-1)


def _unit(x: tf.Tensor) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), _EPS)


def embed_and_classify(model: keras.Model, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Untempered probabilities ``[N, C]`` (as ``model(images)``) and unit embeddings ``[N, D]``.

    ``images`` are normalised ``[N, S, S, 3]``. For an ensemble each member runs once on its own
    view; only the mirrored views of flip TTA are extra passes, and they feed the probabilities
    alone (the embedding is of the slice as given).
    """
    parts = members(model)
    images = tf.convert_to_tensor(images, tf.float32)
    if len(parts) == 1 and parts[0] is model:
        features, probabilities = member_pass(model, images)
        return probabilities, _unit(features)
    unflipped, embeddings = {}, []
    for i, member in enumerate(parts):
        x = member_view(images, int(member.input_shape[1]))
        features, probabilities = member_pass(member, x)
        unflipped[i] = (x, probabilities)
        embeddings.append(_unit(features))
    probabilities = average_views(parts, images, tta=has_tta(model), unflipped=unflipped)
    return probabilities, tf.concat(embeddings, axis=-1) / tf.sqrt(float(len(parts)))


def embedding_forward(model: keras.Model) -> Forward:
    """Forward step for :func:`tumorlib.model.serve_body.serve_outputs`: the model's
    probabilities plus its unit ``embedding`` from the same backbone pass."""

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        probabilities, embedding = embed_and_classify(model, images)
        return probabilities, {EMBEDDING_KEY: embedding}

    return forward


def embedding_size(model: keras.Model) -> int:
    """``D``: the sum of the members' penultimate widths."""
    return sum(int(head_layers(head_of(m))[1].kernel.shape[0]) for m in members(model))
