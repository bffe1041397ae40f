"""DICOM reading on files generated here with pydicom: windowing, MONOCHROME1, multi-frame, RLE
compression, a compression with no decoder installed, malformed files, and privacy."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from tumorlib.inputs.dicom import DicomError, dicom_to_png, is_dicom, patient_info, read_dicom

PATIENT = "DOE^JANE-SECRET"


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    compress: str | None = None,
) -> bytes:
    """A minimal but valid MR image file (uint16, one or more frames)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT, "ID-424242", "19700101"
    frames = pixels if pixels.ndim == 3 else pixels[None]
    ds.Rows, ds.Columns = frames.shape[1:]
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = frames.astype(np.uint16).tobytes()
    if compress == "rle":
        ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp(h: int = 32, w: int = 48, top: int = 4000) -> np.ndarray:
    return np.tile(np.linspace(0, top, w), (h, 1)).astype(np.uint16)


def test_percentile_window_spans_the_8bit_range_and_keeps_order():
    image = read_dicom(make_dicom(ramp()))
    assert image.window_source == "percentile" and image.num_frames == 1
    frame = image.frames[0]
    assert frame.dtype == np.uint8 and frame.shape == (32, 48)
    assert frame[:, 0].max() <= 5 and frame[:, -1].min() >= 250
    assert (np.diff(frame[0].astype(int)) >= 0).all()


def test_stored_window_is_applied_after_the_modality_rescale():
    # Stored values 0..4000, rescaled to -1000..3000; window 500 +/- 500 (in rescaled units).
    data = make_dicom(ramp(), window=(500.0, 1000.0), rescale=(1.0, -1000.0))
    image = read_dicom(data)
    assert image.window_source == "stored" and image.window == (500.0, 1000.0)
    values = np.linspace(0, 4000, 48) - 1000.0
    frame = image.frames[0][0].astype(int)
    assert (frame[values < 0] == 0).all() and (frame[values > 1000] == 255).all()
    inside = (values > 50) & (values < 950)
    assert (frame[inside] > 0).all() and (frame[inside] < 255).all()
    assert read_dicom(data, window="percentile").window_source == "percentile"


@pytest.mark.parametrize(
    ("rescale", "window"),
    [(None, None), ((2.5, -1024.0), None), ((0.5, 10.0), (300.0, 600.0))],
)
def test_integer_lookup_path_gives_the_float_paths_pixels(rescale, window):
    """The histogram window and lookup table are the float path's numbers, not an approximation."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from tumorlib.inputs.dicom import apply_window, percentile_window

    rng = np.random.default_rng(7)
    # Distinct values: each percentile falls between two of them and must interpolate.
    frames = rng.permutation(4000).reshape(2, 40, 50).astype(np.uint16)
    data = make_dicom(frames, rescale=rescale, window=window)
    image = read_dicom(data)
    values = apply_modality_lut(
        pydicom.dcmread(io.BytesIO(data)).pixel_array, pydicom.dcmread(io.BytesIO(data))
    ).astype(np.float64)
    centre, width = window if window else percentile_window(values)
    assert image.window == pytest.approx((centre, width), rel=1e-12)
    for got, expected in zip(image.frames, values):
        np.testing.assert_array_equal(got, apply_window(expected, centre, width))


def test_monochrome1_is_inverted():
    plain = read_dicom(make_dicom(ramp())).frames[0]
    inverted = read_dicom(make_dicom(ramp(), photometric="MONOCHROME1")).frames[0]
    np.testing.assert_array_equal(inverted, 255 - plain)
    assert inverted[0, 0] >= 250  # the lowest stored value is white in MONOCHROME1


def test_multi_frame_files_give_every_frame_and_a_chosen_one():
    frames = np.stack([ramp() * 0 + 100 * (k + 1) for k in range(3)] + [ramp()])
    data = make_dicom(frames)
    image = read_dicom(data)
    assert image.num_frames == 4
    pngs = dicom_to_png(data, frame=None)
    assert len(pngs) == 4
    last = np.asarray(Image.open(io.BytesIO(pngs[3])))
    assert last.shape == (32, 48, 3)
    np.testing.assert_array_equal(last[..., 0], image.frames[3])
    assert dicom_to_png(data, frame=3) == [pngs[3]]
    with pytest.raises(DicomError, match="frame 7 out of range"):
        dicom_to_png(data, frame=7)


def test_rle_lossless_compressed_file_decodes_to_the_same_image():
    plain, rle = make_dicom(ramp()), make_dicom(ramp(), compress="rle")
    assert rle != plain
    decoded = read_dicom(rle)
    assert "RLE" in decoded.transfer_syntax
    np.testing.assert_array_equal(decoded.frames[0], read_dicom(plain).frames[0])


def test_compression_without_a_decoder_is_a_clear_error(monkeypatch):
    """Without a JPEG 2000 decoder the words say so; with one (Pillow's, here), the same broken
    codestream is called corrupt — never "no decoder installed"."""
    data = make_dicom(ramp())
    import pydicom

    import tumorlib.inputs.dicom as dicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    if dicom._decoder_available(JPEG2000Lossless):
        with pytest.raises(DicomError, match="JPEG 2000.*corrupt or truncated"):
            read_dicom(buffer.getvalue())
    monkeypatch.setattr(dicom, "_decoder_available", lambda syntax: False)
    with pytest.raises(DicomError, match="JPEG 2000.*no decoder installed"):
        read_dicom(buffer.getvalue())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a dicom file at all", "not a DICOM file"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10", "malformed|no pixel data"),
    ],
)
def test_malformed_inputs_are_clear_errors(data, message):
    with pytest.raises(DicomError, match=message):
        read_dicom(data)


def test_truncated_pixel_data_and_missing_pixels_are_clear_errors():
    data = make_dicom(ramp())
    with pytest.raises(DicomError, match="malformed|truncated"):
        read_dicom(data[:-500])
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(DicomError, match="no pixel data"):
        read_dicom(buffer.getvalue())


def test_patient_identifiers_are_hidden_unless_asked_and_never_logged(caplog):
    data = make_dicom(ramp())
    assert is_dicom(data) and not is_dicom(b"\x89PNG")
    with caplog.at_level(logging.DEBUG):
        image = read_dicom(data)
        hidden = patient_info(data)
    assert PATIENT not in repr(image) and "ID-424242" not in repr(image)
    assert hidden["PatientName"] == "(hidden)" and PATIENT not in str(hidden)
    assert PATIENT not in caplog.text and "ID-424242" not in caplog.text
    assert patient_info(data, reveal=True)["PatientName"] == PATIENT


def test_pydicom_warnings_are_not_passed_on_to_the_callers_logs(monkeypatch, recwarn):
    """pydicom's warnings about a malformed header quote the offending value, which can be a
    patient's name; read_dicom must swallow them for every caller (page and batch CLI)."""
    import warnings

    import pydicom

    real = pydicom.dcmread

    def quoting_dcmread(*args, **kwargs):
        warnings.warn(f"Invalid value for VR PN: {PATIENT!r}", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", quoting_dcmread)
    image = read_dicom(make_dicom(ramp()))
    assert image.num_frames == 1
    assert not [w for w in recwarn if PATIENT in str(w.message)]
