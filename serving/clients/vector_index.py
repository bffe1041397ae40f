"""Nearest confirmed cases in an index too large for the SavedModel: exact or FAISS.

The export's own index (a few thousand training slices) is searched exactly inside the graph.
A hospital's confirmed cases from the feedback loop grow to 10^5–10^7 slices: that index lives
beside the server, and the signature's ``embedding`` output is the query. Both kinds here answer
:meth:`search` (row numbers and cosine similarities, nearest first) and :meth:`cases`
(:class:`~serving.clients.prediction.SimilarCase` objects with the rows' labels and thumbnails).

- :class:`ExactIndex`: NumPy brute force, exact; fine to ~10^5 rows (bench/retrieval.py).
- :class:`FaissIndex`: FAISS HNSW on inner product (= cosine for unit rows), approximate;
  ``ef_search`` trades recall for speed. What to use when: docs/serving.md, "Similar cases".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.clients.prediction import SimilarCase
from serving.common.case_index import CaseIndex, brute_force

FAISS_FILE = "faiss_hnsw.index"


class ExactIndex:
    """Brute-force cosine search over a :class:`CaseIndex` (exact)."""

    def __init__(self, index: CaseIndex) -> None:
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return brute_force(self.index.embeddings, queries, k)

    def cases(self, queries: np.ndarray, k: int) -> list[tuple[SimilarCase, ...]]:
        return rows_to_cases(self.index, *self.search(queries, k))


class FaissIndex(ExactIndex):
    """FAISS ``IndexHNSWFlat`` with inner-product metric over the same rows."""

    def __init__(
        self,
        index: CaseIndex,
        *,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        built: Any = None,
    ) -> None:
        import faiss

        super().__init__(index)
        if built is None:
            built = faiss.IndexHNSWFlat(index.dim, m, faiss.METRIC_INNER_PRODUCT)
            built.hnsw.efConstruction = ef_construction
            built.add(index.embeddings)
        built.hnsw.efSearch = ef_search
        self.faiss_index = built

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.faiss_index.search(queries, min(int(k), len(self.index)))
        return rows.astype(np.int64), scores

    def save(self, folder: Path) -> Path:
        """The rows (:meth:`CaseIndex.save`) and the FAISS graph beside them."""
        import faiss

        self.index.save(folder)
        faiss.write_index(self.faiss_index, str(folder / FAISS_FILE))
        return folder

    @classmethod
    def load(cls, folder: Path, *, ef_search: int = 64) -> FaissIndex:
        import faiss

        built = faiss.read_index(str(folder / FAISS_FILE))
        return cls(CaseIndex.load(folder), ef_search=ef_search, built=built)


def rows_to_cases(
    index: CaseIndex, rows: np.ndarray, scores: np.ndarray
) -> list[tuple[SimilarCase, ...]]:
    """Search results as cases (a FAISS row of -1, "not enough neighbours", is dropped)."""
    return [
        tuple(
            SimilarCase(
                int(r),
                float(s),
                index.items[r]["label"],
                index.items[r]["source"],
                index.items[r]["licence"],
                index.thumbnails[r],
            )
            for r, s in zip(row, score)
            if r >= 0
        )
        for row, score in zip(rows, scores)
    ]


def open_index(folder: Path) -> ExactIndex:
    """The index saved in ``folder``: FAISS when its graph is there, else exact."""
    if (folder / FAISS_FILE).is_file():
        return FaissIndex.load(folder)
    return ExactIndex(CaseIndex.load(folder))
