"""TFServingClient against the local server, and its error/retry behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from serving.client import TFServingClient, TFServingError, TFServingUnavailable
from serving.inprocess import InProcessModel
from tests.serving_fixtures import FIXTURE_TEMPERATURE, free_port, make_images, shared_stack
from tumorlib.classes import CLASS_NAMES


@pytest.fixture(scope="module")
def stack():
    return shared_stack()


@pytest.fixture(scope="module")
def client(stack):
    return TFServingClient(stack.server.url, timeout=30)


def test_predict_matches_in_process_model(stack, client):
    images = make_images(4, seed=21)
    remote = client.predict(images)
    local = InProcessModel(stack.base_path).predict(images)  # newest version, like the server
    assert len(remote) == 4
    for r, p in zip(remote, local):
        assert r.class_name == p.class_name and r.class_index == p.class_index
        assert list(r.probabilities) == list(CLASS_NAMES)
        np.testing.assert_allclose(
            list(r.probabilities.values()), list(p.probabilities.values()), atol=1e-6
        )
    assert client.predict([]) == []


def test_explicit_version_status_and_metadata(stack, client):
    image = make_images(1, seed=22)
    v1 = client.predict(image, version=1)[0]
    v2 = client.predict(image, version=2)[0]
    assert v1.probabilities != pytest.approx(v2.probabilities, abs=1e-6)
    assert client.metadata(version=1)["temperature"] == pytest.approx(FIXTURE_TEMPERATURE)
    assert client.metadata()["model_version"] == 2  # unversioned = newest
    assert client.class_names() == CLASS_NAMES
    states = {s["version"]: s["state"] for s in client.status()["model_version_status"]}
    assert states == {"1": "AVAILABLE", "2": "AVAILABLE"}
    assert client.status(version=1)["model_version_status"][0]["version"] == "1"
    sig = client.signature_metadata()["metadata"]["signature_def"]["signature_def"]
    assert "serving_default" in sig
    assert client.is_healthy()


def test_server_errors_carry_tf_serving_message(stack, client):
    with pytest.raises(TFServingError) as info:
        client.predict([b"not an image at all"])
    assert info.value.status_code == 400
    assert "image" in info.value.message.lower()
    with pytest.raises(TFServingError) as info:
        client.predict(make_images(1), version=42)
    assert info.value.status_code == 404
    assert "Specific(brain_mri, 42)" in info.value.message
    unknown = TFServingClient(stack.server.url, model_name="no_such_model")
    assert not unknown.is_healthy()
    with pytest.raises(TypeError):
        client.predict(["a string, not bytes"])


def test_unreachable_server_is_retried_then_unavailable():
    calls = []

    class CountingSession(requests.Session):
        def request(self, *args, **kwargs):
            calls.append(args)
            return super().request(*args, **kwargs)

    client = TFServingClient(
        f"http://127.0.0.1:{free_port()}",
        retries=2,
        backoff=0.01,
        timeout=2,
        session=CountingSession(),
    )
    with pytest.raises(TFServingUnavailable, match="cannot reach"):
        client.status()
    assert len(calls) == 3
    assert not client.is_healthy()


class _Response:
    def __init__(self, status: int, payload: dict):
        self.status_code, self._payload, self.text, self.reason = status, payload, "", ""

    def json(self):
        return self._payload


class _ScriptedSession:
    """Answers from a script, to check which statuses are retried without a flaky server."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = 0

    def request(self, *args, **kwargs):
        self.calls += 1
        return self.responses.pop(0)


def test_503_and_429_are_retried_but_400_is_not():
    ok = _Response(200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]})
    session = _ScriptedSession(
        [_Response(503, {"error": "loading"}), _Response(429, {"error": "queue full"}), ok]
    )
    client = TFServingClient(retries=3, backoff=0.001, session=session)
    assert client.status()["model_version_status"][0]["version"] == "1"
    assert session.calls == 3

    session = _ScriptedSession([_Response(400, {"error": "Missing 'inputs' or 'instances' key"})])
    client = TFServingClient(retries=3, backoff=0.001, session=session)
    with pytest.raises(TFServingError, match="Missing 'inputs'") as info:
        client.status()
    assert info.value.status_code == 400 and session.calls == 1

    session = _ScriptedSession([_Response(503, {"error": "unavailable"})] * 2)
    client = TFServingClient(retries=1, backoff=0.001, session=session)
    with pytest.raises(TFServingUnavailable, match="unavailable"):
        client.status()
