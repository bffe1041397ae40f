"""DICOM input: ``.dcm`` bytes to the 8-bit images the model and the page use.

Why this module: hospitals export DICOM, not JPEG. A DICOM slice stores raw detector values
(often 12-16 bit, sometimes inverted — MONOCHROME1 — and sometimes many frames); turning it into
an image a person or the model can read needs the modality rescale, a display window (the stored
WindowCenter/WindowWidth when present, otherwise a robust 0.5-99.5 percentile window), inversion
for MONOCHROME1, and a choice of frame. The result is encoded to PNG so it enters the model through
exactly the same :func:`tumorlib.images.preprocessing.preprocess_bytes` path as any upload.

Privacy: DICOM headers carry patient-identifying data (name, ID, birth date, ...). Nothing here
logs or prints header values; :class:`DicomImage` keeps only non-identifying technical fields, and
:func:`patient_info` returns the identifying ones only when a caller explicitly asks. Error
messages name the problem (transfer syntax, missing pixel data), never header values.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tumorlib.inputs.png import encode_png
from tumorlib.inputs.policy import MAX_PIXELS, check_dicom_header, check_dicom_size

DICOM_SUFFIXES = (".dcm", ".dicom")
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientAddress",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyDate",
    "StudyID",
)
PERCENTILE_WINDOW = (0.5, 99.5)


class DicomError(ValueError):
    """The bytes are not a usable DICOM image (malformed, no pixels, undecodable compression)."""


@dataclass
class DicomImage:
    """Decoded frames (uint8 ``[H, W]`` or ``[H, W, 3]``) and non-identifying technical info."""

    frames: list[np.ndarray]
    photometric: str
    window: tuple[float, float] | None  # (centre, width) actually applied
    window_source: str  # "stored", "percentile" or "none" (already 8-bit colour)
    modality: str = ""
    transfer_syntax: str = ""
    info: dict[str, object] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def rgb(self, frame: int = 0) -> np.ndarray:
        """One frame as uint8 ``[H, W, 3]``."""
        if not 0 <= frame < self.num_frames:
            raise DicomError(f"frame {frame} out of range; the file has {self.num_frames}")
        image = self.frames[frame]
        return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def is_dicom(data: bytes) -> bool:
    """True for DICOM Part 10 files (the ``DICM`` magic after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def silence_pydicom_logging() -> None:
    """Stop pydicom's ``logging`` records (not only its warnings): they quote header values.

    Process-wide and idempotent: a malformed PatientName must never reach a log handler, whoever
    configured logging (pydicom's own ``config.debug()`` included).
    """
    logger = logging.getLogger("pydicom")
    logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


silence_pydicom_logging()  # at import too: before any caller of ours touches pydicom


def check_header(data: bytes, *, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a DICOM whose header declares too much, before any pixel data is read.

    Raises :class:`tumorlib.inputs.policy.InputRejected` (size, frames, bits) or
    :class:`DicomError` (malformed). Reads the header only (``stop_before_pixels``).
    """
    check_dicom_size(len(data))
    check_dataset_header(_dataset(data, stop_before_pixels=True), max_pixels=max_pixels)


def read_header(data: bytes):
    """The dataset without its pixel data (``stop_before_pixels``): what a study reader groups,
    orders and checks before any pixel is decoded. :class:`DicomError` when malformed."""
    check_dicom_size(len(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dataset(data, stop_before_pixels=True)


def check_dataset_header(ds, *, max_pixels: int = MAX_PIXELS) -> None:
    """:func:`check_header` on an already read header (the input policy's limits)."""
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise DicomError("malformed image size fields in the DICOM header") from None
    check_dicom_header(
        rows,
        columns,
        frames=frames,
        samples_per_pixel=samples,
        bits_allocated=bits,
        max_pixels=max_pixels,
    )


def _dataset(data: bytes, *, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    silence_pydicom_logging()
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"DICOM input must be bytes, not {type(data).__name__}")
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise DicomError("not a DICOM file (no 'DICM' header)") from None
    except Exception as err:  # truncated or corrupt header
        raise DicomError(f"malformed DICOM file: {type(err).__name__}") from None


def _pixels(ds) -> np.ndarray:
    if "PixelData" not in ds:
        raise DicomError("DICOM file has no pixel data (not an image)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    name = getattr(syntax, "name", str(syntax))
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        compressed = bool(getattr(syntax, "is_compressed", False))
        if compressed and _decoder_available(syntax):  # a decoder ran and failed: bad data
            raise DicomError(
                f"the pixel data compressed as {name!r} is corrupt or truncated "
                f"({type(err).__name__}); export the series again"
            ) from None
        if "plugin" in str(err).lower() or "handler" in str(err).lower() or syntax is not None:
            raise DicomError(
                f"cannot decode pixel data compressed as {name!r}: no decoder installed "
                "(install pylibjpeg with pylibjpeg-libjpeg/-openjpeg, or python-gdcm), or "
                "export the series uncompressed"
            ) from None
        raise DicomError(f"cannot decode DICOM pixel data: {type(err).__name__}") from None
    except Exception as err:  # truncated pixel data, inconsistent Rows/Columns/BitsAllocated
        raise DicomError(
            f"DICOM pixel data is malformed or truncated ({type(err).__name__})"
        ) from None


def _decoder_available(syntax: Any) -> bool:
    """True when pydicom has a working decoder for ``syntax`` (so a failure is the data's)."""
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(syntax).is_available)
    except Exception:  # noqa: BLE001 - an unknown syntax has no decoder
        return False


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) of the robust 0.5-99.5 percentile window, when no window is stored.

    Shared with the NIfTI reader (:mod:`tumorlib.studies.readers`), so a volume and a DICOM series
    are windowed the same way.
    """
    lo, hi = np.percentile(values, PERCENTILE_WINDOW)
    if hi <= lo:
        hi = lo + 1.0
    return float((lo + hi) / 2.0 + 0.5), float(hi - lo + 1.0)


def percentile_window_counts(levels: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """:func:`percentile_window` of the values ``levels`` (increasing) seen ``counts`` times.

    The same order statistics and linear interpolation as ``np.percentile``, without sorting:
    a series' integers make a short histogram.
    """
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def order_statistic(k: int) -> float:  # the k-th smallest value, 0-based
        return float(levels[int(np.searchsorted(cumulative, k, side="right"))])

    bounds = []
    for q in PERCENTILE_WINDOW:
        h = (n - 1) * q / 100.0
        k = int(np.floor(h))
        below = order_statistic(k)
        above = order_statistic(min(k + 1, n - 1))
        bounds.append(below + (h - k) * (above - below))
    lo, hi = bounds
    if hi <= lo:
        hi = lo + 1.0
    return float((lo + hi) / 2.0 + 0.5), float(hi - lo + 1.0)


def _affine_rescale(ds) -> tuple[float, float] | None:
    """(slope, intercept) of the modality rescale when it is affine and increasing, else None
    (a Modality LUT table, or a slope that is not positive)."""
    if "ModalityLUTSequence" in ds:
        return None
    try:
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError):
        return None
    return (slope, intercept) if slope > 0 else None


MAX_TABLE_LEVELS = 1 << 17  # integer ranges up to this many levels use the lookup table


def _small_integer_range(frames: np.ndarray) -> bool:
    """8- or 16-bit integers spanning a short range: the lookup-table path applies."""
    if frames.dtype.kind not in "iu" or frames.dtype.itemsize > 2 or frames.size == 0:
        return False
    return int(frames.max()) - int(frames.min()) < MAX_TABLE_LEVELS


def apply_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 linear VOI function mapped to [0, 255]."""
    width = max(float(width), 1.0)
    scaled = ((values - (centre - 0.5)) / (width - 1.0) + 0.5) if width > 1 else values - centre
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def _stored_window(ds) -> tuple[float, float] | None:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    from pydicom.multival import MultiValue

    # Multi-valued: several presets; the first is the default.
    centre = centre[0] if isinstance(centre, MultiValue | list | tuple) else centre
    width = width[0] if isinstance(width, MultiValue | list | tuple) else width
    try:
        centre, width = float(centre), float(width)
    except (TypeError, ValueError):
        return None
    return (centre, width) if width > 0 else None


def read_dicom(data: bytes, *, window: str = "auto") -> DicomImage:
    """Decode every frame of a DICOM file to uint8.

    ``window``: ``"auto"`` (stored window if present, else percentile), ``"stored"`` (error if
    none is stored) or ``"percentile"``. Colour (RGB/YBR) images are returned as RGB unwindowed.

    The header is checked against the input policy first (:func:`check_dataset_header`), so a
    file declaring 8000 x 8000 pixels is refused before pixel data is decoded
    (:class:`tumorlib.inputs.policy.InputRejected`). pydicom's warnings and log records are
    silenced, for every caller (page, batch CLI): on a malformed header they quote the offending
    value, which may be a patient's name or ID.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if window not in ("auto", "stored", "percentile"):
            raise ValueError(f"window must be 'auto', 'stored' or 'percentile', got {window!r}")
        check_dicom_size(len(data))
        # One parse: the pixel data is read as bytes, not decoded, until the header passes.
        ds = _dataset(data)
        check_dataset_header(ds)
        return _read_dicom(ds, window)


def _read_dicom(ds, window: str) -> DicomImage:
    from pydicom.pixels import apply_modality_lut, convert_color_space

    pixels = _pixels(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    syntax = ds.file_meta.get("TransferSyntaxUID")
    modality = str(ds.get("Modality", ""))
    transfer_syntax = getattr(syntax, "name", str(syntax or ""))
    info: dict[str, object] = {
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "frames": n_frames,
        "bits_stored": int(ds.get("BitsStored", 0)),
    }
    if samples == 3:
        colour = pixels if n_frames > 1 else pixels[None]
        if photometric.startswith("YBR") and not getattr(ds, "_pixel_array_converted", False):
            colour = np.stack([convert_color_space(f, photometric, "RGB") for f in colour])
        frames = [_to_uint8_colour(f) for f in colour]
        return DicomImage(frames, photometric, None, "none", modality, transfer_syntax, info)
    frames_raw = pixels if n_frames > 1 else pixels[None]
    stored = _stored_window(ds)
    if window == "stored" and stored is None:
        raise DicomError("window='stored' but the file has no WindowCenter/WindowWidth")
    use = stored if window != "percentile" else None  # the stored window, when it applies
    source = "stored" if use is not None else "percentile"
    rescale = _affine_rescale(ds)
    if rescale is not None and _small_integer_range(frames_raw):
        # Stored integers through an increasing rescale: the same window and pixels as the
        # float path below, from a histogram and a lookup table (several times faster).
        lo = int(frames_raw.min())
        index = np.subtract(frames_raw, lo, dtype=np.int32)
        slope, intercept = rescale
        levels = np.arange(lo, int(frames_raw.max()) + 1, dtype=np.float64) * slope + intercept
        if use is not None:
            centre, width = use
        else:
            counts = np.bincount(index.ravel(), minlength=levels.size)
            centre, width = percentile_window_counts(levels, counts)
        frames = list(apply_window(levels, centre, width)[index])
    else:
        values = apply_modality_lut(frames_raw, ds).astype(np.float64)
        centre, width = use if use is not None else percentile_window(values)
        frames = [apply_window(f, centre, width) for f in values]
    if photometric == "MONOCHROME1":  # high values are dark: invert for display
        frames = [255 - f for f in frames]
    window_used = (float(centre), float(width))
    return DicomImage(frames, photometric, window_used, source, modality, transfer_syntax, info)


def _to_uint8_colour(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    frame = frame.astype(np.float64)
    return np.clip(np.round(255.0 * frame / max(frame.max(), 1.0)), 0, 255).astype(np.uint8)


def dicom_to_png(data: bytes, frame: int | None = 0, *, window: str = "auto") -> list[bytes]:
    """PNG bytes for the model: one frame (``frame``) or every frame (``frame=None``)."""
    image = read_dicom(data, window=window)
    if frame is not None and not 0 <= frame < image.num_frames:
        raise DicomError(f"frame {frame} out of range; the file has {image.num_frames}")
    indices = range(image.num_frames) if frame is None else [frame]
    return [encode_png(image.rgb(i)) for i in indices]


def patient_info(data: bytes, *, reveal: bool = False) -> dict[str, str]:
    """Identifying header fields — only when the caller passes ``reveal=True``.

    The explicit flag makes revealing them a deliberate act in calling code (for example a
    "show patient details" toggle on the page); without it, values are masked.
    """
    ds = _dataset(data)
    return {
        key: (str(ds.get(key, "")) if reveal else "(hidden)")
        for key in IDENTIFYING_KEYWORDS
        if key in ds
    }
