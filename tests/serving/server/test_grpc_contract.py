"""The gRPC contract, written as a TF Serving user writes it: ``tensorflow_serving.apis`` stubs.

The same cases as the REST contract (test_rest_contract.py), over ``PredictionService`` and
``ModelService``. By default against the local server's gRPC port (the session's
``serving_stack``: ``python -m serving.local`` with REST and gRPC over one core). Set
``TF_SERVING_GRPC=host:port`` to run the very same calls against a real
``tensorflow_model_server`` serving this project's export as ``brain_mri`` (at least two
versions, ``--enable_batching`` with deploy/tf_serving/batching_parameters.txt, see
docs/serving.md); ``TF_SERVING_MAX_REQUEST_BYTES`` names its request limit, if any.
"""

from __future__ import annotations

import base64
import json
import os

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.serving import MAX_REQUEST_BYTES, make_images
from tumorlib.contracts.classes import CLASS_NAMES

MODEL = "brain_mri"
EXTERNAL = os.environ.get("TF_SERVING_GRPC")
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def channel(request):
    target = EXTERNAL or request.getfixturevalue("serving_stack").server.grpc_target
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(
    images: list[bytes], version: int | None = None, signature: str = "", key: str = "image_bytes"
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    if signature:
        request.model_spec.signature_name = signature
    request.inputs[key].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    return request


def outputs(response) -> dict[str, np.ndarray]:
    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def status_request(version: int | None = None, name: str = MODEL):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def available_versions(model_stub) -> list[int]:
    response = model_stub.GetModelStatus(status_request(), timeout=10)
    state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return sorted(s.version for s in response.model_version_status if s.state == state)


def assert_still_serving(stub) -> None:
    response = stub.Predict(predict_request(make_images(1)), timeout=30)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 4)


def test_model_status(model_stub):
    response = model_stub.GetModelStatus(status_request(), timeout=10)
    assert response.model_version_status
    available = available_versions(model_stub)
    assert available
    for entry in response.model_version_status:
        assert entry.HasField("status")  # TF Serving always sets it (error_code OK)
        assert entry.status.error_code == 0 and entry.status.error_message == ""
    one = model_stub.GetModelStatus(status_request(available[0]), timeout=10)
    assert [s.version for s in one.model_version_status] == [available[0]]


def test_model_metadata_is_the_signature_def_map(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == MODEL and response.model_spec.version.value > 0
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    signatures = signature_map.signature_def
    serving = signatures["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert serving.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert {"probabilities", "class_index", "class_name"} <= set(serving.outputs)
    assert set(serving.outputs) <= {
        "probabilities", "class_index", "class_name", "confidence", "abstain",
        "in_distribution", "gate_score",
    }  # fmt: skip
    assert serving.outputs["probabilities"].tensor_shape.dim[1].size == 4
    assert "metadata" in signatures
    if "explain" in signatures:
        assert set(signatures["explain"].outputs) == {"probabilities", "class_index", "heatmap"}


def test_predict_answers_every_output_per_image(stub):
    images = make_images(3, seed=7)
    response = stub.Predict(predict_request(images), timeout=30)
    assert response.model_spec.name == MODEL
    assert response.model_spec.signature_name == "serving_default"
    got = outputs(response)
    assert got["probabilities"].shape == (3, 4)
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    for i in range(3):
        assert got["class_name"][i].decode() == CLASS_NAMES[got["class_index"][i]]


def test_grpc_and_rest_give_the_same_answers(stub, request):
    if EXTERNAL and not os.environ.get("TF_SERVING_URL"):
        pytest.skip("set TF_SERVING_URL too to compare with the real server's REST API")
    url = os.environ.get("TF_SERVING_URL") or request.getfixturevalue("serving_stack").server.url
    images = make_images(3, seed=9)
    body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
    rest = requests.post(f"{url}/v1/models/{MODEL}:predict", json=body, timeout=30).json()
    got = outputs(stub.Predict(predict_request(images), timeout=30))
    for i, row in enumerate(rest["predictions"]):
        np.testing.assert_allclose(got["probabilities"][i], row["probabilities"], atol=1e-6)
        assert got["class_name"][i].decode() == row["class_name"]


def test_output_filter_returns_only_the_named_outputs(stub):
    request = predict_request(make_images(2, seed=3))
    request.output_filter.append("class_name")
    assert set(stub.Predict(request, timeout=30).outputs) == {"class_name"}


def test_explicit_version_and_metadata_signature(stub, model_stub):
    versions = available_versions(model_stub)
    image = make_images(1, seed=11)
    answers = {}
    for version in versions:
        response = stub.Predict(predict_request(image, version), timeout=30)
        assert response.model_spec.version.value == version
        answers[version] = outputs(response)["probabilities"][0]
        meta = stub.Predict(
            predict_request([b"metadata"], version, "metadata", key="request"), timeout=30
        )
        text = tf.make_ndarray(meta.outputs["metadata_json"]).reshape(-1)[0].decode()
        assert json.loads(text)["model_version"] == version
    if len(versions) >= 2:
        assert not np.allclose(answers[versions[0]], answers[versions[-1]], atol=1e-6)


def test_explain_signature_returns_a_unit_heatmap_per_image(stub):
    images = make_images(2, seed=8)
    try:
        explained = outputs(stub.Predict(predict_request(images, signature="explain"), timeout=60))
    except grpc.RpcError as err:
        if err.code() == Code.FAILED_PRECONDITION:
            pytest.skip("the served export has no explain signature")
        raise
    predicted = outputs(stub.Predict(predict_request(images), timeout=30))
    heatmap = explained["heatmap"]
    assert heatmap.ndim == 3 and heatmap.shape[0] == 2 and heatmap.shape[1] == heatmap.shape[2]
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    np.testing.assert_allclose(explained["probabilities"], predicted["probabilities"], atol=1e-5)


def _without_spec():
    request = predict_request([b"x"])
    request.ClearField("model_spec")
    return request


def _float_input():
    request = predict_request([b"x"])
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    return request


def _extra_input():
    request = predict_request(make_images(1))
    request.inputs["other"].CopyFrom(tf.make_tensor_proto([b"x"]))
    return request


def _with(**spec):
    request = predict_request(make_images(1))
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def _metadata_without_field():
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    return request


def _classify():
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.input.example_list.examples.add()
    return request


def _regress():
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.input.example_list.examples.add()
    return request


BAD_REQUESTS = [
    # (name, method, request factory, expected code) — the codes TF Serving answers with
    ("missing model spec", "Predict", _without_spec, Code.INVALID_ARGUMENT),
    ("unknown signature", "Predict", lambda: _with(signature_name="nope"),
     Code.FAILED_PRECONDITION),
    ("wrong input name", "Predict", lambda: predict_request([b"x"], key="nope"),
     Code.INVALID_ARGUMENT),
    ("extra input", "Predict", _extra_input, Code.INVALID_ARGUMENT),
    ("float for a string input", "Predict", _float_input, Code.INVALID_ARGUMENT),
    ("non-image bytes", "Predict", lambda: predict_request([b"this is not an image"]),
     Code.INVALID_ARGUMENT),
    ("unknown version", "Predict", lambda: _with(version=987654), Code.NOT_FOUND),
    ("unknown label", "Predict", lambda: _with(version_label="nope"), Code.INVALID_ARGUMENT),
    ("unknown model", "Predict", lambda: _with(name="no_such_model"), Code.NOT_FOUND),
    ("metadata without field", "GetModelMetadata", _metadata_without_field,
     Code.INVALID_ARGUMENT),
    ("classify a predict-only model", "Classify", _classify, Code.INVALID_ARGUMENT),
    ("regress a predict-only model", "Regress", _regress, Code.INVALID_ARGUMENT),
    ("unknown model status", "GetModelStatus", lambda: status_request(name="no_such_model"),
     Code.NOT_FOUND),
    ("unknown version status", "GetModelStatus", lambda: status_request(987654), Code.NOT_FOUND),
]  # fmt: skip


@pytest.mark.parametrize(
    "name,method,make_request,expected", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_tf_serving_codes_and_server_keeps_serving(
    stub, model_stub, name, method, make_request, expected
):
    target = model_stub if method == "GetModelStatus" else stub
    with pytest.raises(grpc.RpcError) as raised:
        getattr(target, method)(make_request(), timeout=30)
    assert raised.value.code() == expected, raised.value.details()
    assert raised.value.details()
    assert_still_serving(stub)


def test_one_bad_image_in_a_batch_fails_that_request_only(stub):
    request = predict_request([*make_images(2, seed=5), b"GIF89a broken"])
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=30)
    assert raised.value.code() == Code.INVALID_ARGUMENT
    assert_still_serving(stub)


def test_more_instances_than_the_batch_size_are_refused(stub):
    if EXTERNAL:
        pytest.skip("the external server's max_batch_size is not known here")
    request = predict_request([b"x"] * 33)  # deploy/tf_serving/batching_parameters.txt: 32
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=30)
    assert raised.value.code() == Code.INVALID_ARGUMENT
    assert raised.value.details() == "Task size 33 is larger than maximum input batch size 32"


def test_oversize_request_is_rejected(stub):
    limit = MAX_REQUEST_BYTES
    if EXTERNAL:
        if not os.environ.get("TF_SERVING_MAX_REQUEST_BYTES"):
            pytest.skip("TF_SERVING_MAX_REQUEST_BYTES not set for the external server")
        limit = int(os.environ["TF_SERVING_MAX_REQUEST_BYTES"])
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request([b"A" * (limit + 1024)]), timeout=60)
    assert raised.value.code() == Code.RESOURCE_EXHAUSTED
    assert_still_serving(stub)


def test_a_missed_deadline_is_deadline_exceeded(stub):
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(make_images(16, seed=2), signature="explain"), timeout=0.001)
    assert raised.value.code() == Code.DEADLINE_EXCEEDED
    assert_still_serving(stub)
