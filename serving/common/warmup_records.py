"""TF Serving's warm-up file: where it lives in a SavedModel and how its records are stored.

After loading a version, TF Serving replays the ``PredictionLog`` records of
``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file, at most 1,000 records;
``g3doc/saved_model_warmup.md``), so the first real request does not pay for the runtime's lazy
initialisation. The export writes that file and the local server replays it; both go through
here, with TensorFlow's own TFRecord reader and writer (imported only when used).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

WARMUP_DIR = "assets.extra"  # tensorflow::kSavedModelAssetsExtraDirectory
WARMUP_FILE = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def warmup_path(version_dir: str | os.PathLike) -> Path:
    """``<version_dir>/assets.extra/tf_serving_warmup_requests``."""
    return Path(version_dir) / WARMUP_DIR / WARMUP_FILE


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write serialized records as a TFRecord file; returns how many were written."""
    import tensorflow as tf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
            count += 1
    if count > MAX_WARMUP_RECORDS:
        raise ValueError(f"{count} warm-up records; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    return count


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """The serialized records of a TFRecord file, in order (a corrupt file raises
    ``tf.errors.DataLossError``, as TF Serving's reader reports it)."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(str(path)):
        yield record.numpy()
