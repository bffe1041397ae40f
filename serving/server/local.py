"""A local stand-in for ``tensorflow_model_server``: ``python -m serving.local``.

For machines without the TF Serving binary or Docker. Every ``tensorflow_model_server`` flag
is accepted (:mod:`serving.server.flags`); the REST API (:mod:`serving.server.rest_app`, port
``--rest_api_port``) and the gRPC API (:mod:`serving.server.grpc_api`, ``--port``) answer with
TF Serving's bodies, codes and words over one :class:`~serving.server.core.ServingCore`, so a
client, the contract tests and the benchmark cannot tell it from the real server. Both bind
127.0.0.1 unless ``--host`` says otherwise and run on one asyncio loop (uvicorn and
``grpc.aio``). Bounds on what a client can make it hold: :mod:`serving.server.limits`. New
versions are loaded (and warmed up) without a restart; ``--monitoring_config_file`` turns on
the Prometheus page. Request bodies are never logged or written.

    python -m serving.local --model_name=brain_mri --model_base_path=models/brain_mri \\
        --enable_batching --batching_parameters_file=deploy/tf_serving/batching_parameters.txt
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from serving.server.config import (
    BatchingOptions,
    ConfigError,
    ServedModelConfig,
    load_batching_parameters,
    load_model_config_file,
    load_monitoring_config,
)
from serving.server.flags import (
    add_model_server_flags,
    check_flags,
    configure_tensorflow_threads,
    grpc_channel_arguments,
    warn_no_effect,
)
from serving.server.limits import ServerLimits, add_limit_flags, limits_from_args, raise_fd_limit
from serving.server.model_manager import ModelManager
from serving.server.status import ServingStatusError

log = logging.getLogger("serving.server.local")  # also when run as __main__

GRACE_S = 5.0  # in-flight requests get this long when the server is stopped


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.local",
        description="Local TF Serving stand-in: REST and gRPC, every tensorflow_model_server flag.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address both APIs bind (default 127.0.0.1; 0.0.0.0 exposes them)",
    )
    add_model_server_flags(parser)
    add_limit_flags(parser)
    return parser


def manager_from_args(args: argparse.Namespace) -> ModelManager:
    def configs() -> list[ServedModelConfig]:
        return load_model_config_file(args.model_config_file)

    if args.model_config_file:
        initial = configs()
    else:
        base = Path(args.model_base_path).resolve()
        initial = [ServedModelConfig(name=args.model_name, base_path=base)]
    batching: BatchingOptions | None = None
    if args.enable_batching:
        batching = (
            load_batching_parameters(args.batching_parameters_file)
            if args.batching_parameters_file
            else BatchingOptions()
        )
    return ModelManager(
        initial,
        batching,
        poll_seconds=args.file_system_poll_wait_seconds,
        num_threads=args.rest_api_num_threads,
        warmup_iterations=max(1, args.num_request_iterations_for_warmup)
        if args.enable_model_warmup
        else 0,
        allow_unavailable_labels=args.allow_version_labels_for_unavailable_models,
        config_file=configs if args.model_config_file else None,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        tags=[t for t in args.saved_model_tags.split(",") if t] or None,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted: 0 on a clean stop, 1 for a bad config file, 2 for bad flags."""
    from tumorlib.contracts.cli import run_command

    parser = build_arg_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        from importlib.metadata import version

        print(f"TensorFlow ModelServer: local stand-in (tumorlib {version('tumorlib')})")
        print(f"TensorFlow Library: {version('tensorflow')}")
        return 0
    problem = check_flags(args)
    if problem:
        parser.error(problem)  # exit 2: bad usage
    try:
        limits_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    # A server's log lines carry their time; run_command's set-up keeps this format.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warn_no_effect(args)
    return run_command(lambda: serve(args))


def serve(args: argparse.Namespace) -> None:
    """Load the models named by ``args``, then serve REST and gRPC until stopped."""
    from serving.server.core import ServingCore

    limits = limits_from_args(args)
    configure_tensorflow_threads(args)
    metrics_path = (
        load_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file
        else None
    )  # fmt: skip
    manager = manager_from_args(args)  # ConfigError (a ValueError): reported, exit 1
    try:
        manager.start()
    except ServingStatusError as err:  # a version label naming a version that is not loaded
        raise ConfigError(err.message) from None
    for name, model in manager.models.items():
        if not model.versions:
            log.warning(
                "no version of %s under %s yet; waiting for one to appear",
                name,
                model.config.base_path,
            )
    core = ServingCore(
        manager,
        limits,
        method_name_check=args.enable_signature_method_name_check,
        tensor_content=args.enable_serialization_as_tensor_content,
    )
    raise_fd_limit(limits.max_connections)
    try:
        asyncio.run(_serve(args, core, limits, metrics_path))
    finally:
        manager.stop()


async def _start_grpc(args: argparse.Namespace, core, limits: ServerLimits):
    """The gRPC server on ``--port`` (and ``--grpc_socket_path``), started; ``None`` if off."""
    if not args.port and not args.grpc_socket_path:
        return None
    from grpc import aio

    from serving.server.grpc_api import add_services

    options = [
        # TF Serving sends up to 2 GiB; requests are held to the REST body limit.
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", limits.max_request_bytes),
        ("grpc.max_concurrent_streams", limits.max_queued_requests),
        ("grpc.so_reuseport", 0),
        *grpc_channel_arguments(args.grpc_channel_arguments),
    ]
    server = aio.server(options=options)
    add_services(server, core)
    if args.port:
        server.add_insecure_port(f"{args.host}:{args.port}")
        log.info("Running gRPC ModelServer at %s:%d ...", args.host, args.port)
    if args.grpc_socket_path:
        server.add_insecure_port(f"unix:{args.grpc_socket_path}")
        log.info("Running gRPC ModelServer at UNIX socket %s ...", args.grpc_socket_path)
    await server.start()
    return server


async def _serve(args: argparse.Namespace, core, limits: ServerLimits, metrics_path) -> None:
    grpc_server = await _start_grpc(args, core, limits)

    async def stop_grpc() -> None:
        if grpc_server is not None:
            await grpc_server.stop(GRACE_S)

    if not args.rest_api_port:  # gRPC only: stop on SIGINT / SIGTERM ourselves
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        await stopped.wait()
        await stop_grpc()
        return
    import uvicorn

    from serving.server.http_protocol import bounded_protocol
    from serving.server.rest_app import RestApp

    app = RestApp(
        core,
        args.rest_api_timeout_in_ms / 1000,
        metrics_path=metrics_path,
        on_shutdown=[stop_grpc],  # uvicorn's graceful stop stops gRPC too
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.rest_api_port,
        http=bounded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=int(GRACE_S),
        access_log=False,
        log_level="warning",
    )
    log.info("REST API at http://%s:%d/v1/models/...", args.host, args.rest_api_port)
    if metrics_path:
        log.info("Prometheus metrics at http://%s:%d%s", args.host, args.rest_api_port,
                 metrics_path)  # fmt: skip
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    sys.exit(main())
