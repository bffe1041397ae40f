"""TFServingClient against the local server, and its error/retry behaviour; the safety fields
and the ``explain`` (Grad-CAM) signature through REST and in-process alike."""

from __future__ import annotations

import time

import numpy as np
import pytest

from serving.clients.backend import RestBackend, rest_error
from serving.clients.inprocess import InProcessModel
from serving.clients.prediction import NOT_BRAIN_MRI, ExplainUnavailable
from serving.clients.rest import TFServingClient, TFServingError, TFServingUnavailable
from tests.fixtures.http_servers import (
    always,
    endless,
    hostile_server,
    response,
    script,
    silent,
    trickle,
)
from tests.fixtures.serving import (
    FIXTURE_IMAGE_SIZE,
    FIXTURE_TEMPERATURE,
    blank_png,
    free_port,
    make_images,
)
from tumorlib.contracts.classes import CLASS_NAMES


@pytest.fixture(scope="module")
def stack(serving_stack):
    return serving_stack


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


def test_safety_fields_come_through_and_are_none_for_a_model_without_them(stack, client):
    images = make_images(3, seed=23) + [blank_png()]
    remote = client.predict(images, version=2)
    local = InProcessModel(stack.base_path, version=2).predict(images)
    for r, p in zip(remote, local):
        assert (r.abstain, r.in_distribution) == (p.abstain, p.in_distribution)
        assert r.gate_score == pytest.approx(p.gate_score, rel=1e-5)
        assert r.confidence == pytest.approx(max(r.probabilities.values()), abs=1e-6)
        assert isinstance(r.abstain, bool) and isinstance(r.in_distribution, bool)
    assert [r.in_distribution for r in remote] == [True, True, True, False]
    assert remote[-1].verdict == NOT_BRAIN_MRI and remote[-1].gate_score > 1.0
    threshold = client.metadata(version=2)["abstention"]["threshold"]
    assert all(r.abstain == (r.confidence < threshold) for r in remote)

    old = client.predict(images, version=1)  # exported without abstention.json / input gate
    assert all(r.abstain is None and r.in_distribution is None for r in old)
    assert all(r.gate_score is None and r.confidence is not None for r in old)


def test_explain_over_rest_matches_in_process(stack, client):
    images = make_images(2, seed=24)
    remote = client.explain(images)
    local = InProcessModel(stack.base_path).explain(images)
    predicted = client.predict(images)
    for r, p, q in zip(remote, local, predicted):
        assert r.heatmap.shape == (FIXTURE_IMAGE_SIZE, FIXTURE_IMAGE_SIZE)
        assert r.heatmap.dtype == np.float32 and np.isfinite(r.heatmap).all()
        assert r.heatmap.min() >= 0.0 and r.heatmap.max() <= 1.0
        np.testing.assert_allclose(r.heatmap, p.heatmap, atol=1e-6)
        assert r.class_name == p.class_name == q.class_name
        assert r.probabilities == pytest.approx(q.probabilities, abs=1e-5)
    assert client.explain([]) == []
    assert len(client.explain(images[:1], version=1)) == 1


def test_explain_unavailable_is_its_own_error(plain_export):

    message = 'Serving signature name: "explain" not found in signature def'
    session = _ScriptedSession([_Response(400, {"error": message})])
    client = TFServingClient(retries=0, session=session)
    client._class_names[None] = CLASS_NAMES  # no metadata round trip in this scripted session
    with pytest.raises(ExplainUnavailable, match="re-export"):
        client.explain(make_images(1))

    model = InProcessModel(plain_export)
    with pytest.raises(ExplainUnavailable, match="no 'explain' signature"):
        model.explain(make_images(1))
    assert model.predict(make_images(1))[0].abstain is None


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
    assert "serving_default" in sig and "explain" in sig
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
    """A server that hangs up before answering is tried again (the call is idempotent), then
    reported unavailable; a closed port likewise, within the call's budget."""

    def hang_up(conn, _request, _server):
        raise OSError("closed without an answer")

    with hostile_server(hang_up) as server:
        client = TFServingClient(server.url, retries=2, backoff=0.01, timeout=5)
        with pytest.raises(TFServingUnavailable, match="cannot reach"):
            client.status()
        assert len(server.requests) == 3
        assert not client.is_healthy()
    start = time.monotonic()
    with pytest.raises(TFServingUnavailable, match="cannot reach"):
        TFServingClient(f"http://127.0.0.1:{free_port()}", retries=2, timeout=2).status()
    assert time.monotonic() - start < 2 + 1.5


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
    ok = response(200, b'{"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}')
    answers = [response(503, b'{"error": "loading"}'), response(429, b'{"error": "queue full"}')]
    with hostile_server(script(*answers, ok)) as server:
        client = TFServingClient(server.url, retries=3, backoff=0.001)
        assert client.status()["model_version_status"][0]["version"] == "1"
        assert len(server.requests) == 3

    bad = response(400, b"{\"error\": \"Missing 'inputs' or 'instances' key\"}")
    with hostile_server(script(bad)) as server:
        client = TFServingClient(server.url, retries=3, backoff=0.001)
        with pytest.raises(TFServingError, match="Missing 'inputs'") as info:
            client.status()
        assert info.value.status_code == 400 and len(server.requests) == 1

    with hostile_server(always(503, b'{"error": "unavailable"}')) as server:
        client = TFServingClient(server.url, retries=1, backoff=0.001)
        with pytest.raises(TFServingUnavailable, match="unavailable"):
            client.status()
        assert len(server.requests) == 2


def test_a_silent_or_trickling_server_costs_the_timeout_not_retries_times_it():
    """The timeout is the whole call's: with 3 retries and back-off, still about 1 s."""
    for handler in (silent, trickle(0.2)):
        with hostile_server(handler) as server:
            client = TFServingClient(server.url, timeout=1.0, retries=3)
            start = time.monotonic()
            with pytest.raises(TFServingUnavailable, match="did not answer within 1 s"):
                client.predict(make_images(1))
            assert time.monotonic() - start < 1.0 + 1.5


def test_a_3_gb_answer_is_refused_at_the_cap_while_it_streams():
    with hostile_server(endless(3 * 1024**3)) as server:
        client = TFServingClient(server.url, timeout=60, max_response_bytes=4 * 1024 * 1024)
        with pytest.raises(TFServingError, match="answered too much"):
            client.status()
        time.sleep(0.2)
        assert server.sent < 3 * 1024**3 / 20


def test_a_password_in_the_url_never_reaches_a_message():
    secret = "pw-" + "s3cret"
    with hostile_server(always(500, b"<html>internal</html>")) as server:
        url = server.url.replace("http://", f"http://svc:{secret}@")
        client = TFServingClient(url, retries=0)
        with pytest.raises(TFServingError) as info:
            client.status()
        assert b"Authorization: Basic" in server.requests[0]  # still used to log in
    words = [str(info.value), client.display_url, RestBackend(client).label]
    dead = TFServingClient(f"http://svc:{secret}@127.0.0.1:{free_port()}", retries=0, timeout=2)
    with pytest.raises(TFServingUnavailable) as down:
        dead.status()
    words += [str(down.value), rest_error(down.value, dead).message]
    assert all(secret not in w and "svc:" not in w for w in words), words
    assert "127.0.0.1" in words[-1]
