"""NIfTI volumes of a study -> one series each, sliced along the acquisition plane.

The 348-byte header is checked (shape, voxels, slices) before the data is read; ``.nii.gz`` is
inflated in memory up to the study's byte cap. Slices are shown as a radiologist views them
(:func:`radiological`) and become the same 8-bit PNG bytes as any upload.
"""

from __future__ import annotations

import gzip
import io
from typing import Any

import numpy as np

from tumorlib.inputs import policy, study_policy
from tumorlib.inputs.dicom import apply_window, encode_png, percentile_window
from tumorlib.inputs.study_policy import StudyError, whole_study
from tumorlib.studies.study import Series, SliceRef, StudySlice

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PLANES = ("sagittal", "coronal", "axial")  # the RAS+ axis each plane is sliced along: x, y, z

Axis = str | int | None


# -- NIfTI --------------------------------------------------------------------------------------


def is_nifti(name: str, data: bytes) -> bool:
    lower = name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return True
    return len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00")


def _gunzip(data: bytes, limit: int = study_policy.MAX_STUDY_BYTES) -> bytes:
    """Decompress in memory, never more than ``limit`` bytes (a gzip bomb stops there)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            raw = stream.read(limit + 1)
    except (OSError, EOFError) as err:
        raise StudyError(
            "volume_unusable", study_policy.VOLUME_UNUSABLE.format(problem=f"bad gzip data ({err})")
        ) from None
    if len(raw) > limit:
        raise StudyError(
            "study_too_large",
            study_policy.VOLUME_GZIP_TOO_LARGE.format(limit=policy.megabytes(limit)),
        )
    return raw


def read_nifti(data: bytes, *, name: str = "", axis: Axis = None) -> Series:
    """One NIfTI-1 volume as a series of windowed, radiologically displayed slices."""
    import nibabel as nib

    raw = _gunzip(data) if data.startswith(study_policy.GZIP_SIGNATURE) else data

    def unusable(problem: str) -> StudyError:
        return StudyError("volume_unusable", study_policy.VOLUME_UNUSABLE.format(problem=problem))

    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:352]))
        shape = tuple(int(n) for n in header.get_data_shape())
    except Exception as err:  # noqa: BLE001 - any header failure is the same refusal
        raise unusable(f"not a NIfTI-1 header ({type(err).__name__})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise unusable(f"{len(shape)}-D data; one 3-D volume is needed")
    whole_study(study_policy.check_volume, shape)
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
    whole_study(study_policy.check_series_slices, n)
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
