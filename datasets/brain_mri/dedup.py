"""Duplicate and near-duplicate grouping, and a leak-free group-wise stratified split.

The SARTAJ archive's published split leaks: test images reappear in training byte-identical,
re-encoded, resized, or as the neighbouring slice of the same scan, sometimes under another
label. There are no patient IDs, so image similarity stands in for them:

* exact duplicates share a SHA-256 of their bytes;
* near-duplicates have mean-centred, unit-norm 32x32 greyscale thumbnails whose cosine similarity
  exceeds a threshold. Thumbnails of that size survive JPEG re-encoding and resizing unchanged in
  substance, and adjacent slices of one scan look alike at that scale too — which is what we want
  to catch. Centring removes global brightness offsets; normalising removes contrast scaling.

Pairs are linked and grouped transitively (connected components). A group whose members carry
different labels is dropped as untrustworthy; every other group goes wholly into one split, so no
test image has a near-duplicate in train or validation.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

THUMBNAIL_SIZE = 32
# Pairs above this cosine are linked. On the SARTAJ archive 0.95 gives 1,781 groups (largest 72);
# 0.94 already chains unrelated slices into one group of 267, so the bar sits at 0.95.
NEAR_DUPLICATE_COSINE = 0.95
SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.70, 0.15, 0.15)


class UnreadableImageError(ValueError):
    """Raised for bytes that are not a decodable image (truncated, corrupt, not an image)."""


def content_hash(data: bytes) -> str:
    """SHA-256 of the raw bytes: equal for byte-identical files."""
    return hashlib.sha256(data).hexdigest()


def thumbnail(data: bytes, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """Mean-centred, L2-normalised ``size x size`` greyscale thumbnail as a flat float32 vector.

    Raises :class:`UnreadableImageError` when the bytes cannot be decoded completely. A constant
    image (all one grey) has no direction and is returned as zeros, which matches nothing.
    """
    # A truncated file must be rejected, not padded with grey: other code in the process (TFDS's
    # preview helpers, for one) may have switched Pillow's lenient global mode on.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            grey = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    except Exception as error:  # PIL raises many types for bad input: normalise them.
        raise UnreadableImageError(f"cannot decode image: {error}") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    vector = np.asarray(grey, dtype=np.float32).ravel()
    vector -= vector.mean()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else np.zeros_like(vector)


# float32 dot products of unit 1024-vectors are good to ~1e-5; pairs within this margin of the
# threshold are decided again in float64, so the decision does not depend on how BLAS happened to
# block the product (the Beam build multiplies other block shapes than the local build).
_RECHECK_MARGIN = 1e-4


def near_duplicate_pairs(
    a: np.ndarray,
    b: np.ndarray,
    threshold: float = NEAR_DUPLICATE_COSINE,
    offset_a: int = 0,
    offset_b: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` (with offsets added) whose thumbnail cosine exceeds ``threshold``.

    One block of the all-pairs search. The result for a pair is the same whatever blocks it was
    computed in, which lets a distributed build reproduce the local one exactly.
    """
    sims = a.astype(np.float32, copy=False) @ b.astype(np.float32, copy=False).T
    r, c = np.nonzero(sims > threshold - _RECHECK_MARGIN)
    near = np.abs(sims[r, c] - threshold) <= _RECHECK_MARGIN
    if near.any():
        exact = np.einsum("ij,ij->i", a[r[near]].astype(np.float64), b[c[near]].astype(np.float64))
        keep = np.ones(len(r), dtype=bool)
        keep[near] = exact > threshold
        r, c = r[keep], c[keep]
    return r + offset_a, c + offset_b


def groups_from_pairs(hashes: Sequence[str], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected components of the near-duplicate pairs plus equal-hash links.

    Component ids are numbered by their smallest member (scipy's order), so they depend only on
    the partition, not on the order in which pairs were found.
    """
    n = len(hashes)
    first_with_hash: dict[str, int] = {}
    extra_r, extra_c = [], []
    for i, digest in enumerate(hashes):
        j = first_with_hash.setdefault(digest, i)
        if j != i:
            extra_r.append(i)
            extra_c.append(j)
    r = np.concatenate([np.asarray(rows, dtype=np.int64), np.asarray(extra_r, dtype=np.int64)])
    c = np.concatenate([np.asarray(cols, dtype=np.int64), np.asarray(extra_c, dtype=np.int64)])
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def group_duplicates(
    hashes: Sequence[str],
    thumbnails: np.ndarray,
    threshold: float = NEAR_DUPLICATE_COSINE,
    block: int = 1024,
) -> np.ndarray:
    """Group indices transitively by identical hash or thumbnail cosine > ``threshold``.

    Returns an ``int`` array of group ids, one per input. Cosine similarities are computed in
    blocks so memory stays bounded for large archives.
    """
    n = len(hashes)
    if thumbnails.shape[0] != n:
        raise ValueError("one thumbnail per hash is required")
    rows: list[np.ndarray] = [np.zeros(0, np.int64)]
    cols: list[np.ndarray] = [np.zeros(0, np.int64)]
    thumbs = thumbnails.astype(np.float32, copy=False)
    for start in range(0, n, block):
        r, c = near_duplicate_pairs(thumbs[start : start + block], thumbs, threshold, start)
        rows.append(r)
        cols.append(c)
    return groups_from_pairs(hashes, np.concatenate(rows), np.concatenate(cols))


@dataclass
class SplitPlan:
    """Where each image goes, and what was removed on the way."""

    split: list[str | None]  # per image: one of SPLIT_NAMES, or None when dropped
    num_groups: int
    largest_group: int
    conflicting_groups: int
    removed_conflict: dict[str, int] = field(default_factory=dict)  # per class
    removed_duplicate: dict[str, int] = field(default_factory=dict)  # per class
    kept: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count

    def summary(self) -> dict:
        """A JSON-friendly summary for dataset metadata and reports."""
        return {
            "num_groups": self.num_groups,
            "largest_group": self.largest_group,
            "conflicting_groups": self.conflicting_groups,
            "removed_label_conflict": self.removed_conflict,
            "removed_exact_duplicate": self.removed_duplicate,
            "kept": self.kept,
        }


def plan_split(
    labels: Sequence[str],
    hashes: Sequence[str],
    groups: np.ndarray,
    class_names: Sequence[str],
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
) -> SplitPlan:
    """Assign whole groups to train/validation/test, stratified by class, reproducibly.

    * Groups with more than one label are dropped (and counted per class).
    * Within a kept group, byte-identical copies keep only their first occurrence: an exact copy
      adds no information, only weight.
    * Per class, groups are visited in a seeded random order and each goes to the split that is
      furthest below its target share of that class's images, so large groups cannot push a
      split far off its target.
    """
    if len(fractions) != len(SPLIT_NAMES) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be {len(SPLIT_NAMES)} numbers summing to 1")
    n = len(labels)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)

    split: list[str | None] = [None] * n
    removed_conflict = {c: 0 for c in class_names}
    removed_duplicate = {c: 0 for c in class_names}
    by_class: dict[str, list[list[int]]] = {c: [] for c in class_names}
    conflicting = 0
    for idx in members.values():
        group_labels = {labels[i] for i in idx}
        if len(group_labels) > 1:
            conflicting += 1
            for i in idx:
                removed_conflict[labels[i]] += 1
            continue
        seen: set[str] = set()
        unique = []
        for i in idx:
            if hashes[i] in seen:
                removed_duplicate[labels[i]] += 1
            else:
                seen.add(hashes[i])
                unique.append(i)
        by_class[labels[idx[0]]].append(unique)

    rng = np.random.default_rng(seed)
    kept = {s: {c: 0 for c in class_names} for s in SPLIT_NAMES}
    for name in class_names:
        class_groups = by_class[name]
        # Sort first so the seeded permutation does not depend on dict iteration order.
        class_groups.sort(key=lambda idx: min(idx))
        order = rng.permutation(len(class_groups))
        total = sum(len(g) for g in class_groups)
        counts = np.zeros(len(SPLIT_NAMES))
        targets = np.asarray(fractions) * total
        for k in order:
            idx = class_groups[k]
            deficit = (targets - counts) / np.maximum(targets, 1e-9)
            s = int(np.argmax(deficit))
            counts[s] += len(idx)
            for i in idx:
                split[i] = SPLIT_NAMES[s]
            kept[SPLIT_NAMES[s]][name] += len(idx)

    sizes = [len(v) for v in members.values()]
    return SplitPlan(
        split=split,
        num_groups=len(members),
        largest_group=max(sizes) if sizes else 0,
        conflicting_groups=conflicting,
        removed_conflict=removed_conflict,
        removed_duplicate=removed_duplicate,
        kept=kept,
    )
