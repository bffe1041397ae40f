"""brain_mri: the SARTAJ brain MRI tumour classification set, with a leak-free split.

Three configs:

* ``clean`` (default): exact and near-duplicate images are grouped (see ``brain_mri.dedup``);
  groups whose members disagree on the label are dropped; whole groups go to one of
  train / validation / test (about 70/15/15, stratified by class, fixed seed), so no test image
  has a near-duplicate in train or validation.
* ``original``: the archive's published ``Training`` / ``Testing`` split as-is — kept only to
  compare with published numbers, since that split leaks.
* ``multi_sequence``: ``clean``'s splits unchanged plus the TCGA-LGG extra-sequences archive
  (gliomas and no-tumour slices on FLAIR and pre-contrast T1, :mod:`brain_mri.lgg`), whose 80
  patients are split 70/15/15 by patient. Needs ``extra_sequences_mri.zip`` in the manual dir;
  licence CC BY-NC-SA 4.0 for that part.

Every example carries ``source`` (``sartaj`` or ``tcga_lgg``), ``sequence`` (``unknown`` for
SARTAJ's unlabelled slices, ``flair``, ``t1_precontrast``) and ``patient`` (TCGA-LGG only).

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
from . import beam_build, dedup, lgg, sartaj
from .labels import CLASS_NAMES
from .planning import (
    MULTI_SEQUENCE,
    SEQUENCES,
    SOURCES,
    SPLIT_SEED,
    example,
    merge_lgg,
    plan_config,
    plan_lgg,
    split_names,
    testing_leakage,
)
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

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: `clean` (de-duplicated, leak-free) and `original` configs.",
        "1.1.0": "`multi_sequence` config (clean + TCGA-LGG by patient); `source`, `sequence` "
        "and `patient` features.",
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
        tfds.core.BuilderConfig(
            name=MULTI_SEQUENCE,
            description=(
                "clean's splits plus the TCGA-LGG extra-sequences archive (FLAIR and "
                "pre-contrast T1 gliomas and no-tumour slices), 70/15/15 by patient, stratified "
                "by site. The TCGA-LGG part is CC BY-NC-SA 4.0."
            ),
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "clean"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Place `{sartaj.ARCHIVE_NAME}` (the SARTAJ "Brain Tumor Classification (MRI)" archive from
    Kaggle or {_REPO}), or its extracted `Training/` and `Testing/` folders, in the manual dir,
    e.g. `tfds build datasets/brain_mri --manual_dir ../shared/data`. Without a manual dir the
    builder downloads the public GitHub archive. The `{MULTI_SEQUENCE}` config also needs
    `{lgg.ARCHIVE_NAME}` (TCGA-LGG FLAIR/T1 slices) in the manual dir.
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
                    "source": tfds.features.ClassLabel(names=list(SOURCES)),
                    "sequence": tfds.features.ClassLabel(names=list(SEQUENCES)),
                    "patient": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    @staticmethod
    def _manual_dir(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
        try:
            return dl_manager.manual_dir
        except (AssertionError, ValueError):
            return None

    def _lgg_source(self, dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
        """The TCGA-LGG archive for the multi-sequence config (an error if it is missing)."""
        if self.builder_config.name != MULTI_SEQUENCE:
            return None
        return epath.Path(lgg.require_archive(self._manual_dir(dl_manager)))

    def _source(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        """The manual archive if one is there, else the downloaded public archive."""
        manual_dir = self._manual_dir(dl_manager)
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
        lgg_source = self._lgg_source(dl_manager)
        print(f"brain_mri/{self.builder_config.name}: reading {source}")
        if lgg_source is not None:
            print(f"  and {lgg_source}")
        if getattr(self, "_use_beam", False):
            build = beam_build.BeamBuild(
                str(source),
                self.builder_config.name,
                str(self._beam_metadata_path()),
                lgg_source=str(lgg_source) if lgg_source is not None else None,
            )
            print(f"  Beam build: {len(build.members)} files, {build.num_blocks} thumbnail blocks")
            return {s: build.split_transform(s) for s in split_names(self.builder_config.name)}
        return self._local_split_generators(source, lgg_source)

    def _local_split_generators(
        self, source: epath.Path, lgg_source: epath.Path | None = None
    ) -> dict[str, Any]:
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
        records: list[tuple[Any, int, str | None]] = [
            (image, int(group), a) for image, group, a in zip(images, groups, assignment)
        ]
        if lgg_source is not None:
            slices = list(lgg.iter_slices(lgg_source))
            lgg_assignment, lgg_metadata = plan_lgg(slices)
            patient_group = lgg.patient_groups(slices)
            metadata["lgg"] = {"source": str(lgg_source), **lgg_metadata}
            metadata = merge_lgg(
                metadata, list(zip(images, assignment)), list(zip(slices, lgg_assignment))
            )
            records += [(s, patient_group[s.patient], a) for s, a in zip(slices, lgg_assignment)]
        self.info.metadata.update(metadata)
        print(format_report(self.builder_config.name, metadata))
        return {
            split: self._generate_examples([(i, g) for i, g, a in records if a == split])
            for split in split_names(self.builder_config.name)
        }

    def _generate_examples(self, records):
        for image, group in records:
            yield example(image, image.data, group)
