"""Synthetic studies for tests: DICOM series, multi-frame files, NIfTI volumes, zips.

Shared by the study reader tests, the page's study view and the PACS/DICOM-results tests, so
every one of them builds the same kind of series. Everything is generated in memory from numpy
arrays; patient tags are fake (:data:`PATIENT_NAME`, :data:`PATIENT_ID`) so a test can assert they
never appear in output.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT_NAME = "DOE^JANE-SECRET"
PATIENT_ID = "ID-424242"
PATIENT_BIRTH_DATE = "19700101"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"

# An oblique acquisition: rows along x, columns tilted between y and z; normal = cross product.
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def phantom(n_slices: int = 8, size: int = 32, *, seed: int = 0) -> np.ndarray:
    """``[n, size, size]`` uint16 slices: an ellipse whose radius changes with the slice, plus
    noise, so each slice differs and ordering mistakes are visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2
    out = np.empty((n_slices, size, size), dtype=np.uint16)
    for i in range(n_slices):
        radius = size * (0.15 + 0.3 * (i + 1) / n_slices)
        inside = (yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2
        noise = rng.integers(0, 100, (size, size))
        out[i] = (inside * 2000 + 200 + noise).astype(np.uint16)
    return out


def _meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _patient_and_study(ds: Dataset, study_uid: str, series_uid: str) -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE
    ds.PatientSex = "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.Modality = "MR"


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_dicom_slice(
    pixels: np.ndarray,
    *,
    study_uid: str,
    series_uid: str,
    instance_number: int = 1,
    position: Sequence[float] | None = (0.0, 0.0, 0.0),
    orientation: Sequence[float] | None = AXIAL_ORIENTATION,
    spacing: float = 1.0,
    rows: int | None = None,
    columns: int | None = None,
    pixel_data: bool = True,
) -> bytes:
    """One single-frame MR Image Storage file (uint16). ``rows``/``columns`` override what the
    header declares (a bomb: the header lies about the size); ``pixel_data=False`` omits it."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _meta(MRImageStorage, sop_uid)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
    _patient_and_study(ds, study_uid, series_uid)
    ds.SeriesDescription = "T1 AX synthetic"
    ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 1.0
    ds.Rows = int(rows if rows is not None else pixels.shape[0])
    ds.Columns = int(columns if columns is not None else pixels.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    return _to_bytes(ds)


def make_dicom_series(
    volume: np.ndarray,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    spacing: float = 5.0,
    orientation: Sequence[float] = AXIAL_ORIENTATION,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    shuffle_instance_numbers: bool = False,
    skip: Sequence[int] = (),
    seed: int = 0,
    prefix: str = "IM",
) -> list[tuple[str, bytes]]:
    """One series, one ``(name, bytes)`` file per slice of ``volume`` (``[n, H, W]``).

    Slice ``i`` lies at ``origin + i * spacing * normal`` (normal = row x column direction), so
    the true order is the array order. ``shuffle_instance_numbers`` scrambles InstanceNumber (and
    the file order) so a reader must order by position; ``skip`` drops slice indices (a gap).
    Patient tags are the fake :data:`PATIENT_NAME` / :data:`PATIENT_ID`.
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    rng = np.random.default_rng(seed)
    numbers = np.arange(1, len(volume) + 1)
    if shuffle_instance_numbers:
        numbers = rng.permutation(numbers)
    files = []
    for i, pixels in enumerate(volume):
        if i in skip:
            continue
        position = np.asarray(origin, float) + i * spacing * normal
        data = make_dicom_slice(
            pixels,
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=int(numbers[i]),
            position=position.tolist(),
            orientation=orientation,
        )
        files.append((f"{prefix}{int(numbers[i]):04d}.dcm", data))
    if shuffle_instance_numbers:
        order = rng.permutation(len(files))
        files = [files[j] for j in order]
    return files


def make_multiframe(
    volume: np.ndarray,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_positions: Sequence[Sequence[float]] | None = None,
    orientation: Sequence[float] = AXIAL_ORIENTATION,
) -> bytes:
    """One multi-frame MR file holding ``volume`` (``[n, H, W]``) as its frames, in order.

    With ``frame_positions`` (one ImagePositionPatient per frame) it is an Enhanced MR image
    whose functional groups carry each frame's position and the shared orientation.
    """
    sop_uid = generate_uid()
    sop_class = MRImageStorage if frame_positions is None else ENHANCED_MR_STORAGE
    ds = Dataset()
    ds.file_meta = _meta(sop_class, sop_uid)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    _patient_and_study(ds, study_uid or generate_uid(), series_uid or generate_uid())
    ds.SeriesDescription = "multi-frame synthetic"
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(volume)
    ds.Rows, ds.Columns = volume.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frame_positions is not None:
        plane = Dataset()
        plane.ImageOrientationPatient = [float(v) for v in orientation]
        shared = Dataset()
        shared.PlaneOrientationSequence = [plane]
        ds.SharedFunctionalGroupsSequence = [shared]
        frames = []
        for position in frame_positions:
            where = Dataset()
            where.ImagePositionPatient = [float(v) for v in position]
            item = Dataset()
            item.PlanePositionSequence = [where]
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = volume.astype(np.uint16).tobytes()
    return _to_bytes(ds)


def make_sr(*, study_uid: str | None = None, series_uid: str | None = None) -> bytes:
    """A Basic Text SR: a DICOM file that is not an image (no pixel data)."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _meta(BASIC_TEXT_SR_STORAGE, sop_uid)
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR_STORAGE, sop_uid
    _patient_and_study(ds, study_uid or generate_uid(), series_uid or generate_uid())
    ds.Modality = "SR"
    ds.InstanceNumber = 1
    return _to_bytes(ds)


def make_nifti(volume: np.ndarray, affine: np.ndarray | None = None, *, gz: bool = False) -> bytes:
    """A NIfTI-1 file (``.nii`` bytes, gzipped when ``gz``) holding ``volume`` (``[X, Y, Z]``)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(volume), np.eye(4) if affine is None else affine)
    data = image.to_bytes()
    return gzip.compress(data) if gz else data


def make_zip(
    files: Sequence[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A zip (in memory) of ``(name, bytes)`` members; names are written as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()
