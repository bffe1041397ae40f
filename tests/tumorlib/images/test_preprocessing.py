"""The one preprocessing module: decode, resize (aspect kept), normalise, augment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.archives import encode, texture
from tumorlib.images import preprocessing as pp

SIZE = 32


def _image(height=48, width=48, seed=0) -> np.ndarray:
    return texture(np.random.default_rng(seed), height, width)


def test_rgb_jpeg_becomes_normalised_square_tensor():
    out = pp.preprocess_bytes(tf.constant(encode(_image())), SIZE).numpy()
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert out.max() > out.min()  # not a constant image


def test_normalize_is_mobilenet_v2_preprocess_input():
    pixels = tf.constant(np.arange(256, dtype=np.uint8).reshape(16, 16, 1))
    expected = tf.keras.applications.mobilenet_v2.preprocess_input(tf.cast(pixels, tf.float32))
    np.testing.assert_allclose(pp.normalize(pixels).numpy(), expected.numpy(), atol=1e-6)
    assert pp.normalize(tf.constant([0, 255], tf.uint8)).numpy().tolist() == [-1.0, 1.0]


def test_greyscale_input_gives_three_equal_channels():
    out = pp.preprocess_bytes(tf.constant(encode(_image(), mode="L")), SIZE).numpy()
    assert out.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_rgba_png_drops_alpha_and_matches_its_rgb_version():
    pixels = _image()
    rgba = pp.preprocess_bytes(tf.constant(encode(pixels, fmt="PNG", mode="RGBA")), SIZE)
    rgb = pp.preprocess_bytes(tf.constant(encode(pixels, fmt="PNG", mode="RGB")), SIZE)
    np.testing.assert_array_equal(rgba.numpy(), rgb.numpy())


def test_non_square_image_keeps_aspect_with_black_padding():
    wide = np.full((32, 64), 255, np.uint8)  # white, twice as wide as tall
    out = pp.preprocess_bytes(tf.constant(encode(wide, fmt="PNG")), SIZE).numpy()
    assert out.shape == (SIZE, SIZE, 3)
    # 64x32 -> 32x16 centred: 8 black rows above and below, white in between, full width.
    np.testing.assert_array_equal(out[:8], -1.0)
    np.testing.assert_array_equal(out[-8:], -1.0)
    np.testing.assert_allclose(out[9:23], 1.0, atol=1e-6)
    tall = np.full((64, 32), 255, np.uint8)
    out = pp.preprocess_bytes(tf.constant(encode(tall, fmt="PNG")), SIZE).numpy()
    np.testing.assert_array_equal(out[:, :8], -1.0)
    np.testing.assert_allclose(out[:, 9:23], 1.0, atol=1e-6)


def test_resize_returns_uint8_at_any_size():
    for size in (16, 32, 57):
        out = pp.resize(tf.constant(np.stack([_image(40, 30)] * 3, -1)), size)
        assert out.dtype == tf.uint8 and out.shape == (size, size, 3)


@pytest.mark.parametrize("payload", [b"", b"definitely not an image", b"%PDF-1.4 ..."])
def test_non_image_bytes_raise(payload):
    with pytest.raises(tf.errors.InvalidArgumentError):
        pp.preprocess_bytes(tf.constant(payload), SIZE)


def test_preprocess_image_accepts_one_three_or_four_channels():
    grey = _image()[..., None]
    reference = pp.preprocess_image(np.repeat(grey, 3, -1), SIZE).numpy()
    np.testing.assert_array_equal(pp.preprocess_image(grey, SIZE).numpy(), reference)
    rgba = np.concatenate([np.repeat(grey, 3, -1), np.full_like(grey, 7)], -1)
    np.testing.assert_array_equal(pp.preprocess_image(rgba, SIZE).numpy(), reference)


def test_preprocess_image_equals_preprocess_bytes_for_lossless_input():
    pixels = np.stack([_image(seed=1), _image(seed=2), _image(seed=3)], -1)
    png = encode(pixels, fmt="PNG")
    np.testing.assert_array_equal(
        pp.preprocess_image(pixels, SIZE).numpy(), pp.preprocess_bytes(tf.constant(png), SIZE)
    )


def test_batch_of_mixed_sizes_and_formats():
    images = [
        encode(_image(48, 48)),
        encode(_image(20, 60), fmt="PNG", mode="L"),
        encode(_image(70, 30), fmt="PNG", mode="RGBA"),
    ]
    batch = pp.preprocess_bytes_batch(tf.constant(images), SIZE).numpy()
    assert batch.shape == (3, SIZE, SIZE, 3)
    for i, data in enumerate(images):
        np.testing.assert_array_equal(batch[i], pp.preprocess_bytes(tf.constant(data), SIZE))


def test_preprocess_bytes_batch_traces_in_a_serving_signature():
    fn = tf.function(
        lambda b: pp.preprocess_bytes_batch(b, SIZE),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    out = fn(tf.constant([encode(_image())] * 2))
    assert out.shape == (2, SIZE, SIZE, 3)


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------


def _resized(seed=0) -> tf.Tensor:
    return pp.resize(tf.constant(np.stack([_image(seed=seed)] * 3, -1)), SIZE)


def test_augment_keeps_shape_and_range():
    image = _resized()
    for s in range(8):
        out = pp.augment(image, tf.constant([s, 7]))
        assert out.shape == image.shape and out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0


def test_augment_is_a_function_of_its_seed():
    image = _resized()
    a = pp.augment(image, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(a, pp.augment(image, tf.constant([1, 2])).numpy())
    assert not np.array_equal(a, pp.augment(image, tf.constant([1, 3])).numpy())
    assert not np.array_equal(a, tf.cast(image, tf.float32).numpy())


def test_acquisition_changes_are_added_on_top_of_the_same_augmentation():
    image = _resized()
    plain = pp.augment(image, tf.constant([4, 2])).numpy()
    np.testing.assert_array_equal(plain, pp.augment(image, tf.constant([4, 2]), 0.0).numpy())
    changed = [pp.augment(image, tf.constant([4, s]), 1.0).numpy() for s in range(6)]
    unchanged = [pp.augment(image, tf.constant([4, s])).numpy() for s in range(6)]
    assert all(not np.array_equal(a, b) for a, b in zip(changed, unchanged))
    assert all(a.min() >= 0.0 and a.max() <= 255.0 and a.shape == plain.shape for a in changed)
    np.testing.assert_array_equal(changed[0], pp.augment(image, tf.constant([4, 0]), 1.0).numpy())
    # The training pipeline runs it on the graph (tf.data), where the same seeds give the same.
    graph = tf.data.Dataset.from_tensors(tf.constant([4, 0])).map(
        lambda s: pp.augment(image, s, 1.0)
    )
    np.testing.assert_array_equal(next(iter(graph)).numpy(), changed[0])


def test_affine_identity_flip_and_quarter_turn():
    image = tf.cast(_resized(), tf.float32)
    identity = pp._affine(image, tf.constant(0.0), tf.constant(1.0), tf.constant(False))
    np.testing.assert_allclose(identity.numpy(), image.numpy(), atol=1e-3)
    flipped = pp._affine(image, tf.constant(0.0), tf.constant(1.0), tf.constant(True))
    np.testing.assert_allclose(flipped.numpy(), tf.image.flip_left_right(image), atol=1e-3)
    turned = pp._affine(image, tf.constant(math.pi / 2), tf.constant(1.0), tf.constant(False))
    candidates = [tf.image.rot90(image, k).numpy() for k in (1, 3)]
    assert any(np.allclose(turned.numpy(), c, atol=1e-2) for c in candidates)


def test_affine_zoom_in_magnifies_about_the_centre():
    image = np.zeros((SIZE, SIZE, 1), np.float32)
    image[12:20, 12:20] = 255.0  # an 8-pixel centred square
    zoomed = pp._affine(tf.constant(image), tf.constant(0.0), tf.constant(2.0), tf.constant(False))
    bright = np.argwhere(zoomed.numpy()[..., 0] > 127)
    assert 14 <= bright[:, 0].max() - bright[:, 0].min() + 1 <= 18  # about 16 pixels wide
    assert abs(bright.mean() - (SIZE - 1) / 2) < 1.0


@pytest.mark.parametrize("shape", [(630, 630), (225, 225), (47, 23)])
def test_resize_gives_the_same_pixels_eagerly_and_on_the_graph(shape):
    """tf.image.resize_with_pad rounds differently with known and unknown shapes (630 -> 224
    rows eagerly, 223 + padding on the graph); ours must not, or the page's overlay, the
    export check and tests would see other pixels than training and serving."""
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    graph = tf.function(
        lambda x: pp.resize(x, 224),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    np.testing.assert_array_equal(pp.resize(image, 224).numpy(), graph(image).numpy())
