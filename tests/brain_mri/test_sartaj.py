"""Reading the SARTAJ archive: zipped (flat or GitHub-wrapped) or extracted, same records."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from brain_mri import sartaj
from brain_mri.labels import CLASS_NAMES
from tests.fixtures.archives import encode, make_archive, texture


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("extracted")
    planted = make_archive(root, per_class_training=2, per_class_testing=1, plant=False)
    # Things that are not class images must be ignored.
    (root / "README.md").write_text("not an image")
    (root / "Training" / "glioma_tumor" / "notes.txt").write_text("not an image")
    (root / "Training" / "unknown_class").mkdir()
    (root / "Training" / "unknown_class" / "x.jpg").write_bytes(
        encode(texture(np.random.default_rng(0)))
    )
    (root / "Other" / "glioma_tumor").mkdir(parents=True)
    (root / "Other" / "glioma_tumor" / "y.jpg").write_bytes(b"x")
    return planted


def _zip(root: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(root.rglob("*")):
            arcname = prefix + path.relative_to(root).as_posix()
            if path.is_dir():
                zf.writestr(arcname + "/", b"")
            else:
                zf.write(path, arcname)
    return target


def _records(source):
    return [(i.file_name, i.source_split, i.label, i.data) for i in sartaj.iter_images(source)]


def test_extracted_folder_yields_every_class_image_sorted(archive):
    records = _records(archive.root)
    names = [r[0] for r in records]
    assert names == sorted(archive.files)
    for name, split, label, data in records:
        assert split == name.split("/")[0]
        assert label in CLASS_NAMES and label == archive.label(name)
        assert data == archive.files[name]


@pytest.mark.parametrize("prefix", ["", "Brain-Tumor-Classification-DataSet-3ea9f4e/"])
def test_zip_flat_or_wrapped_gives_the_same_records(archive, tmp_path, prefix):
    zipped = _zip(archive.root, tmp_path / "a.zip", prefix)
    assert _records(zipped) == _records(archive.root)


def test_find_archive_prefers_the_named_zip(archive, tmp_path):
    _zip(archive.root, tmp_path / "other.zip")
    named = _zip(archive.root, tmp_path / sartaj.ARCHIVE_NAME)
    assert sartaj.find_archive(tmp_path) == named


def test_find_archive_accepts_any_zip_or_an_extracted_folder(archive, tmp_path):
    some = _zip(archive.root, tmp_path / "download.zip")
    assert sartaj.find_archive(tmp_path) == some
    assert sartaj.find_archive(archive.root) == archive.root
    wrapper = tmp_path / "wrapped"
    (wrapper / "Brain-Tumor-Classification-DataSet-abc" / "Testing").mkdir(parents=True)
    assert sartaj.find_archive(wrapper) == wrapper / "Brain-Tumor-Classification-DataSet-abc"


def test_find_archive_names_what_it_expected(tmp_path):
    (tmp_path / "unrelated.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=sartaj.ARCHIVE_NAME):
        sartaj.find_archive(tmp_path)


def test_iter_images_rejects_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a zip archive nor a folder"):
        list(sartaj.iter_images(tmp_path / "missing"))
