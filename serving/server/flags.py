"""Every ``tensorflow_model_server`` flag (``model_servers/main.cc``), accepted by the local server.

A deployment's command line must work unchanged against either server, so each upstream flag is
parsed with its upstream type and spelling (``--flag=value``; booleans also as bare ``--flag``
and ``--flag=true|false|1|0``). What means something here is implemented — ports and the gRPC
socket and channel arguments, the model config file and its polling, file-system polling,
batching, monitoring, REST threads and timeout, version labels, warm-up, the signature method
check, tensor-content responses, TensorFlow's thread pools and SavedModel tags, ``--version``.
The rest (TPU, TFLite, GPU memory, SSL/ALTS, profiler, ...) is accepted and, when given, logged
once as having no effect here. Local defaults that differ from upstream: ``--rest_api_port``
8501 (upstream 0, REST off) and ``--model_name`` ``brain_mri`` (upstream ``default``).
"""

from __future__ import annotations

import argparse
import logging
import os

from tumorlib.contracts.serving_contract import MODEL_BASE_PATH, MODEL_NAME

log = logging.getLogger("serving.server.local")

CPUS = os.cpu_count() or 2


def parse_bool(text: str | bool) -> bool:
    """TF's flag parser's booleans: true/false/1/0 (any case)."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# (flag, type, default, help) of the flags implemented here.
IMPLEMENTED: list[tuple[str, type, object, str]] = [
    ("port", int, 8500, "gRPC port (0: gRPC off unless --grpc_socket_path)"),
    ("grpc_socket_path", str, "", "also serve gRPC on this UNIX socket"),
    ("grpc_channel_arguments", str, "", "gRPC server options: k=v,..."),
    ("rest_api_port", int, 8501, "REST port (0: REST off)"),
    ("rest_api_num_threads", int, CPUS, "threads running un-batched signatures"),
    ("rest_api_timeout_in_ms", int, 30000, "REST request timeout"),
    ("enable_batching", bool, False, "batch concurrent serving_default requests"),
    ("batching_parameters_file", str, "", "BatchingParameters text proto"),
    ("model_config_file", str, "", "ModelServerConfig text proto"),
    ("model_config_file_poll_wait_seconds", int, 0, "config re-read interval (0: once)"),
    ("model_name", str, MODEL_NAME, "model name (without --model_config_file)"),
    ("model_base_path", str, str(MODEL_BASE_PATH), "folder of integer version folders"),
    ("file_system_poll_wait_seconds", float, 1.0, "new-version poll interval (0: once)"),
    ("monitoring_config_file", str, "", "MonitoringConfig text proto (Prometheus page)"),
    ("allow_version_labels_for_unavailable_models", bool, False, "labels on unloaded versions"),
    ("enable_model_warmup", bool, True, "replay assets.extra/tf_serving_warmup_requests at load"),
    ("num_request_iterations_for_warmup", int, 0, "replays per warm-up record"),
    ("enable_signature_method_name_check", bool, False, "check method_name"),
    ("enable_serialization_as_tensor_content", bool, False, "gRPC outputs as tensor_content bytes"),
    ("tensorflow_session_parallelism", int, 0, "TensorFlow intra- and inter-op threads (0: auto)"),
    ("tensorflow_intra_op_parallelism", int, 0, "TensorFlow intra-op threads (0: auto)"),
    ("tensorflow_inter_op_parallelism", int, 0, "TensorFlow inter-op threads (0: auto)"),
    ("saved_model_tags", str, "", "comma-separated MetaGraph tags to load (default: serve)"),
    ("version", bool, False, "print the versions and exit"),
]  # fmt: skip

# Accepted with their upstream types; no effect here (logged once when given).
NO_EFFECT: list[tuple[str, type]] = [
    ("rest_api_enable_cors_support", bool),
    ("enable_per_model_batching_parameters", bool),
    ("num_load_threads", int),
    ("num_unload_threads", int),
    ("max_num_load_retries", int),
    ("load_retry_interval_micros", int),
    ("flush_filesystem_caches", bool),
    ("tensorflow_session_config_file", str),
    ("use_alts_credentials", bool),
    ("ssl_config_file", str),
    ("platform_config_file", str),
    ("per_process_gpu_memory_fraction", float),
    ("grpc_max_threads", int),
    ("remove_unused_fields_from_bundle_metagraph", bool),
    ("prefer_tflite_model", bool),
    ("num_tflite_pools", int),
    ("num_tflite_interpreters_per_pool", int),
    ("xla_cpu_compilation_enabled", bool),
    ("xla_gpu_compilation_enabled", bool),
    ("enable_profiler", bool),
    ("thread_pool_factory_config_file", str),
    ("mixed_precision", str),
    ("skip_initialize_tpu", bool),
    ("enable_grpc_healthcheck_service", bool),
]


def _add(group: argparse._ArgumentGroup, name: str, kind: type, default: object, help_: str):
    if kind is bool:
        group.add_argument(
            f"--{name}", type=parse_bool, nargs="?", const=True, default=default, help=help_
        )
    else:
        group.add_argument(f"--{name}", type=kind, default=default, help=help_)


def add_model_server_flags(parser: argparse.ArgumentParser) -> None:
    """Every ``tensorflow_model_server`` flag, with the local server's defaults."""
    served = parser.add_argument_group("tensorflow_model_server flags (implemented)")
    for name, kind, default, help_ in IMPLEMENTED:
        _add(served, name, kind, default, help_)
    accepted = parser.add_argument_group("tensorflow_model_server flags (accepted, no effect)")
    for name, kind in NO_EFFECT:
        _add(accepted, name, kind, None, argparse.SUPPRESS)


_warned: set[str] = set()


def warn_no_effect(args: argparse.Namespace) -> list[str]:
    """Log once each upstream flag that was given but means nothing here; returns them."""
    given = [name for name, _ in NO_EFFECT if getattr(args, name) is not None]
    for name in given:
        if name not in _warned:
            _warned.add(name)
            log.warning("--%s is accepted for tensorflow_model_server compatibility; "
                        "it has no effect on the local server", name)  # fmt: skip
    return given


def check_flags(args: argparse.Namespace) -> str | None:
    """Upstream's start-up refusals (``Server::BuildAndStart``), in its words; ``None`` if ok."""
    if args.port == 0 and not args.grpc_socket_path and args.rest_api_port == 0:
        return "At least one of --port, --grpc_socket_path or --rest_api_port must be set."
    if args.batching_parameters_file and not args.enable_batching:
        return ("server_options.batching_parameters_file is set without setting "
                "server_options.enable_batching to true.")  # fmt: skip
    if args.rest_api_port and args.rest_api_port == args.port:
        return "--rest_api_port cannot be the same as --port"
    threads = (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    if all(t > 0 for t in threads) and args.tensorflow_session_parallelism > 0:
        return ("Either configure server_options.tensorflow_session_parallelism or "
                "(server_options.tensorflow_intra_op_parallelism, "
                "server_options.tensorflow_inter_op_parallelism) separately. "
                "You cannot configure all.")  # fmt: skip
    return None


def configure_tensorflow_threads(args: argparse.Namespace) -> None:
    """TF Serving's session thread settings, applied before TensorFlow starts its runtime."""
    intra, inter = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
    if intra <= 0 and inter <= 0:
        intra = inter = args.tensorflow_session_parallelism
    if intra <= 0 and inter <= 0:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(max(intra, 0))
    tf.config.threading.set_inter_op_parallelism_threads(max(inter, 0))


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``a=1,b=x`` as gRPC server options; integers passed as integers (as upstream does)."""
    options: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            options.append((key.strip(), int(value)))
        except ValueError:
            options.append((key.strip(), value.strip()))
    return options
