"""The local server's ASGI app: TF Serving's REST routes, status mapping and request bounds.

Every answer is JSON, whatever went wrong — an unknown path, a wrong method, a version number
that is not an int64, a body the JSON parser rejects, an internal failure — with TF Serving's
status for it (``http_rest_api_handler.cc``: anything it cannot route under ``/v1/`` is 400
``Malformed request: METHOD PATH``). A predict request is checked in the cheapest order: route,
version, declared size (413), admission (429), body, instance count (400), then the model with
``--rest_api_timeout_in_ms``; a request that times out before its work started drops that work.
Request bodies are never logged. Resolving, admission, the instance cap, running and metrics are
the :class:`~serving.server.core.ServingCore` the gRPC API shares; with a monitoring config,
the Prometheus page is served at its path (``PrometheusExporter`` words for a wrong path).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from serving.server import metrics
from serving.server.core import Call, ServingCore
from serving.server.limits import ServerLimits
from serving.server.model_manager import ModelManager
from serving.server.rest_api import (
    format_metadata_response,
    format_predict_response,
    format_status_response,
    parse_json,
    parse_predict_body,
    parse_version,
)
from serving.server.status import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ServingStatusError,
)

log = logging.getLogger("serving.server.local")

# TF Serving's path patterns (http_rest_api_util.cc), case-insensitive.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_ORIGIN_RE = re.compile(r"https?://")


def _error(err: ServingStatusError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.http_status)


def _declared_length(request: Request, max_bytes: int) -> int | None:
    """The body's ``Content-Length`` if declared; over ``max_bytes`` is 413 before reading."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    if int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"Request body of {declared} bytes exceeds the limit of {max_bytes} "
            "bytes (--max_request_bytes)"
        )
    return int(declared)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it passes ``max_bytes``; its time is bounded by the
    connection's body deadline (:mod:`serving.server.http_protocol`)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"Request body exceeds the limit of {max_bytes} bytes (--max_request_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


class RestApp:
    """Routes and handlers over one :class:`ServingCore` (its manager already started)."""

    def __init__(
        self,
        core: ServingCore,
        timeout_s: float,
        *,
        metrics_path: str | None = None,
        on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.core = core
        self.limits = core.limits
        self.timeout_s = timeout_s
        self.metrics_path = metrics_path
        self.on_shutdown = on_shutdown if on_shutdown is not None else []

    @property
    def manager(self):
        return self.core.manager

    async def predict(self, request: Request, match: re.Match, call: Call) -> JSONResponse:
        name, version, label, method = match.groups()
        call.model_name, call.api = name, method.lower()
        if version is not None and label is not None:
            raise InvalidArgument("Both model version and model version label cannot be supplied.")
        loaded = call.loaded = self.core.resolve(name, parse_version(version), label)
        max_bytes = self.limits.max_request_bytes
        declared = _declared_length(request, max_bytes)
        with self.core.admit(max_bytes if declared is None else declared):
            body = await _read_body(request, max_bytes)
            if call.api != "predict":  # answered as TF Serving answers this model (an error)
                payload = parse_json(body)
                wanted = payload.get("signature_name", "") if isinstance(payload, dict) else ""
                self.core.classify_or_regress(loaded, call.api, str(wanted or ""))
            signature, inputs, fmt = await asyncio.to_thread(
                parse_predict_body, body, loaded.signature_defs, self.core.max_instances
            )
            del body
            call.signature = signature
            outputs = await self.core.run(loaded, signature, inputs, self.timeout_s)
            return JSONResponse(format_predict_response(outputs, fmt))

    def status_or_metadata(self, match: re.Match, call: Call) -> JSONResponse:
        name, version_text, label, subresource = match.groups()
        if not name:
            raise InvalidArgument("Missing model name in request.")
        call.model_name = name
        if version_text is not None and label is not None:
            raise InvalidArgument("Both model version and model version label cannot be supplied.")
        version = parse_version(version_text)
        if subresource:
            if name not in self.manager.models:
                raise NotFound(f"Could not find any versions of model {name}")
            model = self.manager.models[name]
            if label is not None:
                version = model.resolve(None, label).version
            loaded = model.resolve(version, None)
            return JSONResponse(
                format_metadata_response(name, loaded.version, loaded.signature_defs)
            )
        return JSONResponse(format_status_response(self.core.status(name, version, label)))

    async def route(self, request: Request, call: Call) -> Response:
        path, method = request.url.path, request.method
        if method == "POST" and (match := _PREDICT_RE.fullmatch(path)):
            return await self.predict(request, match, call)
        if method == "GET" and (match := _STATUS_RE.fullmatch(path)):
            return self.status_or_metadata(match, call)
        if not path.lower().startswith("/v1/"):
            raise NotFound(f"No handler for {method} {path}")
        if method == "OPTIONS":  # CORS preflight, as TF Serving's http_server.cc answers it
            if _ORIGIN_RE.match(request.headers.get("origin", "")):
                return Response(b"", media_type="application/json")
            raise FailedPrecondition("Origin header is missing in CORS preflight")
        raise InvalidArgument(f"Malformed request: {method} {path}")

    async def dispatch(self, request: Request) -> Response:
        call = Call(api="", entrypoint="REST")
        try:
            with self.core.recorded(call):
                return await self.route(request, call)
        except ServingStatusError as err:
            return _error(err)
        except ClientDisconnect:
            return JSONResponse({"error": "client disconnected"}, status_code=499)
        except Exception as err:  # noqa: BLE001 - every answer is JSON; the body is not logged
            log.error("internal error serving %s: %s", request.url.path, type(err).__name__)
            return _error(Internal(f"Internal error: {type(err).__name__}"))

    def prometheus(self, request: Request) -> Response:
        """The metrics page; TF Serving's handler answers other paths under it with 400."""
        if request.url.path != self.metrics_path:
            text = f"Unexpected path: {request.url.path}. Should be {self.metrics_path}"
            return Response(text, status_code=400, media_type="text/plain")
        return Response(metrics.render(), media_type="text/plain")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: every method and path reaches :meth:`dispatch` (no router's 405)."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            for hook in self.on_shutdown:  # the gRPC server stops with the REST one
                await hook()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if self.metrics_path and request.url.path.startswith(self.metrics_path):
            response = self.prometheus(request)
        else:
            response = await self.dispatch(request)
        await response(scope, receive, send)


def create_app(
    manager: ModelManager,
    *,
    limits: ServerLimits | None = None,
    timeout_s: float = 30.0,
    max_instances: int | None = None,
    core: ServingCore | None = None,
    metrics_path: str | None = None,
) -> RestApp:
    """The ASGI app; ``manager`` must already be started (its versions loaded).

    ``max_instances`` defaults to the batcher's ``max_batch_size`` with batching, else to
    ``limits.max_instances_per_request``. Pass ``core`` to share it with the gRPC API.
    """
    if core is None:
        core = ServingCore(manager, limits or ServerLimits(), max_instances)
    return RestApp(core, timeout_s, metrics_path=metrics_path)
