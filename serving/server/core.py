"""The one request path behind both APIs: REST (:mod:`serving.server.rest_app`) and gRPC
(:mod:`serving.server.grpc_api`) hold the same :class:`ServingCore`.

So the two transports cannot drift apart: one model manager (versions, labels, batching), one
admission budget (a gRPC request and a REST request take places from the same count and bytes),
one cap on instances per request ("Task size N is larger than maximum input batch size M"), one
rule for deadlines (work not started when the caller gives up is dropped), the same error words
(:mod:`serving.server.status`) and one set of metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from serving.server import metrics
from serving.server.admission import Admission
from serving.server.limits import ServerLimits, check_task_size
from serving.server.model_manager import LoadedVersion, ModelManager
from serving.server.proto_api import check_classify_or_regress
from serving.server.status import DeadlineExceeded, NotFound, ServingStatusError


@dataclass
class Call:
    """What the metrics need to know about one request, filled in as it is understood."""

    api: str
    entrypoint: str
    model_name: str = ""
    loaded: LoadedVersion | None = None
    signature: str = ""
    start: float = 0.0
    counted: bool = True  # TF Serving's gRPC API counts Predict/Classify/Regress only


class ServingCore:
    """Resolve, admit, bound, run and record requests for every transport."""

    def __init__(
        self,
        manager: ModelManager,
        limits: ServerLimits,
        max_instances: int | None = None,
        *,
        method_name_check: bool = False,
        tensor_content: bool = False,
    ) -> None:
        self.manager = manager
        self.limits = limits
        if max_instances is None:  # with batching: the batcher's max_batch_size, as TF Serving
            batching = manager.batching
            max_instances = (
                batching.max_batch_size if batching is not None
                else limits.max_instances_per_request
            )  # fmt: skip
        self.max_instances = max_instances
        self.method_name_check = method_name_check  # --enable_signature_method_name_check
        self.tensor_content = tensor_content  # --enable_serialization_as_tensor_content
        self.admission = Admission(limits.max_queued_requests, limits.max_queued_request_bytes)

    # -- addressing --------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None, label: str | None) -> LoadedVersion:
        """The loaded version a request addresses (TF Serving's NOT_FOUND words)."""
        return self.manager.get(name).resolve(version, label)

    def status(self, name: str, version: int | None, label: str | None) -> list[tuple[int, str]]:
        """(version, state) pairs, as ``GetModelStatusImpl`` reports them."""
        if name not in self.manager.models:
            raise NotFound(f"Could not find any versions of model {name}")
        model = self.manager.models[name]
        if label is not None:
            version = model.resolve(None, label).version
        return model.status(version)

    # -- bounds ------------------------------------------------------------------------------

    @contextmanager
    def admit(self, nbytes: int) -> Iterator[None]:
        """A place in the shared admission budget (429 / RESOURCE_EXHAUSTED beyond it)."""
        with self.admission.admit(nbytes):
            yield

    def check_task_size(self, size: int) -> None:
        check_task_size(size, self.max_instances)

    def check_inputs(self, inputs: Mapping[str, list[bytes]]) -> None:
        """Every input holds the same, allowed number of instances."""
        for values in inputs.values():
            self.check_task_size(len(values))

    # -- running -----------------------------------------------------------------------------

    async def run(
        self,
        loaded: LoadedVersion,
        signature: str,
        inputs: dict[str, list[bytes]],
        timeout_s: float | None,
    ) -> dict[str, np.ndarray]:
        """Run a signature (batched for ``serving_default``) within ``timeout_s``.

        On timeout or cancellation (a gRPC client gone) the work is cancelled: dropped if its
        batch was not cut yet; already on the graph, it finishes (bounded by the input policy).
        """
        future = self.manager.predict(loaded, signature, inputs)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded("Deadline exceeded") from None
        except asyncio.CancelledError:
            future.cancel()
            raise

    def classify_or_regress(self, loaded: LoadedVersion, method: str, signature: str) -> None:
        """Answer ``Classify`` / ``Regress`` as TF Serving does for this model (an error)."""
        check_classify_or_regress(
            method, loaded.signature_defs, signature, method_name_check=self.method_name_check
        )

    # -- accounting --------------------------------------------------------------------------

    @contextmanager
    def recorded(self, call: Call) -> Iterator[Call]:
        """Record ``call`` when it ends: its status code name, its latency if it succeeded."""
        call.start = time.perf_counter()
        status = "OK"
        try:
            yield call
        except ServingStatusError as err:
            status = err.code
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception:
            status = "INTERNAL" if call.model_name else "UNKNOWN"
            raise
        finally:
            version = call.loaded.version if call.loaded is not None else None
            if call.counted:
                metrics.record_request(
                    call.model_name, call.api, call.entrypoint, status,
                    time.perf_counter() - call.start, version, call.signature,
                )  # fmt: skip
