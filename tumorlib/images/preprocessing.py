"""The one place where an image becomes model input.

Training pipelines, the exported SavedModel's serving signature, the upload page and the tests all
call these functions, so a JPEG is decoded, resized and normalised identically wherever it is
seen. Everything here is a TensorFlow op, so it runs on the graph inside ``tf.data`` and inside a
``tf.function`` signature alike.

Augmentation lives here too, because it works on the same intermediate representation (a resized
float image in [0, 255]) and must never leak into evaluation or serving: only
:func:`augment` applies it, and only the training pipeline calls :func:`augment`.
"""

from __future__ import annotations

import functools
import math

import tensorflow as tf

from tumorlib.images.graph_policy import policy_checks
from tumorlib.inputs.policy import TRANSPARENT

DEFAULT_IMAGE_SIZE = 224


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG bytes to a ``uint8`` ``[H, W, 3]`` tensor, after the input policy allows it.

    The header is checked on the graph first (:func:`tumorlib.images.graph_policy.policy_checks`:
    size, format, pixels, bit depth, CMYK, APNG) and the decoder runs only under those assertions,
    so a decompression bomb fails in microseconds with the policy's own words
    (``tf.errors.InvalidArgumentError``) instead of allocating gigabytes. Grayscale becomes
    three-channel RGB; an alpha channel is dropped when fully opaque and refused otherwise.
    """
    checks, is_png = policy_checks(image_bytes)
    with tf.control_dependencies(checks):
        image = tf.cond(
            is_png,
            lambda: _decode_png_opaque(image_bytes),
            lambda: tf.io.decode_image(
                image_bytes, channels=3, dtype=tf.uint8, expand_animations=False
            ),
        )
    image.set_shape([None, None, 3])
    return image


def _decode_png_opaque(image_bytes: tf.Tensor) -> tf.Tensor:
    """PNG with the alpha channel checked: transparent pixels hide what the model would see."""
    rgba = tf.io.decode_png(image_bytes, channels=4, dtype=tf.uint8)
    opaque = tf.debugging.Assert(
        tf.reduce_all(tf.equal(rgba[..., 3], 255)), [tf.constant(TRANSPARENT)]
    )
    with tf.control_dependencies([opaque]):
        return tf.identity(rgba[..., :3])


def resize(image: tf.Tensor, image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Resize to ``image_size`` square, keeping the aspect ratio and padding with black.

    MRI slices have black backgrounds, so black padding adds nothing the model has not seen;
    stretching a non-square slice instead would distort anatomy. Returns ``uint8``: rounding
    here, once, means a cached training image and a served upload are bit-identical inputs, and
    a cached split takes a quarter of the memory of floats.
    """
    channels = image.shape[-1]
    image = _resize_with_pad(int(image_size))(tf.cast(image, tf.float32))
    image = tf.ensure_shape(image, [image_size, image_size, channels])
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


@functools.lru_cache(maxsize=32)
def _resize_with_pad(image_size: int):
    """``tf.image.resize_with_pad`` always on the graph with an unknown input shape.

    Why: its sizes are computed in Python floats when the shape is known (eager calls) and in
    float32 tensors when it is not (``tf.data``, the SavedModel's ``map_fn``), and the two can
    round differently — e.g. a 630×630 slice becomes 224 rows eagerly but 223 rows + one black
    row on the graph. Tracing it once with an unknown shape gives every caller — training,
    serving, the page's Grad-CAM overlay, tests — the exact same pixels.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    def resize_with_pad(image: tf.Tensor) -> tf.Tensor:
        return tf.image.resize_with_pad(image, image_size, image_size, antialias=True)

    return resize_with_pad


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Map [0, 255] to [-1, 1], the range MobileNetV2's ImageNet weights expect.

    Identical to ``keras.applications.mobilenet_v2.preprocess_input`` (``x / 127.5 - 1``).
    """
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def preprocess_image(image: tf.Tensor, image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Decoded ``[H, W, C]`` image (any C of 1, 3, 4) to normalised ``[size, size, 3]``."""
    image = _to_rgb(image)
    return normalize(resize(image, image_size))


def preprocess_bytes(image_bytes: tf.Tensor, image_size: int = DEFAULT_IMAGE_SIZE) -> tf.Tensor:
    """Encoded image bytes (a scalar string) to a normalised ``[size, size, 3]`` float tensor."""
    return normalize(resize(decode_image(image_bytes), image_size))


def preprocess_bytes_batch(
    image_bytes: tf.Tensor, image_size: int = DEFAULT_IMAGE_SIZE
) -> tf.Tensor:
    """A ``[N]`` string tensor of encoded images to a ``[N, size, size, 3]`` batch.

    This is what the SavedModel's serving signature calls: each element may have its own size
    and format, so they are decoded one by one with ``tf.map_fn`` on the graph.
    """
    return tf.map_fn(
        lambda b: preprocess_bytes(b, image_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
    )


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
    image = tf.convert_to_tensor(image)
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


# --------------------------------------------------------------------------------------------
# Augmentation (training split only)
# --------------------------------------------------------------------------------------------

# Mild on purpose: MRI slices are acquired in a standard orientation, so large rotations or
# vertical flips would create images no scanner produces.
MAX_ROTATION_DEGREES = 15.0
MAX_ZOOM = 0.10  # +/- 10 % scale
MAX_BRIGHTNESS = 0.10  # fraction of the full [0, 255] range
MAX_CONTRAST = 0.15


def augment(image: tf.Tensor, seed: tf.Tensor, acquisition: float = 0.0) -> tf.Tensor:
    """Randomly rotate, zoom, flip left-right and jitter brightness/contrast.

    ``image`` is a resized image in [0, 255] (the output of :func:`resize`); ``seed`` is a
    ``[2]`` integer tensor. Every random draw is a *stateless* op keyed on that seed, so the same
    seed always gives the same result regardless of thread scheduling in ``tf.data`` — this is
    what makes a training run reproducible. Returns a float image in [0, 255].

    ``acquisition``: the probability that the slice also gets 1-3 acquisition changes
    (:func:`tumorlib.images.acquisition.random_acquisition`: another sequence's contrast, bias
    field, noise, blur, frames, burnt-in text...), so the classifier learns what other scanners
    send.
    """
    image = tf.cast(image, tf.float32)
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    angle = tf.random.stateless_uniform(
        [], seeds[0], -MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES
    ) * (math.pi / 180.0)
    scale = tf.random.stateless_uniform([], seeds[1], 1.0 - MAX_ZOOM, 1.0 + MAX_ZOOM)
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    image = _affine(image, angle, scale, flip)
    image = tf.image.stateless_random_brightness(image, MAX_BRIGHTNESS * 255.0, seeds[3])
    image = tf.image.stateless_random_contrast(
        image, 1.0 - MAX_CONTRAST, 1.0 + MAX_CONTRAST, seeds[4]
    )
    image = tf.clip_by_value(image, 0.0, 255.0)
    if acquisition > 0.0:
        from tumorlib.images.acquisition import random_acquisition

        # Seeds of their own (folded in), so the draws above stay what they were without them.
        extra = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(seed, 1), num=2
        )
        changed = tf.random.stateless_uniform([], extra[0]) < acquisition
        image = tf.cond(
            changed, lambda: random_acquisition(image, extra[1]), lambda: tf.identity(image)
        )
    return image


def _affine(image: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
    """Rotate by ``angle`` and scale by ``scale`` about the centre, optionally mirrored.

    Builds the inverse (output -> input) projective transform that
    ``ImageProjectiveTransformV3`` expects; outside pixels are filled with black.
    """
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    mirror = tf.where(flip, -1.0, 1.0)
    # input = R^-1 S^-1 (output - c) + c, with an optional mirror of the output x axis.
    a0, a1 = cos * mirror, sin
    b0, b1 = -sin * mirror, cos
    a2 = cx - a0 * cx - a1 * cy
    b2 = cy - b0 * cx - b1 * cy
    transform = tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[tf.newaxis]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(out[0], image.shape)
