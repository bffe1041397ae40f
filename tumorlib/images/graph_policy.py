"""The input policy (:mod:`tumorlib.inputs.policy`) as TensorFlow ops, for the served graph.

Why on the graph: TF Serving, the local server and the in-process model hand the signature raw
bytes from anyone; ``tf.io.decode_image`` would allocate whatever a header declares. These ops
read the size from the header alone — ``tf.image.extract_jpeg_shape`` for JPEG (its channel count
of 4 is CMYK/YCCK), the PNG IHDR chunk via ``tf.strings.substr`` + ``tf.io.decode_raw`` — and fail
with ``tf.errors.InvalidArgumentError`` carrying the policy's own words. The numbers and message
templates are imported from the policy, so the graph and the page cannot drift apart.
"""

from __future__ import annotations

import string

import tensorflow as tf

from tumorlib.inputs.policy import (
    ANIMATED,
    CMYK,
    EMPTY,
    HIGH_BIT_DEPTH,
    JPEG_SIGNATURE,
    MAX_BITS_PER_SAMPLE,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    NOT_AN_IMAGE,
    OTHER_SIGNATURES,
    PNG_COLOUR_TYPES,
    PNG_SIGNATURE,
    TOO_LARGE_BYTES,
    TOO_MANY_PIXELS,
    TRUNCATED,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    megabytes,
    megapixels,
)

# Chunks read before the first IDAT when looking for an APNG acTL chunk (real files have < 20).
MAX_PNG_CHUNKS = 256
_PAD = b"\x00" * 64


def policy_checks(image_bytes: tf.Tensor) -> tuple[list[tf.Operation], tf.Tensor]:
    """Assertions that must pass before ``image_bytes`` (a scalar string) is decoded.

    Returns the assertion ops (run the decoder under ``tf.control_dependencies`` of them) and a
    boolean scalar: the bytes are a PNG (else a JPEG).
    """
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)
    size_ok = [
        tf.debugging.Assert(size > 0, [tf.constant(EMPTY)]),
        tf.debugging.Assert(
            size <= MAX_IMAGE_BYTES,
            [_fill(TOO_LARGE_BYTES, size=_mb(size), limit=megabytes(MAX_IMAGE_BYTES))],
        ),
    ]
    is_png = _starts_with(image_bytes, PNG_SIGNATURE)
    is_jpeg = _starts_with(image_bytes, JPEG_SIGNATURE)
    with tf.control_dependencies(size_ok):
        format_ok = tf.debugging.Assert(is_png | is_jpeg, [_format_message(image_bytes)])
    with tf.control_dependencies([format_ok]):
        width, height, bits, channels, frames = tf.cond(
            is_png, lambda: _png_header(image_bytes), lambda: _jpeg_header(image_bytes)
        )
    pixels = width * height
    checks = [
        tf.debugging.Assert(
            pixels <= MAX_PIXELS,
            [
                _fill(
                    TOO_MANY_PIXELS,
                    width=tf.strings.as_string(width),
                    height=tf.strings.as_string(height),
                    megapixels=tf.strings.as_string(tf.cast(pixels, tf.float64) / 1e6, precision=1),
                    limit=megapixels(MAX_PIXELS),
                )
            ],
        ),
        tf.debugging.Assert(
            bits <= MAX_BITS_PER_SAMPLE,
            [_fill(HIGH_BIT_DEPTH, bits=tf.strings.as_string(bits))],
        ),
        tf.debugging.Assert(tf.not_equal(channels, 4), [tf.constant(CMYK)]),
        tf.debugging.Assert(
            tf.equal(frames, 0),
            [_fill(ANIMATED, format="PNG", frames=tf.strings.as_string(frames))],
        ),
    ]
    return size_ok + [format_ok] + checks, is_png


def _png_header(image_bytes: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """(width, height, bit depth, channels, APNG frames) from IHDR; asserts IHDR is sane."""
    complete = tf.debugging.Assert(tf.strings.length(image_bytes) >= 33, [tf.constant(TRUNCATED)])
    with tf.control_dependencies([complete]):
        padded = tf.strings.join([image_bytes, _PAD])
    size = _uint32(padded, 16, 2)
    width, height = size[0], size[1]
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 24, 2), tf.uint8), tf.int64)
    bits, colour = raw[0], raw[1]
    sane = (
        tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR")
        & (width > 0)
        & (height > 0)
        & tf.reduce_any(tf.equal(colour, tf.constant(PNG_COLOUR_TYPES, tf.int64)))
    )
    ihdr_ok = tf.debugging.Assert(
        sane, [tf.constant(UNREADABLE.format(problem="invalid or missing IHDR chunk"))]
    )
    with tf.control_dependencies([ihdr_ok]):
        channels = tf.where(tf.equal(colour, 0) | tf.equal(colour, 4), 1, 3)
        frames = _apng_frames(image_bytes)
        return width, height, bits, tf.cast(channels, tf.int64), frames


def _apng_frames(image_bytes: tf.Tensor) -> tf.Tensor:
    """An APNG's frame count from its ``acTL`` chunk (which precedes IDAT), else 0."""
    size = tf.cast(tf.strings.length(image_bytes), tf.int64)
    padded = tf.strings.join([image_bytes, _PAD])

    def more(pos, frames, done, i):
        return tf.logical_not(done) & (pos + 8 <= size) & (i < MAX_PNG_CHUNKS)

    def step(pos, frames, done, i):
        length = _uint32(padded, pos, 1)[0]
        kind = tf.strings.substr(padded, pos + 4, tf.constant(4, tf.int64))
        is_actl = tf.equal(kind, b"acTL")
        frames = tf.where(is_actl, _uint32(padded, pos + 8, 1)[0], frames)
        done = is_actl | tf.equal(kind, b"IDAT")
        return pos + 12 + length, frames, done, i + 1

    start = (tf.constant(8, tf.int64), tf.constant(0, tf.int64), tf.constant(False), 0)
    _, frames, _, _ = tf.while_loop(more, step, start)
    return frames


def _jpeg_header(image_bytes: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """(width, height, 8, channels, 0): libjpeg reads the header only; 12-bit fails there."""
    shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int64)
    eight, zero = tf.constant(8, tf.int64), tf.constant(0, tf.int64)
    return shape[1], shape[0], eight, shape[2], zero


def _uint32(padded: tf.Tensor, pos, count: int) -> tf.Tensor:
    """``count`` big-endian unsigned 32-bit integers at byte ``pos``, as int64."""
    pos = tf.cast(pos, tf.int64)
    chunk = tf.strings.substr(padded, pos, tf.constant(4 * count, tf.int64))
    raw = tf.io.decode_raw(chunk, tf.int32, little_endian=False)
    return tf.bitwise.bitwise_and(tf.cast(raw, tf.int64), 0xFFFFFFFF)


def _starts_with(image_bytes: tf.Tensor, prefix: bytes) -> tf.Tensor:
    return tf.equal(tf.strings.substr(image_bytes, 0, len(prefix)), prefix)


def _format_message(image_bytes: tf.Tensor) -> tf.Tensor:
    """The policy's words for a non-JPEG/PNG file, naming the format when it is a known one."""
    message = tf.constant(NOT_AN_IMAGE)
    for signature, name in OTHER_SIGNATURES.items():
        message = tf.where(
            _starts_with(image_bytes, signature),
            tf.constant(UNSUPPORTED_FORMAT.format(format=name)),
            message,
        )
    return message


def _mb(size: tf.Tensor) -> tf.Tensor:
    value = tf.strings.as_string(tf.cast(size, tf.float64) / (1024 * 1024), precision=1)
    return tf.strings.join([value, " MB"])


def _fill(template: str, **values) -> tf.Tensor:
    """``template.format(**values)`` where values may be string tensors."""
    parts: list = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        if field is not None:
            value = values[field]
            parts.append(value if isinstance(value, tf.Tensor) else str(value))
    return tf.strings.join(parts)
