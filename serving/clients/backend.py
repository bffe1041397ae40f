"""Which model answers: the newest export loaded in-process, or TF Serving over REST.

The upload page and the batch CLI both talk to a model through :class:`Backend`, so requests are
chunked the same way (under the servers' request-size cap), one file the model cannot decode
costs only its own result in both, and failures are worded once. It composes
:class:`serving.clients.rest.TFServingClient` and :class:`serving.clients.inprocess.InProcessModel`
(imported only when an in-process model is loaded: it imports TensorFlow). Streamlit-free: the page
adds its settings, caching and display on top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.clients.grpc_client import TFServingGrpcClient, is_grpc_url
from serving.clients.prediction import ExplainUnavailable, Explanation, Prediction, SimilarCases
from serving.clients.rest import TFServingClient, TFServingError, TFServingUnavailable
from serving.common.deadline import Deadline
from serving.common.versions import find_latest_version, list_versions
from tumorlib.contracts.serving_contract import EXPLAIN_SIGNATURE, MODEL_BASE_PATH, MODEL_NAME

DEFAULT_TIMEOUT_S = 10.0

# TF Serving and the local server cap a request's size (16 MB by default); base64 adds a third.
# Files are sent in chunks under this many raw bytes, so a large batch never trips that cap.
MAX_CHUNK_BYTES = 6 * 1024 * 1024
MAX_CHUNK_IMAGES = 16

HOW_TO_EXPORT = (
    "Create one with `tumorlib main` (build, train, evaluate, export), or export an existing "
    "run with `tumorlib export runs/<name>`."
)
GRADCAM_UNAVAILABLE = (
    "This model version has no Grad-CAM (`explain`) signature: it was exported before Grad-CAM "
    "existed. Re-export the run (`tumorlib export runs/<name>`) to add it."
)

Progress = Callable[[int], object]  # called with the number of images just answered


class BackendError(RuntimeError):
    """A failure shown as it is (server down, model missing): ``message`` is for the user."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Settings:
    """Which backend to build: TF Serving when ``serving_url`` is set (REST; gRPC for a
    ``grpc://host:port`` URL), else the newest local export."""

    serving_url: str | None = None
    model_name: str = MODEL_NAME
    model_base_path: Path = MODEL_BASE_PATH
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def uses_rest(self) -> bool:
        return self.serving_url is not None


@dataclass(frozen=True)
class Health:
    """A backend's status; ``version`` is the one predictions will come from."""

    ok: bool
    message: str
    version: int | None = None


@dataclass(frozen=True)
class SafetyInfo:
    """What the served version checks, from its exported metadata (``None``: not known)."""

    threshold: float | None = None  # abstention threshold on the top probability (the lowest)
    class_thresholds: Mapping[str, float] | None = None  # per predicted class, when exported
    target_precision: float | None = None
    gate: bool = False
    explain: bool = False
    known: bool = False  # False: the metadata could not be read

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SafetyInfo:
        abstention = metadata.get("abstention") or {}
        signatures = metadata.get("signatures") or {}
        return cls(
            threshold=_float_or_none(abstention.get("threshold")),
            class_thresholds=abstention.get("class_thresholds") or None,
            target_precision=_float_or_none(abstention.get("target_precision")),
            gate=bool(metadata.get("input_gate")),
            explain=EXPLAIN_SIGNATURE in signatures,
            known=True,
        )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


class Backend:
    """One model source: health check, predictions (per-image failures isolated), Grad-CAM."""

    label: str
    max_images: int = MAX_CHUNK_IMAGES  # images per request
    vector_index: Any = None  # serving.clients.vector_index: a large index instead of the stored

    def health(self) -> Health:
        raise NotImplementedError

    def predict(
        self, images: Sequence[bytes], version: int | None, progress: Progress | None = None
    ) -> list[Prediction | str]:
        """One :class:`Prediction` or a user-facing error string per image, in order.

        :class:`BackendError` when the model cannot be reached at all (not per image).
        """
        return predict_isolating_failures(
            lambda chunk: self._predict(chunk, version),
            images,
            max_images=self.max_images,
            progress=progress,
        )

    def explain(self, image: bytes, version: int | None) -> Explanation | str:
        """Grad-CAM for one image, or a user-facing reason why there is none."""
        try:
            return self._explain(image, version)
        except ExplainUnavailable:
            return GRADCAM_UNAVAILABLE
        except BackendError as err:
            return err.message
        except Exception as err:  # noqa: BLE001 - shown next to the image, never a traceback
            return f"Grad-CAM could not be computed: {describe_failure(err)}"

    def similar(self, image: bytes, k: int, version: int | None) -> SimilarCases | str:
        """The ``k`` nearest confirmed cases, or a user-facing reason (:mod:`.similar`)."""
        from serving.clients.similar import similar_cases

        return similar_cases(self, image, k, version)

    def safety(self, version: int | None) -> SafetyInfo:
        """The abstention threshold and which checks the version has; unknown on failure."""
        try:
            return SafetyInfo.from_metadata(self._metadata(version))
        except Exception:  # noqa: BLE001 - predictions still work without it; callers say so
            return SafetyInfo()

    def metadata(self, version: int | None) -> Mapping[str, Any]:
        """The served version's exported metadata (raises when it cannot be read); the audit
        record takes the model name, version and reference figures from it."""
        return self._metadata(version)

    def _predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction]:
        raise NotImplementedError

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        raise NotImplementedError

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        raise NotImplementedError


class RestBackend(Backend):
    """TF Serving's REST API (the real server or ``tumorlib serve``)."""

    def __init__(self, client: TFServingClient, max_images: int = MAX_CHUNK_IMAGES) -> None:
        self.client = client
        self.max_images = max_images
        via = getattr(client, "transport", "REST")  # the gRPC client says "gRPC"
        self.label = f"TF Serving {via} at {client.display_url} (model {client.model_name!r})"

    def health(self) -> Health:
        """Model status endpoint: healthy when a version is AVAILABLE; that version is used.

        Pinning predictions to the version seen here means a caller never labels an answer
        with one version while a newer one, loaded in between, produced it.
        """
        try:
            statuses = self.client.status()["model_version_status"]
        except TFServingError as err:
            raise rest_error(err, self.client) from None
        except (KeyError, TypeError, ValueError):
            raise BackendError(
                "error", f"{self.client.display_url} did not answer like TF Serving's model status."
            ) from None
        available = [int(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
        if not available:
            states = ", ".join(f"v{s.get('version')}: {s.get('state')}" for s in statuses)
            raise BackendError(
                "model_missing",
                f"TF Serving has no AVAILABLE version of {self.client.model_name!r} "
                f"({states or 'no versions'}).",
            )
        version = max(available)
        return Health(True, f"Healthy: version {version} AVAILABLE", version)

    def _predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction]:
        try:
            return self.client.predict(images, version=version)
        except TFServingUnavailable as err:
            raise rest_error(err, self.client) from None

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        try:
            return self.client.explain([image], version=version)[0]
        except TFServingUnavailable as err:
            raise rest_error(err, self.client) from None

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        return self.client.metadata(version)

    def _similar(self, image: bytes, k: int, version: int | None) -> SimilarCases:
        try:
            return self.client.similar([image], k, version=version)[0]
        except TFServingUnavailable as err:
            raise rest_error(err, self.client) from None


class InProcessBackend(Backend):
    """An exported SavedModel run in this process
    (:class:`serving.clients.inprocess.InProcessModel`)."""

    def __init__(self, model: Any, max_images: int = MAX_CHUNK_IMAGES) -> None:
        self.model = model
        self.max_images = max_images
        self.label = f"In-process SavedModel ({model.path})"

    def health(self) -> Health:
        if not self.model.is_healthy():
            raise BackendError("error", "The in-process model did not load its signature.")
        return Health(True, f"Healthy: version {self.model.version} loaded", self.model.version)

    def _predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction]:
        return self.model.predict(images)  # the loaded version is the only one it has

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        return self.model.explain([image])[0]

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        return self.model.metadata()

    def _similar(self, image: bytes, k: int, version: int | None) -> SimilarCases:
        return self.model.similar([image], k)[0]


def predict_isolating_failures(
    predict: Callable[[Sequence[bytes]], list[Prediction]],
    images: Sequence[bytes],
    *,
    max_images: int = MAX_CHUNK_IMAGES,
    max_bytes: int = MAX_CHUNK_BYTES,
    progress: Progress | None = None,
) -> list[Prediction | str]:
    """Predict in size-bounded chunks; a chunk that fails is retried image by image.

    So one file the model cannot decode costs only its own result, never the batch's.
    :class:`BackendError` (server down, model gone) is not per-image and propagates.
    """
    results: list[Prediction | str] = []
    for chunk in chunks(images, max_images=max_images, max_bytes=max_bytes):
        results.extend(_predict_chunk(predict, chunk))
        if progress is not None:
            progress(len(chunk))
    return results


def _predict_chunk(
    predict: Callable[[Sequence[bytes]], list[Prediction]], chunk: list[bytes]
) -> list[Prediction | str]:
    try:
        return list(predict(chunk))
    except BackendError:
        raise
    except Exception as err:  # noqa: BLE001 - isolated per image below, shown to the user
        if len(chunk) == 1:
            return [describe_failure(err)]
    results: list[Prediction | str] = []
    for image in chunk:
        try:
            results.extend(predict([image]))
        except BackendError:
            raise
        except Exception as err:  # noqa: BLE001 - one image's failure, shown next to it
            results.append(describe_failure(err))
    return results


def chunks(
    images: Sequence[bytes],
    *,
    max_images: int = MAX_CHUNK_IMAGES,
    max_bytes: int = MAX_CHUNK_BYTES,
) -> list[list[bytes]]:
    """Consecutive groups of at most ``max_images`` images and ``max_bytes`` raw bytes.

    An image larger than ``max_bytes`` on its own still gets a chunk (the server decides).
    """
    grouped: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for image in images:
        if current and (size + len(image) > max_bytes or len(current) >= max_images):
            grouped.append(current)
            current, size = [], 0
        current.append(image)
        size += len(image)
    if current:
        grouped.append(current)
    return grouped


def describe_failure(err: Exception) -> str:
    """One image's failure in words (the server's own message when it refused the image)."""
    if isinstance(err, TFServingError):
        return f"The model server refused this image: {err.message}"
    return f"The model could not process this image: {err}"


def rest_error(err: TFServingError, client: TFServingClient) -> BackendError:
    """A REST failure that is not about one image: the server is down, or lacks the model."""
    if isinstance(err, TFServingUnavailable):
        return BackendError(
            "unavailable",
            f"TF Serving at {client.display_url} is down or too slow (timeout "
            f"{client.timeout:g} s): {err.message}. Start it (e.g. `tumorlib serve`), check the "
            "URL, or clear the URL to use the in-process model.",
        )
    if err.status_code == 404:
        return BackendError(
            "model_missing",
            f"TF Serving at {client.display_url} does not serve a model named "
            f"{client.model_name!r}: {err.message}",
        )
    return BackendError("error", f"TF Serving at {client.display_url} answered: {err}")


# -- construction ------------------------------------------------------------------------------


def rest_client(
    url: str, model_name: str, timeout_s: float, deadline: Deadline | None = None
) -> TFServingClient:
    """A REST client on the client policy: ``timeout_s`` per call, ``deadline`` per command.

    A ``grpc://host:port`` URL gets the gRPC client instead (same interface and errors).
    """
    if is_grpc_url(url):
        return TFServingGrpcClient(  # type: ignore[return-value]
            url, model_name=model_name, timeout=timeout_s, deadline=deadline
        )
    return TFServingClient(url, model_name=model_name, timeout=timeout_s, deadline=deadline)


def load_model(model_base_path: str, version: int) -> Any:
    """The exported ``version`` under ``model_base_path``, loaded in this process."""
    from serving.clients.inprocess import InProcessModel  # imports TensorFlow: only when needed

    return InProcessModel(model_base_path, version=version)


def make_backend(
    settings: Settings,
    *,
    make_client: Callable[[str, str, float], TFServingClient] = rest_client,
    load: Callable[[str, int], Any] = load_model,
    hint: str = HOW_TO_EXPORT,
    max_images: int = MAX_CHUNK_IMAGES,
) -> Backend:
    """The backend ``settings`` ask for; :class:`BackendError` (with ``hint``) if unavailable.

    ``make_client`` and ``load`` let a caller cache clients and models (the page does).
    """
    if settings.serving_url is not None:
        client = make_client(settings.serving_url, settings.model_name, settings.timeout_s)
        return RestBackend(client, max_images=max_images)
    base = Path(settings.model_base_path)
    version = find_latest_version(base)
    if version is None:
        raise BackendError(
            "model_missing",
            f"No exported model yet under {base} "
            f"({'empty' if base.is_dir() else 'folder does not exist'}). {hint}",
        )
    try:
        # The newest version is part of a cache key, so a fresh export is picked up without a
        # restart.
        return InProcessBackend(load(str(base), version), max_images=max_images)
    except Exception as err:  # noqa: BLE001 - a broken export is reported, not raised
        raise BackendError(
            "model_missing",
            f"Version {version} under {base} could not be loaded ({type(err).__name__}: {err}). "
            f"Versions present: {list_versions(base)}. {hint}",
        ) from None
