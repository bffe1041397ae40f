"""The four diagnostic classes as the library sees them.

The dataset defines the names and their order (:data:`brain_mri.labels.CLASS_NAMES`, the
builder's ``ClassLabel``); the library re-reads them from there rather than spelling them again,
so an index means the same class in the data, the model head, evaluation reports, the serving
signature and the upload page. This module adds what people and the model need on top: the
count and plain display names. TensorFlow-free.
"""

from __future__ import annotations

from brain_mri.labels import CLASS_NAMES

NUM_CLASSES: int = len(CLASS_NAMES)

# Plain words for people (reports, the upload page).
DISPLAY_NAMES: dict[str, str] = {
    "glioma": "Glioma",
    "meningioma": "Meningioma",
    "no_tumor": "No tumour",
    "pituitary": "Pituitary tumour",
}


def class_index(name: str) -> int:
    """Index of ``name`` in :data:`CLASS_NAMES`; a clear error for anything else."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown class {name!r}; expected one of {', '.join(CLASS_NAMES)}"
        ) from None
