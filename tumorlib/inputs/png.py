"""Lossless PNG bytes for 8-bit images that go to the model (DICOM slices, volumes, negatives).

Why not Pillow: its PNG writer always chooses a filter per row (adaptive filtering), which costs
more than the rest of reading a DICOM slice, and the output is decoded straight away by the
served graph. Here each row is stored unfiltered in an uncompressed (stored) deflate stream — a
valid PNG (ISO/IEC 15948: IHDR, one IDAT, IEND) that any decoder reads, with the pixels exactly.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPRESS_LEVEL = 0  # zlib level: 0 stores; the bytes go in memory to a decoder, not to disk
COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grey, RGB)


def encode_png(image: np.ndarray) -> bytes:
    """PNG of a uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) image.

    A grey image stays one channel: the one preprocessing makes it three identical ones, so the
    model sees what an RGB encoding would give, from a third of the bytes.
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, not {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else 0)
    if channels not in COLOUR_TYPES or 0 in pixels.shape[:2]:
        raise ValueError(f"encode_png needs [H, W] or [H, W, 3] pixels, not {pixels.shape}")
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # filter byte 0: none
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), COMPRESS_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
