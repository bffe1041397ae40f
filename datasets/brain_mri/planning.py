"""From groups to splits: which split each image goes to, and the metadata the build records.

Shared by the local build (in-process) and the Beam build (one global step), so both produce the
same splits from the same groups. ``images`` need only ``file_name``, ``source_split`` and
``label`` attributes (:class:`brain_mri.sartaj.SourceImage` or a bytes-free stand-in).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dedup, lgg
from .labels import CLASS_NAMES

# Changing the seed or the grouping changes the split: bump the builder's VERSION with it.
SPLIT_SEED = 20201
# The configs: SARTAJ's leak-free split, its published split, and the leak-free split plus the
# TCGA-LGG archive's patients (FLAIR and pre-contrast T1), split by patient.
MULTI_SEQUENCE = "multi_sequence"
CONFIGS: tuple[str, ...] = ("clean", "original", MULTI_SEQUENCE)
# Per-example `source` and `sequence` values (ClassLabel names, in index order).
SOURCES: tuple[str, ...] = ("sartaj", lgg.SOURCE_NAME)
SEQUENCES: tuple[str, ...] = ("unknown", *lgg.SEQUENCES.values())


def split_names(config: str) -> list[str]:
    """The splits a config has."""
    return ["train", "test"] if config == "original" else list(dedup.SPLIT_NAMES)


def plan_config(
    config: str, images: Sequence[Any], hashes: Sequence[str], groups: np.ndarray
) -> tuple[list[str | None], dict[str, Any]]:
    """``(split per image or None when dropped, metadata)`` for ``config``."""
    labels = [image.label for image in images]
    metadata: dict[str, Any] = {}
    assignment: list[str | None]
    if config != "original":  # multi_sequence: SARTAJ's part is exactly clean's
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


def plan_lgg(slices: Sequence[Any]) -> tuple[list[str], dict[str, Any]]:
    """``(split per slice, metadata)`` of the TCGA-LGG archive: whole patients per split."""
    patients = lgg.plan_patients(slices, dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS, SPLIT_SEED)
    assignment = [patients[s.patient] for s in slices]
    per_split = {
        split: sorted(p for p, a in patients.items() if a == split) for split in dedup.SPLIT_NAMES
    }
    metadata = {
        "split_seed": SPLIT_SEED,
        "stratified_by": "TCGA tissue-source site",
        "patients": {split: len(ps) for split, ps in per_split.items()},
        "patients_by_split": per_split,
        "licence": lgg.LICENCE,
        "citation": lgg.CITATION,
    }
    return assignment, metadata


def merge_lgg(
    metadata: dict[str, Any], sartaj: Sequence[tuple[Any, str | None]], lgg_part: Sequence[tuple]
) -> dict[str, Any]:
    """The multi-sequence config's metadata: SARTAJ's plan, the archive's, and the counts.

    ``sartaj`` and ``lgg_part`` are ``(image, split or None)`` pairs; ``counts`` then covers both
    sources, ``counts_by_source`` is split x source x sequence x class.
    """
    rows = [(i, a) for i, a in [*sartaj, *lgg_part] if a is not None]
    by_source: dict[str, dict] = {}
    for image, split in rows:
        source, sequence = example_source(image)
        per_class = by_source.setdefault(split, {}).setdefault(source, {})
        per_class = per_class.setdefault(sequence, {c: 0 for c in CLASS_NAMES})
        per_class[image.label] += 1
    counts = {
        split: {c: sum(1 for i, a in rows if a == split and i.label == c) for c in CLASS_NAMES}
        for split in dedup.SPLIT_NAMES
    }
    return {**metadata, "counts": counts, "counts_by_source": by_source}


def example_source(image: Any) -> tuple[str, str]:
    """``(source, sequence)`` of an image: a TCGA-LGG slice knows both; SARTAJ's are unlabelled."""
    if isinstance(image, lgg.LggSlice):
        return lgg.SOURCE_NAME, image.sequence
    return "sartaj", "unknown"


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
    """The ``(key, features)`` pair both builds write for one image (SARTAJ or TCGA-LGG)."""
    source, sequence = example_source(image)
    return (
        image.file_name,
        {
            "image": data,
            "label": image.label,
            "file_name": image.file_name,
            # TCGA-LGG slices have no published split: they count as Training material.
            "source_split": getattr(image, "source_split", "Training"),
            "duplicate_group": int(group),
            "source": source,
            "sequence": sequence,
            "patient": getattr(image, "patient", ""),
        },
    )
