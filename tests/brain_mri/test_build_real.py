"""End to end on the real SARTAJ archive: build both configs and check the leak-free split.

Needs ``../shared/data`` beside the repository (CI has it); skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections import Counter

import numpy as np
import pytest
import tensorflow_datasets as tfds

from brain_mri import dedup, sartaj
from brain_mri.labels import CLASS_NAMES
from brain_mri.sartaj import SOURCE_DIR_TO_CLASS
from tests.fixtures.ci import require
from tests.fixtures.paths import SHARED_DATA
from tumorlib.data import pipeline as data

ARCHIVE = SHARED_DATA / sartaj.ARCHIVE_NAME

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _archive_present() -> None:
    """The real archive: skipped without it on a laptop, a failure in CI (tests/fixtures/ci.py)."""
    require(ARCHIVE.is_file(), f"real archive not found at {ARCHIVE} (../shared/data)")


# Published file counts of the archive (shared/data/README.md), Training then Testing.
PUBLISHED = {
    "Training": dict(zip(CLASS_NAMES, (826, 822, 395, 827))),
    "Testing": dict(zip(CLASS_NAMES, (100, 115, 105, 74))),
}


@pytest.fixture(scope="module")
def archive_files():
    """file name -> (label, sha256, thumbnail), read straight from the zip, not via the builder."""
    out = {}
    with zipfile.ZipFile(ARCHIVE) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if name.endswith("/") or len(parts) != 3:
                continue
            raw = zf.read(name)
            label = SOURCE_DIR_TO_CLASS[parts[1]]
            out[name] = (label, hashlib.sha256(raw).hexdigest(), dedup.thumbnail(raw))
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_real")
    rows = {}
    for config in data.CONFIGS:
        start = time.perf_counter()
        builder = data.build(config, manual_dir=SHARED_DATA, data_dir_=data_dir)
        print(f"built brain_mri/{config} in {time.perf_counter() - start:.1f} s")
        rows[config] = (
            builder,
            {
                split: [
                    ex["file_name"].decode()
                    for ex in tfds.as_numpy(data.load_split(split, config, data_dir))
                ]
                for split in builder.info.splits
            },
        )
    return rows


def test_original_config_is_the_published_split(builds, archive_files):
    builder, names = builds["original"]
    assert builder.info.metadata["skipped_unreadable"] == []
    for split, source in (("train", "Training"), ("test", "Testing")):
        counts = Counter(archive_files[n][0] for n in names[split])
        assert dict(counts) == PUBLISHED[source]
        assert all(n.startswith(source + "/") for n in names[split])
    training = {archive_files[n][1] for n in names["train"]}
    copies = sum(archive_files[n][1] in training for n in names["test"])
    leakage = builder.info.metadata["testing_leakage"]
    assert leakage["exact_copy_of_training"] == copies > 0
    assert leakage["near_duplicate_of_training"] >= copies


def test_clean_config_counts_add_up(builds, archive_files):
    builder, names = builds["clean"]
    meta = builder.info.metadata
    kept = {split: Counter(archive_files[n][0] for n in names[split]) for split in names}
    for split in dedup.SPLIT_NAMES:
        assert meta["counts"][split] == {c: kept[split][c] for c in CLASS_NAMES}
        assert builder.info.splits[split].num_examples == len(names[split])
    for c in CLASS_NAMES:
        total = sum(PUBLISHED[s][c] for s in PUBLISHED)
        removed = meta["removed_label_conflict"][c] + meta["removed_exact_duplicate"][c]
        assert sum(kept[s][c] for s in kept) == total - removed
    # The calibration of the measure: roughly 1,780 groups, the largest about 70.
    assert 1600 <= meta["num_groups"] <= 1960
    assert 40 <= meta["largest_group"] <= 110
    assert meta["conflicting_groups"] > 0
    print("clean:", {s: dict(kept[s]) for s in kept}, "groups", meta["num_groups"])


def test_clean_config_is_stratified_70_15_15(builds, archive_files):
    _, names = builds["clean"]
    for c in CLASS_NAMES:
        per_split = {s: sum(archive_files[n][0] == c for n in names[s]) for s in names}
        total = sum(per_split.values())
        for split, fraction in zip(dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS):
            assert abs(per_split[split] / total - fraction) < 0.03, (c, per_split)


def test_no_test_image_has_a_near_duplicate_in_train_or_validation(builds, archive_files):
    _, names = builds["clean"]
    test = names["test"]
    seen = names["train"] + names["validation"]
    all_kept = test + seen
    assert len({archive_files[n][1] for n in all_kept}) == len(all_kept), "exact copies kept"
    assert not {archive_files[n][1] for n in test} & {archive_files[n][1] for n in seen}
    test_thumbs = np.stack([archive_files[n][2] for n in test])
    seen_thumbs = np.stack([archive_files[n][2] for n in seen])
    closest = float((test_thumbs @ seen_thumbs.T).max())
    print(f"highest test-vs-train/validation thumbnail cosine: {closest:.4f}")
    assert closest <= dedup.NEAR_DUPLICATE_COSINE
