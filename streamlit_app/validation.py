"""The page's upload checks: the library's input policy, then what only decoding can show.

What is accepted, the limits and the words of every refusal belong to
:mod:`tumorlib.inputs.policy` (the batch CLI and the served graph refuse the same files with the
same words); it checks the header before any pixel is decoded. The page then decodes with Pillow
because a decoder is lenient in ways that hurt here: a truncated JPEG decodes with a grey bottom
half and a transparent pixel loses what was behind it, while the model would still return
confident-looking probabilities. The only conversion made is one that cannot change what the
model sees (dropping an alpha channel that is fully opaque, re-encoded as lossless PNG).

Pillow is used only to *inspect* the upload; preprocessing itself stays in the SavedModel.
Nothing is written to disk or logged: the bytes live in memory for this check only.

DICOM files (:func:`prepare_upload`) are checked from their header and converted in memory by
:mod:`tumorlib.inputs.dicom` (modality rescale, stored or percentile window, MONOCHROME1 inverted)
to an 8-bit PNG, which then goes to the model like any upload. Only technical fields (modality,
window, frame count) are reported; patient-identifying header fields are never read out, shown or
logged.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from tumorlib.inputs.dicom import DICOM_SUFFIXES, DicomError, check_header, is_dicom, read_dicom
from tumorlib.inputs.policy import (
    DICOM_MALFORMED,
    DICOM_UNUSABLE,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    TRANSPARENT,
    TRUNCATED,
    InputRejected,
    check_image,
    check_size,
)

# The limits are the policy's own; ``.streamlit/config.toml`` caps uploads at the same 10 MB.

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


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
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> ValidatedImage:
    """Check one uploaded image; return what to send to the model or raise :class:`InputRejected`.

    The policy's header check comes first, so a bomb is refused before Pillow decodes a pixel;
    only then is the image decoded to catch truncation and transparency.
    """
    header = check_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    image = _decoded(data)
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        return _drop_opaque_alpha(image, header.format)
    return ValidatedImage(data=data, format=header.format, width=header.width, height=header.height)


def prepare_upload(
    name: str,
    data: bytes,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> ValidatedImage:
    """Check one upload of any accepted kind: DICOM is converted first, images checked as is."""
    if name.lower().endswith(DICOM_SUFFIXES) or is_dicom(data):
        return validate_dicom(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return validate_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)


def validate_dicom(
    data: bytes,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> ValidatedImage:
    """Convert a DICOM slice (first frame) to the PNG the model gets, or refuse it in words.

    Its header is checked against the policy before pixel data is touched. Messages name the
    problem (transfer syntax, missing pixels), never header values; pydicom's warnings and log
    records, which may quote a malformed value, are silenced by :mod:`tumorlib.inputs.dicom`.
    """
    check_size(len(data), max_bytes=max_bytes)
    image = _read_dicom(data, max_pixels)
    height, width = image.frames[0].shape[:2]
    return ValidatedImage(
        data=_png(image.rgb(0)),
        format="DICOM",
        width=width,
        height=height,
        note=_dicom_note(image),
    )


def _read_dicom(data: bytes, max_pixels: int):
    try:
        check_header(data, max_pixels=max_pixels)  # before any pixel data is touched
        return read_dicom(data)  # checks the policy's header limits again, then decodes
    except InputRejected:
        raise
    except DicomError as err:
        raise InputRejected("dicom", DICOM_UNUSABLE.format(problem=err)) from None
    except Exception as err:  # noqa: BLE001 - pydicom's own errors may quote header values
        raise InputRejected("dicom", DICOM_MALFORMED.format(problem=type(err).__name__)) from None


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


def _decoded(data: bytes) -> Image.Image:
    """Decode every pixel (after the header check) so a truncated or corrupt file is caught here.

    Pillow's process-wide ``LOAD_TRUNCATED_IMAGES`` (which some libraries switch on) would pad a
    truncated file with grey, so it is forced off for this call.
    """
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        message = str(err)
        if "truncat" in message.lower() or isinstance(err, EOFError):
            raise InputRejected("truncated", TRUNCATED) from None
        raise InputRejected("corrupt", f"The image data is corrupt ({message}).") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def _drop_opaque_alpha(image: Image.Image, fmt: str) -> ValidatedImage:
    """Remove an alpha channel that hides nothing; refuse one with transparent pixels."""
    with_alpha = image.convert("RGBA") if image.mode in ("P", "PA", "RGBa") else image
    if with_alpha.mode == "La":
        with_alpha = with_alpha.convert("LA")
    alpha_min, _ = with_alpha.getchannel("A").getextrema()
    if alpha_min < 255:
        raise InputRejected("transparent", TRANSPARENT)
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
