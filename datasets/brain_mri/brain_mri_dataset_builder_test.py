"""TFDS's own builder test on ``dummy_data/`` (see ``make_dummy_data.py``), for every config.

``DatasetBuilderTestCase`` passes ``dummy_data/`` as the manual dir (the builder declares
``MANUAL_DOWNLOAD_INSTRUCTIONS``), builds each config, and checks registration, serialisation,
the features, the per-split counts below and that no example appears in two splits.
"""

import tensorflow_datasets as tfds

# A plain import, under the module name `tfds build datasets/brain_mri` uses: it also registers
# `brain_mri` by name, as `DatasetBuilderTestCase.test_registered` expects.
from brain_mri.brain_mri_dataset_builder import Builder


class CleanConfigTest(tfds.testing.DatasetBuilderTestCase):
    """``clean``: 17 files, one an exact copy -> 16 images, 4 per class, split 2/1/1 per class."""

    DATASET_CLASS = Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["clean"]
    SPLITS = {"train": 8, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True  # nothing is downloaded: the dummy archive is the manual dir


class OriginalConfigTest(tfds.testing.DatasetBuilderTestCase):
    """``original``: the dummy archive's Training/Testing folders as they are."""

    DATASET_CLASS = Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["original"]
    SPLITS = {"train": 12, "test": 5}
    SKIP_CHECKSUMS = True


class MultiSequenceConfigTest(tfds.testing.DatasetBuilderTestCase):
    """``multi_sequence``: clean's 8/4/4 plus the dummy TCGA-LGG patients' 18/4/2 slices."""

    DATASET_CLASS = Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["multi_sequence"]
    SPLITS = {"train": 26, "validation": 8, "test": 6}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
