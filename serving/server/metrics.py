"""Prometheus metrics under TF Serving's names, on TF Serving's page format.

The metrics TF Serving users chart exist here with the same names and labels (``util.cc``,
``batching_util.h``, ``batching_session.cc``, ``saved_model_warmup_util.cc`` and TensorFlow's
SavedModel loader): ``:tensorflow:serving:request_count{model_name,status}``,
``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (microseconds), the batching
session's batch sizes and queuing latency, SavedModel load attempts and warm-up. Two local
metrics add what upstream has no name for: requests and latency per *version and signature*
(``tumorlib_serving_request_count`` / ``_latency``) and the load state of each version
(``tumorlib_serving_model_version_available``).

``prometheus-client`` keeps the numbers (thread-safe); :func:`render` writes them as
``PrometheusExporter::GeneratePage`` does — counters under their own name, without the client
library's ``_total`` suffix and ``_created`` series — so a dashboard or alert written for the
real server reads this page unchanged. The page parses with ``prometheus_client.parser``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString


def exponential(scale: float, growth: float, count: int) -> list[float]:
    """TensorFlow's ``monitoring::Buckets::Exponential(scale, growth, count)`` limits."""
    return [scale * growth**i for i in range(count)]


LATENCY_BUCKETS = exponential(10, 1.8, 33)  # microseconds, up to ~20 minutes (upstream)
BATCH_SIZE_BUCKETS = exponential(1, 2, 14)
QUEUING_BUCKETS = exponential(100, 1.2, 52)

REGISTRY = CollectorRegistry(auto_describe=True)
_SERVING = ":tensorflow:serving:"
_BATCHING = _SERVING + "batching_session:"

REQUEST_COUNT = Counter(
    _SERVING + "request_count", "The total number of requests.",
    ["model_name", "status"], registry=REGISTRY,
)  # fmt: skip
REQUEST_LATENCY = Histogram(
    _SERVING + "request_latency",
    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
RUNTIME_LATENCY = Histogram(
    _SERVING + "runtime_latency",
    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
INPUT_BATCH_SIZE = Histogram(
    _BATCHING + "input_batch_size", "Tracks the batch size distribution on the inputs.",
    buckets=BATCH_SIZE_BUCKETS, registry=REGISTRY,
)  # fmt: skip
PROCESSED_BATCH_SIZE = Histogram(
    _BATCHING + "processed_batch_size", "Tracks the batch size distribution on processing.",
    buckets=BATCH_SIZE_BUCKETS, registry=REGISTRY,
)  # fmt: skip
QUEUING_LATENCY = Histogram(
    _BATCHING + "queuing_latency",
    "Distribution of wall time spent (in microseconds) in queuing",
    ["thread_pool_name"], buckets=QUEUING_BUCKETS, registry=REGISTRY,
)  # fmt: skip
WRAPPED_RUN_COUNT = Counter(
    _BATCHING + "wrapped_run_count", "Total count of run calls on the wrapped session",
    registry=REGISTRY,
)  # fmt: skip
LOAD_ATTEMPT_COUNT = Counter(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "The number of times a SavedModel was successfully loaded.",
    ["model_path", "status"], registry=REGISTRY,
)  # fmt: skip
LOAD_LATENCY = Counter(
    ":tensorflow:cc:saved_model:load_latency",
    "Latency in microseconds for SavedModels that were successfully loaded.",
    ["model_path"], registry=REGISTRY,
)  # fmt: skip
WARMUP_LATENCY = Histogram(
    _SERVING + "model_warmup_latency",
    "Distribution of wall time (in microseconds) for warming up the model.",
    ["model_path", "status"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
WARMUP_RECORDS_READ = Counter(
    _SERVING + "model_warmup_records_read",
    "Total number of warmup records read during model warmup.",
    ["model_path", "status"], registry=REGISTRY,
)  # fmt: skip
# Local: per version and signature, and the load state (upstream has no name for these).
VERSION_REQUEST_COUNT = Counter(
    "tumorlib_serving_request_count",
    "Requests per model version and signature (local server only).",
    ["model_name", "version", "signature", "entrypoint", "status"], registry=REGISTRY,
)  # fmt: skip
VERSION_REQUEST_LATENCY = Histogram(
    "tumorlib_serving_request_latency",
    "Wall time (in microseconds) of successful requests per model version and signature.",
    ["model_name", "version", "signature", "entrypoint"], buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)  # fmt: skip
VERSION_AVAILABLE = Gauge(
    "tumorlib_serving_model_version_available",
    "1 while a model version is loaded and AVAILABLE, 0 once it is unloaded (END).",
    ["model_name", "version"], registry=REGISTRY,
)  # fmt: skip


def record_request(
    model_name: str,
    api: str,
    entrypoint: str,
    status: str,
    seconds: float,
    version: int | None = None,
    signature: str = "",
) -> None:
    """One answered request, as TF Serving records it (latency for successes only)."""
    REQUEST_COUNT.labels(model_name, status).inc()
    if status == "OK":
        REQUEST_LATENCY.labels(model_name, api, entrypoint).observe(seconds * 1e6)
    if version is None:
        return
    VERSION_REQUEST_COUNT.labels(model_name, str(version), signature, entrypoint, status).inc()
    if status == "OK":
        VERSION_REQUEST_LATENCY.labels(model_name, str(version), signature, entrypoint).observe(
            seconds * 1e6
        )


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The page ``PrometheusExporter::GeneratePage`` would write for these metrics."""
    lines: list[str] = []
    for family in registry.collect():
        kind = family.type if family.type in ("counter", "gauge", "histogram") else "untyped"
        lines.append(f"# HELP {family.name} {_label(family.documentation)}")
        lines.append(f"# TYPE {family.name} {kind}")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = family.name if kind == "counter" else sample.name
            labels = ",".join(f'{k}="{_label(v)}"' for k, v in sample.labels.items())
            value = sample.value
            text = str(int(value)) if float(value).is_integer() else floatToGoString(value)
            lines.append(f"{name}{{{labels}}} {text}")
    return ("\n".join(lines) + "\n").encode("utf-8")
