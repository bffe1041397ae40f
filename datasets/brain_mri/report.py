"""Human-readable statistics of a built ``brain_mri`` config.

Shared by the TFDS builder (printed during ``tfds build``) and the main job (printed for a dataset
that is already built, from the metadata the builder stored).
"""

from __future__ import annotations

from .labels import CLASS_NAMES


def format_report(config: str, metadata: dict) -> str:
    """Per-split, per-class counts and what de-duplication removed, as a printable table."""
    counts = metadata["counts"]
    width = max(len(c) for c in CLASS_NAMES)
    lines = [f"brain_mri/{config}: per-split, per-class counts"]
    lines.append(
        f"  {'split':<11}" + "".join(f"{c:>{width + 2}}" for c in CLASS_NAMES) + "   total"
    )
    for split, per_class in counts.items():
        row = "".join(f"{per_class[c]:>{width + 2}}" for c in CLASS_NAMES)
        lines.append(f"  {split:<11}{row}{sum(per_class.values()):>8}")
    if "num_groups" in metadata:
        lines.append(
            f"  near-duplicate groups: {metadata['num_groups']} "
            f"(largest {metadata['largest_group']}); "
            f"label-conflict groups dropped: {metadata['conflicting_groups']}"
        )
        for key in ("removed_label_conflict", "removed_exact_duplicate"):
            lines.append(f"  {key}: " + ", ".join(f"{c} {n}" for c, n in metadata[key].items()))
    if "testing_leakage" in metadata:
        lines.append(f"  Testing vs Training leakage: {metadata['testing_leakage']}")
    if "lgg" in metadata:
        patients = metadata["lgg"]["patients"]
        lines.append(
            "  TCGA-LGG patients per split: "
            + ", ".join(f"{split} {n}" for split, n in patients.items())
            + f" (licence {metadata['lgg']['licence'].split(' (')[0]})"
        )
    for split, sources in metadata.get("counts_by_source", {}).items():
        for source, sequences in sources.items():
            for sequence, per_class in sequences.items():
                row = "".join(f"{per_class[c]:>{width + 2}}" for c in CLASS_NAMES)
                name = f"{split}/{source}/{sequence}"
                lines.append(f"  {name:<36}{row}{sum(per_class.values()):>8}")
    if metadata["skipped_unreadable"]:
        lines.append(f"  skipped unreadable: {len(metadata['skipped_unreadable'])} files")
    return "\n".join(lines)
