"""Reading studies: ordering, grouping, multi-frame, NIfTI planes, and every hostile study refused
in words while the good slices are kept."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.fixtures.studies import (
    PATIENT_ID,
    PATIENT_NAME,
    make_dicom_series,
    make_dicom_slice,
    make_multiframe,
    make_nifti,
    make_sr,
    make_zip,
    phantom,
)
from tumorlib.inputs import policy, study_policy
from tumorlib.inputs.dicom import dicom_to_png
from tumorlib.studies.readers import StudyError, choose_axis, decode_ahead, read_path, read_series


def grey(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def test_series_is_ordered_by_position_when_instance_numbers_are_shuffled():
    volume = phantom(10)
    oblique = (1.0, 0.0, 0.0, 0.0, 0.8, -0.6)  # normal (0, 0.6, 0.8): not the z axis
    files = make_dicom_series(volume, orientation=oblique, shuffle_instance_numbers=True, seed=3)
    assert [n for n, _ in files] != sorted(n for n, _ in files)  # really shuffled
    (series,) = read_series(files)
    assert series.n_slices == 10 and series.kind == "dicom"
    positions = [s.ref.position for s in series.slices]
    assert positions == pytest.approx([5.0 * i for i in range(10)])
    # The same pixels as decoding each original slice on its own, in the true order.
    by_position = {round(p): d for (_, d), p in zip(files, positions)}
    assert len(by_position) == 10
    for i, piece in enumerate(series.slices):
        expected = make_dicom_series(volume[i : i + 1])[0][1]
        assert np.array_equal(grey(piece.image), grey(dicom_to_png(expected)[0]))
    assert series.warnings == []
    assert len(series.headers) == 10 and "PixelData" not in series.headers[0]
    assert series.slices[0].ref.sop_instance_uid == str(series.headers[0].SOPInstanceUID)


def test_mixed_series_in_one_folder_become_separate_series():
    study = generate_uid()
    t1 = make_dicom_series(phantom(6), study_uid=study, prefix="A")
    t2 = make_dicom_series(phantom(4, 24), study_uid=study, prefix="B")
    mixed = [f for pair in zip(t1, t2) for f in pair] + t1[4:]
    found = read_series(mixed)
    assert sorted(s.n_slices for s in found) == [4, 6]
    assert {s.study_instance_uid for s in found} == {study}
    assert len({s.series_instance_uid for s in found}) == 2


def test_multi_frame_file_gives_one_slice_per_frame():
    volume = phantom(5)
    (series,) = read_series([("mf.dcm", make_multiframe(volume))])
    assert series.n_slices == 5
    assert [s.ref.frame for s in series.slices] == [1, 2, 3, 4, 5]
    assert len({s.ref.sop_instance_uid for s in series.slices}) == 1
    assert all(s.problem is None for s in series.slices)


def test_enhanced_multi_frame_is_ordered_by_each_frames_position():
    volume = phantom(6)
    stored = [3, 0, 5, 1, 4, 2]  # frame j holds slice stored[j]
    positions = [(0.0, 0.0, 4.0 * k) for k in stored]
    data = make_multiframe(volume[stored], frame_positions=positions)
    (series,) = read_series([("enh.dcm", data)])
    assert [s.ref.position for s in series.slices] == pytest.approx([0, 4, 8, 12, 16, 20])
    assert [s.ref.frame for s in series.slices] == [stored.index(k) + 1 for k in range(6)]
    reference = read_series([("mf.dcm", make_multiframe(volume))])[0]
    for ordered, plain in zip(series.slices, reference.slices):
        assert np.array_equal(grey(ordered.image), grey(plain.image))
    assert series.warnings == []
    # Without positions the frames stay in stored order, and the reader says so.
    assert "stored order" in reference.warnings[0]


def test_a_zip_of_a_series_reads_like_the_folder(tmp_path):
    files = make_dicom_series(phantom(6), shuffle_instance_numbers=True)
    (from_zip,) = read_series([("study.zip", make_zip([(f"s/{n}", d) for n, d in files]))])
    for name, data in files:
        (tmp_path / name).write_bytes(data)
    (from_folder,) = read_path(tmp_path)
    assert [s.ref.position for s in from_zip.slices] == [s.ref.position for s in from_folder.slices]
    assert [grey(s.image).sum() for s in from_zip.slices] == [
        grey(s.image).sum() for s in from_folder.slices
    ]


def test_missing_slices_are_a_warning_and_the_rest_is_read():
    (series,) = read_series(make_dicom_series(phantom(12), skip=(5, 6)))
    assert series.n_slices == 10
    (warning,) = series.warnings
    assert "About 2 slice(s) appear to be missing between slice 5 and slice 6" in warning


def test_a_slice_of_another_size_is_refused_in_words_and_the_rest_kept():
    study, uid = generate_uid(), generate_uid()
    files = make_dicom_series(phantom(6), study_uid=study, series_uid=uid)
    odd = make_dicom_slice(
        phantom(1, 48)[0], study_uid=study, series_uid=uid, instance_number=7, position=(0, 0, 30)
    )
    (series,) = read_series([*files, ("odd.dcm", odd)])
    assert series.n_slices == 7
    refused = [s for s in series.slices if s.problem]
    assert len(refused) == 1 and "48 x 48" in refused[0].problem and "32 x 32" in refused[0].problem
    assert not refused[0].image
    assert any("differ in size" in w for w in series.warnings)


def test_a_bomb_slice_is_refused_from_its_header_and_the_rest_kept():
    study, uid = generate_uid(), generate_uid()
    files = make_dicom_series(phantom(5), study_uid=study, series_uid=uid)
    bomb = make_dicom_slice(
        phantom(1)[0],
        study_uid=study,
        series_uid=uid,
        instance_number=6,
        position=(0, 0, 25),
        rows=20000,
        columns=20000,
    )
    (series,) = read_series([*files, ("bomb.dcm", bomb)])
    refused = [s for s in series.slices if s.problem]
    assert len(refused) == 1
    assert refused[0].problem.startswith("The DICOM image is 20000 x 20000 pixels")
    assert sum(1 for s in series.slices if s.image) == 5


def test_non_image_dicom_is_skipped_and_an_image_without_pixels_is_refused():
    study, uid = generate_uid(), generate_uid()
    files = make_dicom_series(phantom(4), study_uid=study, series_uid=uid)
    empty = make_dicom_slice(
        phantom(1)[0],
        study_uid=study,
        series_uid=uid,
        instance_number=5,
        position=(0, 0, 20),
        pixel_data=False,
    )
    (series,) = read_series([*files, ("sr.dcm", make_sr(study_uid=study)), ("e.dcm", empty)])
    assert series.n_slices == 5
    assert any("not images" in w for w in series.warnings)
    (refused,) = [s for s in series.slices if s.problem]
    assert "no pixel data" in refused.problem


def test_a_study_with_nothing_readable_is_a_clear_error():
    with pytest.raises(StudyError, match="No DICOM images or NIfTI volumes"):
        read_series([("sr.dcm", make_sr()), ("notes.txt", b"hello")])


@pytest.mark.parametrize(
    ("files", "reason", "words"),
    [
        ([("empty.zip", make_zip([]))], "zip_empty", "The zip file is empty"),
        ([("up.zip", make_zip([("../x.dcm", b"x")]))], "zip_unsafe_name", "outside the archive"),
        ([("abs.zip", make_zip([("/etc/x.dcm", b"x")]))], "zip_unsafe_name", "absolute path"),
        (
            [("nested.zip", make_zip([("inner.zip", make_zip([("a.dcm", b"x")]))]))],
            "zip_nested",
            "holds another zip",
        ),
        ([("bad.zip", b"PK\x03\x04 truncated")], "zip_unreadable", "malformed"),
    ],
)
def test_unsafe_or_broken_zips_are_refused_in_words(files, reason, words):
    with pytest.raises(StudyError, match=words) as raised:
        read_series(files)
    assert raised.value.reason == reason


def test_a_zip_bomb_is_refused_from_the_directory_before_inflating():
    bomb = make_zip([("a.dcm", bytes(64 * 1024 * 1024))])
    assert len(bomb) < 100_000
    with pytest.raises(StudyError, match="decompression bomb") as raised:
        read_series([("bomb.zip", bomb)])
    assert raised.value.reason == "zip_ratio"


def test_deferred_decoding_gives_the_eager_slices_in_ordered_chunks():
    """read_series(decode=False) reads headers only; decode_ahead fills the same slices."""
    study, uid = generate_uid(), generate_uid()
    files = make_dicom_series(phantom(13, 48), study_uid=study, series_uid=uid, seed=3,
                              shuffle_instance_numbers=True)  # fmt: skip
    empty = make_dicom_slice(phantom(1, 48)[0], study_uid=study, series_uid=uid,
                             instance_number=14, position=(0, 0, 65), pixel_data=False)  # fmt: skip
    (eager,) = read_series([*files, ("e.dcm", empty)])
    (lazy,) = read_series([*files, ("e.dcm", empty)], decode=False)
    assert [s.ref for s in lazy.slices] == [s.ref for s in eager.slices]
    assert all(s.pending is not None and not s.image for s in lazy.slices)
    chunks = list(decode_ahead(lazy.slices, 5))
    assert [[s.ref.index for s in c] for c in chunks] == [
        list(range(0, 5)), list(range(5, 10)), list(range(10, 14))
    ]  # fmt: skip
    assert all(s.pending is None for s in lazy.slices)
    assert [s.image for s in lazy.slices] == [s.image for s in eager.slices]
    assert [s.problem for s in lazy.slices] == [s.problem for s in eager.slices]
    assert "no pixel data" in lazy.slices[-1].problem  # found when decoding, kept in its place


def test_a_series_over_the_slice_limit_is_refused_before_decoding(monkeypatch):
    import tumorlib.studies.dicom_series as study_io

    decoded = []
    monkeypatch.setattr(study_io, "read_dicom", lambda *a, **k: decoded.append(1))
    original = study_policy.check_series_slices
    monkeypatch.setattr(study_policy, "check_series_slices", lambda n: original(n, max_slices=3))
    with pytest.raises(StudyError, match="The series has 4 slices; the limit is 3"):
        read_series(make_dicom_series(phantom(4)))
    assert decoded == []


def test_patient_tags_never_reach_messages_labels_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    files = make_dicom_series(phantom(5), skip=(2,))
    (series,) = read_series([*files, ("sr.dcm", make_sr())])
    text = repr(series) + " ".join(series.warnings) + caplog.text
    text += " ".join(s.ref.label + str(s.problem) for s in series.slices)
    assert PATIENT_NAME not in text and PATIENT_ID not in text
    assert str(series.headers[0].PatientName) == PATIENT_NAME  # kept for the DICOM results


# -- NIfTI ---------------------------------------------------------------------------------------


def test_nifti_is_sliced_across_its_thick_slices_with_an_oblique_affine():
    # Array axes (i, j, k) = 40 x 24 x 36; axis j has 5 mm spacing: a 2-D coronal acquisition
    # stored in a permuted order. The affine sends i -> S, j -> A, k -> R (with a rotation).
    volume = np.random.default_rng(0).normal(100, 20, (40, 24, 36)).astype(np.float32)
    theta = np.deg2rad(10)
    rot = np.array(
        [[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]
    )
    axes = np.array([[0, 0, 1.0], [0, 5.0, 0], [1.0, 0, 0]]).T  # columns: i, j, k in RAS
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes
    (series,) = read_series([("brain.nii.gz", make_nifti(volume, affine, gz=True))])
    assert series.kind == "nifti" and series.n_slices == 24
    assert "coronal" in series.description and "coronal" in series.slices[0].ref.label
    assert grey(series.slices[0].image).shape == (40, 36)  # rows S, columns R-L
    positions = [s.ref.position for s in series.slices]
    assert np.allclose(np.diff(positions), 5.0)


@pytest.mark.parametrize(("axis", "plane", "n"), [("axial", "axial", 36), (0, "axial", 40)])
def test_nifti_axis_can_be_asked_for(axis, plane, n):
    import nibabel as nib

    volume = np.zeros((40, 24, 36), np.float32)
    affine = np.array([[0, 0, 1.0, 0], [0, 5.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(volume, affine)
    assert choose_axis(image, axis) == plane
    assert choose_axis(image) == "coronal"
    if axis == "axial":  # slicing axially: the canonical z axis is array axis 0 (40 voxels)
        (series,) = read_series([("v.nii", make_nifti(volume, affine))], axis=axis)
        assert series.n_slices == 40


def test_nifti_slices_are_in_radiological_orientation():
    # RAS identity: put a bright blob at the patient's right-anterior in axial slice 0.
    volume = np.zeros((20, 20, 4), np.float32)
    volume[16:20, 16:20, :] = 1000.0  # high x = right, high y = anterior
    (series,) = read_series([("v.nii", make_nifti(volume))], axis="axial")
    image = grey(series.slices[0].image)
    assert image[:4, :4].mean() > 200  # viewer's top-left: anterior, patient's right
    assert image[-5:, -5:].mean() < 50


def test_nifti_windowing_is_the_dicom_percentile_window():
    volume = np.linspace(0, 4000, 32 * 32 * 3).reshape(32, 32, 3).astype(np.float32)
    (series,) = read_series([("v.nii", make_nifti(volume))], axis="axial")
    values = [grey(s.image) for s in series.slices]
    assert min(v.min() for v in values) == 0 and max(v.max() for v in values) == 255


def test_a_nifti_whose_header_declares_too_much_is_refused_before_reading():
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.uint8)
    fake = header.binaryblock + b"\x00" * 4  # no data at all: only the header is read
    with pytest.raises(StudyError, match="1024 x 1024 x 1024") as raised:
        read_series([("big.nii", fake)])
    assert raised.value.reason == "volume_too_large"


def test_a_gzip_bomb_nifti_stops_at_the_study_cap(monkeypatch):
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((256, 256, 64))  # 8 MB of int16 declared, and streamed
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    bomb = gzip.compress(header.binaryblock + bytes(4) + bytes(8 * 1024 * 1024))
    monkeypatch.setattr(study_policy, "MAX_STUDY_BYTES", 1024 * 1024)
    with pytest.raises(StudyError, match="expands to more than 1.0 MB"):
        read_series([("bomb.nii.gz", bomb)])


def test_zip_members_are_read_in_memory_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = make_dicom_series(phantom(3))
    data = make_zip(files, compression=zipfile.ZIP_STORED)
    read_series([("s.zip", data)])
    assert list(tmp_path.iterdir()) == []


def test_unreadable_or_oversized_dicom_files_are_skipped_with_the_policys_words():
    files = make_dicom_series(phantom(4))
    oversized = b"\x00" * 128 + b"DICM" + bytes(policy.MAX_DICOM_BYTES + 2**20)
    (series,) = read_series([*files, ("junk.dcm", b"not dicom at all"), ("big.dcm", oversized)])
    assert series.n_slices == 4
    text = " ".join(series.warnings)
    assert "1 file(s) skipped: This DICOM file cannot be used: not a DICOM file" in text
    assert "1 file(s) skipped: The file is 51.0 MB; the limit is 50.0 MB" in text


@pytest.mark.parametrize("members", [5000, 70_000])  # 70,000: past 65,535, a zip64 directory
def test_a_zip_declaring_too_many_members_is_refused_before_it_is_opened(members, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(members):
            archive.writestr(f"{i}.dcm", b"")
    data = buffer.getvalue()
    assert study_policy.zip_declared_entries(data) == members
    opened = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(1))
    with pytest.raises(StudyError, match=f"holds {members} files; the limit is 4096"):
        read_series([("many.zip", data)])
    assert opened == []
