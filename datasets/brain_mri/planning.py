"""From groups to splits: which split each image goes to, and the metadata the build records.

Shared by the local build (in-process) and the Beam build (one global step), so both produce the
same splits from the same groups. ``images`` need only ``file_name``, ``source_split`` and
``label`` attributes (:class:`brain_mri.sartaj.SourceImage` or a bytes-free stand-in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dedup
from .labels import CLASS_NAMES

# Changing the seed or the grouping changes the split: bump the builder's VERSION with it.
SPLIT_SEED = 20201


def split_names(config: str) -> list[str]:
    """The splits a config has."""
    return list(dedup.SPLIT_NAMES) if config == "clean" else ["train", "test"]


def plan_config(
    config: str, images: Sequence[Any], hashes: Sequence[str], groups: np.ndarray
) -> tuple[list[str | None], dict[str, Any]]:
    """``(split per image or None when dropped, metadata)`` for ``config``."""
    labels = [image.label for image in images]
    metadata: dict[str, Any] = {}
    assignment: list[str | None]
    if config == "clean":
        plan = dedup.plan_split(labels, hashes, groups, CLASS_NAMES, seed=SPLIT_SEED)
        assignment = plan.split
        metadata |= {"split_seed": SPLIT_SEED, **plan.summary()}
    else:
        assignment = ["train" if i.source_split == "Training" else "test" for i in images]
        metadata |= {"testing_leakage": testing_leakage(images, hashes, groups)}
    metadata["near_duplicate_cosine"] = dedup.NEAR_DUPLICATE_COSINE
    metadata["counts"] = {
        split: {
            c: sum(1 for a, lab in zip(assignment, labels) if a == split and lab == c)
            for c in CLASS_NAMES
        }
        for split in split_names(config)
    }
    return assignment, metadata


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


def example(image: Any, data: bytes, group: int) -> tuple[str, dict[str, Any]]:
    """The ``(key, features)`` pair both builds write for one image."""
    return (
        image.file_name,
        {
            "image": data,
            "label": image.label,
            "file_name": image.file_name,
            "source_split": image.source_split,
            "duplicate_group": int(group),
        },
    )
