"""The input policy for studies: how many slices, files and bytes one series, zip or volume may be.

The other half of :mod:`tumorlib.inputs.policy` (single images and DICOM headers), with the same
rule: every limit is checked from what a container declares (a zip's central directory, a NIfTI
header) before the bytes are produced, and refusals are :class:`~tumorlib.inputs.policy.
InputRejected` with words a user can act on.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from tumorlib.inputs.policy import InputRejected, megabytes

# A brain MRI series has 20-200 slices (a thin 3-D acquisition up to ~400); 512 leaves room and
# still bounds the work one upload can ask for. The byte caps bound memory: a study is read in
# memory (nothing is written to disk), so every cap is checked before the bytes are produced.
MAX_SERIES_SLICES = 512
MAX_STUDY_SLICES = 1024  # every series of one study together: a few series, not a whole archive
MAX_STUDY_BYTES = 512 * 1024 * 1024  # all files of one study together, after unzipping
MAX_STUDY_FILES = 4096  # files in one folder or zip (a series is one file per slice)
# A DICOM slice deflates 2-10x (more with a black background); 200x is only reached by a bomb.
MAX_ZIP_RATIO = 200
# A NIfTI volume: a 1 mm brain is 256^3 = 16.8 M voxels; twice that leaves room (512 x 512 x 128)
# and bounds the decoded volume to ~130 MB as float32, so one file cannot cost gigabytes.
MAX_VOLUME_VOXELS = 2 * 256 * 256 * 256
# Modalities a brain MRI study's image series may have: the model knows MR only.
IMAGE_MODALITIES = ("MR",)
ZIP_SIGNATURE = b"PK\x03\x04"
EMPTY_ZIP_SIGNATURE = b"PK\x05\x06"
GZIP_SIGNATURE = b"\x1f\x8b"

STUDY_TOO_LARGE = (
    "The study holds {size} of files; the limit is {limit}. Upload one series at a time."
)
STUDY_TOO_MANY_FILES = (
    "The study holds {count} files; the limit is {limit}. Upload one series at a time."
)
SERIES_TOO_MANY_SLICES = (
    "The series has {count} slices; the limit is {limit}. Upload a series of at most {limit} "
    "slices (a brain MRI series usually has 20-200)."
)
STUDY_TOO_MANY_SLICES = (
    "The study's series hold {count} slices together; the limit is {limit}. Upload fewer series "
    "at a time."
)
STUDY_EMPTY = "No DICOM images or NIfTI volumes were found{detail}."
SERIES_NOT_MR = (
    "{count} {modality} series {were} skipped: the model reads brain MRI (modality MR) only."
)
SLICE_NOT_MR = "This slice is {modality}, not MR: the model reads brain MRI only."
STUDY_NOT_MR = (
    "No MR series to classify (modalities: {modalities}); the model reads brain MRI only."
)
ZIP_EMPTY = "The zip file is empty."
ZIP_LISTS_TOO_MANY = (
    "The zip file's directory lists more than {limit} files (its end record claims {declared}); "
    "the limit is {limit}. Upload one series at a time."
)
ZIP_UNREADABLE = "The zip file is malformed ({problem}); create it again."
ZIP_UNSAFE_NAME = (
    "The zip file holds a member whose name points outside the archive ({name!r}: an absolute "
    "path or '..'); such archives are refused."
)
ZIP_NESTED = "The zip file holds another zip ({name!r}); zip the series files directly."
ZIP_ENCRYPTED = "The zip file is encrypted; upload it without a password."
ZIP_METHOD = (
    "A member of the zip file is compressed with method {method}, which this reader does not "
    "support (stored, deflate, bzip2 and LZMA are); create the zip again with deflate."
)
ZIP_DAMAGED = {
    "crc": "a member's checksum does not match its content: the file is damaged",
    "deflate": "a member's compressed data is corrupt",
    "truncated": "a member ends before its declared size: the file is truncated",
    "sizes": "a member is longer than its declared size",
    "header": "a member's local header is damaged",
}
ZIP_RATIO = (
    "A member of the zip file expands {ratio:.0f}-fold (limit {limit}x); "
    "this is a decompression bomb, not a series."
)
VOLUME_UNUSABLE = "This NIfTI file cannot be used: {problem}."
VOLUME_GZIP_TOO_LARGE = (
    "The compressed NIfTI file expands to more than {limit}, the limit for a study; "
    "it is either not one brain volume or a decompression bomb."
)
VOLUME_TOO_LARGE = (
    "The NIfTI volume is {shape} ({voxels} voxels); the limit is {limit} voxels. "
    "Upload a single brain volume."
)
VOLUME_4D = (
    "The NIfTI file holds {volumes} volumes ({shape}: a time series, e.g. fMRI or diffusion); "
    "one 3-D volume is needed. Extract one first (e.g. fslroi in.nii.gz out.nii.gz 0 1)."
)
SLICE_SIZE_MISMATCH = (
    "This slice is {width} x {height} pixels but the rest of the series is {series_width} x "
    "{series_height}; it is left out so the series stays one volume."
)


def check_study_bytes(n_bytes: int, *, max_bytes: int = MAX_STUDY_BYTES) -> None:
    """Refuse a study whose files (after unzipping) exceed the study byte cap."""
    if n_bytes > max_bytes:
        raise InputRejected(
            "study_too_large",
            STUDY_TOO_LARGE.format(size=megabytes(n_bytes), limit=megabytes(max_bytes)),
        )


def check_study_files(count: int, *, max_files: int = MAX_STUDY_FILES) -> None:
    if count > max_files:
        raise InputRejected(
            "study_too_many_files", STUDY_TOO_MANY_FILES.format(count=count, limit=max_files)
        )


def check_study_slices(count: int, *, max_slices: int = MAX_STUDY_SLICES) -> None:
    """Refuse a study whose series together hold more slices than one study may."""
    if count > max_slices:
        raise InputRejected(
            "study_too_many_slices", STUDY_TOO_MANY_SLICES.format(count=count, limit=max_slices)
        )


def check_series_slices(count: int, *, max_slices: int = MAX_SERIES_SLICES) -> None:
    if count > max_slices:
        raise InputRejected(
            "series_too_many_slices", SERIES_TOO_MANY_SLICES.format(count=count, limit=max_slices)
        )


def check_zip_member_name(name: str) -> None:
    """Refuse absolute names, drive letters and ``..`` parts (zip slip), even if never written."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise InputRejected("zip_unsafe_name", ZIP_UNSAFE_NAME.format(name=name[:80]))


def check_zip_member(
    name: str, compressed: int, uncompressed: int, *, max_ratio: int = MAX_ZIP_RATIO
) -> None:
    """One member from the zip's central directory, before it is decompressed."""
    check_zip_member_name(name)
    if name.lower().endswith(".zip"):
        raise InputRejected("zip_nested", ZIP_NESTED.format(name=name[:80]))
    if uncompressed > max(compressed, 1) * max_ratio and uncompressed > 1024 * 1024:
        raise InputRejected(
            "zip_ratio", ZIP_RATIO.format(ratio=uncompressed / max(compressed, 1), limit=max_ratio)
        )


def check_volume(shape: tuple[int, ...], *, max_voxels: int = MAX_VOLUME_VOXELS) -> None:
    """A NIfTI volume's declared shape, from its header, before its data is read."""
    voxels = 1
    for n in shape:
        voxels *= max(int(n), 1)
    if voxels > max_voxels:
        raise InputRejected(
            "volume_too_large",
            VOLUME_TOO_LARGE.format(
                shape=" x ".join(str(n) for n in shape), voxels=voxels, limit=max_voxels
            ),
        )


def zip_declared_entries(data: bytes) -> int | None:
    """The member count a zip's end-of-central-directory record declares (zip64 too), read by
    hand: ``zipfile`` builds an object per member before anyone can count them, so a zip of a
    million empty members would cost memory before the count limit applied. None: no record."""
    eocd = data.rfind(EMPTY_ZIP_SIGNATURE, max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    count = int(struct.unpack("<H", data[eocd + 10 : eocd + 12])[0])
    locator = eocd - 20
    if count == 0xFFFF and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        offset = int(struct.unpack("<Q", data[locator + 8 : locator + 16])[0])
        if data[offset : offset + 4] == b"PK\x06\x06" and offset + 40 <= len(data):
            count = int(struct.unpack("<Q", data[offset + 32 : offset + 40])[0])
    return count


def zip_directory_entries(data: bytes, limit: int) -> int | None:
    """The members the central directory really lists, counted up to ``limit + 1``.

    Walks the same bytes ``zipfile`` would parse (the directory's declared size, ending where the
    end record or the zip64 end record starts), so an end record that says 1 member while the
    directory holds a million cannot make ``zipfile`` build a million objects first. None: no
    end record.
    """
    eocd = data.rfind(EMPTY_ZIP_SIGNATURE, max(0, len(data) - 65557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    size = int(struct.unpack("<I", data[eocd + 12 : eocd + 16])[0])
    end = eocd
    locator = eocd - 20
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        record = locator - 56  # where zipfile reads the zip64 end record
        if record >= 0 and data[record : record + 4] == b"PK\x06\x06":
            size = int(struct.unpack("<Q", data[record + 40 : record + 48])[0])
            end = record
    position, count = max(0, end - size), 0
    while position + 46 <= end and data[position : position + 4] == b"PK\x01\x02":
        lengths = struct.unpack("<HHH", data[position + 28 : position + 34])
        position += 46 + sum(int(n) for n in lengths)
        count += 1
        if count > limit:
            break
    return count


def check_zip_entries(data: bytes, *, max_files: int = MAX_STUDY_FILES) -> None:
    """Refuse a zip declaring — or, whatever it declares, listing — more members than a study
    may hold, before it is opened."""
    declared = zip_declared_entries(data)
    if declared is not None:
        check_study_files(declared, max_files=max_files)
    listed = zip_directory_entries(data, max_files)
    if listed is not None and listed > max_files:
        raise InputRejected(
            "study_too_many_files",
            ZIP_LISTS_TOO_MANY.format(limit=max_files, declared=declared),
        )


class StudyError(InputRejected):
    """A study that cannot be read as a whole (too big, unsafe zip, nothing readable)."""


def whole_study(check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a policy check whose refusal refuses the whole study (as :class:`StudyError`)."""
    try:
        check(*args, **kwargs)
    except StudyError:
        raise
    except InputRejected as err:
        raise StudyError(err.reason, err.message) from None
