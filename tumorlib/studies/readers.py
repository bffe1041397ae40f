"""Read a study: DICOM files (single- or multi-frame), zips of them, NIfTI volumes -> Series.

Why: a radiologist reads a series, not a slice. This module turns what a PACS export or a
research pipeline hands over into ordered :class:`tumorlib.studies.study.Series` whose slices are
the same 8-bit PNG bytes a single upload becomes (:func:`tumorlib.inputs.dicom.dicom_to_png`), so
every slice enters the model through the one serving path.

Hostile input costs little: every limit comes from :mod:`tumorlib.inputs.policy` and is checked
before the expensive step — zip members from the central directory before decompression, DICOM
sizes/frames from headers read with ``stop_before_pixels``, NIfTI shapes from the 348-byte header
before the data. Zips and gzip are read in memory; nothing is written to disk. A refused slice
keeps its place with ``problem`` set (the policy's words) so the rest of the series still runs; a
refused study raises :class:`StudyError`. Patient tags stay in ``Series.headers``, never in a
message, label or log.

The readers: :mod:`tumorlib.studies.dicom_series` (DICOM files, single- or multi-frame, ordered
along the slice normal) and :mod:`tumorlib.studies.nifti` (volumes); here, the entry points that
sort what was handed over, and zips. TensorFlow-free (pydicom, nibabel, numpy, PIL).
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from lzma import LZMAError
from pathlib import Path

from tumorlib.contracts.display import printable
from tumorlib.inputs import study_policy
from tumorlib.inputs.dicom import is_dicom
from tumorlib.inputs.policy import InputRejected
from tumorlib.inputs.study_policy import StudyError, whole_study
from tumorlib.studies.dicom_series import DECODE_CHUNK, decode_ahead, read_dicom_series
from tumorlib.studies.nifti import PLANES, Axis, choose_axis, is_nifti, read_nifti
from tumorlib.studies.study import Series

__all__ = [
    "PLANES",
    "StudyError",
    "choose_axis",
    "collect_files",
    "decode_ahead",
    "read_path",
    "read_series",
    "read_zip",
]


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
    predict the first slices while the next ones decode (``serving.clients.study.classify_series``).
    """
    expanded = _expand(files)
    dicoms: list[tuple[str, bytes]] = []
    volumes: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    for name, data in expanded:
        if is_nifti(name, data):
            volumes.append((name, data))
        elif is_dicom(data) or name.lower().endswith((".dcm", ".dicom")):
            dicoms.append((name, data))
        elif not _ignorable(name):
            skipped.append(name)
    notes: list[str] = []
    not_mr: list[str] = []  # modalities of the DICOM series left out
    series = read_dicom_series(dicoms, notes, not_mr) if dicoms else []
    used = sum(s.n_slices for s in series)
    whole_study(study_policy.check_study_slices, used, max_slices=study_policy.MAX_STUDY_SLICES)
    for name, data in volumes:  # each volume's slice count is checked from its header first
        budget = study_policy.MAX_STUDY_SLICES - used
        series.append(read_nifti(data, name=name, axis=axis, study_slices_left=budget))
        used += series[-1].n_slices
    if skipped:
        notes.append(f"{len(skipped)} file(s) that are neither DICOM nor NIfTI were skipped.")
    if not series and not_mr:
        found = ", ".join(sorted(set(not_mr)))
        raise StudyError("study_not_mr", study_policy.STUDY_NOT_MR.format(modalities=found))
    if not series:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise StudyError("study_empty", study_policy.STUDY_EMPTY.format(detail=detail))
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
    whole_study(study_policy.check_study_files, len(found))
    whole_study(study_policy.check_study_bytes, sum(p.stat().st_size for _, p in found))
    return [(name, p.read_bytes()) for name, p in found]


# -- zips ---------------------------------------------------------------------------------------


def _expand(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Zips opened in memory (one level; nested zips refused); total bytes capped."""
    out: list[tuple[str, bytes]] = []
    total = 0
    for name, data in files:
        if data.startswith((study_policy.ZIP_SIGNATURE, study_policy.EMPTY_ZIP_SIGNATURE)):
            members = read_zip(data, budget=study_policy.MAX_STUDY_BYTES - total)
        else:
            members = [(name, data)]
        for member in members:
            total += len(member[1])
            whole_study(study_policy.check_study_bytes, total)
            out.append(member)
    whole_study(study_policy.check_study_files, len(out))
    return out


def read_zip(data: bytes, *, budget: int = study_policy.MAX_STUDY_BYTES) -> list[tuple[str, bytes]]:
    """The members of an in-memory zip, every one checked from the central directory first:
    the directory's real length (whatever the end record claims), names (no absolute paths or
    ``..``), nested zips, compression methods, count, total size, compression ratio. A damaged
    member (checksum, deflate stream, sizes) is refused in words, never a traceback."""
    whole_study(study_policy.check_zip_entries, data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as err:
        raise StudyError(
            "zip_unreadable", study_policy.ZIP_UNREADABLE.format(problem=printable(err, 120))
        ) from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if not infos:
            raise StudyError("zip_empty", study_policy.ZIP_EMPTY)
        try:
            study_policy.check_study_files(len(infos))
            for info in infos:
                study_policy.check_zip_member(info.filename, info.compress_size, info.file_size)
                if info.flag_bits & 0x1:
                    raise InputRejected("zip_encrypted", study_policy.ZIP_ENCRYPTED)
                if info.compress_type not in ZIP_METHODS:
                    method = study_policy.ZIP_METHOD.format(method=info.compress_type)
                    raise InputRejected("zip_method", method)
            study_policy.check_study_bytes(sum(i.file_size for i in infos), max_bytes=budget)
        except InputRejected as err:
            raise StudyError(err.reason, err.message) from None
        return [
            (info.filename, _zip_member(archive, info))
            for info in infos
            if not _ignorable(info.filename)
        ]


ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member, never more than its declared size; damage in words (``ZIP_DAMAGED``)."""
    try:
        with archive.open(info) as member:
            # Read one byte past the declared size: a lying directory cannot inflate more.
            content = member.read(info.file_size + 1)
    except zipfile.BadZipFile as err:
        problem = "crc" if "CRC" in str(err) else "header"
        raise _damaged(problem) from None
    except zlib.error:
        raise _damaged("deflate") from None
    except (EOFError, OSError, ValueError, NotImplementedError, RuntimeError, LZMAError):
        raise _damaged("truncated") from None
    if len(content) != info.file_size:
        raise _damaged("sizes" if len(content) > info.file_size else "truncated")
    return content


def _damaged(problem: str) -> StudyError:
    words = study_policy.ZIP_DAMAGED[problem]
    return StudyError("zip_unreadable", study_policy.ZIP_UNREADABLE.format(problem=words))


def _ignorable(name: str) -> bool:
    """Files every export tool adds that are not part of any series (macOS metadata, hidden)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.startswith(".") or "__MACOSX/" in name or base.upper() == "DICOMDIR"
