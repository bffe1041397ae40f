"""De-duplication and the leak-free split: unit tests of ``brain_mri.dedup`` and a real ``clean``
build on a generated archive with planted exact duplicates, re-encoded/resized near-duplicates,
label conflicts and corrupt files."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import tensorflow_datasets as tfds

from brain_mri import dedup
from brain_mri.labels import CLASS_NAMES
from tests.fixtures.archives import encode, make_archive, reencode, texture
from tumorlib.data import pipeline as data

# --------------------------------------------------------------------------------------------
# thumbnails and hashes
# --------------------------------------------------------------------------------------------


def _cosine(a: bytes, b: bytes) -> float:
    return float(dedup.thumbnail(a) @ dedup.thumbnail(b))


def test_content_hash_is_equal_only_for_identical_bytes():
    image = encode(texture(np.random.default_rng(1)))
    assert dedup.content_hash(image) == dedup.content_hash(bytes(image))
    assert dedup.content_hash(image) != dedup.content_hash(image + b"\0")


def test_thumbnail_is_mean_centred_unit_vector():
    vector = dedup.thumbnail(encode(texture(np.random.default_rng(2))))
    assert vector.shape == (dedup.THUMBNAIL_SIZE**2,)
    assert vector.dtype == np.float32
    assert abs(float(vector.mean())) < 1e-5
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)


def test_constant_image_thumbnail_matches_nothing():
    flat = encode(np.full((40, 40), 128, np.uint8))
    assert not dedup.thumbnail(flat).any()


@pytest.mark.parametrize(
    ("size", "quality"), [((48, 48), 50), ((80, 80), 70), ((64, 48), 40), ((32, 32), 30)]
)
def test_reencoded_and_resized_copies_are_near_duplicates(size, quality):
    original = encode(texture(np.random.default_rng(3)))
    assert _cosine(original, reencode(original, size, quality)) > dedup.NEAR_DUPLICATE_COSINE


def test_greyscale_and_png_copies_are_near_duplicates():
    pixels = texture(np.random.default_rng(4))
    rgb = encode(pixels)
    assert _cosine(rgb, encode(pixels, mode="L")) > dedup.NEAR_DUPLICATE_COSINE
    assert _cosine(rgb, encode(pixels, fmt="PNG", mode="RGBA")) > dedup.NEAR_DUPLICATE_COSINE


def test_unrelated_images_are_not_near_duplicates():
    rng = np.random.default_rng(5)
    thumbs = np.stack([dedup.thumbnail(encode(texture(rng))) for _ in range(40)])
    sims = thumbs @ thumbs.T
    np.fill_diagonal(sims, 0)
    assert sims.max() < dedup.NEAR_DUPLICATE_COSINE


@pytest.mark.parametrize(
    "payload",
    [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\0" * 64],
    ids=["empty", "text", "jpeg-header-only"],
)
def test_undecodable_bytes_raise_unreadable_image_error(payload):
    with pytest.raises(dedup.UnreadableImageError, match="cannot decode image"):
        dedup.thumbnail(payload)


def test_truncated_jpeg_is_unreadable():
    image = encode(texture(np.random.default_rng(6), 128, 128))
    with pytest.raises(dedup.UnreadableImageError):
        dedup.thumbnail(image[: len(image) // 2])
    assert issubclass(dedup.UnreadableImageError, ValueError)


# --------------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_grouping_is_transitive_and_links_equal_hashes():
    rng = np.random.default_rng(7)
    base, step = _unit(rng.normal(size=64)), _unit(rng.normal(size=64))
    a = base
    b = _unit(base + 0.25 * step)
    c = _unit(base + 0.5 * step)
    assert a @ b > 0.95 and b @ c > 0.95 and a @ c < 0.95  # a chain, not a clique
    d = _unit(rng.normal(size=64))  # unrelated
    zero = np.zeros(64, np.float32)  # e.g. two blank images: only their hash can link them
    thumbs = np.stack([a, d, c, zero, b, zero])
    groups = dedup.group_duplicates(["a", "d", "c", "z", "b", "z"], thumbs)
    assert groups[0] == groups[2] == groups[4]
    assert groups[3] == groups[5]
    assert len({groups[0], groups[1], groups[3]}) == 3


def test_grouping_in_blocks_equals_grouping_at_once():
    rng = np.random.default_rng(8)
    thumbs = np.stack([_unit(v) for v in rng.normal(size=(30, 16))])
    thumbs[10] = _unit(thumbs[3] + 0.03 * rng.normal(size=16))
    thumbs[25] = _unit(thumbs[10] + 0.03 * rng.normal(size=16))
    hashes = [str(i) for i in range(30)]
    small = dedup.group_duplicates(hashes, thumbs, block=4)
    large = dedup.group_duplicates(hashes, thumbs, block=1024)
    assert small[3] == small[10] == small[25]
    # Same partition (ids may differ): i~j in one iff in the other.
    assert np.array_equal(small[:, None] == small[None, :], large[:, None] == large[None, :])


def test_grouping_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one thumbnail per hash"):
        dedup.group_duplicates(["a", "b"], np.zeros((3, 4), np.float32))


# --------------------------------------------------------------------------------------------
# split planning
# --------------------------------------------------------------------------------------------


def _synthetic(n_groups_per_class: int, seed: int = 0):
    """Labels/hashes/groups with groups of 1-3 images; group 0 of each class has a byte copy."""
    rng = np.random.default_rng(seed)
    labels, hashes, groups = [], [], []
    gid = 0
    for name in CLASS_NAMES:
        for g in range(n_groups_per_class):
            size = int(rng.integers(1, 4))
            for k in range(size):
                labels.append(name)
                hashes.append(f"{gid}-{k}")
                groups.append(gid)
            if g == 0:
                labels.append(name)
                hashes.append(f"{gid}-0")
                groups.append(gid)
            gid += 1
    return labels, hashes, np.asarray(groups)


def test_plan_split_drops_conflicts_and_counts_duplicates():
    labels = ["glioma", "meningioma", "glioma", "glioma", "pituitary", "no_tumor"]
    hashes = ["x", "x", "y", "y", "z", "w"]
    groups = np.asarray([0, 0, 1, 1, 2, 3])
    plan = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=0)
    assert plan.conflicting_groups == 1
    assert plan.split[0] is None and plan.split[1] is None
    assert plan.removed_conflict == {"glioma": 1, "meningioma": 1, "no_tumor": 0, "pituitary": 0}
    # One of the two byte-identical glioma copies is kept, the other removed and counted.
    assert sorted(s is None for s in plan.split[2:4]) == [False, True]
    assert plan.removed_duplicate["glioma"] == 1
    assert plan.num_groups == 4 and plan.largest_group == 2
    kept = sum(n for per_class in plan.kept.values() for n in per_class.values())
    assert kept == sum(s is not None for s in plan.split) == 3
    assert set(plan.summary()) >= {"kept", "removed_label_conflict", "removed_exact_duplicate"}


def test_plan_split_keeps_groups_whole_and_stratifies():
    labels, hashes, groups = _synthetic(60)
    plan = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=3)
    by_group: dict[int, set] = {}
    for g, s in zip(groups, plan.split):
        if s is not None:
            by_group.setdefault(int(g), set()).add(s)
    assert all(len(splits) == 1 for splits in by_group.values())
    assert sum(plan.removed_duplicate.values()) == len(CLASS_NAMES)
    for name in CLASS_NAMES:
        counts = Counter(s for s, lab in zip(plan.split, labels) if lab == name and s)
        total = sum(counts.values())
        for split, fraction in zip(dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS):
            assert counts[split] == plan.kept[split][name]
            assert abs(counts[split] - fraction * total) <= 3, (name, split, counts)


def test_plan_split_is_deterministic_for_a_seed():
    labels, hashes, groups = _synthetic(30, seed=1)
    first = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=11).split
    again = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=11).split
    other = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=12).split
    assert first == again
    assert first != other


def test_plan_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        dedup.plan_split(["glioma"], ["h"], np.zeros(1, int), CLASS_NAMES, fractions=(0.5, 0.5))


# --------------------------------------------------------------------------------------------
# the real builder on a planted archive
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("archive"))


def _build(planted, data_dir, config="clean"):
    builder = data.build(config, manual_dir=planted.root, data_dir_=data_dir)
    rows = {}
    for split in builder.info.splits:
        for ex in tfds.as_numpy(data.load_split(split, config, data_dir)):
            name = ex["file_name"].decode()
            assert name not in rows, f"{name} appears in two splits"
            rows[name] = {
                "split": split,
                "label": CLASS_NAMES[int(ex["label"])],
                "group": int(ex["duplicate_group"]),
                "image": bytes(ex["image"]),
            }
    return builder, rows


@pytest.fixture(scope="module")
def clean_build(planted, tmp_path_factory):
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(capture):
        builder, rows = _build(planted, tmp_path_factory.mktemp("tfds"))
    return builder, rows, capture.getvalue()


def test_planted_fixture_is_what_it_claims(planted):
    for original, copy in planted.near_copies:
        assert planted.files[original] != planted.files[copy]
        assert _cosine(planted.files[original], planted.files[copy]) > dedup.NEAR_DUPLICATE_COSINE


def test_clean_build_stores_images_unchanged_with_labels_from_folders(planted, clean_build):
    _, rows, _ = clean_build
    for name, row in rows.items():
        assert row["image"] == planted.files[name]
        assert row["label"] == planted.label(name)


def test_clean_build_removes_exact_duplicates(planted, clean_build):
    builder, rows, _ = clean_build
    expected = Counter()
    for original, copy in planted.exact_copies:
        assert (original in rows) != (copy in rows), "exactly one byte-identical copy is kept"
        expected[planted.label(original)] += 1
    removed = builder.info.metadata["removed_exact_duplicate"]
    assert removed == {c: expected[c] for c in CLASS_NAMES}


def test_clean_build_groups_near_duplicates_into_one_split(planted, clean_build):
    _, rows, _ = clean_build
    for original, copy in planted.near_copies:
        assert original in rows and copy in rows
        assert rows[original]["group"] == rows[copy]["group"]
        assert rows[original]["split"] == rows[copy]["split"]


def test_clean_build_drops_label_conflict_groups(planted, clean_build):
    builder, rows, _ = clean_build
    meta = builder.info.metadata
    expected = Counter()
    for a, b in planted.conflicts:
        assert a not in rows and b not in rows
        expected[planted.label(a)] += 1
        expected[planted.label(b)] += 1
    assert meta["conflicting_groups"] == len(planted.conflicts)
    assert meta["removed_label_conflict"] == {c: expected[c] for c in CLASS_NAMES}


def test_clean_build_keeps_everything_else(planted, clean_build):
    _, rows, _ = clean_build
    dropped = {name for pair in planted.conflicts for name in pair}
    paired = {name for pair in planted.exact_copies for name in pair}
    expected = set(planted.readable) - dropped
    # Of each exact pair one survives (checked above); every other readable file is kept.
    assert expected - paired <= set(rows)
    assert len(rows) == len(expected) - len(planted.exact_copies)


def test_clean_build_groups_never_straddle_splits(clean_build):
    _, rows, _ = clean_build
    splits_of_group: dict[int, set] = {}
    for row in rows.values():
        splits_of_group.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits_of_group.values())


def test_clean_build_has_no_near_duplicate_across_splits(clean_build):
    _, rows, _ = clean_build
    test = [r["image"] for r in rows.values() if r["split"] == "test"]
    seen = [r["image"] for r in rows.values() if r["split"] != "test"]
    assert test and seen
    test_thumbs = np.stack([dedup.thumbnail(b) for b in test])
    seen_thumbs = np.stack([dedup.thumbnail(b) for b in seen])
    assert (test_thumbs @ seen_thumbs.T).max() <= dedup.NEAR_DUPLICATE_COSINE
    assert not {dedup.content_hash(b) for b in test} & {dedup.content_hash(b) for b in seen}


def test_clean_build_is_stratified_about_70_15_15(clean_build):
    builder, rows, _ = clean_build
    counts = builder.info.metadata["counts"]
    largest = builder.info.metadata["largest_group"]
    for name in CLASS_NAMES:
        total = sum(counts[s][name] for s in dedup.SPLIT_NAMES)
        for split, fraction in zip(dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS):
            actual = sum(1 for r in rows.values() if r["split"] == split and r["label"] == name)
            assert actual == counts[split][name]
            assert abs(actual - fraction * total) <= largest, (name, split, actual, total)
    for split in dedup.SPLIT_NAMES:
        assert builder.info.splits[split].num_examples == sum(counts[split].values())


def test_corrupt_files_are_reported_by_name_and_skipped(planted, clean_build):
    builder, rows, printed = clean_build
    assert planted.corrupt
    for name in planted.corrupt:
        assert f"skipping unreadable file {name}" in printed
        assert name not in rows
    assert sorted(builder.info.metadata["skipped_unreadable"]) == sorted(planted.corrupt)
    assert "per-split, per-class counts" in printed


def test_clean_build_is_deterministic(planted, clean_build, tmp_path):
    _, rows, _ = clean_build
    _, again = _build(planted, tmp_path)
    assert {n: r["split"] for n, r in again.items()} == {n: r["split"] for n, r in rows.items()}


def test_original_build_keeps_the_published_split(planted, tmp_path):
    builder, rows = _build(planted, tmp_path, config="original")
    assert set(builder.info.splits) == {"train", "test"}
    assert set(rows) == set(planted.readable)
    for name, row in rows.items():
        assert row["split"] == ("train" if name.startswith("Training/") else "test")
    leakage = builder.info.metadata["testing_leakage"]
    testing = [n for n in planted.readable if n.startswith("Testing/")]
    training_hashes = {
        dedup.content_hash(planted.files[n]) for n in planted.readable if n.startswith("Training/")
    }
    assert leakage["testing_images"] == len(testing)
    assert leakage["exact_copy_of_training"] == sum(
        dedup.content_hash(planted.files[n]) in training_hashes for n in testing
    )
    # The pituitary near-copy and the glioma->meningioma conflict both sit in Testing.
    assert leakage["near_duplicate_of_training"] >= 3
    assert leakage["near_duplicate_with_other_label"] == 1
