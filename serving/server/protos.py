"""TF Serving's config messages that no pip package ships, declared field for field.

``--batching_parameters_file`` is a ``BatchingParameters`` text proto
(``servables/tensorflow/session_bundle_config.proto``) and ``--monitoring_config_file`` a
``MonitoringConfig`` (``config/monitoring_config.proto``). ``tensorflow-serving-api`` ships
neither, so their descriptors are built here with every upstream field (same names, numbers and
types) in a private pool, and parsed with protobuf's own ``text_format``: a file the real server
accepts is accepted here, and a misspelt field is refused by both.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_PACKAGE = "tensorflow.serving"
_F = descriptor_pb2.FieldDescriptorProto

# message -> [(field, number, type or ".message.Name", repeated)], as upstream declares them.
_MESSAGES: dict[str, list[tuple[str, int, Any, bool]]] = {
    "BatchingParameters": [
        ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, True),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, False),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value", False),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, False),
        ("path", 2, _F.TYPE_STRING, False),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", False),
    ],
}


@cache
def message_class(name: str) -> Any:
    """The generated class of ``tensorflow.serving.<name>`` (one of :data:`_MESSAGES`)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="tumorlib_tf_serving_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message_name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for field_name, number, kind, repeated in fields:
            label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if isinstance(kind, str):
                message.field.add(
                    name=field_name, number=number, label=label, type=_F.TYPE_MESSAGE,
                    type_name=kind,
                )  # fmt: skip
            else:
                message.field.add(name=field_name, number=number, label=label, type=kind)
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
