"""Upload checks that run before any byte reaches the model.

The served model decodes whatever it is given (``tumorlib.preprocessing.decode_image``), and a
decoder is lenient in ways that hurt here: a truncated JPEG decodes with a grey bottom half, a
16-bit PNG is silently cut to its high byte (a typical MRI export then turns almost black), a
transparent pixel loses what was behind it, an animated file shows only its first frame. The
model would still return confident-looking probabilities. So every upload is checked here first
and refused with a message a clinician can act on; the only conversion made is one that cannot
change what the model sees (dropping an alpha channel that is fully opaque, re-encoded as
lossless PNG).

Pillow is used only to *inspect* the upload; preprocessing itself stays in the SavedModel.
Nothing is written to disk or logged: the bytes live in memory for this check only.

DICOM files (:func:`prepare_upload`) are converted in memory by :mod:`tumorlib.dicom_io`
(modality rescale, stored or percentile window, MONOCHROME1 inverted) to an 8-bit PNG, which then
goes to the model like any upload. Only technical fields (modality, window, frame count) are
reported; patient-identifying header fields are never read out, shown or logged.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# 16.7 megapixels (4096 x 4096): far above any MRI slice, far below what would exhaust memory
# when the model decodes it. Checked from the header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = 4096 * 4096

ACCEPTED_FORMATS = ("JPEG", "PNG")
DICOM_SUFFIXES = (".dcm", ".dicom")
# Pillow reports camera JPEGs that carry a second picture (e.g. a depth map) as "MPO"; every
# JPEG decoder, TensorFlow's included, shows the primary picture, so it is a plain JPEG here.
_JPEG_ALIASES = {"MPO": "JPEG"}
_PLAIN_MODES = frozenset({"1", "L", "P", "RGB"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class UploadRejected(ValueError):
    """An upload that must not be sent to the model; ``reason`` is a short machine-readable key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ValidatedImage:
    """An upload that passed every check: the bytes to send and what was done to them."""

    data: bytes
    format: str
    width: int
    height: int
    note: str | None = None


def validate_upload(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ValidatedImage:
    """Check one uploaded file; return what to send to the model or raise :class:`UploadRejected`.

    Order matters: cheap checks on the raw bytes and the header come first, so an oversized or
    bomb-like file is refused before Pillow decodes a single pixel.
    """
    if not data:
        raise UploadRejected("empty", "The file is empty.")
    if len(data) > max_bytes:
        raise UploadRejected(
            "too_large_bytes",
            f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}. "
            "Export the slice as an 8-bit PNG or JPEG at its native resolution.",
        )
    image = _open(data, max_pixels)
    fmt = _JPEG_ALIASES.get(image.format or "", image.format or "unknown")
    width, height = image.size

    if fmt != "JPEG" and getattr(image, "is_animated", False):
        raise UploadRejected(
            "animated",
            f"This is an animated {fmt} with {getattr(image, 'n_frames', 'several')} frames; "
            "the model classifies one slice at a time. Export each slice as its own PNG or JPEG.",
        )
    if fmt not in ACCEPTED_FORMATS:
        raise UploadRejected(
            "unsupported_format",
            f"{fmt} files are not supported; upload a JPEG or PNG (DICOM is handled separately).",
        )
    if width * height > max_pixels:
        raise UploadRejected(
            "too_many_pixels",
            f"The image is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels. An MRI slice is far smaller: "
            "this file is either not a slice or a decompression bomb.",
        )
    if image.mode in _HIGH_DEPTH_MODES or _png_bit_depth(data) == 16:
        raise UploadRejected(
            "high_bit_depth",
            "This is a 16-bit image. The model was trained on 8-bit display images, and which "
            "intensity range maps to black and white (the window) is a clinical choice the page "
            "cannot make for you. Export the slice as an 8-bit PNG or JPEG with the window you "
            "read it in.",
        )
    if image.mode == "CMYK":
        raise UploadRejected(
            "cmyk",
            "This is a CMYK (print colour) image; its colours cannot be converted reliably "
            "without its colour profile. Export the slice as a grayscale or RGB PNG or JPEG.",
        )
    _load_fully(image)

    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        return _drop_opaque_alpha(image, fmt)
    if image.mode not in _PLAIN_MODES:
        raise UploadRejected(
            "unsupported_mode",
            f"Unsupported colour mode {image.mode!r}; export the slice as a grayscale or RGB "
            "PNG or JPEG.",
        )
    return ValidatedImage(data=data, format=fmt, width=width, height=height)


def prepare_upload(
    name: str,
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ValidatedImage:
    """Check one upload of any accepted kind: DICOM is converted first, images checked as is."""
    if name.lower().endswith(DICOM_SUFFIXES) or _looks_like_dicom(data):
        return validate_dicom(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return validate_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)


def validate_dicom(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ValidatedImage:
    """Convert a DICOM slice (first frame) to the PNG the model gets, or refuse it in words.

    Messages name the problem (transfer syntax, missing pixels), never header values; pydicom's
    warnings, which may quote a malformed value, are silenced for the call.
    """
    if not data:
        raise UploadRejected("empty", "The file is empty.")
    if len(data) > max_bytes:
        raise UploadRejected(
            "too_large_bytes", f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}."
        )
    image = _read_dicom(data)
    height, width = image.frames[0].shape[:2]
    if width * height > max_pixels:
        raise UploadRejected(
            "too_many_pixels",
            f"The DICOM image is {width} x {height} pixels; the limit is "
            f"{max_pixels / 1e6:.1f} megapixels.",
        )
    return ValidatedImage(
        data=_png(image.rgb(0)),
        format="DICOM",
        width=width,
        height=height,
        note=_dicom_note(image),
    )


def _looks_like_dicom(data: bytes) -> bool:
    from tumorlib.dicom_io import is_dicom

    return is_dicom(data)


def _read_dicom(data: bytes):
    from tumorlib.dicom_io import DicomError, read_dicom

    try:
        return read_dicom(data)  # silences pydicom's warnings itself (they may quote header values)
    except DicomError as err:
        raise UploadRejected("dicom", f"This DICOM file cannot be used: {err}.") from None
    except Exception as err:  # noqa: BLE001 - pydicom's own errors may quote header values
        raise UploadRejected(
            "dicom", f"This DICOM file is malformed ({type(err).__name__}); re-export it."
        ) from None


def _dicom_note(image) -> str:
    """What was done to the DICOM, in technical terms only (nothing identifying)."""
    modality = f" ({image.modality})" if image.modality else ""
    if image.window is not None:
        centre, width = image.window
        window = f"{image.window_source} window (centre {centre:g}, width {width:g})"
    else:
        window = "colour image, no window"
    frames = (
        f"; frame 1 of {image.num_frames} classified (one slice per file)"
        if image.num_frames > 1
        else ""
    )
    return f"DICOM{modality} converted to an 8-bit image with the {window}{frames}."


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only, turning Pillow's own bomb guard into a clear refusal."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both are refusals.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected(
            "too_many_pixels",
            "The image declares far more pixels than any MRI slice (over "
            f"{max_pixels / 1e6:.1f} megapixels); refused as a possible decompression bomb.",
        ) from None
    except UnidentifiedImageError:
        raise UploadRejected(
            "not_an_image", "This file is not an image (or not one in a known format)."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        if "truncat" in str(err).lower() or isinstance(err, EOFError):
            raise _truncated() from None
        raise UploadRejected("unreadable", f"The image header could not be read ({err}).") from None


def _load_fully(image: Image.Image) -> None:
    """Decode every pixel so a truncated or corrupt file is caught here, not by the model.

    Pillow's process-wide ``LOAD_TRUNCATED_IMAGES`` (which some libraries switch on) would pad a
    truncated file with grey, so it is forced off for this call.
    """
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        message = str(err)
        if "truncat" in message.lower() or isinstance(err, EOFError):
            raise _truncated() from None
        raise UploadRejected("corrupt", f"The image data is corrupt ({message}).") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def _truncated() -> UploadRejected:
    return UploadRejected(
        "truncated",
        "The file is truncated (it ends before the image does); upload it again or re-export it.",
    )


def _drop_opaque_alpha(image: Image.Image, fmt: str) -> ValidatedImage:
    """Remove an alpha channel that hides nothing; refuse one with transparent pixels."""
    with_alpha = image.convert("RGBA") if image.mode in ("P", "PA", "RGBa") else image
    if with_alpha.mode == "La":
        with_alpha = with_alpha.convert("LA")
    alpha_min, _ = with_alpha.getchannel("A").getextrema()
    if alpha_min < 255:
        raise UploadRejected(
            "transparent",
            "The image has transparent pixels; the model cannot know what lies behind them. "
            "Export the slice without transparency (flattened, 8-bit grayscale or RGB).",
        )
    target = "L" if with_alpha.mode == "LA" else "RGB"
    buffer = io.BytesIO()
    with_alpha.convert(target).save(buffer, format="PNG")
    return ValidatedImage(
        data=buffer.getvalue(),
        format="PNG",
        width=image.size[0],
        height=image.size[1],
        note=f"Fully opaque alpha channel removed ({image.mode} -> {target}, lossless PNG).",
    )


def _png_bit_depth(data: bytes) -> int | None:
    """Bit depth from a PNG's IHDR chunk: Pillow opens 16-bit RGB PNGs as 8-bit ``RGB``."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    return None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
