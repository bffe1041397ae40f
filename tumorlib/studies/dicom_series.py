"""DICOM files of a study -> ordered series: headers first, pixels later, every limit before work.

Instances are grouped by SeriesInstanceUID, checked from headers read with ``stop_before_pixels``
(:mod:`tumorlib.inputs.dicom`), ordered along the slice normal (gaps become warnings), and
decoded to the same 8-bit PNG bytes a single upload becomes — on a small thread pool, chunk by
chunk (:func:`decode_ahead`), so a caller predicts one chunk while the next decodes. A refused
slice keeps its place with ``problem`` set; a refused series raises
:class:`~tumorlib.inputs.study_policy.StudyError`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tumorlib.contracts.display import printable
from tumorlib.inputs import policy, study_policy
from tumorlib.inputs.dicom import (
    DicomError,
    check_dataset_header,
    encode_png,
    read_dicom,
    read_header,
)
from tumorlib.inputs.policy import InputRejected
from tumorlib.inputs.study_policy import whole_study
from tumorlib.studies.geometry import frame_geometry, gap_warnings, order_instances
from tumorlib.studies.study import Series, SliceRef, StudySlice

DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
DECODE_CHUNK = 16  # slices per decoding task
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image


@dataclass
class _Instance:
    """One DICOM file's header and where its slices will sit."""

    name: str
    data: bytes = field(repr=False)
    header: Any = field(repr=False)
    frames: int
    size: tuple[int, int]
    instance_number: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    problem: str | None = None
    # Enhanced (multi-frame) DICOM: each frame's ImagePositionPatient, ``[frames, 3]``.
    frame_positions: np.ndarray | None = None


# -- DICOM --------------------------------------------------------------------------------------


def read_dicom_series(
    files: list[tuple[str, bytes]], notes: list[str], not_mr: list[str] | None = None
) -> list[Series]:
    """Group by SeriesInstanceUID, order, check, then decode the accepted slices.

    Series with no MR instance are left out with a note (their modalities go to ``not_mr``); in
    a mixed series, each instance of another modality is a refused slice. A file that should be
    an image but lacks its image attributes is reported as truncated, not as a report."""
    groups: dict[str, list[_Instance]] = {}
    unreadable: Counter[str] = Counter()  # reason in words -> files
    non_image = 0
    for name, data in files:
        try:
            header = read_header(data)
        except InputRejected as err:
            unreadable[err.message] += 1
            continue
        except DicomError as err:
            unreadable[policy.DICOM_UNUSABLE.format(problem=err)] += 1
            continue
        if "Rows" not in header:
            if _is_image_class(header):
                unreadable[policy.DICOM_UNUSABLE.format(problem=TRUNCATED)] += 1
            else:
                non_image += 1  # SR, KO, presentation states, DICOMDIR: not an image
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append(_instance(name, data, header))
    for reason, count in sorted(unreadable.items()):
        notes.append(f"{count} file(s) skipped: {reason}")
    if non_image:
        notes.append(f"{non_image} DICOM file(s) are not images (e.g. reports) and were skipped.")
    kept = {uid: group for uid, group in groups.items() if _has_mr(group)}
    skipped = Counter(
        _modality(group[0].header) for uid, group in groups.items() if uid not in kept
    )
    for modality, count in sorted(skipped.items()):
        were = "was" if count == 1 else "were"
        notes.append(study_policy.SERIES_NOT_MR.format(count=count, modality=modality, were=were))
    if not_mr is not None:
        not_mr.extend(skipped)
    return [_build_series(uid, instances) for uid, instances in kept.items()]


TRUNCATED = "the file is truncated or lacks its image attributes (Rows, Columns)"


def _modality(header: Any) -> str:
    return printable(str(header.get("Modality", "") or "").strip().upper(), 16)


def _has_mr(group: list[_Instance]) -> bool:
    """A series to classify: some instance is MR (or none says what it is)."""
    modalities = {_modality(i.header) for i in group}
    return bool(modalities & set(study_policy.IMAGE_MODALITIES)) or modalities == {""}


def _is_image_class(header: Any) -> bool:
    """True when the SOP class (or the file meta's) is an image storage class, or is unknown:
    such a file without Rows was cut short, it is not a report."""
    if str(header.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        return False
    meta = getattr(header, "file_meta", None)
    uid = header.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    if not uid:
        return True
    name = str(getattr(uid, "name", "") or "")
    return "Image" in name or name == str(uid)  # an unnamed (private) class: assume an image


def _instance(name: str, data: bytes, header: Any) -> _Instance:
    def floats(key: str, n: int) -> np.ndarray | None:
        try:
            values = np.asarray([float(v) for v in header.get(key) or []], dtype=float)
        except (TypeError, ValueError):
            return None
        return values if values.shape == (n,) and np.all(np.isfinite(values)) else None

    try:
        number = int(header.get("InstanceNumber"))
    except (TypeError, ValueError):
        number = None
    try:
        frames = max(int(header.get("NumberOfFrames", 1) or 1), 1)
        size = (int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0))
    except (TypeError, ValueError):
        frames, size = 1, (0, 0)
    problem = None
    modality = _modality(header)
    try:
        check_dataset_header(header)
        if modality and modality not in study_policy.IMAGE_MODALITIES:
            raise InputRejected("slice_not_mr", study_policy.SLICE_NOT_MR.format(modality=modality))
    except InputRejected as err:
        problem = err.message
        frames = 1  # a refused file is one refused slice, whatever its header claims
    except DicomError as err:
        problem = policy.DICOM_UNUSABLE.format(problem=err)
        frames = 1
    orientation = floats("ImageOrientationPatient", 6)
    frame_positions = None
    if frames > 1 and problem is None:
        frame_positions, frame_orientation = frame_geometry(header, frames)
        orientation = orientation if orientation is not None else frame_orientation
    return _Instance(
        name,
        data,
        header,
        frames,
        size,
        number,
        floats("ImagePositionPatient", 3),
        orientation,
        problem,
        frame_positions,
    )


def _build_series(uid: str, instances: list[_Instance]) -> Series:
    whole_study(study_policy.check_series_slices, sum(i.frames for i in instances))
    if len(instances) == 1 and instances[0].frames > 1:
        return _multiframe_series(uid, instances[0])
    ordered, positions, how = order_instances(instances)
    warnings: list[str] = []
    if how != "position":
        warnings.append(
            "Slice positions are missing or inconsistent; slices are ordered by "
            + ("InstanceNumber." if how == "instance" else "file name.")
        )
    if positions is not None:
        warnings += gap_warnings(positions)
    _refuse_odd_sizes(ordered, warnings)
    n_total = sum(i.frames for i in ordered)
    slices: list[StudySlice] = []
    for k, inst in enumerate(ordered):
        start, position = len(slices), _at(positions, k)
        if inst.frames == 1 and inst.problem is None:
            slices.append(_pending_slice(inst, start=start, total=n_total, position=position))
        else:  # refused (no pixels are decoded) or several frames in one file of a series
            slices += _decode(inst, start=start, total=n_total, position=position)
    return _series(uid, ordered, slices, warnings)


def _pending_slice(
    inst: _Instance, *, start: int, total: int, position: float | None
) -> StudySlice:
    """A single-frame slice whose pixels are decoded when :meth:`StudySlice.resolve` asks."""

    def decode() -> tuple[bytes, str | None]:
        (piece,) = _decode(inst, start=start, total=total, position=position)
        return piece.image, piece.problem

    return StudySlice(_slice_ref(inst, start, total, None, position), pending=decode)


def _slice_ref(
    inst: _Instance, index: int, total: int, frame: int | None, position: float | None
) -> SliceRef:
    """A slice's place in the volume and, in a multi-frame file, its 0-based ``frame``."""
    label = f"slice {index + 1} / {total}" + (f" (frame {frame + 1})" if frame is not None else "")
    return SliceRef(
        index,
        _str_or_none(inst.header.get("SOPInstanceUID")),
        _str_or_none(inst.header.get("SOPClassUID")),
        frame + 1 if frame is not None else None,
        position,
        label,
    )


def _resolve_all(group: list[StudySlice]) -> list[StudySlice]:
    return [piece.resolve() for piece in group]


def decode_ahead(slices: Sequence[StudySlice], chunk: int) -> Iterator[list[StudySlice]]:
    """``slices`` in consecutive chunks of ``chunk``, each decoded (:meth:`StudySlice.resolve`).

    Later chunks decode on a thread pool while the caller works on the current one — pydicom,
    NumPy and zlib run while the model predicts — and in order, so the first chunk is ready first.
    """
    groups = [list(slices[i : i + chunk]) for i in range(0, len(slices), max(1, chunk))]
    if not any(s.pending is not None for s in slices):
        yield from groups
        return
    pool = ThreadPoolExecutor(max_workers=DECODE_THREADS)
    try:
        futures = [pool.submit(_resolve_all, group) for group in groups]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _multiframe_series(uid: str, inst: _Instance) -> Series:
    """One multi-frame instance: frames ordered along the normal when each frame has a position
    (enhanced DICOM), else kept in stored order."""
    warnings: list[str] = []
    order: list[int] | None = None
    positions: list[float] | None = None
    if inst.frame_positions is not None and inst.orientation is not None:
        normal = np.cross(inst.orientation[:3], inst.orientation[3:])
        along = inst.frame_positions @ normal
        order = [int(i) for i in np.argsort(along, kind="stable")]
        positions = [float(along[i]) for i in order]
        warnings += gap_warnings(positions)
    elif inst.problem is None:
        warnings.append("Frame positions are not recorded; frames are kept in stored order.")
    slices = _decode(
        inst, start=0, total=inst.frames, position=None, order=order, positions=positions
    )
    return _series(uid, [inst], slices, warnings)


def _series(
    uid: str, ordered: list[_Instance], slices: list[StudySlice], warnings: list[str]
) -> Series:
    first = ordered[0].header
    return Series(
        kind="dicom",
        slices=slices,
        study_instance_uid=_str_or_none(first.get("StudyInstanceUID")),
        series_instance_uid=uid or None,
        modality=str(first.get("Modality", "") or ""),
        description=str(first.get("SeriesDescription", "") or ""),
        headers=[i.header for i in ordered],
        warnings=warnings,
    )


def _at(positions: list[float] | None, k: int) -> float | None:
    return None if positions is None else positions[k]


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _refuse_odd_sizes(ordered: list[_Instance], warnings: list[str]) -> None:
    """Slices whose size differs from the series' most common size are refused, with words."""
    sizes = Counter(i.size for i in ordered if i.problem is None)
    if len(sizes) < 2:
        return
    (rows, cols), _ = sizes.most_common(1)[0]
    odd = 0
    for inst in ordered:
        if inst.problem is None and inst.size != (rows, cols):
            inst.problem = study_policy.SLICE_SIZE_MISMATCH.format(
                width=inst.size[1], height=inst.size[0], series_width=cols, series_height=rows
            )
            odd += 1
    warnings.append(
        f"{odd} slice(s) differ in size from the rest of the series ({cols} x {rows}) and were "
        "left out."
    )


def _decode(
    inst: _Instance,
    *,
    start: int,
    total: int,
    position: float | None,
    order: Sequence[int] | None = None,
    positions: Sequence[float] | None = None,
) -> list[StudySlice]:
    """The instance's frames as PNG slices (the one DICOM decoding), or refused slices.

    ``order``: the frame shown at each place (multi-frame sorted by position), with
    ``positions`` its position along the normal."""
    multi = inst.frames > 1
    frames = list(order) if order is not None else list(range(inst.frames))

    def ref(j: int) -> SliceRef:
        where = positions[j] if positions is not None else position
        return _slice_ref(inst, start + j, total, frames[j] if multi else None, where)

    problem = inst.problem
    if problem is None:
        try:
            # Grey frames stay one channel (the preprocessing makes them RGB): a third of
            # the bytes to compress, the same model input as dicom_to_png's RGB.
            decoded = read_dicom(inst.data)
            pngs = [encode_png(f) for f in decoded.frames]
            return [StudySlice(ref(j), pngs[frames[j]]) for j in range(len(pngs))]
        except InputRejected as err:
            problem = err.message
        except DicomError as err:
            problem = policy.DICOM_UNUSABLE.format(problem=err)
    return [StudySlice(ref(j), problem=problem) for j in range(inst.frames)]
