"""Hostile and odd studies, built here: zips that lie or are damaged, NIfTI files with header
extensions, time series, empty axes, NaN and complex voxels, gzip streams longer than their header
says, CT among MR, too many slices across series, a truncated DICOM and corrupt JPEG 2000. Each is
refused (or read) in words, within bounded time and memory, never with a traceback."""

from __future__ import annotations

import gzip
import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.fixtures.studies import make_dicom_series, make_nifti, make_zip, phantom
from tumorlib.inputs import study_policy
from tumorlib.studies.readers import StudyError, read_series
from tumorlib_cli.study import main as study_cli

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


# -- zips -------------------------------------------------------------------------------------


def lying_zip(members: int) -> bytes:
    """A zip whose directory lists ``members`` entries while its end record claims one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(members):
            archive.writestr(f"{i}.dcm", b"")
    data = bytearray(buffer.getvalue())
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8 : eocd + 12] = struct.pack("<HH", 1, 1)
    return bytes(data)


def test_a_zip_whose_end_record_lies_about_its_members_is_refused_before_it_is_parsed(
    monkeypatch,
):
    data = lying_zip(20_000)
    assert study_policy.zip_declared_entries(data) == 1
    opened = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(1))
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(StudyError, match="lists more than 4096 files .*claims 1"):
            read_series([("lying.zip", data)])
        took = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert opened == []  # zipfile never built its million objects
    assert peak < len(data) / 4 and took < 5.0


def _zip_of_two() -> tuple[bytes, int]:
    files = make_dicom_series(phantom(2, size=16))
    data = make_zip(files, compression=zipfile.ZIP_DEFLATED)
    return data, data.find(b"PK\x01\x02")  # the first central directory entry


def _damaged(kind: str) -> bytes:
    data, central = _zip_of_two()
    damaged = bytearray(data)
    if kind == "crc":
        damaged[central + 16 : central + 20] = b"\x00\x00\x00\x00"
    elif kind == "deflate":
        start = 30 + struct.unpack("<HH", data[26:30])[0] + struct.unpack("<HH", data[26:30])[1]
        damaged[start : start + 8] = b"\xff" * 8
    elif kind == "method":
        damaged[8:10] = struct.pack("<H", 99)  # local header
        damaged[central + 10 : central + 12] = struct.pack("<H", 99)
    elif kind == "longer":
        size = struct.unpack("<I", data[central + 24 : central + 28])[0]
        damaged[central + 24 : central + 28] = struct.pack("<I", size - 100)
    return bytes(damaged)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("crc", "checksum does not match"),
        ("deflate", "compressed data is corrupt"),
        ("method", "compressed with method 99"),
        ("longer", "checksum does not match"),
    ],
)
def test_a_damaged_zip_is_refused_in_words(kind, words, tmp_path, capsys):
    data = _damaged(kind)
    with pytest.raises(StudyError, match=words):
        read_series([("series.zip", data)])
    (tmp_path / "series.zip").write_bytes(data)
    assert study_cli(["classify", str(tmp_path / "series.zip"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# -- NIfTI -----------------------------------------------------------------------------------


def test_a_nifti_with_a_header_extension_is_read():
    image = nib.Nifti1Image(phantom(6, size=24).transpose(1, 2, 0).astype(np.int16), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes"))
    data = image.to_bytes()
    assert int(nib.Nifti1Header(binaryblock=data[:348])["vox_offset"]) > 352
    for blob in (data, gzip.compress(data)):
        (series,) = read_series([("with-extension.nii", blob)])
        assert series.n_slices == 6 and all(s.image for s in series.slices)


def test_nibabels_own_example_files_are_read_or_refused_in_words():
    with pytest.raises(StudyError, match="holds 2 volumes .*one 3-D volume is needed") as raised:
        read_series([("example4d.nii.gz", (NIBABEL_DATA / "example4d.nii.gz").read_bytes())])
    assert raised.value.reason == "volume_4d"
    (series,) = read_series([("anatomical.nii", (NIBABEL_DATA / "anatomical.nii").read_bytes())])
    assert series.n_slices == 25
    assert any("far coarser than" in w for w in series.warnings)  # why "not a brain MRI"


@pytest.mark.parametrize(
    ("volume", "words"),
    [
        (np.zeros((16, 16, 0), np.int16), "16 x 16 x 0"),
        (np.full((8, 8, 4), np.nan, np.float32), "no voxel holds a number"),
        (np.ones((8, 8, 4), np.complex64), "complex"),
    ],
    ids=["empty-axis", "all-nan", "complex"],
)
def test_unusable_volumes_are_refused_in_words(volume, words, tmp_path, capsys):
    with pytest.raises(StudyError, match=words):
        read_series([("odd.nii", make_nifti(volume))])
    (tmp_path / "odd.nii").write_bytes(make_nifti(volume))
    assert study_cli(["classify", str(tmp_path / "odd.nii"), "--no-progress"]) == 1
    assert "cannot be used" in capsys.readouterr().err


def _gz_with_a_long_tail(data: bytes, tail: int) -> bytes:
    """``data`` then ``tail`` zero bytes, gzip-compressed in pieces (never ``tail`` in memory)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as stream:
        stream.write(data)
        block = bytes(1 << 20)
        for _ in range(tail // len(block)):
            stream.write(block)
    return out.getvalue()


def test_a_gzip_stream_longer_than_its_header_says_is_inflated_only_that_far():
    small = make_nifti(phantom(4, size=16).transpose(1, 2, 0).astype(np.int16))
    bomb = _gz_with_a_long_tail(small, 512 * 1024 * 1024)
    assert len(bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        (series,) = read_series([("bomb.nii.gz", bomb)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert series.n_slices == 4
    assert peak < 32 * 1024 * 1024  # the 512 MB tail was never inflated


def test_a_gzip_bomb_without_a_nifti_header_stops_after_the_header_bytes():
    bomb = _gz_with_a_long_tail(b"", 256 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(StudyError, match="not a NIfTI-1 header"):
            read_series([("bomb.nii.gz", bomb)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_a_volume_over_the_voxel_limit_is_refused_from_its_header():
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 256))  # 67 M voxels: twice the limit
    header.set_data_dtype(np.int16)
    with pytest.raises(StudyError, match="512 x 512 x 256") as raised:
        read_series([("big.nii", header.binaryblock + b"\x00" * 4)])
    assert raised.value.reason == "volume_too_large"


# -- modality, slice totals, truncated and corrupt DICOM ------------------------------------


def _as_modality(files: list[tuple[str, bytes]], modality: str) -> list[tuple[str, bytes]]:
    out = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.Modality = modality
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((name, buffer.getvalue()))
    return out


def test_ct_is_refused_in_words_and_left_out_beside_mr(tmp_path, capsys):
    ct = _as_modality(make_dicom_series(phantom(3, size=16)), "CT")
    with pytest.raises(StudyError, match=r"No MR series to classify \(modalities: CT\)"):
        read_series(ct)
    for name, data in ct:
        (tmp_path / name).write_bytes(data)
    assert study_cli(["classify", str(tmp_path), "--no-progress"]) == 1
    assert "No MR series to classify" in capsys.readouterr().err  # before any model is looked for

    mr = make_dicom_series(phantom(4, size=16), prefix="MR")
    (series,) = read_series(mr + ct)
    assert series.modality == "MR" and series.n_slices == 4
    assert any("1 CT series was skipped" in w for w in series.warnings)


def test_a_ct_instance_inside_an_mr_series_is_a_refused_slice():
    files = make_dicom_series(phantom(4, size=16))
    files[2] = _as_modality([files[2]], "CT")[0]
    (series,) = read_series(files)
    problems = [s.problem for s in series.slices]
    assert problems[2] is not None and "is CT, not MR" in problems[2]
    assert [p for i, p in enumerate(problems) if i != 2] == [None, None, None]


def test_the_slices_of_all_series_together_are_capped(monkeypatch):
    monkeypatch.setattr(study_policy, "MAX_STUDY_SLICES", 8)
    first = make_dicom_series(phantom(5, size=16), prefix="A")
    second = make_dicom_series(phantom(5, size=16, seed=1), prefix="B")
    with pytest.raises(StudyError, match="hold 10 slices together; the limit is 8"):
        read_series(first + second)
    read_data = []
    monkeypatch.setattr(nib.Nifti1Image, "from_bytes", lambda b: read_data.append(b))
    volume = make_nifti(phantom(5, size=16).transpose(1, 2, 0).astype(np.int16))
    with pytest.raises(StudyError, match="hold 5 slices together; the limit is 3"):
        read_series([*first, ("v.nii", volume)])
    assert read_data == []  # refused from the header, before the volume was read


def test_a_truncated_dicom_is_called_truncated_not_a_report():
    files = make_dicom_series(phantom(3, size=16))
    (series,) = read_series([*files, ("cut.dcm", files[0][1][:200])])
    text = " ".join(series.warnings)
    assert "truncated" in text and "not images" not in text


def test_corrupt_jpeg_2000_is_called_corrupt_not_a_missing_decoder():
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    files = make_dicom_series(phantom(3, size=32))
    ds = pydicom.dcmread(io.BytesIO(files[1][1]))
    pixels = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG2000", irreversible=False)
    codestream = bytearray(stream.getvalue())
    codestream[len(codestream) // 2 :] = b"\x00" * (len(codestream) - len(codestream) // 2)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([bytes(codestream)])
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    files[1] = ("j2k.dcm", buffer.getvalue())
    (series,) = read_series(files)
    problem = series.slices[1].problem or ""
    assert "corrupt" in problem or "malformed" in problem, problem
    assert "no decoder installed" not in problem
