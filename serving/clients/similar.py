"""Similar confirmed cases through any backend, worded once for the page, the CLI and reports.

The served ``similar_cases`` signature answers with the classification, the query's embedding
and its nearest rows of the index stored in the export. A backend given a ``vector_index``
(:mod:`serving.clients.vector_index`: e.g. a hospital's own confirmed cases, far beyond what a
SavedModel should hold) keeps the signature's classification and embedding and takes the
neighbours from that index instead — the same :class:`SimilarCases` either way.
"""

from __future__ import annotations

from typing import Any

from serving.clients.prediction import SimilarCases, SimilarUnavailable

SIMILAR_UNAVAILABLE = (
    "This model version has no similar-cases index: it was exported without its training data "
    "at hand (or before the index existed). Re-export the run where its dataset is built "
    "(`tumorlib export runs/<name>`) to add it."
)


def similar_cases(backend: Any, image: bytes, k: int, version: int | None) -> SimilarCases | str:
    """``k`` nearest confirmed cases for one image, or why there are none (never raises)."""
    if k < 1:
        return "Ask for at least one similar case."
    try:
        found: SimilarCases = backend._similar(image, k, version)
    except SimilarUnavailable:
        return SIMILAR_UNAVAILABLE
    except Exception as err:  # noqa: BLE001 - shown next to the image, never a traceback
        # BackendError and TFServingError carry a message for the user; others their type.
        detail = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        return f"Similar cases could not be found: {detail}"
    if backend.vector_index is None:
        return found
    try:
        cases = backend.vector_index.cases(found.embedding[None, :], k)[0]
    except Exception as err:  # noqa: BLE001 - the answer stands; the neighbours do not
        return f"The similar-cases index could not be searched: {type(err).__name__}: {err}"
    return SimilarCases(
        found.probabilities, found.class_index, found.class_name, found.embedding, cases
    )
