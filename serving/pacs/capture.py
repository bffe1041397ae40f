"""Grad-CAM overlays of the key slices as DICOM Secondary Captures, in the source study.

Why Secondary Capture: every PACS and viewer stores and shows it (a parametric map or a
presentation state would be truer to the data, but few viewers render either for a heatmap). Each
capture is the slice as the model saw it with the heatmap blended in
(:func:`tumorlib.model.gradcam_overlay.overlay_image`), scaled up for reading, with a caption burnt
into the pixels below the image — so ``BurnedInAnnotation`` is YES — that says what it is and that
it is not a diagnosis. It references its source instance (and frame) in SourceImageSequence and
ReferencedImageSequence. TensorFlow-free: it receives the overlays already drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset

import tumorlib
from serving.pacs.sr import (
    MANUFACTURER,
    UTF8,
    DicomResultsError,
    evidence_copies,
    require_dicom,
    slice_ref,
)
from tumorlib.contracts.classes import DISPLAY_NAMES
from tumorlib.studies.study import SliceRef, StudyResult

SC_SERIES_NUMBER = 9002
SC_SERIES_DESCRIPTION = "tumorlib Grad-CAM (decision support)"
CAPTION = "Grad-CAM {label} — decision support, not a diagnosis"
MIN_WIDTH = 512  # overlays are at the model's input size (224-384 px): scaled up to be read
BANNER_HEIGHT = 40
CAPTION_FONT = "DejaVuSans.ttf"
CAPTION_SIZE = 16


def caption(class_name: str) -> str:
    """The words burnt into a capture (and kept in ImageComments)."""
    return CAPTION.format(label=DISPLAY_NAMES.get(class_name, class_name))


def with_caption(overlay: np.ndarray, text: str) -> np.ndarray:
    """``overlay`` (uint8 RGB) scaled to at least :data:`MIN_WIDTH` with ``text`` below it."""
    image = Image.fromarray(np.asarray(overlay, dtype=np.uint8), mode="RGB")
    scale = max(1, -(-MIN_WIDTH // image.width))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + BANNER_HEIGHT), (0, 0, 0))
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text(
        (8, image.height + 10), text, fill=(255, 255, 255), font=caption_font()
    )
    return np.asarray(canvas, dtype=np.uint8)


def caption_font(size: int = CAPTION_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships with every install: it has the em dash and every
    Latin letter of the caption. Pillow's default font draws the dash as an empty box."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / CAPTION_FONT
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:  # a stripped matplotlib: the default font, dash and all
        return ImageFont.load_default(size=size)


def patient_orientation(header: Dataset, frame: int | None = None) -> tuple[str, str] | None:
    """Row and column directions as patient-orientation letters (LPS), from the source header;
    ``None`` when it does not say. The overlay keeps the slice's orientation (resizing and
    padding neither rotate nor flip)."""
    cosines = header.get("ImageOrientationPatient")
    if cosines is None:  # an enhanced multi-frame header keeps it in its functional groups
        groups = list(header.get("SharedFunctionalGroupsSequence", []))
        per_frame = header.get("PerFrameFunctionalGroupsSequence", [])
        if frame is not None and 0 < frame <= len(per_frame):
            groups.append(per_frame[frame - 1])
        for group in groups:
            for plane in group.get("PlaneOrientationSequence", []):
                cosines = plane.get("ImageOrientationPatient") or cosines
    if cosines is not None and len(cosines) == 6:
        values = [float(v) for v in cosines]
        return _letter(values[:3]), _letter(values[3:])
    stored = header.get("PatientOrientation")
    if stored and len(stored) == 2:
        return str(stored[0])[:1], str(stored[1])[:1]
    return None


def _letter(direction: Sequence[float]) -> str:
    axis = int(np.argmax(np.abs(direction)))
    positive = direction[axis] > 0
    return ("L", "P", "H")[axis] if positive else ("R", "A", "F")[axis]


def _source_header(headers: Sequence[Dataset], ref: SliceRef) -> Dataset:
    for header in headers:
        if str(header.SOPInstanceUID) == ref.sop_instance_uid:
            return header
    raise DicomResultsError(f"slice {ref.index} has no SOP instance to reference")


def _reference(ref: SliceRef) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if ref.frame is not None:
        item.ReferencedFrameNumber = ref.frame
    return item


def make_secondary_captures(
    result: StudyResult,
    overlays: Mapping[int, np.ndarray],
    *,
    series_number: int = SC_SERIES_NUMBER,
) -> list[Dataset]:
    """One :class:`highdicom.sc.SCImage` per key slice that has an overlay (uint8 RGB [H, W, 3]),
    keyed by ``SliceRef.index``; all in one new series of the source study."""
    headers = require_dicom(result)
    series_uid = hd.UID()
    class_name = _explained_class(result)
    captures: list[Dataset] = []
    for number, index in enumerate((i for i in result.verdict.key_slices if i in overlays), 1):
        ref = slice_ref(result, index)
        if not ref.sop_instance_uid or not ref.sop_class_uid:
            raise DicomResultsError(f"slice {ref.index} has no SOP instance to reference")
        source = evidence_copies([_source_header(headers, ref)])[0]
        orientation = patient_orientation(source, ref.frame)
        words = caption(class_name.get(index, result.verdict.verdict))
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=with_caption(overlays[index], words),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            patient_orientation=orientation or ("L", "P"),  # emptied below when unknown
            series_description=SC_SERIES_DESCRIPTION,
            software_versions=tumorlib.__version__,
            specific_character_set=UTF8,
        )
        if orientation is None:  # Type 2: empty says "not known" rather than guessing
            capture.PatientOrientation = ""
        # General Series Laterality (Type 2C): the source's, else present and empty (a brain
        # is not a paired structure); dciodvfy reports its absence as an error.
        capture.Laterality = str(source.get("Laterality", "") or "")
        capture.BurnedInAnnotation = "YES"
        capture.ImageComments = words
        capture.DerivationDescription = f"{words} (slice {ref.label or ref.index + 1})"
        capture.SourceImageSequence = [_reference(ref)]
        capture.ReferencedImageSequence = [_reference(ref)]
        captures.append(capture)
    return captures


def _explained_class(result: StudyResult) -> dict[int, str]:
    """The class each key slice's Grad-CAM explains: the slice's own predicted class."""
    return {
        outcome.ref.index: outcome.class_name
        for outcome in result.slices
        if outcome.class_name is not None
    }
