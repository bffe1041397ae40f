"""Admission control: a bounded amount of predict work held by the server at once.

A predict request is admitted *before* its body is read and holds its place until it is
answered (or times out). Two budgets: the number of such requests and the bytes of their bodies
(the declared ``Content-Length``, or ``--max_request_bytes`` when it is not declared). Beyond
either, the request is refused at once with 429 ``RESOURCE_EXHAUSTED`` — TF Serving's answer to
a full batch queue — so memory and queueing delay stay bounded however many clients send.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from serving.server.status import ResourceExhausted


class Admission:
    """Counts admitted requests and their body bytes against fixed budgets (thread-safe)."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, nbytes: int) -> Iterator[None]:
        """Hold a place for a request of ``nbytes`` body bytes, or raise ``ResourceExhausted``."""
        with self._lock:
            if self.requests >= self.max_requests:
                raise ResourceExhausted(
                    f"Too many requests in progress (limit {self.max_requests}, "
                    "--max_queued_requests); retry later"
                )
            if self.bytes + nbytes > self.max_bytes:
                raise ResourceExhausted(
                    f"Too many request bytes in progress (limit {self.max_bytes}, "
                    "--max_queued_request_bytes); retry later"
                )
            self.requests += 1
            self.bytes += nbytes
        try:
            yield
        finally:
            with self._lock:
                self.requests -= 1
                self.bytes -= nbytes
