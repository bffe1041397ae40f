"""Acquisition transforms: each changes contrast or framing as its docstring says, stays an image
in [0, 255] of the same shape, and is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tumorlib.images import acquisition


def _slice(size: int = 96) -> tf.Tensor:
    """A synthetic axial slice: dark background, bright skull ring, grey brain, dark ventricles."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    r = np.hypot(yy / 0.9, xx / 0.75)
    image = np.where(r < 1.0, 110.0, 0.0)
    image = np.where((r > 0.88) & (r < 1.0), 230.0, image)
    image = np.where(np.hypot(yy, xx * 2) < 0.2, 35.0, image)
    return tf.constant(np.repeat(image[..., None], 3, axis=2), tf.float32)


@pytest.mark.parametrize("name", list(acquisition.TRANSFORMS))
def test_each_transform_is_a_reproducible_change_of_an_image(name):
    image = _slice()
    seed = tf.constant([3, 5])
    out = acquisition.apply(name, image, seed).numpy()
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - image.numpy()).mean() > 0.5, "the transform changed nothing"
    np.testing.assert_array_equal(out, acquisition.apply(name, image, seed).numpy())


def test_contrast_inversion_swaps_tissue_order_but_keeps_the_background_dark():
    image = _slice()
    out = acquisition.invert_contrast(image, tf.constant([0, 0])).numpy()[..., 0]
    src = image.numpy()[..., 0]
    assert out[0, 0] == src[0, 0] == 0.0  # background
    centre = out[48, 48]  # a ventricle: dark before, bright after
    brain = out[48, 20]
    assert src[48, 48] < src[48, 20] and centre > brain


def test_frame_text_and_field_of_view_touch_the_borders_or_scale():
    image = _slice()
    framed = acquisition.frame(image, tf.constant([1, 2])).numpy()[..., 0]
    assert framed[0, :].min() >= 120.0 and framed[:, -1].min() >= 120.0  # a band on every edge
    texted = acquisition.burnt_in_text(image, tf.constant([1, 2])).numpy()[..., 0]
    changed = np.abs(texted - image.numpy()[..., 0]) > 30
    assert changed.any()
    corners = np.zeros_like(changed)
    corners[:35, :] = corners[-35:, :] = True
    assert changed[~corners].mean() < 0.02  # annotations sit in the corners, not on the brain
    scaled = acquisition.crop_or_pad(image, tf.constant([4, 4])).numpy()[..., 0]
    head = lambda a: (a > 20).sum()  # noqa: E731
    assert head(scaled) != head(image.numpy()[..., 0])


def test_random_acquisition_applies_one_to_three_changes_inside_tf_data():
    image = _slice(64)
    ds = tf.data.Dataset.from_tensors(image).repeat(12)
    seeds = tf.data.Dataset.from_tensor_slices(tf.constant([[7, i] for i in range(12)]))
    outs = [
        out.numpy() for out in tf.data.Dataset.zip(ds, seeds).map(acquisition.random_acquisition)
    ]
    diffs = [np.abs(o - image.numpy()).mean() for o in outs]
    assert min(diffs) > 0.1  # never a no-op
    assert len({round(d, 3) for d in diffs}) > 6  # different draws per seed
    with pytest.raises(ValueError, match="unknown acquisition transform"):
        acquisition.apply("sepia", image, tf.constant([0, 0]))
