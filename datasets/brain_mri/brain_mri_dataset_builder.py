"""brain_mri: the SARTAJ brain MRI tumour classification set, with a leak-free split.

Two configs:

* ``clean`` (default): exact and near-duplicate images are grouped (see ``brain_mri.dedup``);
  groups whose members disagree on the label are dropped; whole groups go to one of
  train / validation / test (about 70/15/15, stratified by class, fixed seed), so no test image
  has a near-duplicate in train or validation.
* ``original``: the archive's published ``Training`` / ``Testing`` split as-is — kept only to
  compare with published numbers, since that split leaks.

Build offline from the archive::

    tfds build datasets/brain_mri --manual_dir ../shared/data

or online (the public GitHub copy of the archive is downloaded)::

    tfds build datasets/brain_mri
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# Relative imports: the same modules whether `tfds build datasets/brain_mri` imports this file as
# `brain_mri.brain_mri_dataset_builder` from the folder, or the installed package `brain_mri` does.
from . import beam_build, dedup, sartaj
from .labels import CLASS_NAMES
from .planning import SPLIT_SEED, example, plan_config, split_names, testing_leakage
from .report import format_report

logger = logging.getLogger(__name__)

# The public GitHub copy of the archive, pinned to the commit whose tree ../shared/data holds.
_REPO = "https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet"
_COMMIT = "3ea9f4e"
_URL = f"{_REPO}/archive/{_COMMIT}.zip"
_HOMEPAGE = "https://www.kaggle.com/datasets/sartajbhuvaji/brain-tumor-classification-mri"

__all__ = ["SPLIT_SEED", "Builder", "testing_leakage"]


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the SARTAJ brain MRI set."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: `clean` (de-duplicated, leak-free) and `original` configs.",
    }
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="clean",
            description=(
                "De-duplicated (exact and near-duplicate groups), label-conflict groups dropped, "
                "group-wise stratified 70/15/15 train/validation/test split."
            ),
        ),
        tfds.core.BuilderConfig(
            name="original",
            description="The archive's published Training/Testing split as-is (it leaks).",
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "clean"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Place `{sartaj.ARCHIVE_NAME}` (the SARTAJ "Brain Tumor Classification (MRI)" archive from
    Kaggle or {_REPO}), or its extracted `Training/` and `Testing/` folders, in the manual dir,
    e.g. `tfds build datasets/brain_mri --manual_dir ../shared/data`. Without a manual dir the
    builder downloads the public GitHub archive.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    "file_name": tfds.features.Text(),
                    "source_split": tfds.features.ClassLabel(names=list(sartaj.SOURCE_SPLITS)),
                    "duplicate_group": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _source(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        """The manual archive if one is there, else the downloaded public archive."""
        try:
            manual_dir = dl_manager.manual_dir
        except (AssertionError, ValueError):
            manual_dir = None
        if manual_dir is not None:
            return epath.Path(sartaj.find_archive(manual_dir))
        logger.info("No manual archive found; downloading %s", _URL)
        try:
            downloaded = dl_manager.download_and_extract(_URL)
        except Exception as error:  # offline machines end up here: say what to do instead
            raise RuntimeError(
                f"no archive in the manual dir and the download of {_URL} failed ({error}). "
                f"Offline, pass --manual_dir pointing at a folder holding {sartaj.ARCHIVE_NAME}."
            ) from error
        return epath.Path(sartaj.find_archive(downloaded))

    def _download_and_prepare(self, dl_manager, download_config):
        """Note whether TFDS was given Beam options; after a Beam build, record its metadata."""
        self._use_beam = bool(download_config.beam_options or download_config.beam_runner)
        super()._download_and_prepare(dl_manager, download_config)
        if self._use_beam:
            metadata = beam_build.read_metadata(self._beam_metadata_path())
            self.info.metadata.update(metadata)
            print(format_report(self.builder_config.name, metadata))

    def _beam_metadata_path(self) -> epath.Path:
        return epath.Path(self.data_dir) / beam_build.METADATA_FILE

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source = self._source(dl_manager)
        print(f"brain_mri/{self.builder_config.name}: reading {source}")
        if getattr(self, "_use_beam", False):
            build = beam_build.BeamBuild(
                str(source), self.builder_config.name, str(self._beam_metadata_path())
            )
            print(f"  Beam build: {len(build.members)} files, {build.num_blocks} thumbnail blocks")
            return {s: build.split_transform(s) for s in split_names(self.builder_config.name)}
        return self._local_split_generators(source)

    def _local_split_generators(self, source: epath.Path) -> dict[str, Any]:
        """Thumbnails, hashes, grouping and the plan in this process; examples from generators."""
        images, thumbs, hashes = [], [], []
        skipped: list[str] = []
        for image in sartaj.iter_images(source):
            try:
                thumbs.append(dedup.thumbnail(image.data))
            except dedup.UnreadableImageError as error:
                print(f"  skipping unreadable file {image.file_name}: {error}")
                skipped.append(image.file_name)
                continue
            images.append(image)
            hashes.append(dedup.content_hash(image.data))
        if not images:
            raise ValueError(f"no readable class images found in {source}")
        groups = dedup.group_duplicates(hashes, np.stack(thumbs))
        assignment, plan_metadata = plan_config(self.builder_config.name, images, hashes, groups)
        metadata: dict = {"source": str(source), "skipped_unreadable": skipped, **plan_metadata}
        self.info.metadata.update(metadata)
        print(format_report(self.builder_config.name, metadata))
        return {
            split: self._generate_examples(
                [(images[i], int(groups[i])) for i, a in enumerate(assignment) if a == split]
            )
            for split in split_names(self.builder_config.name)
        }

    def _generate_examples(self, records):
        for image, group in records:
            yield example(image, image.data, group)
