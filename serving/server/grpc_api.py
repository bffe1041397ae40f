"""TF Serving's gRPC API on the local server: ``PredictionService`` and ``ModelService``.

The servicers are the upstream ones from ``tensorflow-serving-api``
(``prediction_service_pb2_grpc`` / ``model_service_pb2_grpc``), run by ``grpc.aio`` on the same
event loop as the REST API and over the same :class:`~serving.server.core.ServingCore`: same
models and labels, same batcher, same admission budget, same instance cap, same words. Errors
carry the canonical code TF Serving uses (``ToGRPCStatus``: the code of the absl status, the
message cut at 1,024 characters); ``Predict`` honours the client's deadline as TF Serving's
``DeadlineToTimeoutMillis`` does. ``Classify`` / ``Regress`` answer as TF Serving answers for a
model with only predict signatures; ``HandleReloadConfigRequest`` applies a new model list.
Request bodies are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.common.status_codes import grpc_message
from serving.server.config import ConfigError, configs_from_proto
from serving.server.core import Call, ServingCore
from serving.server.model_manager import LoadedVersion
from serving.server.proto_api import predict_inputs, signature_for_predict, tensor_proto
from serving.server.status import Internal, InvalidArgument, ServingStatusError
from tumorlib.contracts.serving_contract import SERVING_SIGNATURE

log = logging.getLogger("serving.server.local")

SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef


def _spec(core: ServingCore, request: Any, call: Call) -> tuple[str, int | None, str | None]:
    """A request's model, version and label ("Missing ModelSpec" when it has none)."""
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    spec = request.model_spec
    call.model_name = spec.name
    which = spec.WhichOneof("version_choice")
    version = spec.version.value if which == "version" else None
    label = spec.version_label if which == "version_label" else None
    return spec.name, version, label


def _fill_spec(target: Any, loaded: LoadedVersion, signature: str | None = None) -> None:
    target.name = loaded.name
    target.version.value = loaded.version
    if signature is not None:
        target.signature_name = signature


async def _answer(context: aio.ServicerContext, call: Call, core: ServingCore, work) -> Any:
    """Run ``work`` recorded under ``call``; a failure becomes TF Serving's gRPC status."""
    try:
        with core.recorded(call):
            return await work()
    except ServingStatusError as err:
        await context.abort(grpc.StatusCode[err.code], grpc_message(err.message))
    except Exception as err:  # noqa: BLE001 - a status, never a traceback; bodies not logged
        log.error("internal error in gRPC %s: %s", call.api, type(err).__name__)
        await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(err).__name__}")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over a :class:`ServingCore`."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def Predict(self, request, context):  # noqa: N802 - the proto's method name
        call = Call(api="Predict", entrypoint="GRPC")

        async def work():
            loaded = call.loaded = self.core.resolve(*_spec(self.core, request, call))
            call.signature = request.model_spec.signature_name or SERVING_SIGNATURE
            with self.core.admit(request.ByteSize()):
                name, signature = signature_for_predict(
                    loaded.signature_defs, request.model_spec.signature_name
                )
                call.signature = name
                inputs, outputs = predict_inputs(request, signature)
                self.core.check_inputs(inputs)
                result = await self.core.run(loaded, name, inputs, context.time_remaining())
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, loaded, name)
            for alias in outputs:
                response.outputs[alias].CopyFrom(
                    tensor_proto(result[alias], as_content=self.core.tensor_content)
                )
            return response

        return await _answer(context, call, self.core, work)

    async def GetModelMetadata(self, request, context):  # noqa: N802
        call = Call(api="GetModelMetadata", entrypoint="GRPC", counted=False)

        async def work():
            spec = _spec(self.core, request, call)
            if not request.metadata_field:
                raise InvalidArgument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise InvalidArgument(f"Metadata field {field} is not supported")
            loaded = call.loaded = self.core.resolve(*spec)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in loaded.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_spec(response.model_spec, loaded)
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
            return response

        return await _answer(context, call, self.core, work)

    async def Classify(self, request, context):  # noqa: N802
        return await self._unsupported("Classify", request, context)

    async def Regress(self, request, context):  # noqa: N802
        return await self._unsupported("Regress", request, context)

    async def _unsupported(self, api: str, request, context):
        call = Call(api=api, entrypoint="GRPC")

        async def work():
            loaded = call.loaded = self.core.resolve(*_spec(self.core, request, call))
            call.signature = request.model_spec.signature_name
            self.core.classify_or_regress(loaded, api.lower(), request.model_spec.signature_name)

        return await _answer(context, call, self.core, work)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: model status and config reloads."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def GetModelStatus(self, request, context):  # noqa: N802
        call = Call(api="GetModelStatus", entrypoint="GRPC", counted=False)

        async def work():
            name, version, label = _spec(self.core, request, call)
            response = get_model_status_pb2.GetModelStatusResponse()
            for number, state in self.core.status(name, version, label):
                entry = response.model_version_status.add(version=number)
                entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
                entry.status.SetInParent()  # upstream sets it: error_code OK
            return response

        return await _answer(context, call, self.core, work)

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        call = Call(api="HandleReloadConfigRequest", entrypoint="GRPC", counted=False)

        async def work():
            if request.config.WhichOneof("config") != "model_config_list":
                raise InvalidArgument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            try:
                configs = configs_from_proto(request.config, "ReloadConfigRequest")
            except ConfigError as err:
                raise InvalidArgument(str(err)) from None
            await _in_thread(self.core.manager.reload_config, configs)
            return model_management_pb2.ReloadConfigResponse()  # status OK

        return await _answer(context, call, self.core, work)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Loading models takes seconds: off the event loop, so both APIs keep answering."""
    import asyncio

    try:
        return await asyncio.to_thread(function, *args)
    except ServingStatusError:
        raise
    except Exception as err:  # noqa: BLE001 - reported in the response's status
        raise Internal(f"ReloadConfig failed: {err}") from None


def add_services(server: aio.Server, core: ServingCore) -> None:
    """Register both upstream services on ``server``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
