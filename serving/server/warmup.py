"""Replaying a version's warm-up records at load, as ``saved_model_warmup_util.cc`` does.

Before a newly loaded version is AVAILABLE, every ``PredictionLog`` in its
``assets.extra/tf_serving_warmup_requests`` is run ``--num_request_iterations_for_warmup``
times against it, so the first client request does not pay TensorFlow's lazy initialisation.
As upstream: no file is fine; a record that fails (or more than 1,000 records, or a log type
that cannot be replayed) fails the load; the time and the records read are recorded under
``:tensorflow:serving:model_warmup_latency`` / ``..._records_read`` with the export's path and
the status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from serving.common.warmup_records import MAX_WARMUP_RECORDS, read_records, warmup_path
from serving.server import metrics
from serving.server.proto_api import (
    check_classify_or_regress,
    predict_inputs,
    signature_for_predict,
)
from serving.server.status import InvalidArgument, ServingStatusError, Unimplemented

log = logging.getLogger("serving.server.local")

RunSignature = Callable[[str, dict[str, list[bytes]]], Any]


def replay_one(record: bytes, signature_defs: Mapping[str, Any], run: RunSignature) -> None:
    """Run one serialized ``PredictionLog`` (Predict, Classify or Regress) against a version."""
    from tensorflow_serving.apis import prediction_log_pb2

    prediction_log = prediction_log_pb2.PredictionLog()
    try:
        prediction_log.ParseFromString(record)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError: a record that is not a log
        raise InvalidArgument("Failed to parse warmup record") from None
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        request = prediction_log.predict_log.request
        name, signature = signature_for_predict(signature_defs, request.model_spec.signature_name)
        inputs, _ = predict_inputs(request, signature)
        run(name, inputs)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        method = kind.split("_")[0]
        check_classify_or_regress(method, signature_defs, request.model_spec.signature_name)
    elif kind is not None:
        raise Unimplemented(f"Unsupported log_type for warmup: {kind}")


def run_warmup(
    version_dir: Path, signature_defs: Mapping[str, Any], run: RunSignature, iterations: int = 1
) -> int:
    """Replay ``version_dir``'s warm-up records; returns how many were read (0: no file)."""
    path = warmup_path(version_dir)
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return 0
    start, count, status = time.monotonic(), 0, "OK"
    try:
        for record in read_records(path):
            for _ in range(max(1, iterations)):
                replay_one(record, signature_defs, run)
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise InvalidArgument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
    except ServingStatusError as err:
        status = f"{err.code}: {err.message}"
        raise
    except Exception as err:  # noqa: BLE001 - TensorFlow's reader (DataLoss) or the model
        status = f"{type(err).__name__}: {err}"
        raise InvalidArgument(f"warm-up of {version_dir} failed: {err}") from None
    finally:
        elapsed_us = (time.monotonic() - start) * 1e6
        metrics.WARMUP_LATENCY.labels(str(version_dir), status).observe(elapsed_us)
        metrics.WARMUP_RECORDS_READ.labels(str(version_dir), status).inc(count)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.", path, count, elapsed_us,
    )  # fmt: skip
    return count
