"""Read a study: DICOM files (single- or multi-frame), zips of them, NIfTI volumes -> Series.

Why: a radiologist reads a series, not a slice. This module turns what a PACS export or a
research pipeline hands over into ordered :class:`tumorlib.study.Series` whose slices are the
same 8-bit PNG bytes a single upload becomes (:func:`tumorlib.dicom_io.dicom_to_png`), so every
slice enters the model through the one serving path.

Hostile input costs little: every limit comes from :mod:`tumorlib.input_policy` and is checked
before the expensive step — zip members from the central directory before decompression, DICOM
sizes/frames from headers read with ``stop_before_pixels``, NIfTI shapes from the 348-byte header
before the data. Zips and gzip are read in memory; nothing is written to disk. A refused slice
keeps its place with ``problem`` set (the policy's words) so the rest of the series still runs; a
refused study raises :class:`StudyError`. Patient tags stay in ``Series.headers``, never in a
message, label or log.

TensorFlow-free (pydicom, nibabel, numpy, PIL).
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib import input_policy as policy
from tumorlib.dicom_io import (
    DicomError,
    apply_window,
    check_dataset_header,
    encode_png,
    is_dicom,
    percentile_window,
    read_dicom,
    read_header,
)
from tumorlib.input_policy import InputRejected
from tumorlib.study import Series, SliceRef, StudySlice

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PLANES = ("sagittal", "coronal", "axial")  # the RAS+ axis each plane is sliced along: x, y, z
# A spacing this much above the typical one marks missing slices (1.5: one slice gone at most).
GAP_FACTOR = 1.5
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
DECODE_CHUNK = 16  # slices per decoding task
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image

Axis = str | int | None


class StudyError(InputRejected):
    """A study that cannot be read as a whole (too big, unsafe zip, nothing readable)."""


def _whole_study(check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a policy check whose refusal refuses the whole study (as :class:`StudyError`)."""
    try:
        check(*args, **kwargs)
    except StudyError:
        raise
    except InputRejected as err:
        raise StudyError(err.reason, err.message) from None


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


# -- entry points --------------------------------------------------------------------------------


def read_series(
    files: Sequence[tuple[str, bytes]], *, axis: Axis = None, decode: bool = True
) -> list[Series]:
    """Every series in ``files`` (``(name, bytes)``: DICOM, multi-frame DICOM, zip, NIfTI).

    DICOM files are grouped by SeriesInstanceUID and ordered along the slice normal; each NIfTI
    file is one series sliced along ``axis`` (``"axial"``, ``"sagittal"``, ``"coronal"``, an array
    axis, or ``None``: the acquisition plane, see :func:`choose_axis`). Raises
    :class:`StudyError` when the study as a whole is refused; per-slice refusals are
    ``StudySlice.problem``.

    ``decode=False`` returns once every header is read and checked: single-frame DICOM slices
    are decoded later (:func:`decode_ahead`, :meth:`StudySlice.resolve`), so a caller can
    predict the first slices while the next ones decode (``serving.study.classify_series``).
    """
    expanded = _expand(files)
    dicoms: list[tuple[str, bytes]] = []
    volumes: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    for name, data in expanded:
        if _is_nifti(name, data):
            volumes.append((name, data))
        elif is_dicom(data) or name.lower().endswith((".dcm", ".dicom")):
            dicoms.append((name, data))
        elif not _ignorable(name):
            skipped.append(name)
    notes: list[str] = []
    series = _dicom_series(dicoms, notes) if dicoms else []
    series += [read_nifti(data, name=name, axis=axis) for name, data in volumes]
    if skipped:
        notes.append(f"{len(skipped)} file(s) that are neither DICOM nor NIfTI were skipped.")
    if not series:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise StudyError("study_empty", policy.STUDY_EMPTY.format(detail=detail))
    for s in series:
        s.warnings.extend(notes)
        if decode:
            for _ in decode_ahead(s.slices, DECODE_CHUNK):
                pass
    return series


def read_path(path: str | os.PathLike, *, axis: Axis = None) -> list[Series]:
    """:func:`read_series` on a folder (recursively), a zip or a single file on disk.

    Sizes come from ``stat`` and are checked against the study cap before any file is read.
    """
    return read_series(collect_files([path]), axis=axis)


def collect_files(paths: Sequence[str | os.PathLike]) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` for files and folders (recursive), capped by ``stat`` before reading."""
    found: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += [
                (str(p.relative_to(path)), p)
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.is_symlink()
            ]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    _whole_study(policy.check_study_files, len(found))
    _whole_study(policy.check_study_bytes, sum(p.stat().st_size for _, p in found))
    return [(name, p.read_bytes()) for name, p in found]


# -- zips ---------------------------------------------------------------------------------------


def _expand(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Zips opened in memory (one level; nested zips refused); total bytes capped."""
    out: list[tuple[str, bytes]] = []
    total = 0
    for name, data in files:
        if data.startswith((policy.ZIP_SIGNATURE, policy.EMPTY_ZIP_SIGNATURE)):
            members = read_zip(data, budget=policy.MAX_STUDY_BYTES - total)
        else:
            members = [(name, data)]
        for member in members:
            total += len(member[1])
            _whole_study(policy.check_study_bytes, total)
            out.append(member)
    _whole_study(policy.check_study_files, len(out))
    return out


def read_zip(data: bytes, *, budget: int = policy.MAX_STUDY_BYTES) -> list[tuple[str, bytes]]:
    """The members of an in-memory zip, every one checked from the central directory first:
    names (no absolute paths or ``..``), nested zips, count, total size, compression ratio."""
    _whole_study(policy.check_zip_entries, data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise StudyError("zip_unreadable", policy.ZIP_UNREADABLE.format(problem=err)) from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if not infos:
            raise StudyError("zip_empty", policy.ZIP_EMPTY)
        try:
            policy.check_study_files(len(infos))
            for info in infos:
                policy.check_zip_member(info.filename, info.compress_size, info.file_size)
                if info.flag_bits & 0x1:
                    raise InputRejected("zip_encrypted", policy.ZIP_ENCRYPTED)
            policy.check_study_bytes(sum(i.file_size for i in infos), max_bytes=budget)
        except InputRejected as err:
            raise StudyError(err.reason, err.message) from None
        out = []
        for info in infos:
            if _ignorable(info.filename):
                continue
            with archive.open(info) as member:
                # Read one byte past the declared size: a lying directory cannot inflate more.
                content = member.read(info.file_size + 1)
            if len(content) > info.file_size:
                raise StudyError("zip_unreadable", policy.ZIP_UNREADABLE.format(problem="sizes"))
            out.append((info.filename, content))
        return out


def _ignorable(name: str) -> bool:
    """Files every export tool adds that are not part of any series (macOS metadata, hidden)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.startswith(".") or "__MACOSX/" in name or base.upper() == "DICOMDIR"


# -- DICOM --------------------------------------------------------------------------------------


def _dicom_series(files: list[tuple[str, bytes]], notes: list[str]) -> list[Series]:
    """Group by SeriesInstanceUID, order, check, then decode the accepted slices."""
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
        if str(header.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY or "Rows" not in header:
            non_image += 1  # SR, KO, presentation states: part of a study, not an image
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        groups.setdefault(uid, []).append(_instance(name, data, header))
    for reason, count in sorted(unreadable.items()):
        notes.append(f"{count} file(s) skipped: {reason}")
    if non_image:
        notes.append(f"{non_image} DICOM file(s) are not images (e.g. reports) and were skipped.")
    return [_build_series(uid, instances) for uid, instances in groups.items()]


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
    try:
        check_dataset_header(header)
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


def frame_geometry(header: Any, frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-frame positions and the orientation of an enhanced multi-frame header (functional
    groups: PlanePositionSequence per frame, PlaneOrientationSequence shared or per frame)."""

    def vector(item: Any, sequence: str, key: str, n: int) -> np.ndarray | None:
        try:
            values = np.asarray([float(v) for v in item[sequence][0][key].value], dtype=float)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return None
        return values if values.shape == (n,) and np.all(np.isfinite(values)) else None

    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    shared = header.get("SharedFunctionalGroupsSequence") or []
    orientation = None
    for item in [*shared[:1], *per_frame[:1]]:
        orientation = vector(item, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        if orientation is not None:
            break
    if len(per_frame) != frames:
        return None, orientation
    positions = [
        vector(item, "PlanePositionSequence", "ImagePositionPatient", 3) for item in per_frame
    ]
    if any(p is None for p in positions):
        return None, orientation
    return np.stack(positions), orientation  # type: ignore[arg-type]


def order_instances(instances: list[_Instance]) -> tuple[list[_Instance], list[float] | None, str]:
    """Order along the slice normal when every file has one position and one orientation;
    else by InstanceNumber; else by name. Returns the order, positions (mm) and how."""
    orientations = [i.orientation for i in instances if i.orientation is not None]
    single = all(i.frames == 1 for i in instances)
    if (
        single
        and len(orientations) == len(instances)
        and all(i.position is not None for i in instances)
        and all(np.allclose(o, orientations[0], atol=1e-3) for o in orientations)
    ):
        normal = np.cross(orientations[0][:3], orientations[0][3:])
        keyed = sorted(
            ((float(np.dot(i.position, normal)), i.instance_number or 0, i.name), i)  # type: ignore[arg-type]
            for i in instances
        )
        return [i for _, i in keyed], [k[0] for k, _ in keyed], "position"
    if all(i.instance_number is not None for i in instances):
        return sorted(instances, key=lambda i: (i.instance_number, i.name)), None, "instance"
    return sorted(instances, key=lambda i: i.name), None, "name"


def _build_series(uid: str, instances: list[_Instance]) -> Series:
    _whole_study(policy.check_series_slices, sum(i.frames for i in instances))
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


def gap_warnings(positions: Sequence[float]) -> list[str]:
    """Missing slices (a step well above the typical spacing) and duplicated positions."""
    if len(positions) < 3:
        return []
    steps = np.diff(np.asarray(positions, dtype=float))
    spacing = float(np.median(steps))
    out = []
    if spacing <= 1e-6:
        return ["Most slices share one position: this does not look like one volume."]
    duplicates = int(np.sum(steps <= 1e-3 * spacing))
    if duplicates:
        out.append(f"{duplicates} slice(s) repeat the position of the slice before them.")
    for k in np.flatnonzero(steps > GAP_FACTOR * spacing):
        missing = round(float(steps[k]) / spacing) - 1
        out.append(
            f"About {max(missing, 1)} slice(s) appear to be missing between slice {k + 1} and "
            f"slice {k + 2} (a {steps[k]:.1f} mm step; the series spacing is {spacing:.1f} mm)."
        )
    return out


def _refuse_odd_sizes(ordered: list[_Instance], warnings: list[str]) -> None:
    """Slices whose size differs from the series' most common size are refused, with words."""
    sizes = Counter(i.size for i in ordered if i.problem is None)
    if len(sizes) < 2:
        return
    (rows, cols), _ = sizes.most_common(1)[0]
    odd = 0
    for inst in ordered:
        if inst.problem is None and inst.size != (rows, cols):
            inst.problem = policy.SLICE_SIZE_MISMATCH.format(
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


# -- NIfTI --------------------------------------------------------------------------------------


def _is_nifti(name: str, data: bytes) -> bool:
    lower = name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return True
    return len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00")


def _gunzip(data: bytes, limit: int = policy.MAX_STUDY_BYTES) -> bytes:
    """Decompress in memory, never more than ``limit`` bytes (a gzip bomb stops there)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            raw = stream.read(limit + 1)
    except (OSError, EOFError) as err:
        raise StudyError(
            "volume_unusable", policy.VOLUME_UNUSABLE.format(problem=f"bad gzip data ({err})")
        ) from None
    if len(raw) > limit:
        raise StudyError(
            "study_too_large", policy.VOLUME_GZIP_TOO_LARGE.format(limit=policy.megabytes(limit))
        )
    return raw


def read_nifti(data: bytes, *, name: str = "", axis: Axis = None) -> Series:
    """One NIfTI-1 volume as a series of windowed, radiologically displayed slices."""
    import nibabel as nib

    raw = _gunzip(data) if data.startswith(policy.GZIP_SIGNATURE) else data

    def unusable(problem: str) -> StudyError:
        return StudyError("volume_unusable", policy.VOLUME_UNUSABLE.format(problem=problem))

    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:352]))
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as err:  # noqa: BLE001 - any header failure is the same refusal
        raise unusable(f"not a NIfTI-1 header ({type(err).__name__})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise unusable(f"{len(shape)}-D data; one 3-D volume is needed")
    _whole_study(policy.check_volume, shape)
    try:
        image = nib.Nifti1Image.from_bytes(raw)
        canonical = nib.as_closest_canonical(image)
        volume = np.asarray(canonical.get_fdata(dtype=np.float32)).reshape(canonical.shape[:3])
    except Exception as err:  # noqa: BLE001 - truncated data, bad dtype: one refusal
        raise unusable(f"the data cannot be read ({type(err).__name__})") from None
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    plane = choose_axis(image, axis)
    along = PLANES.index(plane)
    n = volume.shape[along]
    _whole_study(policy.check_series_slices, n)
    finite = volume[np.isfinite(volume)]
    centre, width = percentile_window(finite if finite.size else np.zeros(1))
    origin = float(canonical.affine[along, 3])
    # Window once, then walk views along the axis (np.take would copy the volume per slice).
    windowed = np.moveaxis(apply_window(np.nan_to_num(volume), centre, width), along, 0)
    slices = []
    for k in range(n):
        pixels = radiological(windowed[k])
        ref = SliceRef(
            index=k,
            position=origin + k * zooms[along],
            label=f"slice {k + 1} / {n} ({plane})",
        )
        slices.append(StudySlice(ref, _png(pixels)))
    return Series(
        kind="nifti",
        slices=slices,
        modality="MR",
        description=f"{name} ({plane})" if name else plane,
    )


def choose_axis(image: Any, axis: Axis = None) -> str:
    """The plane to slice in: asked for by name or array axis, else the acquisition plane.

    The acquisition plane of a 2-D acquisition is the one across its thick slices: the axis
    with the largest voxel spacing (clearly larger: 1.2x the others), or else the axis with far
    fewer voxels. An isotropic 3-D volume is sliced axially, as brain MRI is usually read.
    """
    import nibabel as nib

    codes = nib.aff2axcodes(image.affine)  # per array axis: L/R, P/A or I/S
    plane_of = {"L": "sagittal", "R": "sagittal", "P": "coronal", "A": "coronal"}
    planes = [plane_of.get(str(c), "axial") for c in codes]
    if isinstance(axis, int) and not isinstance(axis, bool):
        if not 0 <= axis < 3:
            raise ValueError(f"axis must be 0, 1 or 2 (an array axis), got {axis}")
        return planes[axis]
    if isinstance(axis, str):
        if axis not in PLANES:
            raise ValueError(f"axis must be one of {', '.join(PLANES)} or 0-2, got {axis!r}")
        return axis
    if axis is not None:
        raise ValueError(f"axis must be a plane name or 0-2, got {axis!r}")
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    counts = [int(n) for n in image.shape[:3]]
    thickest = int(np.argmax(zooms))
    others = [z for i, z in enumerate(zooms) if i != thickest]
    if zooms[thickest] > 1.2 * max(others):
        return planes[thickest]
    fewest = int(np.argmin(counts))
    if counts[fewest] * 2 < min(c for i, c in enumerate(counts) if i != fewest):
        return planes[fewest]
    return "axial"


def radiological(plane_2d: np.ndarray) -> np.ndarray:
    """A canonical (RAS+) plane as a radiologist views it.

    Rows: anterior / superior at the top; columns: the patient's right (or anterior, for a
    sagittal slice) on the viewer's left.
    """
    return plane_2d.T[::-1, ::-1]


def _png(pixels: np.ndarray) -> bytes:
    return encode_png(pixels)  # as dicom_to_png encodes
