"""Server-side batching: concurrent requests share one model call, as TF Serving's batching does.

Running a convolutional network on 20 single images costs far more than running it once on a
batch of 20, so the local server queues requests and forms batches: a batch is cut when it holds
``max_batch_size`` images, or when its oldest request has waited ``batch_timeout_micros`` and a
batch thread is free (TF Serving's ``SharedBatchScheduler`` rule). When every batch thread is
busy, requests keep accumulating, so batches grow exactly when load is high.

One deliberate difference: when *no* batch is running at all, the server is idle and nobody is
about to join, so the batch is cut at once instead of waiting out the timeout. Under load some
batch is always running and the timeout applies as in TF Serving; a lone request no longer pays
it (this keeps single-image latency close to in-process latency).

A request whose HTTP handler gave up (``--rest_api_timeout_in_ms``) before its batch was cut is
dropped, not run: a timeout frees the queue, not just the client.

One bad image must not fail the strangers it was batched with: when a merged batch fails on
invalid input, each request in it is re-run alone and only the offending one gets the error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.server import metrics
from serving.server.config import BatchingOptions
from serving.server.limits import check_task_size
from serving.server.status import InvalidArgument, ResourceExhausted, Unavailable

RunBatch = Callable[[list[bytes]], dict[str, np.ndarray]]


@dataclass
class _Task:
    images: list[bytes]
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """Queue requests (lists of encoded images) and run them through ``run_batch`` in batches.

    ``run_batch`` maps a list of images to a dict of arrays whose first axis is per image; it
    must raise :class:`~serving.server.status.InvalidArgument` for bad input.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        options: BatchingOptions,
        name: str = "batcher",
        workers: ThreadPoolExecutor | None = None,
    ):
        """``workers``: a thread pool shared by every version's batcher (TF Serving's
        ``thread_pool_name`` pool), so a new version does not start on cold threads; by
        default the batcher has its own."""
        self._run_batch = run_batch
        self.options = options
        self._capacity = options.max_batch_size * options.max_enqueued_batches
        self._pending: deque[_Task] = deque()
        self._pending_images = 0
        self._cond = threading.Condition()
        self._free_threads = threading.Semaphore(options.num_batch_threads)
        self._own_workers = workers is None
        self._workers = workers or ThreadPoolExecutor(
            options.num_batch_threads, thread_name_prefix=name
        )
        self._closed = False
        self._in_flight = 0  # batches handed to a worker and not finished yet
        self.batch_sizes: list[int] = []  # for tests and the benchmark: proof that batching ran
        self.dropped = 0  # tasks whose caller gave up (timed out) before their batch was cut
        self._scheduler = threading.Thread(target=self._schedule, name=f"{name}-sched", daemon=True)
        self._scheduler.start()

    def submit(self, images: Sequence[bytes]) -> Future:
        """Enqueue one request; the future resolves to its slice of the batch outputs."""
        task = _Task(list(images))
        check_task_size(len(task.images), self.options.max_batch_size)
        with self._cond:
            if self._closed:
                raise Unavailable("the model version is being unloaded")
            if self._pending_images + len(task.images) > self._capacity:
                raise ResourceExhausted(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            self._pending.append(task)
            self._pending_images += len(task.images)
            self._cond.notify_all()
        return task.future

    def close(self) -> None:
        """Stop accepting work; queued requests get ``Unavailable``, running batches finish."""
        with self._cond:
            self._closed = True
            leftover = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for task in leftover:
            _settle(task.future, error=Unavailable("the model version was unloaded"))
        if self._own_workers:
            self._workers.shutdown(wait=False)

    # -- internals ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        timeout = self.options.batch_timeout_micros / 1e6
        while True:
            self._free_threads.acquire()
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                deadline = self._pending[0].enqueued + (timeout if self._in_flight else 0.0)
                while self._pending_images < self.options.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._closed:
                    return
                batch = self._take_batch()
                if batch:
                    self._in_flight += 1
            if batch:
                self._workers.submit(self._process, batch)
            else:  # every task taken had been given up on: nothing to run
                self._free_threads.release()

    def _take_batch(self) -> list[_Task]:
        """Pop up to ``max_batch_size`` images of tasks, dropping those whose caller gave up.

        A task's future turns RUNNING here, so a request that times out from now on can no
        longer cancel it (its work finishes, bounded by the input policy); one that timed out
        before is dropped without running. Called with ``_cond`` held.
        """
        batch, size = [], 0
        while self._pending and size + len(self._pending[0].images) <= self.options.max_batch_size:
            task = self._pending.popleft()
            self._pending_images -= len(task.images)
            if task.future.set_running_or_notify_cancel():
                batch.append(task)
                size += len(task.images)
            else:
                self.dropped += 1
        return batch

    def _process(self, batch: list[_Task]) -> None:
        started = time.monotonic()
        pool = metrics.QUEUING_LATENCY.labels(self.options.thread_pool_name)
        for task in batch:  # what TF Serving's batching session records per task and batch
            metrics.INPUT_BATCH_SIZE.observe(len(task.images))
            pool.observe((started - task.enqueued) * 1e6)
        metrics.PROCESSED_BATCH_SIZE.observe(sum(len(task.images) for task in batch))
        metrics.WRAPPED_RUN_COUNT.inc()
        try:
            self._run_tasks(batch)
        finally:
            with self._cond:
                self._in_flight -= 1
            self._free_threads.release()

    def _run_tasks(self, batch: list[_Task]) -> None:
        images = [image for task in batch for image in task.images]
        self.batch_sizes.append(len(images))
        try:
            outputs = self._run_batch(images)
        except InvalidArgument as err:
            if len(batch) == 1:
                _settle(batch[0].future, error=err)
                return
            for task in batch:  # isolate the bad request(s)
                self._run_tasks([task])
            return
        except Exception as err:  # noqa: BLE001 - every waiter must hear about the failure
            for task in batch:
                _settle(task.future, error=err)
            return
        start = 0
        for task in batch:
            end = start + len(task.images)
            _settle(task.future, result={k: v[start:end] for k, v in outputs.items()})
            start = end


def _settle(future: Future, *, result=None, error: BaseException | None = None) -> None:
    """Resolve a request's future unless its HTTP handler already gave up (timeout, cancel)."""
    if future.cancelled() or future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled between the check and the set
        pass
