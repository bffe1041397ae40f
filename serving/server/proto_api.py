"""TF Serving's protobuf API: reading a ``PredictRequest``, writing a ``PredictResponse``.

The gRPC service and the warm-up replay (``PredictionLog`` records hold ``PredictRequest``\\ s)
read requests here, with the checks and words of TF Serving's ``predict_util.cc``, TensorFlow's
``saved_model::GetInputValues`` and ``classifier.cc`` / ``regressor.cc`` (for ``Classify`` and
``Regress``, which REST's ``:classify`` / ``:regress`` answer with the same words). Values are
converted without TensorFlow's Python API: the protos are plain messages and the model's inputs
are strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.server.status import FailedPrecondition, InvalidArgument, Unimplemented
from tumorlib.contracts.serving_contract import SERVING_SIGNATURE

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# tensorflow.DataType numbers and the TensorProto field each is written to (AsProtoField).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64, DT_BOOL = 1, 2, 3, 7, 9, 10
_FIELDS = {
    np.dtype(np.float32): (DT_FLOAT, "float_val"),
    np.dtype(np.float64): (DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (DT_INT32, "int_val"),
    np.dtype(np.int64): (DT_INT64, "int64_val"),
    np.dtype(np.bool_): (DT_BOOL, "bool_val"),
}
_DTYPE_NAMES = {DT_FLOAT: "float", DT_DOUBLE: "double", DT_INT32: "int32", DT_STRING: "string",
                DT_INT64: "int64", DT_BOOL: "bool"}  # fmt: skip


def _keys(mapping: Mapping[str, Any]) -> str:
    return ",".join(sorted(mapping))


def signature_for_predict(signature_defs: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """The signature a ``PredictRequest`` names (default ``serving_default``), as TF Serving
    looks it up (FAILED_PRECONDITION when missing)."""
    name = name or SERVING_SIGNATURE
    signature = None if name.startswith("__") else signature_defs.get(name)
    if signature is None:
        raise FailedPrecondition(f'Serving signature key "{name}" not found.')
    return name, signature


def predict_inputs(request: Any, signature: Any) -> tuple[dict[str, list[bytes]], list[str]]:
    """``({input: [bytes, ...]}, output aliases)`` of a ``PredictRequest`` for ``signature``.

    The checks run in TF Serving's order: input count, input names, tensor parsing, output
    filter. Only string inputs are served (every signature of this project takes strings).
    """
    sent, wanted = dict(request.inputs), dict(signature.inputs)
    if len(sent) > len(wanted) or (len(sent) < len(wanted) and not signature.defaults):
        extra, missing = sorted(set(sent) - set(wanted)), sorted(set(wanted) - set(sent))
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{_keys(sent)}}}) != len({{{_keys(wanted)}}}). Sent extra: "
            f"{{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    inputs = {}
    for alias, tensor in sent.items():
        if alias not in wanted:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                f"in the set {{{_keys(wanted)}}}."
            )
        inputs[alias] = string_values(alias, tensor, position=list(wanted).index(alias))
    lengths = {len(values) for values in inputs.values()}
    if len(lengths) > 1:
        raise InvalidArgument("all inputs must have the same batch size (0th dimension)")
    outputs: list[str] = []
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{_keys(signature.outputs)}}}."
            )
        if alias in outputs:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        outputs.append(alias)
    return inputs, outputs or list(signature.outputs)


def string_values(alias: str, tensor: Any, position: int = 0) -> list[bytes]:
    """The strings of a ``DT_STRING`` ``TensorProto`` of rank 1 (a batch)."""
    if tensor.dtype != DT_STRING:
        given = _DTYPE_NAMES.get(tensor.dtype, f"dtype {tensor.dtype}")
        raise InvalidArgument(f"Expects arg[{position}] to be string but {given} is provided")
    dims = [d.size for d in tensor.tensor_shape.dim]
    values = list(tensor.string_val)
    if tensor.tensor_shape.unknown_rank or len(dims) != 1 or len(values) > max(dims[0], 0):
        raise InvalidArgument(f"tensor parsing error: {alias}")
    # Tensor::FromProto: fewer values than the shape holds repeat the last (or are empty).
    return values + [values[-1] if values else b""] * (dims[0] - len(values))


def tensor_proto(array: np.ndarray, *, as_content: bool = False) -> Any:
    """A ``TensorProto`` of an output, as TF Serving writes it: values in the typed field
    (``AsProtoField``) or, with ``--enable_serialization_as_tensor_content``, as raw bytes."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    array = np.asarray(array)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(n)) for n in array.shape]
    )
    if array.dtype == object or array.dtype.kind in "SU":
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
        return tensor_pb2.TensorProto(dtype=DT_STRING, tensor_shape=shape, string_val=flat)
    if array.dtype not in _FIELDS:
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
    dtype, field = _FIELDS[array.dtype]
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape)
    if as_content:  # little-endian, as TensorFlow writes tensor_content
        proto.tensor_content = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto


def check_classify_or_regress(
    method: str, signature_defs: Mapping[str, Any], name: str, *, method_name_check: bool = False
) -> None:
    """Answer ``Classify`` / ``Regress`` as TF Serving answers it for this model's signatures.

    The checks (and words) of ``GetClassificationSignatureDef`` / ``PreProcessClassification``
    and their regression twins. Every signature of this project is a predict signature, so one
    of them fails; a signature that passed would still be UNIMPLEMENTED here (the local server
    runs no ``tf.Example`` parsing).
    """
    name = name or SERVING_SIGNATURE
    signature = signature_defs.get(name)
    if signature is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    classify = method == "classify"
    kind = "classification" if classify else "regression"
    expected = CLASSIFY_METHOD if classify else REGRESS_METHOD
    if method_name_check and signature.method_name != expected:
        raise InvalidArgument(
            f"Expected {kind} signature method_name to be {expected}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if classify and len(signature.outputs) not in (1, 2):
        raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if not classify and len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise InvalidArgument(f"No {kind} inputs found in SignatureDef: {signature}")
    outputs = ("classes", "scores") if classify else ("outputs",)
    if not any(key in signature.outputs for key in outputs):
        if classify:
            raise InvalidArgument(
                'Expected classification signature outputs to contain at least one of "classes" '
                f'or "scores". Signature was: {signature}'
            )
        raise InvalidArgument(f"No regression outputs found in SignatureDef: {signature}")
    raise Unimplemented(f"{method} on tf.Example inputs is served by TF Serving only")
