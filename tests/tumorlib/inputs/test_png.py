"""The PNG writer: its bytes decode to exactly the pixels given, in Pillow and in the graph."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tumorlib.inputs.png import encode_png


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (256, 256), (19, 7, 3)])
def test_png_decodes_to_the_same_pixels(shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(pixels)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == ("L" if len(shape) == 2 else "RGB")
        np.testing.assert_array_equal(np.asarray(image), pixels)
    decoded = tf.io.decode_png(data).numpy()
    np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 3), np.uint8)]
)
def test_png_refuses_what_it_cannot_write(bad):
    with pytest.raises(ValueError, match="encode_png"):
        encode_png(bad)
