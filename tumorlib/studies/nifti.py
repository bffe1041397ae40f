"""NIfTI volumes of a study -> one series each, sliced along the acquisition plane.

The 348-byte header is checked (shape, voxels, slices, data type) before the data is read, and a
``.nii.gz`` is inflated in memory only as far as that header says the image reaches (header
extensions included: they are read with the data). Slices are shown as a radiologist views them
(:func:`radiological`) and become the same 8-bit PNG bytes as any upload.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tumorlib.inputs import policy, study_policy
from tumorlib.inputs.dicom import apply_window, encode_png, percentile_window
from tumorlib.inputs.study_policy import StudyError, whole_study
from tumorlib.studies.study import Series, SliceRef, StudySlice

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PLANES = ("sagittal", "coronal", "axial")  # the RAS+ axis each plane is sliced along: x, y, z
HEADER_BYTES = 352  # the 348-byte header and the 4-byte extension flag
LOW_RESOLUTION_PX = 128  # slices smaller than this on a side are far from the training data

Axis = str | int | None


# -- NIfTI --------------------------------------------------------------------------------------


def is_nifti(name: str, data: bytes) -> bool:
    lower = name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return True
    return len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00")


def read_nifti(
    data: bytes,
    *,
    name: str = "",
    axis: Axis = None,
    study_slices_left: int = study_policy.MAX_STUDY_SLICES,
) -> Series:
    """One NIfTI-1 volume as a series of windowed, radiologically displayed slices.

    The header decides everything before the data is read or inflated: its shape (a 4-D time
    series, an empty axis, too many voxels or slices are refused in words), its data type (complex
    data is refused), and how many bytes the image holds — a ``.nii.gz`` is inflated only that
    far, so a gzip stream longer than its header says cannot cost more than the header allows.
    """
    import nibabel as nib

    head, rest = _open(data)
    header = _header(head)
    shape = _shape(header)
    dtype = header.get_data_dtype()
    if dtype.kind == "c" or dtype.fields is not None:
        raise _unusable(f"{dtype} data (complex or RGB voxels); a grey-scale volume is needed")
    whole_study(study_policy.check_volume, shape)
    affine = header.get_best_affine()
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    plane = choose_plane(affine, zooms, shape, axis)
    along = PLANES.index(plane)
    n = shape[_array_axis(affine, along)]
    whole_study(study_policy.check_series_slices, n)
    whole_study(study_policy.check_study_slices, n, max_slices=max(study_slices_left, 0))
    size = int(header["vox_offset"]) + int(np.prod(shape)) * dtype.itemsize
    raw = head + rest(size - len(head))
    if len(raw) < size:
        raise _unusable(f"the data ends early ({len(raw)} of {size} bytes)")
    try:
        image = nib.Nifti1Image.from_bytes(raw[:size])
        canonical = nib.as_closest_canonical(image)
        volume = np.asarray(canonical.get_fdata(dtype=np.float32)).reshape(canonical.shape[:3])
    except Exception as err:  # noqa: BLE001 - truncated data, bad dtype: one refusal
        raise _unusable(f"the data cannot be read ({type(err).__name__})") from None
    del raw, image
    n = int(volume.shape[along])
    finite = volume[np.isfinite(volume)]
    if not finite.size:
        raise _unusable("no voxel holds a number (all NaN or infinite)")
    centre, width = percentile_window(finite)
    del finite
    origin = float(canonical.affine[along, 3])
    step = float(canonical.header.get_zooms()[along])
    slices = []
    for k in range(n):  # windowed slice by slice: no float64 copy of the whole volume
        plane_2d = np.nan_to_num(np.take(volume, k, axis=along))
        pixels = radiological(apply_window(plane_2d, centre, width))
        ref = SliceRef(index=k, position=origin + k * step, label=f"slice {k + 1} / {n} ({plane})")
        slices.append(StudySlice(ref, _png(pixels)))
    return Series(
        kind="nifti",
        slices=slices,
        modality="MR",
        description=f"{name} ({plane})" if name else plane,
        warnings=resolution_warnings(volume.shape, along, canonical.header.get_zooms()[:3]),
    )


def resolution_warnings(shape: Sequence[int], along: int, zooms: Sequence[float]) -> list[str]:
    """Words for slices far coarser than the model's training slices (a 2 mm research volume is
    a 91 x 109 pixel slice): the model is likely to refuse them as "not a brain MRI"."""
    rows_cols = [int(n) for i, n in enumerate(shape[:3]) if i != along]
    spacing = [float(z) for i, z in enumerate(zooms[:3]) if i != along]
    if min(rows_cols) >= LOW_RESOLUTION_PX:
        return []
    return [
        f"The slices are {rows_cols[0]} x {rows_cols[1]} pixels ({spacing[0]:.1f} x "
        f"{spacing[1]:.1f} mm): far coarser than the 256-512 pixel slices the model was trained "
        "on, so many may be refused as not a brain MRI. Use the full-resolution acquisition."
    ]


def _unusable(problem: str) -> StudyError:
    return StudyError("volume_unusable", study_policy.VOLUME_UNUSABLE.format(problem=problem))


def _open(data: bytes) -> tuple[bytes, Callable[[int], bytes]]:
    """The first :data:`HEADER_BYTES` and a reader for up to ``n`` more, inflating a gzip
    stream only as far as asked (never past the study byte cap)."""
    if not data.startswith(study_policy.GZIP_SIGNATURE):
        return data[:HEADER_BYTES], lambda n: data[HEADER_BYTES : HEADER_BYTES + max(n, 0)]
    stream = gzip.GzipFile(fileobj=io.BytesIO(data))

    def read(n: int) -> bytes:
        limit = study_policy.MAX_STUDY_BYTES
        if n > limit:
            raise StudyError(
                "study_too_large",
                study_policy.VOLUME_GZIP_TOO_LARGE.format(limit=policy.megabytes(limit)),
            )
        try:
            return stream.read(max(n, 0))
        except (OSError, EOFError, zlib.error) as err:
            raise _unusable(f"bad gzip data ({type(err).__name__})") from None

    return read(HEADER_BYTES), read


def _header(head: bytes) -> Any:
    """The 348-byte NIfTI-1 header alone (extensions, if any, are read with the data)."""
    import nibabel as nib

    if len(head) < 348:
        raise _unusable("not a NIfTI-1 header (the file is shorter than one)")
    try:
        header = nib.Nifti1Header(binaryblock=head[:348], check=True)
        header.get_data_shape()
        header.get_data_dtype()
    except Exception as err:  # noqa: BLE001 - any header failure is the same refusal
        raise _unusable(f"not a NIfTI-1 header ({type(err).__name__})") from None
    return header


def _shape(header: Any) -> tuple[int, ...]:
    """The volume's 3-D shape; a 4-D series (several volumes) or an empty axis refused."""
    shape = tuple(int(n) for n in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        volumes = int(np.prod(shape[3:]))
        text = " x ".join(str(n) for n in shape)
        raise StudyError("volume_4d", study_policy.VOLUME_4D.format(volumes=volumes, shape=text))
    if len(shape) < 3 or min(shape) < 1:
        text = " x ".join(str(n) for n in shape) or "no dimensions"
        raise _unusable(f"the volume is {text}; one 3-D volume with slices is needed")
    return shape


def _array_axis(affine: np.ndarray, along: int) -> int:
    """The array axis that becomes RAS+ axis ``along`` in the canonical orientation."""
    import nibabel as nib

    ornt = nib.io_orientation(affine)
    return int(next(i for i, (target, _) in enumerate(ornt) if int(target) == along))


def choose_axis(image: Any, axis: Axis = None) -> str:
    """The plane to slice ``image`` (a nibabel image) in: see :func:`choose_plane`."""
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return choose_plane(image.affine, zooms, tuple(int(n) for n in image.shape[:3]), axis)


def choose_plane(
    affine: np.ndarray, zooms: Sequence[float], shape: Sequence[int], axis: Axis = None
) -> str:
    """The plane to slice in: asked for by name or array axis, else the acquisition plane.

    The acquisition plane of a 2-D acquisition is the one across its thick slices: the axis
    with the largest voxel spacing (clearly larger: 1.2x the others), or else the axis with far
    fewer voxels. An isotropic 3-D volume is sliced axially, as brain MRI is usually read. Works
    from the header alone (affine, zooms, shape), before any data is read.
    """
    import nibabel as nib

    codes = nib.aff2axcodes(affine)  # per array axis: L/R, P/A or I/S
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
    zooms = [float(z) for z in zooms[:3]]
    counts = [int(n) for n in shape[:3]]
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
