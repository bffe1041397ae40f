"""TF Serving's configuration files, read with protobuf's own text-format parser.

``--model_config_file`` is a ``ModelServerConfig`` text proto; its message class comes from the
``tensorflow-serving-api`` package, so we parse exactly what ``tensorflow_model_server`` parses.
``--batching_parameters_file`` is a ``BatchingParameters`` text proto; that message is not
shipped in any pip package, so its descriptor (field names and numbers as in TF Serving's
``session_bundle_config.proto``) is declared here and parsed with the same ``text_format``.
One file therefore configures the real server and the local one alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

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
    if not config.HasField("model_config_list"):
        raise ConfigError(f"model config file {path} has no model_config_list")
    models = []
    for entry in config.model_config_list.config:
        if entry.model_platform and entry.model_platform != "tensorflow":
            raise ConfigError(f"model {entry.name!r}: only model_platform 'tensorflow' is served")
        if not entry.name or not entry.base_path:
            raise ConfigError(f"{path}: every model needs a name and a base_path")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
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
        raise ConfigError(f"{path}: model names must be unique, got {names}")
    return models


# --------------------------------------------------------------------------------------------
# Batching parameters
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


_INT64_FIELDS = {
    "max_batch_size": 1,
    "batch_timeout_micros": 2,
    "max_enqueued_batches": 3,
    "num_batch_threads": 4,
}


def _batching_parameters_class():
    """Build ``tensorflow.serving.BatchingParameters`` in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="tumorlib_batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file_proto.message_type.add(name="BatchingParameters")
    fdp = descriptor_pb2.FieldDescriptorProto
    for name, number in _INT64_FIELDS.items():
        message.field.add(
            name=name,
            number=number,
            type=fdp.TYPE_MESSAGE,
            label=fdp.LABEL_OPTIONAL,
            type_name=".google.protobuf.Int64Value",
        )
    message.field.add(
        name="thread_pool_name",
        number=5,
        type=fdp.TYPE_MESSAGE,
        label=fdp.LABEL_OPTIONAL,
        type_name=".google.protobuf.StringValue",
    )
    message.field.add(
        name="allowed_batch_sizes", number=6, type=fdp.TYPE_INT64, label=fdp.LABEL_REPEATED
    )
    message.field.add(
        name="pad_variable_length_inputs", number=7, type=fdp.TYPE_BOOL, label=fdp.LABEL_OPTIONAL
    )
    pool.Add(file_proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def parse_batching_parameters(text: str) -> BatchingOptions:
    """Parse ``BatchingParameters`` text-proto content; unset fields keep our defaults."""
    params = _batching_parameters_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as err:
        raise ConfigError(f"batching parameters are malformed: {err}") from None
    values = {name: getattr(params, name).value for name in _INT64_FIELDS if params.HasField(name)}
    options = BatchingOptions(**values, allowed_batch_sizes=tuple(params.allowed_batch_sizes))
    if options.max_batch_size < 1 or options.num_batch_threads < 1:
        raise ConfigError("max_batch_size and num_batch_threads must be >= 1")
    if options.allowed_batch_sizes and options.allowed_batch_sizes[-1] != options.max_batch_size:
        raise ConfigError("the last allowed_batch_sizes entry must equal max_batch_size")
    return options


def load_batching_parameters(path: str | os.PathLike) -> BatchingOptions:
    try:
        return parse_batching_parameters(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"batching parameters file {path} does not exist") from None
