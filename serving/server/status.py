"""Canonical error codes and their HTTP statuses, as TF Serving's ``http_server.cc`` maps them.

The local server raises these; the REST layer turns each into ``{"error": message}`` with the
HTTP status TF Serving would send for the same code, and the gRPC layer into the same code and
message (:mod:`serving.common.status_codes` holds both mappings), so a client cannot tell the
servers apart.
"""

from __future__ import annotations

from serving.common.status_codes import http_status


class ServingStatusError(Exception):
    """A failed request, with a canonical (gRPC/absl) error code name."""

    code = "UNKNOWN"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "http_status" not in cls.__dict__:  # TF Serving's HTTP status for the code
            cls.http_status = http_status(cls.code)


class InvalidArgument(ServingStatusError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(ServingStatusError):
    code = "FAILED_PRECONDITION"


class NotFound(ServingStatusError):
    code = "NOT_FOUND"


class ResourceExhausted(ServingStatusError):
    code = "RESOURCE_EXHAUSTED"


class Unimplemented(ServingStatusError):
    code = "UNIMPLEMENTED"


class Unavailable(ServingStatusError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServingStatusError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(ServingStatusError):
    code = "CANCELLED"


class Internal(ServingStatusError):
    code = "INTERNAL"


class PayloadTooLarge(ServingStatusError):
    """Rejected by the HTTP layer before the API sees it, as an HTTP server's body limit does."""

    code, http_status = "RESOURCE_EXHAUSTED", 413
