"""uvicorn's h11 protocol with the connection-level bounds uvicorn does not have.

uvicorn bounds idle keep-alive time (``timeout_keep_alive``) and header size
(``h11_max_incomplete_event_size``), but it re-arms nothing while a request is *arriving*: its
keep-alive timer is cancelled by any byte, so a client sending headers at one byte every two
seconds, or a body at one byte every five, or nothing at all on a fresh socket, holds its
connection forever. Its ``limit_concurrency`` answers text/plain 503 and keeps the socket open.
This subclass adds, per connection:

- a header deadline: the request line and headers must be complete within
  ``header_read_timeout_s`` of the connection opening or the previous response ending;
- a body deadline: the whole body must arrive within ``body_read_timeout_s`` of the headers;
- a connection cap: beyond ``max_connections`` open sockets, an idle connection is closed to
  make room — first the one waiting longest that never completed a request (a fresh socket that
  sent nothing, slow headers), then the longest-idle keep-alive one; when every connection has
  a request in progress, the new one gets a 503 JSON error and is closed at once. Either way
  its file descriptor is freed, and a flood of idle sockets cannot lock out real work.

A deadline that passes answers 408 with TF Serving's ``{"error": ...}`` body (when a request had
started) and closes the connection. Malformed HTTP gets a 400 JSON body instead of text.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.server.limits import ServerLimits

log = logging.getLogger("serving.server.local")

_PHRASES = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


def raw_json_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response with ``{"error": message}`` that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _PHRASES[status], len(body))
    )
    return head + body


class BoundedH11Protocol(H11Protocol):
    """One connection, with header and body deadlines and the server-wide connection cap."""

    limits: ServerLimits = ServerLimits()  # set per server by :func:`bounded_protocol`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""  # what the armed deadline waits for: "headers" | "body"
        self._idle_since = 0.0
        self._served = 0  # responses completed on this connection
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            log.warning("connection refused: %d open (--max_connections)", len(self.connections))
            self._close_with(
                503,
                f"Too many open connections (limit {self.limits.max_connections}, "
                "--max_connections)",
            )
            return
        self._arm(self.limits.header_read_timeout_s, "headers")

    def _evict_idle(self) -> bool:
        """Close an idle connection to make room; False if every one has a request in progress.

        Sockets that never completed a request (fresh, silent, slow headers) go first, oldest
        first; a keep-alive connection of a client that has been served goes only after them.
        """
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, BoundedH11Protocol) and c._phase == "headers"
        ]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: (c._served > 0, c._idle_since))
        oldest._expired("headers", reason="evicted: --max_connections reached")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request_state()

    def on_response_complete(self) -> None:
        self._served += 1
        super().on_response_complete()
        self._follow_request_state()

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (or headers over ``max_header_bytes``): 400 JSON, then close."""
        self._close_with(400, msg)

    # -- deadlines ---------------------------------------------------------------------------

    def _follow_request_state(self) -> None:
        """Arm the deadline that fits what the client owes us next: headers, body or nothing."""
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm(self.limits.body_read_timeout_s, "body")
        elif state is h11.IDLE and self.conn.our_state is h11.IDLE:
            if self._phase != "headers":
                self._arm(self.limits.header_read_timeout_s, "headers")
        else:  # the request is complete; the response is being produced
            self._disarm()

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)
        self._phase = phase
        if phase == "headers":
            self._idle_since = self.loop.time()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = ""

    def _expired(self, phase: str, reason: str = "") -> None:
        self._disarm()  # a no-op when the timer itself fired; cancels it on eviction
        if self.transport.is_closing():
            return
        started = phase == "body" or bool(self.conn.trailing_data[0])
        if self.cycle is not None and not self.cycle.response_complete:
            # The app may be waiting in receive(): tell it the client is gone, as uvicorn does
            # on a lost connection, so it neither waits on nor writes to this socket.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            started = started and not self.cycle.response_started
        limit = (
            self.limits.body_read_timeout_s
            if phase == "body"
            else self.limits.header_read_timeout_s
        )
        message = reason or f"Request {phase} not received within {limit:g} s"
        log.debug("closing a connection: %s", message)
        if started:
            self._close_with(408, message)
        else:
            self.transport.close()

    def _close_with(self, status: int, message: str) -> None:
        self._disarm()
        self.transport.write(raw_json_response(status, message))
        self.transport.close()


def bounded_protocol(limits: ServerLimits) -> type[BoundedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` carrying this server's limits."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"limits": limits})
