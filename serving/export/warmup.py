"""Warm-up records written with every export: ``assets.extra/tf_serving_warmup_requests``.

A freshly loaded SavedModel pays for TensorFlow's lazy initialisation (function instantiation,
graph optimisation, kernel and oneDNN primitive creation) on its first calls: measured here, the
first single-image request to a MobileNetV2 export took seconds against ~20 ms afterwards. TF
Serving (and the local server) replay these records at load, before the version is AVAILABLE,
so no client sees that cost. The records are real ``PredictionLog``\\ s (``predict_log`` with a
``PredictRequest``) in a TFRecord file, valid for ``tensorflow_model_server`` as written.

What they ask: ``serving_default`` on one JPEG, and on two images (a JPEG and a PNG of another
shape: the first batch above one costs again), ``explain`` on one image when the export has it,
and ``metadata``. Two, not more: TF Serving replays records through its batcher, and a record
larger than ``max_batch_size`` would fail the load. Images are generated noise at the model's
size: warm-up needs the shapes and code paths of real requests, not real scans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.common.warmup_records import warmup_path, write_records
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    INPUT_KEY,
    METADATA_INPUT_KEY,
    METADATA_SIGNATURE,
    SERVING_SIGNATURE,
    SIMILAR_SIGNATURE,
)


def _images(image_size: int) -> list[bytes]:
    """A JPEG at the model's size and a PNG of another shape (seeded noise)."""
    import tensorflow as tf

    rng = np.random.default_rng(25)
    out = []
    for i, (h, w) in enumerate(
        ((image_size, image_size), (image_size + 7, image_size // 2 + 3)) * 2
    ):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        encode = tf.io.encode_jpeg if i % 2 == 0 else tf.io.encode_png
        out.append(encode(pixels).numpy())
    return out


def _predict_log(model_name: str, signature: str, key: str, values: list[bytes]) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def warmup_requests(model_name: str, image_size: int, signatures: set[str]) -> list[bytes]:
    """The serialized ``PredictionLog`` records for an export with ``signatures``."""
    images = _images(image_size)
    records = [
        _predict_log(model_name, SERVING_SIGNATURE, INPUT_KEY, images[:1]),
        _predict_log(model_name, SERVING_SIGNATURE, INPUT_KEY, images),
    ]
    if EXPLAIN_SIGNATURE in signatures:
        records.append(_predict_log(model_name, EXPLAIN_SIGNATURE, INPUT_KEY, images[:1]))
    if SIMILAR_SIGNATURE in signatures:  # its first request would otherwise pay the tracing
        records.append(_predict_log(model_name, SIMILAR_SIGNATURE, INPUT_KEY, images[:1]))
    if METADATA_SIGNATURE in signatures:
        records.append(
            _predict_log(model_name, METADATA_SIGNATURE, METADATA_INPUT_KEY, [b"metadata"])
        )
    return records


def write_warmup_requests(
    saved: Path, model_name: str, image_size: int, signatures: set[str]
) -> Path:
    """Write the records into the SavedModel folder ``saved``; returns the file."""
    path = warmup_path(saved)
    write_records(path, warmup_requests(model_name, image_size, signatures))
    return path
