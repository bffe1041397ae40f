"""TF Serving's configuration files, read with protobuf's own text-format parser.

``--model_config_file`` is a ``ModelServerConfig`` text proto; its message class comes from the
``tensorflow-serving-api`` package, so we parse exactly what ``tensorflow_model_server`` parses.
``--batching_parameters_file`` is a ``BatchingParameters`` and ``--monitoring_config_file`` a
``MonitoringConfig`` text proto; no pip package ships those two, so their descriptors (every
upstream field) are declared in :mod:`serving.server.protos` and parsed with the same
``text_format``. One file therefore configures the real server and the local one alike.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from serving.server.protos import message_class

log = logging.getLogger("serving.server.local")

DEFAULT_POLICY = ("latest", (1,))  # TF Serving's default: serve the newest version only


class ConfigError(ValueError):
    """A configuration file is missing or malformed."""


@dataclass(frozen=True)
class ServedModelConfig:
    """One model the server serves: where its versions live and which of them to load."""

    name: str
    base_path: Path
    policy: str = "latest"  # "latest" | "all" | "specific"
    policy_versions: tuple[int, ...] = (1,)  # num_versions for "latest", versions for "specific"
    version_labels: dict[str, int] = field(default_factory=dict)

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk (ascending), per the version policy."""
        available = sorted(available)
        if self.policy == "all":
            return available
        if self.policy == "specific":
            return [v for v in available if v in self.policy_versions]
        return available[-max(1, self.policy_versions[0]) :] if available else []


def load_model_config_file(path: str | os.PathLike) -> list[ServedModelConfig]:
    """Parse a ``models.config`` (``ModelServerConfig`` text proto) into served models."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(path).read_text(), config)
    except FileNotFoundError:
        raise ConfigError(f"model config file {path} does not exist") from None
    except text_format.ParseError as err:
        raise ConfigError(f"model config file {path} is malformed: {err}") from None
    return configs_from_proto(config, str(path))


def configs_from_proto(config, source: str) -> list[ServedModelConfig]:
    """The served models of a ``ModelServerConfig`` (from a file or a reload request)."""
    if not config.HasField("model_config_list"):
        raise ConfigError(f"{source} has no model_config_list")
    models = []
    for entry in config.model_config_list.config:
        if entry.model_platform and entry.model_platform != "tensorflow":
            raise ConfigError(f"model {entry.name!r}: only model_platform 'tensorflow' is served")
        if not entry.name or not entry.base_path:
            raise ConfigError(f"{source}: every model needs a name and a base_path")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        spec: tuple[str, tuple[int, ...]]
        if which == "all":
            spec = ("all", ())
        elif which == "specific":
            spec = ("specific", tuple(policy.specific.versions))
        elif which == "latest":
            spec = ("latest", (policy.latest.num_versions or 1,))
        else:
            spec = DEFAULT_POLICY
        base = Path(entry.base_path)
        if not base.is_absolute():  # TF Serving resolves relative to its working directory
            base = Path.cwd() / base
        models.append(
            ServedModelConfig(
                name=entry.name,
                base_path=base,
                policy=spec[0],
                policy_versions=spec[1],
                version_labels=dict(entry.version_labels),
            )
        )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be unique, got {names}")
    return models


# --------------------------------------------------------------------------------------------
# Batching parameters and monitoring config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching knobs, named as in TF Serving's ``BatchingParameters``.

    Defaults suit a small CPU host: batches of up to 32 images, a 2 ms wait for more requests to
    join a batch, two batches in flight.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    thread_pool_name: str = "model_server_batch_threads"  # TF Serving's default pool name


_warned: set[str] = set()
_INT64_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads")  # fmt: skip
# Parsed (the file is valid for both servers) but not acted on here; each is logged once.
_NOT_HONOURED = {
    "enable_large_batch_splitting": "a request above max_batch_size is refused, not split",
    "max_execution_batch_size": "batches are cut at max_batch_size",
    "pad_variable_length_inputs": "string inputs need no padding",
}


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Parse ``BatchingParameters`` text-proto content; unset fields keep our defaults."""
    params = message_class("BatchingParameters")()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as err:
        raise ConfigError(f"batching parameters are malformed: {err}") from None
    values: dict = {name: getattr(params, name).value for name in _INT64_FIELDS
                    if params.HasField(name)}  # fmt: skip
    if params.HasField("thread_pool_name"):
        values["thread_pool_name"] = params.thread_pool_name.value
    options = BatchingOptions(**values, allowed_batch_sizes=tuple(params.allowed_batch_sizes))
    if options.max_batch_size < 1 or options.num_batch_threads < 1:
        raise ConfigError("max_batch_size and num_batch_threads must be >= 1")
    if options.allowed_batch_sizes and options.allowed_batch_sizes[-1] != options.max_batch_size:
        raise ConfigError("the last allowed_batch_sizes entry must equal max_batch_size")
    for name, why in _NOT_HONOURED.items():
        value = getattr(params, name)
        given = value if isinstance(value, bool) else params.HasField(name)
        if given and name not in _warned:
            _warned.add(name)
            log.warning("batching parameter %s is accepted but not honoured here: %s", name, why)
    return options


def load_batching_parameters(path: str | os.PathLike) -> BatchingOptions:
    try:
        return parse_batching_parameters(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"batching parameters file {path} does not exist") from None


PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def load_monitoring_config(path: str | os.PathLike) -> str | None:
    """The Prometheus path a ``MonitoringConfig`` file enables, or ``None`` (metrics off).

    An empty ``path`` means TF Serving's default, :data:`PROMETHEUS_PATH`.
    """
    config = message_class("MonitoringConfig")()
    try:
        text_format.Parse(Path(path).read_text(), config)
    except FileNotFoundError:
        raise ConfigError(f"monitoring config file {path} does not exist") from None
    except text_format.ParseError as err:
        raise ConfigError(f"monitoring config file {path} is malformed: {err}") from None
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or PROMETHEUS_PATH
