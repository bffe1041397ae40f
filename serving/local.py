"""A local stand-in for ``tensorflow_model_server``'s REST API: ``python -m serving.local``.

For machines without the TF Serving binary or Docker. Same flags for the same things, same
endpoints, same JSON bodies and HTTP statuses (see :mod:`serving.rest_api` and
:mod:`serving.status`), so a client, the contract tests and the benchmark cannot tell it from the
real server. Built on Starlette + uvicorn; it binds 127.0.0.1 unless ``--host`` says otherwise,
caps the request body (``--max_request_bytes``), batches concurrent requests
(``--enable_batching``), serves the newest version and picks up a newly exported one without a
restart (``--file_system_poll_wait_seconds``). Request bodies are never logged or written.

    python -m serving.local --model_name=brain_mri --model_base_path=models/brain_mri \\
        --enable_batching --batching_parameters_file=serving/batching_parameters.txt
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.config import (
    BatchingOptions,
    ServedModelConfig,
    load_batching_parameters,
    load_model_config_file,
)
from serving.model_manager import ModelManager
from serving.rest_api import (
    format_metadata_response,
    format_predict_response,
    format_status_response,
    parse_predict_body,
)
from serving.status import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ServingStatusError,
)
from tumorlib.serving_contract import MODEL_BASE_PATH, MODEL_NAME

log = logging.getLogger("serving.local")  # also when run as __main__

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

# TF Serving's path patterns (http_rest_api_util.cc), case-insensitive.
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)


def _error(err: ServingStatusError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.http_status)


def create_app(
    manager: ModelManager,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    timeout_s: float = 30.0,
) -> Starlette:
    """The ASGI app; ``manager`` must already be started (its versions loaded)."""

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            raise PayloadTooLarge(
                f"Request body of {declared} bytes exceeds the limit of {max_request_bytes} "
                "bytes (--max_request_bytes)"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise PayloadTooLarge(
                    f"Request body exceeds the limit of {max_request_bytes} bytes "
                    "(--max_request_bytes)"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request, match: re.Match) -> JSONResponse:
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            raise InvalidArgument(f"{method} is not served: this model has no {method} signature")
        if version is not None and label is not None:
            raise InvalidArgument("Both model version and model version label cannot be supplied.")
        body = await read_body(request)
        model = manager.get(name)
        loaded = model.resolve(int(version) if version else None, label)
        signature, inputs, fmt = parse_predict_body(body, loaded.signature_defs)
        future = manager.predict(loaded, signature, inputs)
        try:
            outputs = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded("Deadline exceeded") from None
        return JSONResponse(format_predict_response(outputs, fmt))

    async def status_or_metadata(match: re.Match) -> JSONResponse:
        name, version, label, subresource = match.groups()
        if not name:
            raise InvalidArgument("Missing model name in request.")
        if name not in manager.models:
            raise NotFound(f"Could not find any versions of model {name}")
        model = manager.models[name]
        if label is not None:
            version = model.resolve(None, label).version
        if subresource:
            loaded = model.resolve(int(version) if version else None, None)
            return JSONResponse(
                format_metadata_response(name, loaded.version, loaded.signature_defs)
            )
        return JSONResponse(format_status_response(model.status(int(version) if version else None)))

    async def dispatch(request: Request) -> JSONResponse:
        path = request.url.path
        try:
            if request.method == "POST" and (match := _PREDICT_RE.fullmatch(path)):
                return await predict(request, match)
            if request.method == "GET" and (match := _STATUS_RE.fullmatch(path)):
                return await status_or_metadata(match)
            if not path.lower().startswith("/v1/"):
                raise NotFound(f"No handler for {request.method} {path}")
            raise InvalidArgument(f"Malformed request: {request.method} {path}")
        except ServingStatusError as err:
            return _error(err)
        except ClientDisconnect:
            return JSONResponse({"error": "client disconnected"}, status_code=499)

    return Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "POST"])])


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.local",
        description="Local TF Serving REST API stand-in (same flags as tensorflow_model_server).",
    )
    parser.add_argument("--rest_api_port", type=int, default=8501)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it)",
    )
    parser.add_argument("--model_name", default=MODEL_NAME)
    parser.add_argument("--model_base_path", default=str(MODEL_BASE_PATH))
    parser.add_argument(
        "--model_config_file",
        default="",
        help="ModelServerConfig text proto; overrides --model_name/_base_path",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between checks for new versions (0 disables)",
    )
    parser.add_argument("--enable_batching", action="store_true")
    parser.add_argument("--batching_parameters_file", default="")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    parser.add_argument(
        "--rest_api_num_threads",
        type=int,
        default=os.cpu_count() or 2,
        help="threads running un-batched requests",
    )
    parser.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    return parser


def _str2bool_argv(argv: list[str]) -> list[str]:
    """Accept tensorflow_model_server's ``--enable_batching=true|false`` spelling too."""
    out = []
    for arg in argv:
        if arg.startswith("--enable_batching="):
            if arg.split("=", 1)[1].lower() in ("true", "1", "yes"):
                out.append("--enable_batching")
            continue
        out.append(arg)
    return out


def manager_from_args(args: argparse.Namespace) -> ModelManager:
    if args.model_config_file:
        configs = load_model_config_file(args.model_config_file)
    else:
        configs = [
            ServedModelConfig(name=args.model_name, base_path=Path(args.model_base_path).resolve())
        ]
    batching: BatchingOptions | None = None
    if args.enable_batching:
        batching = (
            load_batching_parameters(args.batching_parameters_file)
            if args.batching_parameters_file
            else BatchingOptions()
        )
    return ModelManager(
        configs,
        batching,
        poll_seconds=args.file_system_poll_wait_seconds,
        num_threads=args.rest_api_num_threads,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted: 0 on a clean stop, 1 for a bad config file, 2 for bad flags."""
    from tumorlib.cli import run_command

    args = build_arg_parser().parse_args(_str2bool_argv(sys.argv[1:] if argv is None else argv))
    # A server's log lines carry their time; run_command's set-up keeps this format.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_command(lambda: serve(args))


def serve(args: argparse.Namespace) -> None:
    """Load the models named by ``args``, then run the REST API until the process is stopped."""
    import uvicorn

    manager = manager_from_args(args)  # ConfigError (a ValueError): reported, exit 1
    manager.start()
    for name, model in manager.models.items():
        if not model.versions:
            log.warning(
                "no version of %s under %s yet; waiting for one to appear",
                name,
                model.config.base_path,
            )
    app = create_app(
        manager,
        max_request_bytes=args.max_request_bytes,
        timeout_s=args.rest_api_timeout_in_ms / 1000,
    )
    log.info("REST API at http://%s:%d/v1/models/...", args.host, args.rest_api_port)
    try:
        uvicorn.run(
            app, host=args.host, port=args.rest_api_port, access_log=False, log_level="warning"
        )
    finally:
        manager.stop()


if __name__ == "__main__":
    sys.exit(main())
