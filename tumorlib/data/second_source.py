"""The second-source slices: real brain MRI from two other collections, for measuring only.

``../shared/data/second_source_mri.zip`` holds no-tumour slices from Br35H and tumour slices (type
unknown) from another public set. They answer the questions a new hospital's data raises: does
the safety layer accept its slices as brain MRI, does abstention still answer most of them, and
is the tumour / no-tumour call still right. Thresholds may be *chosen* with them; model weights
are never fitted on them, and every figure on them is reported separately.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorlib.data.shared import shared_data_dir

ARCHIVE_NAME = "second_source_mri.zip"
# folder inside the archive -> (collection, has a tumour)
COLLECTIONS = {
    "no_tumor_br35h": ("Br35H", False),
    "tumor_navoneel": ("Navoneel", True),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class SecondSource:
    """The slices as encoded bytes, with what is known about each."""

    names: list[str]
    images: list[bytes]
    tumour: np.ndarray  # bool [N]
    collection: list[str]

    def __len__(self) -> int:
        return len(self.names)


def default_archive() -> Path | None:
    """The archive in the shared data folder, if there is one."""
    folder = shared_data_dir()
    path = None if folder is None else folder / ARCHIVE_NAME
    return path if path is not None and path.is_file() else None


def load_second_source(path: str | Path | None = None) -> SecondSource:
    """Every image of the archive (sorted by name), with its tumour label and collection."""
    path = Path(path) if path is not None else default_archive()
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{ARCHIVE_NAME} not found (looked in $TUMORLIB_SHARED/data and ../shared/data); "
            "pass its path"
        )
    names, images, tumour, collection = [], [], [], []
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            parts = Path(info.filename).parts
            if info.is_dir() or not info.filename.lower().endswith(IMAGE_SUFFIXES):
                continue
            folder = next((p for p in parts if p in COLLECTIONS), None)
            if folder is None:
                continue
            name, has_tumour = COLLECTIONS[folder]
            names.append(info.filename)
            images.append(archive.read(info))
            tumour.append(has_tumour)
            collection.append(name)
    if not names:
        raise ValueError(f"{path} holds no images under {sorted(COLLECTIONS)}")
    return SecondSource(names, images, np.array(tumour, bool), collection)


def predict_images(model, images: list[bytes], image_size: int, batch_size: int = 32) -> np.ndarray:
    """Raw probabilities ``[N, C]`` of encoded images through the one preprocessing."""
    import tensorflow as tf

    from tumorlib.images.preprocessing import preprocess_bytes

    ds = (
        tf.data.Dataset.from_tensor_slices(tf.constant(images))
        .map(lambda b: preprocess_bytes(b, image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
    )
    return np.asarray(model.predict(ds, verbose=0))


def tumour_answers(probabilities: np.ndarray, no_tumour_index: int) -> np.ndarray:
    """Bool ``[N]``: the model says *some* tumour (its argmax is not "no tumour")."""
    return np.asarray(probabilities).argmax(axis=1) != no_tumour_index
