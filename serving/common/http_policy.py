"""The one client policy for outbound HTTP: a deadline per call and per command, a response size
cap checked while streaming, retries only for idempotent calls and only within the deadline.

Why one place: the server has one input policy; the clients (TF Serving REST, the DICOMweb PACS,
and the gRPC stub's deadlines) had three partial ones — a per-attempt timeout that a trickling
server never trips, retries that ran past any budget, and bodies read whole into memory (a 3 GB
QIDO answer took 6 GB). :func:`make_session` builds every client's :class:`requests.Session`:

- **deadline** — each call ends by ``min(call budget, what the command has left)``
  (:mod:`serving.common.deadline`): every attempt's connect/read timeout is cut to what is left,
  and a watchdog shuts the call's sockets when the deadline passes, so a server that trickles
  headers or body a byte at a time is stopped too. Raised as :class:`DeadlineExceeded`.
- **size** — a body is read in chunks and refused past ``max_response_bytes`` (a declared
  ``Content-Length`` over the cap is refused before reading), for ``stream=True`` callers while
  they iterate. Raised as :class:`ResponseTooLarge`.
- **retries** — urllib3's :class:`~urllib3.util.retry.Retry`: connection failures, and 429/502/
  503/504 answers (honouring ``Retry-After``) of idempotent methods only, with exponential
  back-off; a retry that cannot finish within the deadline is not started. After the last try
  the server's own answer is returned (``raise_on_status=False``), so callers word an HTTP status,
  not a ``RetryError``.

TensorFlow-free (requests and urllib3 only).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from serving.common.deadline import Deadline, DeadlineExceeded, call_deadline

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_CHUNK = 64 * 1024
MIN_ATTEMPT_S = 0.05  # a retry needs at least this long left to be worth starting

__all__ = [
    "ClientPolicy",
    "Deadline",
    "DeadlineExceeded",
    "PolicySession",
    "ResponseTooLarge",
    "make_session",
]


class ResponseTooLarge(requests.RequestException):
    """The server's answer exceeded the response size cap; ``limit`` in bytes."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        what = f"declared {declared} bytes" if declared is not None else "sent more"
        super().__init__(f"the answer {what}; the limit is {limit} bytes")
        self.limit = limit
        self.declared = declared


@dataclass(frozen=True)
class ClientPolicy:
    """What every call of one client may cost.

    ``call_s``: a call's whole budget (its retries and back-off included); ``command``: the
    command's deadline, shared by all its calls (``None``: only per call). ``idempotent``: the
    methods whose failed calls may be repeated (a client adds POST when its POSTs are pure
    computations, as TF Serving's ``:predict`` is).
    """

    call_s: float = 30.0
    command: Deadline | None = None
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retries: int = 3
    backoff_s: float = 0.5
    retry_statuses: Collection[int] = RETRY_STATUSES
    idempotent: Collection[str] = IDEMPOTENT_METHODS

    def deadline(self) -> Deadline:
        """A new call's deadline: ``call_s`` cut to what the command has left."""
        return call_deadline(self.call_s, self.command)


# -- the watchdog: sockets of the current call are shut when its deadline passes ----------------


class _CallGuard:
    """The sockets one call uses; a timer shuts them down at the call's deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if deadline.seconds is not None:
            self._timer = threading.Timer(deadline.remaining(), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if sock not in self._sockets:
                self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _guard() -> _CallGuard | None:
    return getattr(_current, "guard", None)


class _GuardedConnection:
    """Registers its socket with the calling thread's :class:`_CallGuard` (mixin)."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        guard = _guard()
        if guard is not None:
            guard.add(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        guard = _guard()
        if guard is not None:
            guard.add(self.sock)  # a kept-alive connection: its socket is already open
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _HTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineRetry(Retry):
    """urllib3's Retry that starts no retry the current call's deadline cannot hold."""

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        """As urllib3's, but a retry that would end after the deadline raises instead."""
        following = super().increment(*args, **kwargs)
        names = ("method", "url", "response", "error", "_pool")
        given = {**dict(zip(names, args)), **kwargs}
        response, error = given.get("response"), given.get("error")
        guard = _guard()
        if guard is not None:
            wait = following.get_backoff_time()
            if response is not None and self.respect_retry_after_header:
                wait = max(wait, following.get_retry_after(response) or 0.0)
            if guard.deadline.remaining() < wait + MIN_ATTEMPT_S:
                reason = error or ResponseError("no time left for a retry within the deadline")
                raise MaxRetryError(given.get("_pool"), given.get("url"), reason)  # type: ignore[arg-type]
        return following


class _PolicyAdapter(HTTPAdapter):
    """An adapter whose connections report their sockets to the call's watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# -- the session ---------------------------------------------------------------------------------


class PolicySession(requests.Session):
    """A :class:`requests.Session` that applies a :class:`ClientPolicy` to every request."""

    def __init__(self, policy: ClientPolicy) -> None:
        super().__init__()
        self.policy = policy
        retry = DeadlineRetry(
            total=policy.retries,
            connect=policy.retries,
            read=policy.retries,
            status=policy.retries,
            other=0,
            allowed_methods=frozenset(m.upper() for m in policy.idempotent),
            status_forcelist=policy.retry_statuses,
            backoff_factor=policy.backoff_s,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = _PolicyAdapter(max_retries=retry)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """One call under the policy: deadline, watchdog, retries, size cap."""
        deadline = self.policy.deadline()
        budget = deadline.seconds if deadline.seconds is not None else 0.0
        if deadline.expired:
            raise DeadlineExceeded(budget)
        wants_stream = bool(kwargs.pop("stream", False))
        left = deadline.remaining()
        asked = kwargs.pop("timeout", None)
        kwargs["timeout"] = _attempt_timeout(asked, left)
        guard = _CallGuard(deadline)
        _current.guard = guard
        try:
            response = super().request(method, url, *args, stream=True, **kwargs)
        except requests.RequestException:
            guard.done()
            if guard.expired or deadline.expired:
                raise DeadlineExceeded(budget) from None
            raise
        finally:
            _current.guard = None
        try:
            _refuse_declared_size(response, self.policy.max_response_bytes)
        except ResponseTooLarge:
            guard.done()
            response.close()
            raise
        if wants_stream:
            _stream_under_policy(response, guard, self.policy.max_response_bytes, budget)
            return response
        try:
            response._content = b"".join(
                _capped_chunks(response, guard, self.policy.max_response_bytes, budget)
            )
            response._content_consumed = True
        finally:
            guard.done()
            response.close()
        return response


def _attempt_timeout(asked: Any, left: float) -> tuple[float, float] | float | None:
    """Each attempt's (connect, read) timeout, never beyond what the call has left."""
    if left == float("inf"):
        return asked
    if asked is None:
        return left
    if isinstance(asked, tuple):
        return tuple(left if t is None else min(float(t), left) for t in asked)  # type: ignore[return-value]
    return min(float(asked), left)


def _refuse_declared_size(response: requests.Response, limit: int) -> None:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(limit, int(declared))


def _capped_chunks(
    response: requests.Response, guard: _CallGuard, limit: int, budget: float
) -> Iterator[bytes]:
    """The decoded body in chunks; :class:`ResponseTooLarge` past ``limit`` bytes, and
    :class:`DeadlineExceeded` when the watchdog shut the socket."""
    total = 0
    try:
        for chunk in response.raw.stream(READ_CHUNK, decode_content=True):
            total += len(chunk)
            if total > limit:
                raise ResponseTooLarge(limit)
            yield chunk
            if guard.expired:
                raise DeadlineExceeded(budget)
    except ResponseTooLarge:
        raise
    except Exception as err:  # noqa: BLE001 - a shut socket surfaces as many urllib3 errors
        if guard.expired or guard.deadline.expired:
            raise DeadlineExceeded(budget) from None
        if isinstance(err, requests.RequestException):
            raise
        raise requests.ConnectionError(f"the answer was cut off ({type(err).__name__})") from None


def _stream_under_policy(
    response: requests.Response, guard: _CallGuard, limit: int, budget: float
) -> None:
    """Make ``response.iter_content`` (what streaming callers read) obey the cap and deadline."""
    chunks = _capped_chunks(response, guard, limit, budget)
    buffered = bytearray()
    close = response.close

    def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[bytes]:
        size = max(int(chunk_size or READ_CHUNK), 1)
        try:
            for chunk in chunks:
                buffered.extend(chunk)
                while len(buffered) >= size:
                    yield bytes(buffered[:size])
                    del buffered[:size]
            if buffered:
                yield bytes(buffered)
                buffered.clear()
        finally:
            guard.done()

    def closing() -> None:
        guard.done()
        close()

    response.iter_content = iter_content  # type: ignore[method-assign]
    response.close = closing  # type: ignore[method-assign]


def make_session(policy: ClientPolicy, *, auth: tuple[str, str] | None = None) -> PolicySession:
    """The session every client uses: :class:`PolicySession` with optional basic auth."""
    session = PolicySession(policy)
    session.auth = auth
    return session
