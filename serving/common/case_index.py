"""The stored index of confirmed cases: unit embeddings, one item per row, small thumbnails.

Written once by the export into the SavedModel's ``assets/similar_cases/`` and read by whoever
needs the rows without TensorFlow: the vector-index backends (:mod:`serving.clients.vector_index`),
the benchmark, the tests' brute-force check. Layout::

    embeddings.npy   float32 [M, D], each row of unit norm (tumorlib.model.embedding)
    items.json       {"description": {...}, "items": [{"label", "source", "sequence", "licence"}]}
    thumbnails.zip   000000.png ... one small grey PNG per row (stored, not deflated)

No patient identifier or file name is stored: a neighbour is shown by its picture, confirmed
class, collection and licence only. TensorFlow-free.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDINGS_FILE = "embeddings.npy"
ITEMS_FILE = "items.json"
THUMBNAILS_FILE = "thumbnails.zip"
ITEM_FIELDS = ("label", "source", "sequence", "licence")


@dataclass
class CaseIndex:
    """Rows of confirmed cases; ``embeddings[i]`` belongs to ``items[i]`` and ``thumbnails[i]``."""

    embeddings: np.ndarray
    items: list[dict[str, str]]
    thumbnails: list[bytes]
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [M, D], got {self.embeddings.shape}")
        count = len(self.embeddings)
        if len(self.items) != count or len(self.thumbnails) != count:
            raise ValueError(
                f"{count} embeddings, {len(self.items)} items and {len(self.thumbnails)} "
                "thumbnails: every row needs all three"
            )

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def column(self, name: str) -> list[str]:
        """One item field for every row (``label``, ``source``, ``sequence`` or ``licence``)."""
        return [str(item.get(name, "")) for item in self.items]

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / EMBEDDINGS_FILE, self.embeddings)
        payload = {"description": self.description, "items": self.items}
        (folder / ITEMS_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        with zipfile.ZipFile(folder / THUMBNAILS_FILE, "w", zipfile.ZIP_STORED) as archive:
            for i, png in enumerate(self.thumbnails):
                archive.writestr(f"{i:06d}.png", png)
        return folder

    @classmethod
    def load(cls, folder: Path) -> CaseIndex:
        embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
        payload = json.loads((folder / ITEMS_FILE).read_text())
        with zipfile.ZipFile(folder / THUMBNAILS_FILE) as archive:
            thumbnails = [archive.read(f"{i:06d}.png") for i in range(len(embeddings))]
        return cls(embeddings, payload["items"], thumbnails, payload.get("description", {}))


def brute_force(
    embeddings: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-``k`` of unit ``queries`` ``[Q, D]``: ``(indices [Q, k], scores)``.

    Ties go to the lower row, as ``tf.math.top_k`` breaks them, so the signature and this agree.
    """
    scores = np.asarray(queries, np.float32) @ np.asarray(embeddings, np.float32).T
    k = min(int(k), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(scores, order, axis=1)


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG from its header (the thumbnails' round-trip check)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return image.size
