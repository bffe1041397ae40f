"""The local server's bounds on requests, connections and queued work, with their flags.

Every resource a client can make the server hold is capped, so one hostile client cannot starve
the others: bytes per body, instances per request, time to send headers and body, idle
keep-alive time, open connections, and admitted-but-unfinished predict requests (by count and
by body bytes). Defaults suit a small CPU host serving a handful of well-behaved clients.
"""

from __future__ import annotations

import argparse
import logging
import resource
from dataclasses import dataclass

from serving.server.status import InvalidArgument

log = logging.getLogger("serving.server.local")

MIB = 1024 * 1024
FD_RESERVE = 64  # descriptors the process needs besides client sockets (model files, logs, TF)


@dataclass(frozen=True)
class ServerLimits:
    """What one request, one connection and the whole server may hold."""

    max_request_bytes: int = 16 * MIB
    max_instances_per_request: int = 64  # without --enable_batching; else max_batch_size
    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024  # h11's max_incomplete_event_size
    max_queued_requests: int = 128
    max_queued_request_bytes: int = 64 * MIB


def check_task_size(size: int, max_size: int | None) -> None:
    """Refuse a request of more instances than the server takes, in TF's batch scheduler's
    words; REST checks before decoding, gRPC before converting, the batcher on submit."""
    if max_size is not None and size > max_size:
        raise InvalidArgument(
            f"Task size {size} is larger than maximum input batch size {max_size}"
        )


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The flags behind :class:`ServerLimits` (not in ``tensorflow_model_server``)."""
    d = ServerLimits()
    group = parser.add_argument_group("limits (local server only)")
    group.add_argument("--max_request_bytes", type=int, default=d.max_request_bytes)
    group.add_argument(
        "--max_instances_per_request",
        type=int,
        default=d.max_instances_per_request,
        help="instances per predict request without batching (with it: max_batch_size)",
    )
    group.add_argument("--header_read_timeout_s", type=float, default=d.header_read_timeout_s)
    group.add_argument("--body_read_timeout_s", type=float, default=d.body_read_timeout_s)
    group.add_argument("--keep_alive_timeout_s", type=float, default=d.keep_alive_timeout_s)
    group.add_argument(
        "--max_connections",
        type=int,
        default=d.max_connections,
        help="open client connections; beyond it a new one gets 503 and is closed",
    )
    group.add_argument("--max_header_bytes", type=int, default=d.max_header_bytes)
    group.add_argument(
        "--max_queued_requests",
        type=int,
        default=d.max_queued_requests,
        help="predict requests admitted and not answered yet; beyond it 429",
    )
    group.add_argument("--max_queued_request_bytes", type=int, default=d.max_queued_request_bytes)


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The parsed flags as :class:`ServerLimits`; a non-positive limit is a usage error."""
    limits = ServerLimits(
        **{name: getattr(args, name) for name in ServerLimits.__dataclass_fields__}
    )
    for name, value in vars(limits).items():
        if value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    if limits.max_queued_request_bytes < limits.max_request_bytes:
        raise ValueError("--max_queued_request_bytes must be >= --max_request_bytes")
    return limits


def raise_fd_limit(max_connections: int) -> int:
    """Lift the soft open-file limit to the hard one; warn if the connection cap cannot fit.

    With the cap below the limit, a flood of sockets is refused by the server (503, closed)
    instead of making ``accept()`` fail with "Too many open files" for everyone.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:
            log.warning("could not raise the open-file limit: %s", err)
    if max_connections + FD_RESERVE > soft:
        log.warning(
            "--max_connections=%d leaves fewer than %d of %d file descriptors for the server",
            max_connections,
            FD_RESERVE,
            soft,
        )
    return soft
