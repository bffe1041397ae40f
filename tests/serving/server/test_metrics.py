"""The Prometheus page: TF Serving's path and metric names, parsed by ``prometheus_client``."""

from __future__ import annotations

import base64

import grpc
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.fixtures.serving import make_images

PATH = "/monitoring/prometheus/metrics"  # deploy/tf_serving/monitoring.config


def scrape(url: str) -> dict:
    response = requests.get(url + PATH, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict, name: str, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over the samples of ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in families[name].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def traffic(serving_stack):
    """Metrics before and after 3 REST and 2 gRPC predicts and one refused request."""
    server = serving_stack.server
    before = scrape(server.url)
    images = make_images(3, seed=61)
    for image in images:
        body = {"instances": [{"b64": base64.b64encode(image).decode()}]}
        response = requests.post(f"{server.url}/v1/models/brain_mri:predict", json=body, timeout=30)
        assert response.status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "brain_mri"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images[:2]))
        stub.Predict(request, timeout=30)
        request.model_spec.version.value = 1
        stub.Predict(request, timeout=30)
    bad = requests.post(
        f"{server.url}/v1/models/brain_mri/versions/987654:predict", json={"instances": ["x"]},
        timeout=30,
    )  # fmt: skip
    assert bad.status_code == 404
    return before, scrape(server.url)


def test_request_count_and_latency_under_tf_serving_names(traffic):
    before, after = traffic
    count = ":tensorflow:serving:request_count"
    assert after[count].type == "counter"
    ok = value(after, count, count + "_total", model_name="brain_mri", status="OK")
    assert ok - value(before, count, count + "_total", model_name="brain_mri", status="OK") >= 5
    missing = value(after, count, count + "_total", model_name="brain_mri", status="NOT_FOUND")
    assert missing >= 1
    latency = ":tensorflow:serving:request_latency"
    assert after[latency].type == "histogram"
    for api, entrypoint, n in (("predict", "REST", 3), ("Predict", "GRPC", 2)):
        grown = value(after, latency, latency + "_count", API=api, entrypoint=entrypoint) - value(
            before, latency, latency + "_count", API=api, entrypoint=entrypoint
        )
        assert grown >= n, (api, entrypoint)
        assert value(after, latency, latency + "_sum", API=api, entrypoint=entrypoint) > 0


def test_requests_per_version_and_signature(traffic):
    _, after = traffic
    name = "tumorlib_serving_request_count"
    by = {"model_name": "brain_mri", "signature": "serving_default", "status": "OK"}
    assert value(after, name, name + "_total", version="1", entrypoint="GRPC", **by) >= 1
    assert value(after, name, name + "_total", version="2", entrypoint="REST", **by) >= 3


def test_batch_sizes_model_loads_and_warmup(traffic, serving_stack):
    _, after = traffic
    for name in (":tensorflow:serving:batching_session:input_batch_size",
                 ":tensorflow:serving:batching_session:processed_batch_size"):  # fmt: skip
        assert after[name].type == "histogram"
        assert value(after, name, name + "_count") >= 5
    assert value(after, ":tensorflow:serving:batching_session:input_batch_size",
                 ":tensorflow:serving:batching_session:input_batch_size_sum") >= 7  # fmt: skip
    loads = ":tensorflow:cc:saved_model:load_attempt_count"
    state = "tumorlib_serving_model_version_available"
    for version in (serving_stack.v1, serving_stack.v2):
        assert value(after, loads, loads + "_total", model_path=str(version), status="success") == 1
        warm = ":tensorflow:serving:model_warmup_records_read"
        assert value(after, warm, warm + "_total", model_path=str(version), status="OK") >= 3
        assert value(after, state, state, model_name="brain_mri", version=version.name) == 1


def test_the_page_answers_only_its_own_path(serving_stack):
    url = serving_stack.server.url
    response = requests.get(url + PATH + "/extra", timeout=10)
    assert response.status_code == 400
    assert response.text == f"Unexpected path: {PATH}/extra. Should be {PATH}"


def test_counters_are_written_as_tf_serving_writes_them(serving_stack):
    """Upstream's page has counters under their own name (no ``_total``) and no ``_created``."""
    text = requests.get(serving_stack.server.url + PATH, timeout=10).text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="brain_mri",status="OK"} ' in text
    assert "request_count_total" not in text and "_created" not in text
