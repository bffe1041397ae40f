"""Canonical (absl/gRPC) status codes: their numbers, names and TF Serving's HTTP statuses.

One table for the server (which answers REST with the HTTP status and gRPC with the code) and for
the gRPC client (which reports a gRPC failure with the HTTP status a REST client would have seen,
so callers handle both transports with one ``status_code`` check). The HTTP column is TF
Serving's ``ToHTTPStatusCode`` (``model_servers/http_server.cc``). No gRPC or TensorFlow import:
the numbers are the wire values of ``grpc.StatusCode``.
"""

from __future__ import annotations

# name: (gRPC code number, HTTP status TF Serving sends for it)
CODES: dict[str, tuple[int, int]] = {
    "OK": (0, 200),
    "CANCELLED": (1, 499),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400),
    "ABORTED": (10, 409),
    "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "DATA_LOSS": (15, 500),
    "UNAUTHENTICATED": (16, 401),
}

# TF Serving's ToGRPCStatus truncates a message longer than this and appends "...TRUNCATED".
GRPC_MESSAGE_LIMIT = 1024


def http_status(code_name: str) -> int:
    """The HTTP status TF Serving answers a failure of this code with (500 if unknown)."""
    return CODES.get(code_name, CODES["UNKNOWN"])[1]


def grpc_number(code_name: str) -> int:
    """The gRPC wire number of a code name (``UNKNOWN``'s if the name is not canonical)."""
    return CODES.get(code_name, CODES["UNKNOWN"])[0]


def grpc_message(message: str) -> str:
    """A status message as TF Serving's ``ToGRPCStatus`` sends it."""
    if len(message) > GRPC_MESSAGE_LIMIT:
        return message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
    return message
