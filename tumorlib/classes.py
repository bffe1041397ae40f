"""The four diagnostic classes, defined once for the whole project.

Every consumer (the TFDS builder's ``ClassLabel``, the model head, evaluation reports, the
serving signature and the upload page) reads the names and their order from here, so an index
always means the same class everywhere.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")
NUM_CLASSES: int = len(CLASS_NAMES)

# Folder names used by the SARTAJ archive, mapped to our class names.
SOURCE_DIR_TO_CLASS: dict[str, str] = {
    "glioma_tumor": "glioma",
    "meningioma_tumor": "meningioma",
    "no_tumor": "no_tumor",
    "pituitary_tumor": "pituitary",
}

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
