"""A background writer: a prediction is never slowed down or broken by its audit record.

Callers :meth:`AuditWriter.submit` rows and return at once; one daemon thread writes them in
batches. The queue is bounded: when it is full, or the database is down at exit, rows go to the
:class:`~serving.audit.spool.Spool` and are replayed on the next successful write (this process
or a later one). Failures are retried with exponential backoff; :meth:`status` tells the page to
show a warning. Database errors are reduced to their type and first line before being kept or
logged: SQLAlchemy's own message quotes the statement's parameters, which may hold a note.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serving.audit.spool import Item, Spool
from serving.audit.store import AuditStore

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
BATCH_SIZE = 500
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


@dataclass(frozen=True)
class WriterStatus:
    """What the page shows: rows not yet in the database, and why."""

    pending: int  # queued or in flight
    spooled: int  # waiting on disk
    written: int
    last_error: str | None  # None: the last attempt succeeded

    @property
    def ok(self) -> bool:
        return self.last_error is None and self.spooled == 0


def describe_error(err: BaseException) -> str:
    """Type and first line of the driver's message, never SQLAlchemy's parameter dump."""
    cause = getattr(err, "orig", None) or err
    first = (str(cause).strip().splitlines() or [""])[0][:160]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


class AuditWriter:
    """Writes submitted ``(kind, row)`` items to an :class:`AuditStore` from one thread."""

    def __init__(
        self,
        store: AuditStore | Callable[[], AuditStore],
        spool: Spool,
        *,
        maxsize: int = DEFAULT_QUEUE_SIZE,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self._store_or_factory = store
        self._store: AuditStore | None = store if isinstance(store, AuditStore) else None
        self.spool = spool
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=maxsize)
        self._retry = (retry_initial_s, retry_max_s)
        self._pending = 0  # submitted and not yet written or spooled
        self._written = 0
        self._last_error: str | None = None
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # -- callers ---------------------------------------------------------------------------

    def submit(self, kind: str, row: Mapping[str, Any]) -> None:
        """Queue one row; never blocks (a full queue spills to the spool on disk)."""
        with self._idle:
            try:
                self._queue.put_nowait((kind, dict(row)))
            except queue.Full:
                self.spool.append([(kind, row)])
                return
            self._pending += 1

    def status(self) -> WriterStatus:
        return WriterStatus(
            pending=self._pending,
            spooled=len(self.spool),
            written=self._written,
            last_error=self._last_error,
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is written; False if still pending at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> WriterStatus:
        """Flush, stop the thread, and spool whatever could not be written."""
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=max(timeout, 1.0) + self._retry[1])
        leftover: list[Item] = []
        while True:
            try:
                leftover.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._idle:
            self._pending -= len(leftover)
        if self.spool.append(leftover):
            log.warning("audit database unreachable: %d record(s) spooled", len(leftover))
        return self.status()

    # -- the thread ------------------------------------------------------------------------

    def _store_now(self) -> AuditStore:
        if self._store is None:
            factory = self._store_or_factory
            assert callable(factory)
            self._store = factory()
        return self._store

    def _run(self) -> None:
        self._replay_spool()
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_SIZE:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._write_with_retry(batch):
                self.spool.append(batch)  # stopping while the database is down
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _write_with_retry(self, batch: list[Item]) -> bool:
        delay = self._retry[0]
        while True:
            try:
                self._written += self._store_now().write(batch)
            except Exception as err:  # noqa: BLE001 - any database failure: retry, never raise
                message = describe_error(err)
                if message != self._last_error:
                    log.warning("audit write failed, will retry: %s", message)
                self._last_error = message
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, self._retry[1])
                continue
            self._last_error = None
            self._replay_spool()
            return True

    def _replay_spool(self) -> None:
        items = self.spool.take()
        if not items:
            return
        try:
            for start in range(0, len(items), BATCH_SIZE):
                self._written += self._store_now().write(items[start : start + BATCH_SIZE])
            log.info("audit: %d spooled record(s) written", len(items))
        except Exception as err:  # noqa: BLE001 - still down: back to the spool
            self._last_error = describe_error(err)
            self.spool.append(items)
