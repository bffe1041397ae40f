"""What input the model accepts, defined once, checked from headers before any pixel is decoded.

Why one module: the page, the batch CLI, the served graph (:mod:`tumorlib.images.preprocessing`) and
the DICOM reader (:mod:`tumorlib.inputs.dicom`) must refuse the same files with the same words. A
hostile file is cheap to make and expensive to decode (a 17 KB PNG can declare 12000 x 12000 pixels,
i.e. 430 MB once decoded), so every limit here is checked on the *encoded* bytes: the PNG IHDR
chunk and the JPEG SOF segment are parsed by hand, never by a decoder.

TensorFlow-free (an import-linter contract keeps it so): the REST client side and the page import
it without pulling TensorFlow in. The graph-side checks import the numbers and message templates.

Accepted: JPEG (8-bit, grey or YCbCr/RGB; not CMYK/YCCK) and PNG (8 bits or fewer per sample,
grey/RGB/palette, alpha allowed only when fully opaque — that part needs decoded pixels and is
checked after decoding), one frame (no APNG), at most :data:`MAX_PIXELS` pixels and
:data:`MAX_IMAGE_BYTES` bytes. DICOM is checked from its header by :func:`check_dicom_header`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# 16.7 megapixels (4096 x 4096): far above any MRI slice, far below what would exhaust memory.
MAX_PIXELS = 4096 * 4096
ACCEPTED_FORMATS = ("JPEG", "PNG")
MAX_BITS_PER_SAMPLE = 8
# PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGB + alpha.
PNG_COLOUR_TYPES = (0, 2, 3, 4, 6)
PNG_ALPHA_COLOUR_TYPES = (4, 6)
JPEG_CHANNELS = (1, 3)  # 4 is CMYK or YCCK
# DICOM: a multi-frame series is decoded whole by pydicom, so frames and total samples are capped.
MAX_DICOM_BYTES = 50 * 1024 * 1024
MAX_DICOM_FRAMES = 128
MAX_DICOM_SAMPLES = 128 * 512 * 512  # rows x columns x frames x samples per pixel
DICOM_BITS_ALLOCATED = (1, 8, 16, 32)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# Formats that are images but not accepted, named so the message can say which one it was.
OTHER_SIGNATURES = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WebP",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
}

# -- the words every surface shows (templates are filled with numbers, never file contents) -----

EMPTY = "The file is empty."
TOO_LARGE_BYTES = (
    "The file is {size}; the limit is {limit}. "
    "Export the slice as an 8-bit PNG or JPEG at its native resolution."
)
NOT_AN_IMAGE = "This file is not an image (or not one in a known format)."
UNSUPPORTED_FORMAT = (
    "{format} files are not supported; upload a JPEG or PNG (DICOM is handled separately)."
)
TOO_MANY_PIXELS = (
    "The image is {width} x {height} pixels ({megapixels} megapixels); the limit is "
    "{limit} megapixels. An MRI slice is far smaller: this file is either not a slice or a "
    "decompression bomb."
)
HIGH_BIT_DEPTH = (
    "This is a {bits}-bit image. The model was trained on 8-bit display images, and which "
    "intensity range maps to black and white (the window) is a clinical choice the software "
    "cannot make for you. Export the slice as an 8-bit PNG or JPEG with the window you read it in."
)
CMYK = (
    "This is a CMYK (print colour) image; its colours cannot be converted reliably without its "
    "colour profile. Export the slice as a grayscale or RGB PNG or JPEG."
)
ANIMATED = (
    "This is an animated {format} with {frames} frames; the model classifies one slice at a "
    "time. Export each slice as its own PNG or JPEG."
)
UNSUPPORTED_MODE = (
    "Unsupported colour mode ({mode}); export the slice as a grayscale or RGB PNG or JPEG."
)
TRANSPARENT = (
    "The image has transparent pixels; the model cannot know what lies behind them. "
    "Export the slice without transparency (flattened, 8-bit grayscale or RGB)."
)
TRUNCATED = (
    "The file is truncated (it ends before the image does); upload it again or re-export it."
)
UNREADABLE = "The image header is malformed ({problem}); re-export the slice as a PNG or JPEG."
DICOM_TOO_MANY_PIXELS = (
    "The DICOM image is {width} x {height} pixels; the limit is {limit} megapixels per frame."
)
DICOM_TOO_LARGE = (
    "The DICOM file holds {frames} frame(s) of {width} x {height} pixels ({samples} values); "
    "the limit is {max_frames} frames and {max_samples} values. Export the slice on its own."
)
DICOM_BITS = "The DICOM pixel data uses {bits} bits per value; 1, 8, 16 or 32 are supported."
DICOM_UNUSABLE = "This DICOM file cannot be used: {problem}."
DICOM_MALFORMED = "This DICOM file is malformed ({problem}); re-export it."


class InputRejected(ValueError):
    """Input that must not reach the model; ``reason`` is a short key, ``message`` the words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an accepted image declares."""

    format: str
    width: int
    height: int
    bits: int
    channels: int  # colour channels, alpha not counted (palette PNG: 3)
    has_alpha: bool


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def megapixels(n: float) -> str:
    return f"{n / 1e6:.1f}"


def check_size(n_bytes: int, *, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """Refuse an empty or oversized file from its size alone (a ``stat`` is enough)."""
    if n_bytes <= 0:
        raise InputRejected("empty", EMPTY)
    if n_bytes > max_bytes:
        raise InputRejected(
            "too_large_bytes",
            TOO_LARGE_BYTES.format(size=megabytes(n_bytes), limit=megabytes(max_bytes)),
        )


def check_image(
    data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_PIXELS
) -> ImageHeader:
    """Check an encoded JPEG/PNG against the policy from its header; never decodes pixels.

    Raises :class:`InputRejected`. Truncated pixel data and transparent pixels are only visible
    after decoding: callers that decode check those (:data:`TRUNCATED`, :data:`TRANSPARENT`).
    """
    check_size(len(data), max_bytes=max_bytes)
    if data.startswith(PNG_SIGNATURE):
        header = _png_header(data)
    elif data.startswith(JPEG_SIGNATURE):
        header = _jpeg_header(data)
    else:
        raise _not_accepted(data)
    check_pixels(header.width, header.height, max_pixels=max_pixels)
    return header


def check_pixels(width: int, height: int, *, max_pixels: int = MAX_PIXELS) -> None:
    if width * height > max_pixels:
        raise InputRejected(
            "too_many_pixels",
            TOO_MANY_PIXELS.format(
                width=width,
                height=height,
                megapixels=megapixels(width * height),
                limit=megapixels(max_pixels),
            ),
        )


def format_name(data: bytes) -> str | None:
    """The image format its signature names, ``None`` if none is recognised."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_SIGNATURE):
        return "JPEG"
    for signature, name in OTHER_SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


def _not_accepted(data: bytes) -> InputRejected:
    name = format_name(data)
    if name is None:
        return InputRejected("not_an_image", NOT_AN_IMAGE)
    return InputRejected("unsupported_format", UNSUPPORTED_FORMAT.format(format=name))


def _png_header(data: bytes) -> ImageHeader:
    """IHDR (the first chunk, by the PNG spec) and an APNG ``acTL`` chunk before the pixels."""
    if len(data) < 33:
        raise InputRejected("truncated", TRUNCATED)
    if data[12:16] != b"IHDR":
        raise InputRejected("unreadable", UNREADABLE.format(problem="no IHDR chunk"))
    width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0 or colour not in PNG_COLOUR_TYPES:
        raise InputRejected("unreadable", UNREADABLE.format(problem="invalid IHDR chunk"))
    if bits > MAX_BITS_PER_SAMPLE:
        raise InputRejected("high_bit_depth", HIGH_BIT_DEPTH.format(bits=bits))
    frames = _apng_frames(data)
    if frames is not None:
        raise InputRejected("animated", ANIMATED.format(format="PNG", frames=frames))
    channels = 1 if colour in (0, 4) else 3
    return ImageHeader("PNG", width, height, bits, channels, colour in PNG_ALPHA_COLOUR_TYPES)


def _apng_frames(data: bytes) -> int | None:
    """The frame count of an APNG (its ``acTL`` chunk precedes the first ``IDAT``), else None."""
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            return None
        if kind == b"acTL" and pos + 12 <= len(data):
            return int(struct.unpack(">I", data[pos + 8 : pos + 12])[0])
        pos += 12 + length
    return None


# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg_header(data: bytes) -> ImageHeader:
    """Walk the marker segments up to the first SOFn: precision, size and component count."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InputRejected("unreadable", UNREADABLE.format(problem="bad JPEG marker"))
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in _SOF_MARKERS:
            if pos + 10 > len(data):
                break
            bits, height, width, channels = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return _jpeg_checked(bits, width, height, channels)
        if marker == 0xDA or length < 2:  # scan data before any frame header
            raise InputRejected("unreadable", UNREADABLE.format(problem="no JPEG frame header"))
        pos += 2 + length
    raise InputRejected("truncated", TRUNCATED)


def _jpeg_checked(bits: int, width: int, height: int, channels: int) -> ImageHeader:
    if width == 0 or height == 0:
        raise InputRejected("unreadable", UNREADABLE.format(problem="no JPEG image size"))
    if bits > MAX_BITS_PER_SAMPLE:
        raise InputRejected("high_bit_depth", HIGH_BIT_DEPTH.format(bits=bits))
    if channels == 4:
        raise InputRejected("cmyk", CMYK)
    if channels not in JPEG_CHANNELS:
        raise InputRejected(
            "unsupported_mode", UNSUPPORTED_MODE.format(mode=f"{channels} JPEG components")
        )
    return ImageHeader("JPEG", width, height, bits, channels, False)


def check_dicom_size(n_bytes: int, *, max_bytes: int = MAX_DICOM_BYTES) -> None:
    """Refuse an empty or oversized DICOM file from its size alone."""
    check_size(n_bytes, max_bytes=max_bytes)


def check_dicom_header(
    rows: int,
    columns: int,
    *,
    frames: int = 1,
    samples_per_pixel: int = 1,
    bits_allocated: int = 16,
    max_pixels: int = MAX_PIXELS,
) -> None:
    """Check what a DICOM header declares before its pixel data is touched."""
    if bits_allocated not in DICOM_BITS_ALLOCATED:
        raise InputRejected("dicom_bits", DICOM_BITS.format(bits=bits_allocated))
    if rows * columns > max_pixels:
        raise InputRejected(
            "too_many_pixels",
            DICOM_TOO_MANY_PIXELS.format(width=columns, height=rows, limit=megapixels(max_pixels)),
        )
    samples = rows * columns * max(frames, 1) * max(samples_per_pixel, 1)
    if frames > MAX_DICOM_FRAMES or samples > MAX_DICOM_SAMPLES:
        raise InputRejected(
            "dicom_too_large",
            DICOM_TOO_LARGE.format(
                frames=frames,
                width=columns,
                height=rows,
                samples=samples,
                max_frames=MAX_DICOM_FRAMES,
                max_samples=MAX_DICOM_SAMPLES,
            ),
        )
