"""The online path: no manual archive -> the public GitHub zip is downloaded and read.

The download manager is mocked (tests never touch the network); it returns a folder shaped like
GitHub's extracted zip, i.e. a top-level ``Brain-Tumor-Classification-DataSet-<sha>/`` wrapping
``Training/`` and ``Testing/``.
"""

from __future__ import annotations

import sys
from unittest import mock

import pytest
import tensorflow_datasets as tfds

from tests.fixtures.archives import make_archive
from tumorlib.data import pipeline as data

MODULE = data.builder_class().__module__


def _url() -> str:
    return sys.modules[MODULE]._URL


@pytest.fixture(scope="module")
def github_download(tmp_path_factory):
    extracted = tmp_path_factory.mktemp("extracted")
    wrapped = extracted / "Brain-Tumor-Classification-DataSet-3ea9f4e"
    planted = make_archive(wrapped, per_class_training=3, per_class_testing=1, plant=False)
    return extracted, planted


class _NoManualDir:
    """A download manager without a manual dir, as TFDS gives one to online users."""

    def __init__(self, extracted):
        self.extracted = extracted
        self.urls: list[str] = []

    @property
    def manual_dir(self):
        raise AssertionError("Manual directory not enabled.")

    def download_and_extract(self, url):
        self.urls.append(url)
        return self.extracted


def test_source_downloads_the_pinned_github_archive(github_download, tmp_path):
    extracted, _ = github_download
    builder = data.get_builder("original", tmp_path)
    manager = _NoManualDir(extracted)
    source = builder._source(manager)
    assert manager.urls == [_url()]
    assert _url().startswith("https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet/")
    assert source.name == "Brain-Tumor-Classification-DataSet-3ea9f4e"


def test_build_without_manual_dir_uses_the_download(github_download, tmp_path):
    extracted, planted = github_download
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", autospec=True, return_value=extracted
    ) as download:
        builder = data.build("original", manual_dir=None, data_dir_=tmp_path)
    assert [c.args[1] for c in download.call_args_list] == [_url()]
    names = {
        ex["file_name"].decode()
        for split in ("train", "test")
        for ex in tfds.as_numpy(data.load_split(split, "original", tmp_path))
    }
    assert names == set(planted.files)
    training = [n for n in planted.files if n.startswith("Training/")]
    assert builder.info.splits["train"].num_examples == len(training)


def test_a_manual_dir_without_the_archive_is_a_clear_error(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "something_else.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no SARTAJ archive"):
        data.build("original", manual_dir=manual, data_dir_=tmp_path / "tfds")
    assert not (tmp_path / "tfds" / "brain_mri" / "original" / "1.0.0").exists()
