"""A local stand-in for ``tensorflow_model_server``'s REST API: ``python -m serving.local``.

For machines without the TF Serving binary or Docker. Same flags for the same things, same
endpoints, same JSON bodies and HTTP statuses (see :mod:`serving.server.rest_api` and
:mod:`serving.server.status`), so a client, the contract tests and the benchmark cannot tell it from
the real server. Built on Starlette + uvicorn; it binds 127.0.0.1 unless ``--host`` says otherwise,
bounds what a client can make it hold (:mod:`serving.server.limits`: body bytes, instances per
request, header/body/keep-alive time, connections, queued work), batches concurrent requests
(``--enable_batching``), serves the newest version and picks up a newly exported one without a
restart (``--file_system_poll_wait_seconds``). Request bodies are never logged or written.

    python -m serving.local --model_name=brain_mri --model_base_path=models/brain_mri \\
        --enable_batching --batching_parameters_file=deploy/tf_serving/batching_parameters.txt
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from serving.server.config import (
    BatchingOptions,
    ServedModelConfig,
    load_batching_parameters,
    load_model_config_file,
)
from serving.server.limits import add_limit_flags, limits_from_args, raise_fd_limit
from serving.server.model_manager import ModelManager
from serving.server.rest_app import create_app
from tumorlib.contracts.serving_contract import MODEL_BASE_PATH, MODEL_NAME

log = logging.getLogger("serving.server.local")  # also when run as __main__


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
    add_limit_flags(parser)
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
    from tumorlib.contracts.cli import run_command

    parser = build_arg_parser()
    args = parser.parse_args(_str2bool_argv(sys.argv[1:] if argv is None else argv))
    try:
        limits_from_args(args)
    except ValueError as err:
        parser.error(str(err))  # exit 2: bad usage
    # A server's log lines carry their time; run_command's set-up keeps this format.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_command(lambda: serve(args))


def serve(args: argparse.Namespace) -> None:
    """Load the models named by ``args``, then run the REST API until the process is stopped."""
    import uvicorn

    from serving.server.http_protocol import bounded_protocol

    limits = limits_from_args(args)
    manager = manager_from_args(args)  # ConfigError (a ValueError): reported, exit 1
    manager.start()
    for name, model in manager.models.items():
        if not model.versions:
            log.warning(
                "no version of %s under %s yet; waiting for one to appear",
                name,
                model.config.base_path,
            )
    app = create_app(manager, limits=limits, timeout_s=args.rest_api_timeout_in_ms / 1000)
    raise_fd_limit(limits.max_connections)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.rest_api_port,
        http=bounded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=5,
        access_log=False,
        log_level="warning",
    )
    log.info("REST API at http://%s:%d/v1/models/...", args.host, args.rest_api_port)
    try:
        uvicorn.Server(config).run()
    finally:
        manager.stop()


if __name__ == "__main__":
    sys.exit(main())
