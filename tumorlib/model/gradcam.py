"""Grad-CAM: which regions of the slice drove the prediction.

Why: a radiologist will not trust four numbers alone. Grad-CAM (Selvaraju et al., 2017) weights
each channel of the last convolutional block's activations by the mean gradient of the predicted
class's logit with respect to that channel, sums, keeps the positive part and upsamples to the
input. For our architecture (MobileNetV2 -> global average pooling -> linear head) this is exactly
the class activation map, so the heatmap says which locations pushed the score up.

The last convolutional block of MobileNetV2 is the output of the ``"backbone"`` sub-model of
:func:`tumorlib.model.classifier.build_model` (``out_relu``: ``Conv_1`` + BN + ReLU6, 1280 channels,
stride 32). The rest of the classifier (pooling and the ``"head"`` sub-model) is re-applied on top
of it so one forward pass gives both the probabilities and the activations that the gradient needs.

Everything is TensorFlow ops inside :func:`tf.function`, so :func:`make_explain_fn` — the serve
body (:mod:`tumorlib.model.serve_body`) with :func:`gradcam_forward` as its forward step — can be
exported as a second SavedModel signature (``explain``; its name and outputs are defined in
:mod:`tumorlib.contracts.serving_contract`) and served by TF Serving.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tumorlib.contracts.serving_contract import CLASS_INDEX_KEY, HEATMAP_KEY, PROBABILITIES_KEY
from tumorlib.model.calibration import apply_temperature
from tumorlib.model.classifier import BACKBONE_NAME, HEAD_NAME, backbone_of, head_of
from tumorlib.model.embedding import final_logits, head_features
from tumorlib.model.ensemble import average_views, has_tta, member_view, members
from tumorlib.model.serve_body import Forward, Outputs, ServeFn, make_serve_fn

_EPS = 1e-8
GRADCAM = "gradcam"
GRADCAM_PP = "gradcam++"
METHODS = (GRADCAM, GRADCAM_PP)


def head_logits(head: keras.Model, pooled: tf.Tensor) -> tf.Tensor:
    """The head's pre-softmax scores ``[N, C]`` for pooled features.

    Grad-CAM differentiates the class *score*, not its softmax probability: the probability
    saturates near 1, so its gradient vanishes exactly where the model is most confident. The
    head ends in a softmax ``Dense`` layer (see :func:`tumorlib.model.classifier.build_head`); we
    apply every layer before it (in inference mode) and that layer's kernel and bias without the
    activation (:mod:`tumorlib.model.embedding`, which serves the same features for retrieval).
    """
    return final_logits(head, head_features(head, pooled))


def gradcam(
    model: keras.Model,
    images: tf.Tensor,
    class_index: tf.Tensor | None = None,
    method: str = GRADCAM,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Probabilities ``[N, C]`` and Grad-CAM heatmaps ``[N, S, S]`` in [0, 1].

    ``images`` are normalised ``[N, S, S, 3]`` (:func:`tumorlib.images.preprocessing.normalize`).
    ``class_index`` ``[N]`` picks the class to explain per image; by default the predicted one.
    Each heatmap is divided by its own maximum, so 1 marks the most influential location; an
    image where nothing supports the class gets an all-zero map rather than amplified noise.
    The probabilities are the model's own (untempered) softmax, identical to ``model(images)``.

    For an ensemble (:mod:`tumorlib.training.ensemble_run`) the class is the ensemble's prediction
    and the heatmap is the mean of the members' maps for that class, each computed at the member's
    own resolution on the un-mirrored image and resized to ``S`` — what the ensemble as a whole
    looked at, not one member's view.

    ``method`` :data:`GRADCAM_PP` weights the channels as Grad-CAM++ does (Chattopadhay et al.,
    2018) instead of by their mean gradient; which one the export serves is measured
    (:mod:`tumorlib.evaluation.faithfulness`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; expected one of {METHODS}")
    parts = members(model)
    if len(parts) == 1 and parts[0] is model:
        return _single_gradcam(model, images, class_index, method)
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    with tf.GradientTape() as tape:
        views, activations, logits = [], [], []
        for member in parts:
            x = member_view(images, int(member.input_shape[1]))  # as inside the ensemble
            a, member_logits = _taped_forward(tape, member, x)
            views.append(x)
            activations.append(a)
            logits.append(member_logits)
        with tape.stop_recording():  # the ensemble, reusing the taped (unflipped) passes
            unflipped = {i: (x, tf.nn.softmax(z)) for i, (x, z) in enumerate(zip(views, logits))}
            probabilities = average_views(parts, images, tta=has_tta(model), unflipped=unflipped)
            if class_index is None:
                class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        target = tf.cast(class_index, tf.int32)
        score = tf.add_n([tf.gather(z, target, batch_dims=1) for z in logits])
    grads = tape.gradient(score, activations)  # members are independent: each its own score's
    maps = [
        tf.image.resize(_unit_peak(_cam(a, g, tf.shape(x)[1:3], method))[..., None], size)[..., 0]
        for a, g, x in zip(activations, grads, views)
    ]
    return probabilities, _unit_peak(tf.nn.relu(tf.add_n(maps) / len(maps)))


def _taped_forward(tape, model: keras.Model, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The last block's activations ``[N, h, w, K]`` (watched) and the head's scores ``[N, C]``."""
    activations = backbone_of(model)(images, training=False)
    tape.watch(activations)
    pooled = tf.reduce_mean(activations, axis=[1, 2])
    return activations, head_logits(head_of(model), pooled)


def _cam(activations: tf.Tensor, grads: tf.Tensor, size, method: str = GRADCAM) -> tf.Tensor:
    """The non-negative class activation map ``[N, S, S]`` at ``size``, not yet peak-scaled."""
    if method == GRADCAM_PP:
        weights = _gradcam_pp_weights(activations, grads)
    else:
        weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)  # [N, 1, 1, K]
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))  # [N, h, w]
    cam = tf.image.resize(cam[..., tf.newaxis], size, method="bilinear")[..., 0]
    return tf.nn.relu(cam)  # bilinear interpolation of non-negative values stays >= 0; be exact


def _gradcam_pp_weights(activations: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++'s channel weights ``[N, 1, 1, K]``: positive gradients weighted by
    ``alpha = g^2 / (2 g^2 + sum(A) g^3)`` (the closed form under an exponential score)."""
    g2 = tf.square(grads)
    total = tf.reduce_sum(activations, axis=[1, 2], keepdims=True)
    alpha = tf.math.divide_no_nan(g2, 2.0 * g2 + total * g2 * grads)
    alpha = tf.where(tf.not_equal(grads, 0.0), alpha, tf.zeros_like(alpha))
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=[1, 2], keepdims=True)


def _unit_peak(cam: tf.Tensor) -> tf.Tensor:
    """Divide each non-negative ``[N, S, S]`` map by its maximum; an all-zero map stays zero."""
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    heatmap = tf.where(peak > _EPS, cam / tf.maximum(peak, _EPS), tf.zeros_like(cam))
    return tf.clip_by_value(heatmap, 0.0, 1.0)


def _single_gradcam(
    model: keras.Model,
    images: tf.Tensor,
    class_index: tf.Tensor | None = None,
    method: str = GRADCAM,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Grad-CAM of one classifier (with ``backbone`` and ``head``); arguments and results as in
    :func:`gradcam`."""
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        activations, logits = _taped_forward(tape, model, images)
        if class_index is None:
            target = tf.argmax(logits, axis=-1, output_type=tf.int32)
        else:
            target = tf.cast(class_index, tf.int32)
        score = tf.gather(logits, target, batch_dims=1)
    grads = tape.gradient(score, activations)
    cam = _cam(activations, grads, tf.shape(images)[1:3], method)
    return tf.nn.softmax(logits, axis=-1), _unit_peak(cam)


def has_gradcam_parts(model: keras.Model) -> bool:
    """Grad-CAM needs the ``"backbone"`` and ``"head"`` sub-models of
    :mod:`tumorlib.model.classifier` (in
    every member, for an ensemble); a model without them is exported without ``explain``."""

    def complete(classifier: keras.Model) -> bool:
        names = {layer.name for layer in classifier.layers}
        return BACKBONE_NAME in names and HEAD_NAME in names

    return all(complete(member) for member in members(model))


def make_gradcam_fn(model: keras.Model, temperature: float = 1.0, image_size: int | None = None):
    """A ``tf.function``: normalised images ``[N, S, S, 3]`` -> ``{"probabilities", "heatmap"}``.

    ``probabilities`` are temperature-scaled (:func:`tumorlib.model.calibration.apply_temperature`),
    the same numbers the ``serving_default`` signature returns; the heatmap explains the
    predicted class.
    """
    size = image_size or int(model.input_shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def explain_images(images):
        probabilities, heatmap = gradcam(model, images)
        return {
            PROBABILITIES_KEY: apply_temperature(probabilities, temperature),
            HEATMAP_KEY: heatmap,
        }

    return explain_images


def gradcam_forward(model: keras.Model, method: str = GRADCAM) -> Forward:
    """Forward step for :func:`tumorlib.model.serve_body.serve_outputs`: the model's probabilities
    plus the Grad-CAM (or Grad-CAM++) ``heatmap`` of its predicted class."""

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        probabilities, heatmap = gradcam(model, images, method=method)
        return probabilities, {HEATMAP_KEY: heatmap}

    return forward


def make_explain_fn(
    model: keras.Model, *, image_size: int, temperature: float = 1.0, method: str = GRADCAM
) -> ServeFn:
    """The ``explain`` serving signature: ``image_bytes`` ``tf.string [None]`` ->
    ``probabilities`` ``float32 [None, 4]`` (temperature-scaled), ``class_index`` ``int64
    [None]`` and ``heatmap`` ``float32 [None, S, S]`` in [0, 1] at model input resolution.

    The serve body decodes through :func:`tumorlib.images.preprocessing.preprocess_bytes_batch`,
    like ``serving_default``; the heatmap is aligned with the resized, black-padded square image, so
    a client overlays it on the image resized the same way
    (:func:`tumorlib.images.preprocessing.resize`). Attach the returned function to a ``tf.Module``
    that also tracks ``model`` (e.g. the exporter's module, as ``module.explain = fn``) before
    ``tf.saved_model.save``, so the model's variables are saved with it. ``method``: the heatmap
    the run's faithfulness measurement chose (:mod:`tumorlib.evaluation.faithfulness`).
    """
    return make_serve_fn(
        gradcam_forward(model, method),
        image_size=image_size,
        temperature=temperature,
        keys=(PROBABILITIES_KEY, CLASS_INDEX_KEY),
    )


def overlay(image, heatmap, opacity: float = 0.4):
    """Blend a ``[S, S]`` heatmap (matplotlib's ``jet`` colours) over a ``[S, S, 3]`` uint8 image.

    For the page and reports: returns a uint8 RGB array. ``opacity`` 0 shows only the image.
    """
    import numpy as np
    from matplotlib import colormaps

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    image = np.asarray(image, dtype=np.float32)
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if image.shape[:2] != heatmap.shape:
        raise ValueError(f"image {image.shape[:2]} and heatmap {heatmap.shape} differ in size")
    colours = colormaps["jet"](heatmap)[..., :3] * 255.0
    return np.clip((1 - opacity) * image + opacity * colours, 0, 255).astype(np.uint8)
