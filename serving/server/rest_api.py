"""TF Serving's REST JSON formats: parsing predict requests and writing responses.

Follows ``tensorflow_serving/g3doc/api_rest.md``: a predict body has ``instances`` (row format)
or ``inputs`` (columnar format), never both, plus an optional ``signature_name``; binary values
are ``{"b64": "..."}``; row requests get ``{"predictions": ...}`` and columnar ones
``{"outputs": ...}``; a signature with a single output is returned without its name. Status and
metadata bodies are the protobuf messages printed by ``google.protobuf.json_format``, as TF
Serving prints them.

Hostile bodies fail as TF Serving fails them, with 400 and ``{"error": ...}``: any JSON the
parser rejects (deep nesting included: the decoder's recursion limit is the depth limit), and
a request with more instances than the server takes ("Task size N is larger than maximum input
batch size M", TF's batch scheduler's words), counted before anything is base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from serving.server.limits import check_task_size
from serving.server.status import InvalidArgument, Unimplemented
from tumorlib.contracts.serving_contract import SERVING_SIGNATURE

STRING_DTYPE = 7  # tensorflow.DataType.DT_STRING
INT64_MAX = 2**63 - 1  # a version is an int64 in TF Serving's ModelSpec


def parse_version(text: str | None) -> int | None:
    """A path's version number, or 400 as TF Serving's ``ParseModelInfo`` (int64 only)."""
    if text is None:
        return None
    version = int(text)
    if version > INT64_MAX:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return version


def parse_json(body: bytes) -> Any:
    """The decoded body; malformed or too deeply nested JSON is ``InvalidArgument`` (400)."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"JSON Parse error: {err}") from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: nesting is too deep") from None


def parse_predict_body(
    body: bytes, signature_defs: dict[str, Any], max_instances: int | None = None
) -> tuple[str, dict, str]:
    """Return ``(signature_name, {input_name: [bytes, ...]}, "row" | "columnar")``.

    ``max_instances`` caps the batch a request may carry; it is checked before any value is
    decoded, so an oversized request costs only its JSON parse (bounded by the body limit).
    """
    request = parse_json(body)
    if not isinstance(request, dict):
        raise InvalidArgument("JSON Parse error: request body must be a JSON object")
    signature_name = request.get("signature_name") or SERVING_SIGNATURE
    if not isinstance(signature_name, str):
        raise InvalidArgument("'signature_name' key must be a string")
    signature = signature_defs.get(signature_name)
    if signature is None or signature_name.startswith("__"):
        raise InvalidArgument(
            f'Serving signature name: "{signature_name}" not found in signature def'
        )
    input_names = list(signature.inputs)
    for name in input_names:
        if signature.inputs[name].dtype != STRING_DTYPE:
            raise Unimplemented(f"input {name!r}: only string (DT_STRING) inputs are served")
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        if has_instances:
            raise InvalidArgument(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
            )
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    if has_instances:
        _check_task_size(request["instances"], max_instances)
        return signature_name, _parse_rows(request["instances"], input_names), "row"
    inputs = request["inputs"]
    if isinstance(inputs, dict) and "b64" not in inputs:
        for values in inputs.values():
            _check_task_size(values, max_instances)
    else:
        _check_task_size(inputs, max_instances)
    return signature_name, _parse_columns(inputs, input_names), "columnar"


def _check_task_size(values: Any, max_instances: int | None) -> None:
    if isinstance(values, list):
        check_task_size(len(values), max_instances)


def _parse_rows(instances: Any, input_names: list[str]) -> dict[str, list[bytes]]:
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument("Expecting 'instances' to be an non-empty list/array")
    columns: dict[str, list[bytes]] = {name: [] for name in input_names}
    for i, instance in enumerate(instances):
        if isinstance(instance, dict) and "b64" not in instance:
            missing = set(input_names) - set(instance)
            extra = set(instance) - set(input_names)
            if missing or extra:
                raise InvalidArgument(
                    f"instances[{i}]: expecting named inputs {sorted(input_names)}, "
                    f"got {sorted(instance)}"
                )
            for name in input_names:
                columns[name].append(_to_bytes(instance[name], f"instances[{i}].{name}"))
        elif len(input_names) == 1:
            columns[input_names[0]].append(_to_bytes(instance, f"instances[{i}]"))
        else:
            raise InvalidArgument(
                f"instances[{i}]: expecting an object with the named inputs {input_names}"
            )
    return columns


def _parse_columns(inputs: Any, input_names: list[str]) -> dict[str, list[bytes]]:
    if not isinstance(inputs, dict) or "b64" in inputs:
        if len(input_names) != 1:
            raise InvalidArgument(f"'inputs' must name each of {input_names}")
        inputs = {input_names[0]: inputs}
    if set(inputs) != set(input_names):
        raise InvalidArgument(f"expecting 'inputs' {sorted(input_names)}, got {sorted(inputs)}")
    columns = {}
    for name in input_names:
        values = inputs[name]
        if not isinstance(values, list):  # a scalar input is a batch of one
            values = [values]
        if not values:
            raise InvalidArgument(f"'inputs' value for {name!r} is an empty list")
        columns[name] = [_to_bytes(v, f"inputs.{name}[{j}]") for j, v in enumerate(values)]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InvalidArgument("all 'inputs' must have the same batch size")
    return columns


def _to_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InvalidArgument(f'{where}: a binary value must be {{"b64": "<base64>"}}')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{where}: Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InvalidArgument(f'{where}: expecting a string or {{"b64": ...}} for a DT_STRING input')


def _jsonable(name: str, array: np.ndarray) -> list:
    if array.dtype == object or array.dtype.kind == "S":
        return [_string_value(name, v) for v in array.tolist()]
    return array.tolist()


def _string_value(name: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_string_value(name, v) for v in value]
    if isinstance(value, bytes):
        if name.endswith("_bytes"):  # TF Serving's convention for binary outputs
            return {"b64": base64.b64encode(value).decode("ascii")}
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def format_predict_response(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar)."""
    columns = {name: _jsonable(name, np.asarray(array)) for name, array in outputs.items()}
    if fmt == "columnar":
        if len(columns) == 1:
            return {"outputs": next(iter(columns.values()))}
        return {"outputs": columns}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    n = len(next(iter(columns.values())))
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(n)]}


def format_status_response(states: list[tuple[int, str]]) -> dict[str, Any]:
    """A ``GetModelStatusResponse`` printed as TF Serving prints it."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in states:
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        entry.status.error_code = 0  # OK
    return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def format_metadata_response(name: str, version: int, signature_defs: dict[str, Any]) -> dict:
    """``{"model_spec": ..., "metadata": {"signature_def": SignatureDefMap}}`` as in TF Serving."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    options = {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True}
    return {
        "model_spec": json_format.MessageToDict(spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
    }
