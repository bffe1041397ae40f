"""Canonical error codes and their HTTP statuses, as TF Serving's ``http_server.cc`` maps them.

The local server raises these; the REST layer turns each into ``{"error": message}`` with the
HTTP status TF Serving would send for the same code, so a client cannot tell the servers apart.
"""

from __future__ import annotations


class ServingStatusError(Exception):
    """A failed request, with a canonical (gRPC/absl) error code name."""

    code = "UNKNOWN"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingStatusError):
    code, http_status = "INVALID_ARGUMENT", 400


class FailedPrecondition(ServingStatusError):
    code, http_status = "FAILED_PRECONDITION", 400


class NotFound(ServingStatusError):
    code, http_status = "NOT_FOUND", 404


class ResourceExhausted(ServingStatusError):
    code, http_status = "RESOURCE_EXHAUSTED", 429


class Unimplemented(ServingStatusError):
    code, http_status = "UNIMPLEMENTED", 501


class Unavailable(ServingStatusError):
    code, http_status = "UNAVAILABLE", 503


class DeadlineExceeded(ServingStatusError):
    code, http_status = "DEADLINE_EXCEEDED", 504


class Internal(ServingStatusError):
    code, http_status = "INTERNAL", 500


class PayloadTooLarge(ServingStatusError):
    """Rejected by the HTTP layer before the API sees it, as an HTTP server's body limit does."""

    code, http_status = "RESOURCE_EXHAUSTED", 413
