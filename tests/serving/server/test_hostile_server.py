"""The local server under hostile clients: bounded responses, requests, connections and work.

Real HTTP against ``python -m serving.local`` on 127.0.0.1 with small limits, so every bound is
reached in a second or two. After each case the server must still answer a normal request.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from serving.clients.rest import TFServingClient
from serving.server.batching import Batcher
from serving.server.config import BatchingOptions
from serving.server.status import InvalidArgument
from tests.fixtures.serving import LocalServer, make_fixture_run, make_images

MAX_INSTANCES = 8
HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 24
MAX_QUEUED = 3
MARGIN = 2.5  # seconds of slack on a shared 2-core machine


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> Path:
    from serving.export.exporter import export_run

    root = tmp_path_factory.mktemp("hostile")
    base = root / "models" / "brain_mri"
    export_run(make_fixture_run(root / "runs" / "fx"), base, verify=False)
    return base


@pytest.fixture(scope="module")
def server(base_path) -> Iterator[LocalServer]:
    srv = LocalServer(
        f"--model_base_path={base_path}",
        "--file_system_poll_wait_seconds=0",
        f"--max_instances_per_request={MAX_INSTANCES}",
        f"--header_read_timeout_s={HEADER_TIMEOUT}",
        f"--body_read_timeout_s={BODY_TIMEOUT}",
        f"--keep_alive_timeout_s={KEEP_ALIVE}",
        f"--max_connections={MAX_CONNECTIONS}",
        f"--max_queued_requests={MAX_QUEUED}",
        "--max_request_bytes=1048576",
        "--max_queued_request_bytes=4194304",
    )
    yield srv
    srv.stop()


def _predict(url: str, body: bytes | dict, path: str = "/v1/models/brain_mri:predict"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url + path, data=data, timeout=30)


def _assert_still_serving(url: str) -> None:
    image = make_images(1, seed=7)
    assert TFServingClient(url, timeout=30).predict(image)[0].class_name


def _assert_error(response: requests.Response, status: int, text: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    assert text in response.json()["error"]


def _closed_within(sock: socket.socket, limit: float, feed: bytes = b"") -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (sending ``feed`` every 0.4 s), and what it sent."""
    start, data = time.monotonic(), b""
    sock.settimeout(0.4)
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            if feed:
                try:
                    sock.send(feed)
                except OSError:
                    break
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    else:
        pytest.fail(f"socket still open after {limit} s")
    return time.monotonic() - start, data


# -- bounded responses and requests ------------------------------------------------------------


def test_metadata_signature_answers_one_row_however_many_instances(server, base_path):
    import tensorflow as tf

    from tumorlib.contracts.serving_contract import METADATA_SIGNATURE

    body = {"signature_name": METADATA_SIGNATURE, "instances": [""] * MAX_INSTANCES}
    response = _predict(server.url, body)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    flood = _predict(server.url, {**body, "instances": [""] * 10_000})
    _assert_error(flood, 400, f"Task size 10000 is larger than maximum input batch size {8}")
    assert len(flood.content) < 200
    # the export itself returns one row for 10,000 instances (a server without a cap)
    signature = tf.saved_model.load(str(base_path / "1")).signatures[METADATA_SIGNATURE]
    rows = next(iter(signature(request=tf.constant([""] * 10_000)).values()))
    assert rows.shape == (1,)
    assert TFServingClient(server.url).metadata()["class_names"]
    _assert_still_serving(server.url)


def test_more_instances_than_the_cap_is_400_before_decoding(server):
    invalid = [{"b64": "!!! not base64"}] * (MAX_INSTANCES + 1)  # never decoded
    expected = f"Task size {MAX_INSTANCES + 1} is larger than maximum input batch size"
    _assert_error(_predict(server.url, {"instances": invalid}), 400, expected)
    _assert_error(_predict(server.url, {"inputs": invalid}), 400, expected)
    _assert_error(_predict(server.url, {"inputs": {"image_bytes": invalid}}), 400, expected)
    good = TFServingClient(server.url, timeout=30).predict(make_images(MAX_INSTANCES, seed=3))
    assert len(good) == MAX_INSTANCES


def test_deeply_nested_json_is_400_json(server):
    for body in (b"[" * 100_000, b'{"instances": ' + b"[" * 100_000, b"{" * 50_000):
        _assert_error(_predict(server.url, body), 400, "JSON Parse error")
    _assert_error(_predict(server.url, b"\xff\xfe not json"), 400, "JSON Parse error")
    _assert_still_serving(server.url)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_is_tf_serving_400_json(server, method):
    for path in ("/v1/models/brain_mri", "/v1/models/brain_mri:predict"):
        response = requests.request(method, server.url + path, timeout=10)
        _assert_error(response, 400, f"Malformed request: {method} {path}")
    _assert_error(requests.get(server.url + "/not/the/api", timeout=10), 404, "No handler")


def test_version_beyond_int64_is_400_json(server):
    version = "1" * 23
    expected = f"Failed to convert version: {version} to numeric."
    path = f"/v1/models/brain_mri/versions/{version}"
    _assert_error(requests.get(server.url + path, timeout=10), 400, expected)
    _assert_error(requests.get(server.url + path + "/metadata", timeout=10), 400, expected)
    _assert_error(_predict(server.url, {"instances": ["x"]}, path + ":predict"), 400, expected)
    _assert_still_serving(server.url)


# -- bounded connections -------------------------------------------------------------------------


def _connect(server: LocalServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_idle_slow_header_and_slow_body_sockets_are_closed_in_time(server):
    with _connect(server) as idle:
        took, data = _closed_within(idle, HEADER_TIMEOUT + MARGIN)
        assert data == b"" and took >= HEADER_TIMEOUT - 0.3
    with _connect(server) as slow:
        slow.send(b"GET /v1/models/brain_mri HTTP/1.1\r\n")
        took, data = _closed_within(slow, HEADER_TIMEOUT + MARGIN, feed=b"X")
        assert data.startswith(b"HTTP/1.1 408") and b"Request headers not received" in data
    with _connect(server) as slow_body:
        slow_body.send(
            b"POST /v1/models/brain_mri:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        took, data = _closed_within(slow_body, BODY_TIMEOUT + MARGIN, feed=b" ")
        assert data.startswith(b"HTTP/1.1 408") and b"Request body not received" in data
    _assert_still_serving(server.url)


LONG_HEADER_TIMEOUT = 8.0  # far from KEEP_ALIVE: which deadline closed the socket is clear


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed(base_path):
    """Closed by the keep-alive timeout, not by the header deadline re-armed after the answer:
    with the header deadline at 8 s and keep-alive at 1 s, the socket must close well before
    the midpoint (with keep-alive at 1000 s, the 8 s header deadline would close it)."""
    srv = LocalServer(
        f"--model_base_path={base_path}",
        "--file_system_poll_wait_seconds=0",
        f"--header_read_timeout_s={LONG_HEADER_TIMEOUT}",
        f"--keep_alive_timeout_s={KEEP_ALIVE}",
    )
    try:
        with _connect(srv) as sock:
            sock.send(b"GET /v1/models/brain_mri HTTP/1.1\r\nHost: x\r\n\r\n")
            took, data = _closed_within(sock, LONG_HEADER_TIMEOUT + MARGIN)
        assert data.startswith(b"HTTP/1.1 200")
        assert KEEP_ALIVE - 0.3 <= took < (KEEP_ALIVE + LONG_HEADER_TIMEOUT) / 2
    finally:
        srv.stop()


def _is_closed(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(16) == b""
    except TimeoutError:
        return False
    except OSError:  # reset by the server
        return True


def test_sockets_beyond_the_cap_are_closed_and_a_real_request_still_succeeds(server):
    """Eviction itself, not the header deadline: the oldest idle sockets are closed as new ones
    arrive, and one raw request (no client retry that could wait for the deadline) is answered
    200 — all well before the header deadline could have closed anything."""
    start = time.monotonic()
    sockets = [_connect(server) for _ in range(MAX_CONNECTIONS * 2)]
    try:
        time.sleep(0.2)
        with _connect(server) as raw:
            raw.settimeout(HEADER_TIMEOUT)
            raw.sendall(b"GET /v1/models/brain_mri HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = raw.recv(4096)
        oldest_closed = sum(_is_closed(sock) for sock in sockets[:MAX_CONNECTIONS])
        newest_open = sum(not _is_closed(sock) for sock in sockets[-MAX_CONNECTIONS // 2 :])
        took = time.monotonic() - start
        assert took < HEADER_TIMEOUT, "too slow to tell eviction from the header deadline"
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert oldest_closed >= MAX_CONNECTIONS - 2  # the longest-idle went first
        assert newest_open == MAX_CONNECTIONS // 2  # the new ones were admitted, not refused
    finally:
        for sock in sockets:
            sock.close()
    _assert_still_serving(server.url)


def test_queued_work_beyond_the_cap_is_429_json(server):
    """Requests admitted (here: stuck sending their bodies) count against --max_queued_requests."""
    held = []
    try:
        for _ in range(MAX_QUEUED):
            sock = _connect(server)
            sock.send(
                b"POST /v1/models/brain_mri:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            held.append(sock)
        time.sleep(0.3)
        response = _predict(server.url, {"instances": ["x"]})
        _assert_error(response, 429, "--max_queued_requests")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + BODY_TIMEOUT + MARGIN
    while _predict(server.url, {"instances": ["x"]}).status_code == 429:
        assert time.monotonic() < deadline, "admission never freed"
        time.sleep(0.2)
    _assert_still_serving(server.url)


def _grpc_predict(server: LocalServer, images: list[bytes]):
    """A gRPC Predict as a TF Serving user sends it; returns the status code."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "brain_mri"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=30)
        except grpc.RpcError as err:
            return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def test_grpc_shares_the_admission_budget_and_the_instance_cap_with_rest(server):
    """REST requests holding every admission place leave none for gRPC, and the other way
    round the same core counts them; the instance cap is the same words on both."""
    import grpc

    code, details = _grpc_predict(server, [b"x"] * (MAX_INSTANCES + 1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"Task size {MAX_INSTANCES + 1} is larger than maximum input batch size 8"
    held = []
    try:
        for _ in range(MAX_QUEUED):  # REST requests admitted, stuck sending their bodies
            sock = _connect(server)
            sock.send(
                b"POST /v1/models/brain_mri:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            held.append(sock)
        time.sleep(0.3)
        code, details = _grpc_predict(server, make_images(1))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max_queued_requests" in details
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + BODY_TIMEOUT + MARGIN
    while _grpc_predict(server, make_images(1))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED:
        assert time.monotonic() < deadline, "admission never freed"
        time.sleep(0.2)
    assert _grpc_predict(server, make_images(1))[0] == grpc.StatusCode.OK


# -- timed-out work is dropped -------------------------------------------------------------------


def test_batcher_drops_work_whose_caller_timed_out_before_it_started():
    seen: list[bytes] = []
    release = threading.Event()

    def run(images):
        seen.extend(images)
        release.wait(5)
        return {"x": np.array([len(b) for b in images])}

    options = BatchingOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1)
    batcher = Batcher(run, options)
    try:
        first = batcher.submit([b"a"])
        time.sleep(0.2)  # `first` is running: the only batch thread is busy
        abandoned, kept = batcher.submit([b"bb"]), batcher.submit([b"ccc"])
        assert abandoned.cancel()  # what the HTTP handler does on --rest_api_timeout_in_ms
        release.set()
        assert first.result(5)["x"].tolist() == [1] and kept.result(5)["x"].tolist() == [3]
    finally:
        batcher.close()
    assert b"bb" not in seen and batcher.dropped == 1
    small = Batcher(run, options)
    try:
        with pytest.raises(InvalidArgument, match="Task size 5 is larger than maximum input batch"):
            small.submit([b"x"] * 5)
    finally:
        small.close()


@pytest.mark.slow
def test_instance_cap_with_batching_is_max_batch_size(base_path, tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000 }\n")
    srv = LocalServer(
        f"--model_base_path={base_path}",
        "--file_system_poll_wait_seconds=0",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        "--max_instances_per_request=100",  # ignored with batching: max_batch_size rules
    )
    try:
        response = _predict(srv.url, {"instances": ["x"] * 5})
        _assert_error(response, 400, "Task size 5 is larger than maximum input batch size 4")
        assert len(TFServingClient(srv.url, timeout=30).predict(make_images(4, seed=5))) == 4
    finally:
        srv.stop()
