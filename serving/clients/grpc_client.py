"""A client for TensorFlow Serving's gRPC API, with the REST client's interface.

``TFServingGrpcClient("grpc://127.0.0.1:8500")`` answers ``predict`` / ``explain`` / ``status``
/ ``metadata`` / ``signature_metadata`` / ``is_healthy`` / ``class_names`` exactly as
:class:`serving.clients.rest.TFServingClient` does (same result types, same dict shapes, same
exceptions with the HTTP status a REST client would have seen), so the backends, the page and
the commands switch transport by URL alone. It talks to the real server or ``serving.local``
through the official stubs of ``tensorflow-serving-api``: images travel as raw bytes in a
``TensorProto`` (no base64, no JSON).

Cost: those stubs import TensorFlow's protos, and importing them imports TensorFlow itself
(measured: 7.2 s, 47 -> 867 MiB). This module imports them on first use, so merely importing it (the
backend does) stays cheap; a caller that must stay TensorFlow-free uses the REST client.

Policy: every call has a deadline (``timeout``); ``UNAVAILABLE`` and ``RESOURCE_EXHAUSTED``
(TF Serving's "queue full") are retried by gRPC's own retry policy with exponential back-off
(``Predict`` is a pure computation); answers are capped at ``max_response_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any
from urllib.parse import urlparse

from serving.clients.prediction import (
    ExplainUnavailable,
    Explanation,
    Prediction,
    SimilarCases,
    SimilarUnavailable,
)
from serving.clients.rest import ServerQueries, TFServingError, TFServingUnavailable
from serving.common.deadline import Deadline, call_deadline
from serving.common.status_codes import http_status
from tumorlib.contracts.display import printable, safe_url
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    INPUT_KEY,
    MAX_SIMILAR,
    METADATA_INPUT_KEY,
    METADATA_OUTPUT_KEY,
    METADATA_SIGNATURE,
    MODEL_NAME,
    SIMILAR_SIGNATURE,
)

GRPC_SCHEMES = ("grpc", "grpcs")
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DT_STRING = 7
_UNAVAILABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


def is_grpc_url(url: str | None) -> bool:
    """``grpc://host:port`` (or ``grpcs://``): a URL for this client, not the REST one."""
    return bool(url) and urlparse(str(url).strip()).scheme in GRPC_SCHEMES


@cache
def _apis() -> Any:
    """The gRPC runtime and TF Serving's messages and stubs, imported once, on first use."""
    import types

    import grpc
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    return types.SimpleNamespace(
        grpc=grpc, tf=tf, json_format=json_format, metadata=get_model_metadata_pb2,
        status=get_model_status_pb2, model_service=model_service_pb2_grpc,
        predict=predict_pb2, prediction_service=prediction_service_pb2_grpc,
    )  # fmt: skip


def _service_config(retries: int, backoff: float) -> str:
    """gRPC's retry policy (attempts include the first; gRPC caps them at 5)."""
    policy = {
        "maxAttempts": max(2, min(retries + 1, 5)),
        "initialBackoff": f"{max(backoff, 0.01):.3f}s",
        "maxBackoff": f"{max(backoff, 0.01) * 8:.3f}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
    }
    config = {"methodConfig": [{"name": [{"service": "tensorflow.serving.PredictionService"},
                                         {"service": "tensorflow.serving.ModelService"}],
                                "retryPolicy": policy}]}  # fmt: skip
    if retries <= 0:
        del config["methodConfig"][0]["retryPolicy"]
    return json.dumps(config)


class TFServingGrpcClient(ServerQueries):
    """Talk to one model on a TF Serving gRPC endpoint (``grpc://host:8500``)."""

    def __init__(
        self,
        base_url: str = "grpc://127.0.0.1:8500",
        model_name: str = MODEL_NAME,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        deadline: Deadline | None = None,
    ) -> None:
        """``timeout``: seconds for one call with its retries; ``deadline``: the command's."""
        parsed = urlparse(base_url.strip() if "://" in base_url else f"grpc://{base_url}")
        if parsed.scheme not in GRPC_SCHEMES or not parsed.hostname or not parsed.port:
            raise ValueError(f"{base_url!r} is not a gRPC URL such as grpc://127.0.0.1:8500")
        self.base_url = f"{parsed.scheme}://{parsed.netloc}"
        self.display_url = safe_url(self.base_url)  # for messages, labels and the audit record
        self.target = parsed.netloc
        self.model_name = model_name
        self.timeout = timeout
        self.deadline = deadline
        self.transport = "gRPC"
        self._secure = parsed.scheme == "grpcs"
        self._options = [
            ("grpc.max_receive_message_length", max_response_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.enable_retries", 1 if retries > 0 else 0),
            ("grpc.service_config", _service_config(retries, backoff)),
        ]
        self._channel: Any = None
        self._metadata_cache: dict[int, dict] = {}
        self._class_names: dict[int | None, tuple[str, ...]] = {}

    # -- the shared interface ----------------------------------------------------------------

    def predict(self, images: Sequence[bytes], version: int | None = None) -> list[Prediction]:
        """Classify encoded images; one :class:`Prediction` per image, in order."""
        rows = self._predict_rows(images, version, signature="")
        class_names = self.class_names(version)
        return [Prediction.from_row(row, class_names) for row in rows]

    def explain(self, images: Sequence[bytes], version: int | None = None) -> list[Explanation]:
        """Grad-CAM through the ``explain`` signature (:class:`ExplainUnavailable` if none)."""
        try:
            rows = self._predict_rows(images, version, signature=EXPLAIN_SIGNATURE)
        except TFServingError as err:
            if "not found" in err.message and EXPLAIN_SIGNATURE in err.message:
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
        """The ``k`` nearest confirmed cases per image (:class:`SimilarUnavailable` if none)."""
        try:
            rows = self._predict_rows(images, version, signature=SIMILAR_SIGNATURE)
        except TFServingError as err:
            if "not found" in err.message and SIMILAR_SIGNATURE in err.message:
                raise SimilarUnavailable(
                    f"the served model has no {SIMILAR_SIGNATURE!r} signature ({err.message})"
                ) from None
            raise
        class_names = self.class_names(version)
        return [SimilarCases.from_row(row, class_names, k) for row in rows]

    def status(self, version: int | None = None) -> dict:
        """``GetModelStatus`` as the REST API prints it: ``{"model_version_status": [...]}``."""
        apis = _apis()
        request = apis.status.GetModelStatusRequest()
        self._spec(request.model_spec, version)
        stub = apis.model_service.ModelServiceStub(self._get_channel())
        response = self._call(stub.GetModelStatus, request)
        return apis.json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

    def metadata(self, version: int | None = None) -> dict:
        """The export's ``assets/metadata.json``, through its ``metadata`` signature (cached for
        explicit versions, as the REST client does)."""
        if version is not None and version in self._metadata_cache:
            return self._metadata_cache[version]
        outputs = self._predict(
            {METADATA_INPUT_KEY: [b"metadata"]}, version, METADATA_SIGNATURE, [METADATA_OUTPUT_KEY]
        )
        metadata = json.loads(outputs[METADATA_OUTPUT_KEY].reshape(-1)[0].decode("utf-8"))
        if version is not None:
            self._metadata_cache[version] = metadata
        return metadata

    def signature_metadata(self, version: int | None = None) -> dict:
        """``GetModelMetadata`` (the SignatureDef map), in the REST API's JSON shape."""
        apis = _apis()
        request = apis.metadata.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version)
        stub = apis.prediction_service.PredictionServiceStub(self._get_channel())
        response = self._call(stub.GetModelMetadata, request)
        signature_map = apis.metadata.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        options = {"always_print_fields_with_no_presence": True,
                   "preserving_proto_field_name": True}  # fmt: skip
        return {
            "model_spec": apis.json_format.MessageToDict(response.model_spec, **options),
            "metadata": {"signature_def": apis.json_format.MessageToDict(signature_map, **options)},
        }

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- plumbing ----------------------------------------------------------------------------

    def _get_channel(self) -> Any:
        if self._channel is None:
            grpc = _apis().grpc
            if self._secure:
                credentials = grpc.ssl_channel_credentials()
                self._channel = grpc.secure_channel(self.target, credentials, self._options)
            else:
                self._channel = grpc.insecure_channel(self.target, self._options)
        return self._channel

    def _spec(self, spec: Any, version: int | None, signature: str = "") -> None:
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        if signature:
            spec.signature_name = signature

    def _predict_rows(
        self, images: Sequence[bytes], version: int | None, signature: str
    ) -> list[dict[str, Any]]:
        images = list(images)
        if not images:
            return []
        for i, image in enumerate(images):
            if not isinstance(image, bytes | bytearray):
                raise TypeError(f"images[{i}] must be encoded image bytes, not {type(image)}")
        outputs = self._predict({INPUT_KEY: [bytes(b) for b in images]}, version, signature)
        return [{key: value[i] for key, value in outputs.items()} for i in range(len(images))]

    def _predict(
        self,
        inputs: dict[str, list[bytes]],
        version: int | None,
        signature: str,
        output_filter: Sequence[str] = (),
    ) -> dict[str, Any]:
        apis = _apis()
        request = apis.predict.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, version, signature)
        for key, values in inputs.items():
            tensor = request.inputs[key]
            tensor.dtype = DT_STRING
            tensor.tensor_shape.dim.add(size=len(values))
            tensor.string_val.extend(values)
        stub = apis.prediction_service.PredictionServiceStub(self._get_channel())
        response = self._call(stub.Predict, request)
        return {key: apis.tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def _call(self, method: Any, request: Any) -> Any:
        """One RPC within the call's deadline (cut to the command's); gRPC retries inside it."""
        grpc = _apis().grpc
        remaining = call_deadline(self.timeout, self.deadline).remaining()
        if remaining <= 0:
            raise TFServingUnavailable(f"no time left to call TF Serving at {self.display_url}")
        try:
            return method(request, timeout=remaining, wait_for_ready=False)
        except grpc.RpcError as err:
            code = err.code().name if err.code() is not None else "UNKNOWN"
            message = printable(err.details() or code)
            cls = TFServingUnavailable if code in _UNAVAILABLE else TFServingError
            if cls is TFServingUnavailable:
                message = f"cannot reach TF Serving at {self.display_url}: {message} ({code})"
            raise cls(message, http_status(code)) from None
