"""Acquisition changes as graph ops: what another scanner, sequence or PACS export does to a slice.

Why: the training archive is mostly one look (T1-weighted with contrast, clean borders). Another
hospital sends FLAIR and T2 (other contrast: fluid bright, tissue order changed), other field
strengths (bias field, noise), other reconstructions (blur), and exports with frames, rulers and
burnt-in text, cropped or padded differently. These transforms imitate those changes on a resized
image in [0, 255] (the representation :func:`tumorlib.images.preprocessing.augment` works on), so
one set of ops serves three uses:

- the robustness evaluation (:mod:`tumorlib.safety.robustness`) applies each at test time;
- the brain-MRI check (:mod:`tumorlib.safety.input_gate`) fits its statistics on slices *and* their
  transformed copies, so it accepts every sequence instead of only the training look;
- training can add them to the augmentation (``--acquisition-augment``).

Every random draw is stateless and keyed on a ``[2]`` seed, like the rest of the augmentation.
They change contrast and framing, never anatomy: a brain MRI stays a brain MRI.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

Transform = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (image [S, S, 3] in [0, 255], seed)

FOREGROUND_LEVEL = 20.0  # grey level above which a pixel belongs to the head, not the background


def _uniform(seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform([], tf.cast(seed, tf.int64), low, high)


def _grey(image: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(image, axis=-1, keepdims=True)


def _smooth(image: tf.Tensor, sigma: tf.Tensor | float) -> tf.Tensor:
    """Separable Gaussian blur of ``[S, S, C]`` (kernel radius 3 sigma, at most 15 pixels)."""
    radius = 15
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = image.shape[-1]
    batch = tf.transpose(image, [2, 0, 1])[..., tf.newaxis]  # [C, S, S, 1]
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "SAME")
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [1, -1, 1, 1]), 1, "SAME")
    return tf.ensure_shape(tf.transpose(batch[..., 0], [1, 2, 0]), [None, None, channels])


def foreground(image: tf.Tensor) -> tf.Tensor:
    """``[S, S, 1]`` soft mask of the head: smoothed grey level above the background's."""
    level = _smooth(_grey(image), 2.0)
    return tf.clip_by_value((level - FOREGROUND_LEVEL) / FOREGROUND_LEVEL, 0.0, 1.0)


def invert_contrast(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Invert intensities inside the head, keeping the background dark (T1 <-> T2-like order).

    A whole-image negative would make the background white, which no scanner does; inverting
    the head's range only swaps which tissues are bright, as changing sequence does.
    """
    del seed
    mask = foreground(image)
    inside = tf.reduce_max(image) + FOREGROUND_LEVEL - image
    return tf.clip_by_value(mask * inside + (1.0 - mask) * image, 0.0, 255.0)


def gamma(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Non-linear contrast (window and display LUT differences): gamma in [0.45, 2.2]."""
    g = tf.exp(_uniform(seed, math.log(0.45), math.log(2.2)))
    return 255.0 * tf.pow(tf.clip_by_value(image / 255.0, 0.0, 1.0), g)


def bias_field(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A smooth multiplicative field (coil sensitivity): up to about +/-40 % across the slice."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=1)[0]
    coef = tf.random.stateless_uniform([5], seeds, -0.4, 0.4)
    size = tf.shape(image)[0]
    t = tf.linspace(-1.0, 1.0, size)
    yy, xx = tf.meshgrid(t, t, indexing="ij")
    log_field = coef[0] * xx + coef[1] * yy + coef[2] * xx * yy + coef[3] * xx**2 + coef[4] * yy**2
    return tf.clip_by_value(image * tf.exp(log_field)[..., tf.newaxis], 0.0, 255.0)


def blur(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Lower resolution or thicker reconstruction: Gaussian blur, sigma 0.8-2.5 pixels."""
    return _smooth(image, _uniform(seed, 0.8, 2.5))


def noise(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rician-like noise (magnitude of a complex Gaussian): sigma 3-15 grey levels."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    sigma = tf.random.stateless_uniform([], seeds[0], 3.0, 15.0)
    shape = tf.shape(image[..., :1])
    real = _grey(image) + sigma * tf.random.stateless_normal(shape, seeds[1])
    imag = sigma * tf.random.stateless_normal(shape, seeds[2])
    noisy = tf.sqrt(real**2 + imag**2) - _grey(image)
    return tf.clip_by_value(image + noisy, 0.0, 255.0)


def frame(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A bright or grey border band (PACS screen captures, film scans): 2-8 % of the width."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    size = tf.shape(image)[0]
    width = tf.cast(tf.cast(size, tf.float32) * _uniform(seeds[0], 0.02, 0.08), tf.int32)
    value = _uniform(seeds[1], 120.0, 255.0)
    idx = tf.range(size)
    inner = (idx >= width) & (idx < size - width)
    keep = tf.cast(inner[:, tf.newaxis] & inner[tf.newaxis, :], tf.float32)[..., tf.newaxis]
    return image * keep + value * (1.0 - keep)


@functools.lru_cache(maxsize=4)
def _text_bank(size: int = 256, count: int = 16) -> np.ndarray:
    """``[count, size, size]`` float masks of annotation text in a corner (rendered once)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(20261129)
    words = ["L", "R", "A", "P", "T2", "FLAIR", "AX", "SE", "TR 4000", "TE 90", "3.0T", "Se:4",
             "Im:12", "W:1200 L:600", "5 mm", "HFS", "100%", "DFOV 24cm"]  # fmt: skip
    bank = []
    for _ in range(count):
        im = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default(size=int(rng.integers(9, 16)))
        for corner in rng.permutation(4)[: int(rng.integers(1, 5))]:
            x = 4 if corner % 2 == 0 else size // 2 + 20
            y = 4 if corner < 2 else size - 52
            lines = rng.choice(words, size=int(rng.integers(1, 4)))
            draw.multiline_text((x, y), "\n".join(lines), fill=255, font=font)
        bank.append(np.asarray(im, np.float32) / 255.0)
    return np.stack(bank)


def burnt_in_text(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Annotation text in the corners (sequence names, scale, orientation letters), as exports
    burn into the pixels."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    bank = tf.constant(_text_bank())
    pick = tf.random.stateless_uniform([], seeds[0], 0, bank.shape[0], dtype=tf.int32)
    size = tf.shape(image)[:2]
    mask = tf.image.resize(bank[pick][..., tf.newaxis], size, method="bilinear")
    value = _uniform(seeds[1], 180.0, 255.0)
    return image * (1.0 - mask) + value * mask


def crop_or_pad(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Another field of view: zoom in (crop up to 25 %) or out (pad up to 35 %), re-centred."""
    scale = tf.exp(_uniform(seed, math.log(0.74), math.log(1.33)))
    size = tf.shape(image)[0]
    new = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    scaled = tf.image.resize(image, [new, new], antialias=True)
    out = tf.image.resize_with_crop_or_pad(scaled, size, size)
    return tf.ensure_shape(out, image.shape)


# name -> transform; the order is the report's.
TRANSFORMS: dict[str, Transform] = {
    "invert_contrast": invert_contrast,
    "gamma": gamma,
    "bias_field": bias_field,
    "blur": blur,
    "noise": noise,
    "frame": frame,
    "burnt_in_text": burnt_in_text,
    "crop_or_pad": crop_or_pad,
}


def apply(name: str, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One named transform of a resized ``[S, S, 3]`` image in [0, 255] (float result)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown acquisition transform {name!r}; known: {sorted(TRANSFORMS)}")
    return tf.clip_by_value(TRANSFORMS[name](tf.cast(image, tf.float32), seed), 0.0, 255.0)


def random_acquisition(image: tf.Tensor, seed: tf.Tensor, max_transforms: int = 3) -> tf.Tensor:
    """1 to ``max_transforms`` distinct transforms, drawn at random, applied in the table's order.

    Inside a graph (``tf.data``): each transform runs under a ``tf.cond`` on its own draw.
    """
    image = tf.cast(image, tf.float32)
    seed = tf.cast(seed, tf.int64)
    n = len(TRANSFORMS)
    seeds = tf.random.experimental.stateless_split(seed, num=n + 2)
    count = tf.random.stateless_uniform([], seeds[0], 1, max_transforms + 1, dtype=tf.int32)
    order = tf.argsort(tf.random.stateless_uniform([n], seeds[1]))
    chosen = tf.reduce_any(tf.range(n)[:, tf.newaxis] == order[tf.newaxis, :count], axis=1)
    for i, fn in enumerate(TRANSFORMS.values()):
        image = tf.cond(
            chosen[i],
            lambda fn=fn, i=i, x=image: fn(x, seeds[i + 2]),
            lambda x=image: x,
        )
    return tf.clip_by_value(image, 0.0, 255.0)
