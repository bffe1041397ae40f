"""The REST contract, checked against whichever server is configured.

By default a local server (``python -m serving.local``) is started on a free 127.0.0.1 port.
Set ``TF_SERVING_URL`` (e.g. ``http://127.0.0.1:8501``) to run the very same requests against a
real ``tensorflow_model_server`` serving an export of this project as ``brain_mri`` (at least two
versions, see docs/serving.md); ``TF_SERVING_MAX_REQUEST_BYTES`` tells the oversize test that
server's body limit, if it has one.
"""

from __future__ import annotations

import base64
import os

import pytest
import requests

from tests.fixtures.serving import MAX_REQUEST_BYTES, make_images
from tumorlib.contracts.classes import CLASS_NAMES

MODEL = "brain_mri"


@pytest.fixture(scope="module")
def url(request) -> str:
    external = os.environ.get("TF_SERVING_URL")
    if external:  # a real TF Serving: the local stand-in is not started at all
        return external.rstrip("/")
    return request.getfixturevalue("serving_stack").server.url


@pytest.fixture(scope="module")
def max_request_bytes() -> int | None:
    if os.environ.get("TF_SERVING_URL"):
        value = os.environ.get("TF_SERVING_MAX_REQUEST_BYTES")
        return int(value) if value else None
    return MAX_REQUEST_BYTES


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def assert_still_serving(url: str) -> None:
    response = requests.post(
        f"{url}/v1/models/{MODEL}:predict", json={"instances": [b64(make_images(1)[0])]}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_model_status(url):
    response = requests.get(f"{url}/v1/models/{MODEL}", timeout=10)
    assert response.status_code == 200
    statuses = response.json()["model_version_status"]
    assert statuses and all(set(s) == {"version", "state", "status"} for s in statuses)
    available = [s for s in statuses if s["state"] == "AVAILABLE"]
    assert available and available[0]["status"] == {"error_code": "OK", "error_message": ""}
    version = available[0]["version"]
    assert version.isdigit()  # int64 is a JSON string in protobuf JSON
    one = requests.get(f"{url}/v1/models/{MODEL}/versions/{version}", timeout=10).json()
    assert [s["version"] for s in one["model_version_status"]] == [version]


def test_model_metadata_is_the_signature_def_map(url):
    response = requests.get(f"{url}/v1/models/{MODEL}/metadata", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"]["name"] == MODEL
    signatures = body["metadata"]["signature_def"]["signature_def"]
    serving = signatures["serving_default"]
    assert serving["method_name"] == "tensorflow/serving/predict"
    assert serving["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    # Safety outputs exist only when the run measured them (see docs/serving.md).
    assert {"probabilities", "class_index", "class_name"} <= set(serving["outputs"])
    assert set(serving["outputs"]) <= {
        "probabilities", "class_index", "class_name", "confidence", "abstain",
        "in_distribution", "gate_score",
    }  # fmt: skip
    assert serving["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == "4"
    assert "metadata" in signatures
    if "explain" in signatures:  # exports from before Grad-CAM have no explain signature
        explain = signatures["explain"]
        assert explain["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
        assert set(explain["outputs"]) == {"probabilities", "class_index", "heatmap"}
        assert len(explain["outputs"]["heatmap"]["tensor_shape"]["dim"]) == 3


def test_explain_signature_returns_a_unit_heatmap_per_image(url):
    signatures = requests.get(f"{url}/v1/models/{MODEL}/metadata", timeout=10).json()
    if "explain" not in signatures["metadata"]["signature_def"]["signature_def"]:
        pytest.skip("the served export has no explain signature")
    images = [b64(i) for i in make_images(2, seed=8)]
    explained = requests.post(
        f"{url}/v1/models/{MODEL}:predict",
        json={"signature_name": "explain", "instances": images},
        timeout=60,
    )
    predicted = requests.post(
        f"{url}/v1/models/{MODEL}:predict", json={"instances": images}, timeout=30
    )
    assert explained.status_code == predicted.status_code == 200, explained.text
    for e, p in zip(explained.json()["predictions"], predicted.json()["predictions"]):
        heatmap = e["heatmap"]
        assert len(heatmap) == len(heatmap[0]) > 1  # square, at model input resolution
        values = [v for row in heatmap for v in row]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert e["class_index"] == p["class_index"]
        assert e["probabilities"] == pytest.approx(p["probabilities"], abs=1e-5)


def test_predict_row_and_columnar_formats_agree(url):
    images = [b64(i) for i in make_images(3, seed=7)]
    row = requests.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": images}, timeout=30)
    named = requests.post(
        f"{url}/v1/models/{MODEL}:predict",
        json={"instances": [{"image_bytes": i} for i in images]},
        timeout=30,
    )
    col = requests.post(
        f"{url}/v1/models/{MODEL}:predict",
        json={"signature_name": "serving_default", "inputs": {"image_bytes": images}},
        timeout=30,
    )
    assert row.status_code == named.status_code == col.status_code == 200
    predictions = row.json()["predictions"]
    assert predictions == named.json()["predictions"]
    outputs = col.json()["outputs"]
    assert len(predictions) == 3
    for i, p in enumerate(predictions):
        assert p["class_name"] == CLASS_NAMES[p["class_index"]]
        assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert outputs["probabilities"][i] == pytest.approx(p["probabilities"], abs=1e-6)
        assert outputs["class_name"][i] == p["class_name"]


def test_explicit_version_and_metadata_signature(url):
    status = requests.get(f"{url}/v1/models/{MODEL}", timeout=10).json()
    versions = sorted(
        int(s["version"]) for s in status["model_version_status"] if s["state"] == "AVAILABLE"
    )
    image = [b64(make_images(1, seed=11)[0])]
    answers = {}
    for version in versions:
        response = requests.post(
            f"{url}/v1/models/{MODEL}/versions/{version}:predict",
            json={"instances": image},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answers[version] = response.json()["predictions"][0]["probabilities"]
        meta = requests.post(
            f"{url}/v1/models/{MODEL}/versions/{version}:predict",
            json={"signature_name": "metadata", "instances": ["m"]},
            timeout=30,
        )
        assert meta.status_code == 200
        assert f'"model_version": {version}' in meta.json()["predictions"][0]
    if len(versions) >= 2:  # two different exports must be told apart by version
        assert answers[versions[0]] != pytest.approx(answers[versions[-1]], abs=1e-6)


BAD_REQUESTS = [
    # (name, method, path, body (bytes or JSON), expected status)
    ("invalid JSON", "POST", f"/v1/models/{MODEL}:predict", b'{"instances": [', 400),
    ("missing instances", "POST", f"/v1/models/{MODEL}:predict", {"signature_name": ""}, 400),
    (
        "both instances and inputs",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": ["a"], "inputs": ["a"]},
        400,
    ),
    ("bad base64", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "%%%"}]}, 400),
    (
        "non-image bytes",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [b64(b"this is not an image")]},
        400,
    ),
    (
        "unknown signature",
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"signature_name": "nope", "instances": ["a"]},
        400,
    ),
    (
        "unknown version",
        "POST",
        f"/v1/models/{MODEL}/versions/987654:predict",
        {"instances": ["a"]},
        404,
    ),
    ("unknown model", "POST", "/v1/models/no_such_model:predict", {"instances": ["a"]}, 404),
    ("unknown model status", "GET", "/v1/models/no_such_model", None, 404),
    ("unknown version status", "GET", f"/v1/models/{MODEL}/versions/987654", None, 404),
]


@pytest.mark.parametrize(
    "name,method,path,body,expected", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_tf_serving_errors_and_server_keeps_serving(
    url, name, method, path, body, expected
):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = requests.request(method, url + path, timeout=30, **kwargs)
    assert response.status_code == expected, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error
    assert_still_serving(url)


def test_one_bad_image_in_a_batch_fails_that_request_only(url):
    good = [b64(i) for i in make_images(2, seed=5)]
    response = requests.post(
        f"{url}/v1/models/{MODEL}:predict",
        json={"instances": [*good, b64(b"GIF89a broken")]},
        timeout=30,
    )
    assert response.status_code == 400
    assert_still_serving(url)


def test_oversize_body_is_rejected(url, max_request_bytes):
    if max_request_bytes is None:
        pytest.skip("TF_SERVING_MAX_REQUEST_BYTES not set for the external server")
    payload = {"instances": [{"b64": "A" * (max_request_bytes + 1024)}]}
    response = requests.post(f"{url}/v1/models/{MODEL}:predict", json=payload, timeout=60)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert_still_serving(url)
