"""A small client for TensorFlow Serving's REST API (real server or ``python -m serving.local``).

Sends images as ``{"b64": ...}`` in the row (``instances``) format TF Serving documents, reads the
``serving_default`` outputs back into :class:`~serving.clients.prediction.Prediction` objects (and
the ``explain`` signature's into :class:`~serving.clients.prediction.Explanation`), and turns
TF Serving's ``{"error": ...}`` bodies into exceptions that carry the server's message and HTTP
status. Every call follows the one client policy (:mod:`serving.common.http_policy`): ``timeout``
is the whole call's budget, retries and back-off included (a command's ``deadline`` cuts it
further), connection failures and "try again" answers (429, 503) are retried within it — a
``:predict`` is a pure computation, so its POST counts as idempotent — and an answer larger than
``max_response_bytes`` is refused while it streams. Other errors are the caller's to fix and are
raised at once. The URL appears in messages without credentials (:func:`safe_url`).

Deliberately free of TensorFlow: a thin web front end can use it without importing TF.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import requests

from serving.clients.prediction import (
    ExplainUnavailable,
    Explanation,
    Prediction,
    SimilarCases,
    SimilarUnavailable,
)
from serving.common.deadline import Deadline, DeadlineExceeded
from serving.common.http_policy import ClientPolicy, ResponseTooLarge, make_session
from tumorlib.contracts.display import printable, safe_url, without_credentials
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    MAX_SIMILAR,
    METADATA_SIGNATURE,
    MODEL_NAME,
    SIMILAR_SIGNATURE,
)

RETRY_STATUSES = frozenset({429, 503})
# Grad-CAM heatmaps of a full chunk as JSON are tens of MB; nothing TF Serving answers is larger.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class TFServingError(RuntimeError):
    """TF Serving answered with an error; ``message`` is its ``{"error": ...}`` text."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(f"{message} (HTTP {status_code})" if status_code else message)
        self.message = message
        self.status_code = status_code


class TFServingUnavailable(TFServingError):
    """The server could not be reached (refused, timed out) or said it is unavailable."""


class ServerQueries:
    """What both TF Serving clients (REST and gRPC) derive from ``status`` and ``metadata``."""

    _class_names: dict[int | None, tuple[str, ...]]

    def status(self, version: int | None = None) -> dict:
        raise NotImplementedError

    def metadata(self, version: int | None = None) -> dict:
        raise NotImplementedError

    def is_healthy(self) -> bool:
        """True when some version of the model is AVAILABLE."""
        try:
            statuses = self.status()["model_version_status"]
        except (TFServingError, KeyError, ValueError):
            return False
        return any(s.get("state") == "AVAILABLE" for s in statuses)

    def class_names(self, version: int | None = None) -> tuple[str, ...]:
        """The model's class order (fetched once per version: fixed for the project)."""
        if version not in self._class_names:
            self._class_names[version] = tuple(self.metadata(version)["class_names"])
        return self._class_names[version]


class TFServingClient(ServerQueries):
    """Talk to one model on a TF Serving REST endpoint."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8501",
        model_name: str = MODEL_NAME,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        deadline: Deadline | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        """``timeout``: seconds for one call with its retries; ``deadline``: the command's."""
        self.base_url = base_url.rstrip("/")
        self.display_url = safe_url(self.base_url)  # for messages, labels and the audit record
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.policy = ClientPolicy(
            call_s=timeout,
            command=deadline,
            max_response_bytes=max_response_bytes,
            retries=retries,
            backoff_s=backoff,
            retry_statuses=RETRY_STATUSES,
            idempotent={"GET", "HEAD", "POST"},  # :predict and the metadata POST change nothing
        )
        self._session = session or make_session(self.policy)
        self._metadata_cache: dict[int, dict] = {}
        self._class_names: dict[int | None, tuple[str, ...]] = {}

    # -- the shared interface ----------------------------------------------------------------

    def predict(self, images: Sequence[bytes], version: int | None = None) -> list[Prediction]:
        """Classify encoded JPEG/PNG images; one :class:`Prediction` per image, in order.

        ``abstain``, ``in_distribution`` and ``gate_score`` are set when the served export has
        those outputs, ``None`` otherwise.
        """
        rows = self._predict_rows(images, version, signature=None)
        class_names = self.class_names(version)
        return [Prediction.from_row(row, class_names) for row in rows]

    def explain(self, images: Sequence[bytes], version: int | None = None) -> list[Explanation]:
        """Grad-CAM for encoded images via the ``explain`` signature; ``.heatmap`` is [S, S].

        Raises :class:`ExplainUnavailable` when the served version has no such signature.
        """
        try:
            rows = self._predict_rows(images, version, signature=EXPLAIN_SIGNATURE)
        except TFServingError as err:
            if err.status_code == 400 and "not found in signature def" in err.message:
                raise ExplainUnavailable(
                    f"the served model has no {EXPLAIN_SIGNATURE!r} signature ({err.message}); "
                    "re-export the run to add Grad-CAM"
                ) from None
            raise
        class_names = self.class_names(version)
        return [Explanation.from_row(row, class_names) for row in rows]

    def similar(
        self, images: Sequence[bytes], k: int = MAX_SIMILAR, version: int | None = None
    ) -> list[SimilarCases]:
        """The ``k`` nearest confirmed cases per image (``similar_cases`` signature).

        Raises :class:`SimilarUnavailable` when the served version has no such signature.
        """
        try:
            rows = self._predict_rows(images, version, signature=SIMILAR_SIGNATURE)
        except TFServingError as err:
            if err.status_code == 400 and "not found in signature def" in err.message:
                raise SimilarUnavailable(
                    f"the served model has no {SIMILAR_SIGNATURE!r} signature ({err.message})"
                ) from None
            raise
        class_names = self.class_names(version)
        return [SimilarCases.from_row(row, class_names, k) for row in rows]

    def status(self, version: int | None = None) -> dict:
        """TF Serving's model status: ``{"model_version_status": [...]}``."""
        return self._request("GET", self._model_path(version))

    def metadata(self, version: int | None = None) -> dict:
        """The model's ``assets/metadata.json`` (class names, versions, metrics, temperature).

        TF Serving exposes no assets over REST, so the exporter adds a ``metadata`` signature
        that returns the file's content; this calls it. Cached for explicit versions only: the
        unversioned answer changes when the server picks up a new export.
        """
        if version is not None and version in self._metadata_cache:
            return self._metadata_cache[version]
        body = {"signature_name": METADATA_SIGNATURE, "instances": ["metadata"]}
        result = self._request("POST", self._model_path(version) + ":predict", body)
        metadata = json.loads(result["predictions"][0])
        if version is not None:
            self._metadata_cache[version] = metadata
        return metadata

    def signature_metadata(self, version: int | None = None) -> dict:
        """TF Serving's metadata API: the SignatureDef map, ``GET .../metadata``."""
        return self._request("GET", self._model_path(version) + "/metadata")

    # -- plumbing ----------------------------------------------------------------------------

    def _predict_rows(
        self, images: Sequence[bytes], version: int | None, signature: str | None
    ) -> list[dict]:
        images = list(images)
        if not images:
            return []
        for i, image in enumerate(images):
            if not isinstance(image, bytes | bytearray):
                raise TypeError(f"images[{i}] must be encoded image bytes, not {type(image)}")
        body: dict[str, Any] = {
            "instances": [{"b64": base64.b64encode(b).decode("ascii")} for b in images]
        }
        if signature:
            body["signature_name"] = signature
        return self._request("POST", self._model_path(version) + ":predict", body)["predictions"]

    def _model_path(self, version: int | None) -> str:
        path = f"/v1/models/{self.model_name}"
        if version is not None:
            path += f"/versions/{int(version)}"
        return path

    def _request(self, method: str, path: str, body: Any = None) -> dict:
        url = self.base_url + path
        shown = self.display_url + path
        try:
            response = self._session.request(method, url, json=body)
        except DeadlineExceeded as err:
            raise TFServingUnavailable(
                f"TF Serving at {shown} did not answer within {err.budget_s:g} s"
            ) from None
        except ResponseTooLarge as err:
            raise TFServingError(f"TF Serving at {shown} answered too much ({err})") from None
        except (requests.ConnectionError, requests.Timeout) as err:
            detail = printable(without_credentials(str(err), self.base_url))
            raise TFServingUnavailable(f"cannot reach TF Serving at {shown}: {detail}") from None
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError:
                raise TFServingError(f"{shown} returned invalid JSON", 200) from None
        error = _error_message(response)
        cls = TFServingUnavailable if response.status_code == 503 else TFServingError
        raise cls(error, response.status_code)


def _error_message(response: requests.Response) -> str:
    """TF Serving's ``{"error": "..."}`` text; anything else is not repeated to the user.

    A proxy's or a foreign server's body (HTML, stack traces, internal addresses) is not for a
    clinician's screen: only its HTTP status is reported.
    """
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return printable(payload["error"], limit=1000)
    return f"the server answered HTTP {response.status_code} without a TF Serving error message"
