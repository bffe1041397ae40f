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

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# Relative imports: the same modules whether `tfds build datasets/brain_mri` imports this file as
# `brain_mri.brain_mri_dataset_builder` from the folder, or the installed package `brain_mri` does.
from . import dedup, sartaj
from .labels import CLASS_NAMES
from .report import format_report

logger = logging.getLogger(__name__)

# The public GitHub copy of the archive, pinned to the commit whose tree ../shared/data holds.
_REPO = "https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet"
_COMMIT = "3ea9f4e"
_URL = f"{_REPO}/archive/{_COMMIT}.zip"
_HOMEPAGE = "https://www.kaggle.com/datasets/sartajbhuvaji/brain-tumor-classification-mri"

# Changing the seed or the grouping changes the split: bump VERSION with it.
SPLIT_SEED = 20201


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

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source = self._source(dl_manager)
        print(f"brain_mri/{self.builder_config.name}: reading {source}")
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
        labels = [image.label for image in images]

        metadata: dict = {"source": str(source), "skipped_unreadable": skipped}
        if self.builder_config.name == "clean":
            plan = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=SPLIT_SEED)
            assignment = plan.split
            metadata |= {"split_seed": SPLIT_SEED, **plan.summary()}
            split_names = list(dedup.SPLIT_NAMES)
        else:
            assignment = ["train" if i.source_split == "Training" else "test" for i in images]
            metadata |= {"testing_leakage": testing_leakage(images, hashes, groups)}
            split_names = ["train", "test"]
        metadata["near_duplicate_cosine"] = dedup.NEAR_DUPLICATE_COSINE
        metadata["counts"] = {
            split: {
                c: sum(1 for a, lab in zip(assignment, labels) if a == split and lab == c)
                for c in CLASS_NAMES
            }
            for split in split_names
        }
        self.info.metadata.update(metadata)
        print(format_report(self.builder_config.name, metadata))

        return {
            split: self._generate_examples(
                [(images[i], int(groups[i])) for i, a in enumerate(assignment) if a == split]
            )
            for split in split_names
        }

    def _generate_examples(self, records):
        for image, group in records:
            yield (
                image.file_name,
                {
                    "image": image.data,
                    "label": image.label,
                    "file_name": image.file_name,
                    "source_split": image.source_split,
                    "duplicate_group": group,
                },
            )


def testing_leakage(images, hashes, groups) -> dict:
    """How much of the published Testing split repeats Training (per class and in all)."""
    train_hashes = {h for i, h in zip(images, hashes) if i.source_split == "Training"}
    train_groups: dict[int, set[str]] = {}
    for image, group in zip(images, groups):
        if image.source_split == "Training":
            train_groups.setdefault(int(group), set()).add(image.label)
    out = {
        "testing_images": 0,
        "exact_copy_of_training": 0,
        "near_duplicate_of_training": 0,
        "near_duplicate_with_other_label": 0,
    }
    for image, digest, group in zip(images, hashes, groups):
        if image.source_split != "Testing":
            continue
        out["testing_images"] += 1
        out["exact_copy_of_training"] += digest in train_hashes
        train_labels = train_groups.get(int(group), set())
        out["near_duplicate_of_training"] += bool(train_labels)
        out["near_duplicate_with_other_label"] += bool(train_labels - {image.label})
    return out
