"""The local server's own behaviour: flags, batching, version pick-up, concurrency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serving.clients.rest import TFServingClient
from serving.export.exporter import export_run
from serving.server.batching import Batcher
from serving.server.config import BatchingOptions
from serving.server.local import build_arg_parser
from serving.server.status import InvalidArgument, ResourceExhausted
from tests.fixtures.serving import make_images


def test_flags_match_tensorflow_model_server_and_default_to_localhost():
    args = build_arg_parser().parse_args([])
    assert args.rest_api_port == 8501 and args.port == 8500
    assert args.host == "127.0.0.1"
    assert args.model_name == "brain_mri" and not args.enable_batching
    args = build_arg_parser().parse_args(
        ["--enable_batching=true", "--model_config_file=x", "--batching_parameters_file=y"]
    )
    assert args.enable_batching and args.model_config_file == "x"
    assert not build_arg_parser().parse_args(["--enable_batching=false"]).enable_batching
    assert build_arg_parser().parse_args(["--enable_batching"]).enable_batching


def _echo_batch(images):
    if any(b == b"bad" for b in images):
        raise InvalidArgument("bad image")
    time.sleep(0.05)  # a model call: long enough for other requests to queue up
    return {"x": np.array([len(b) for b in images])}


def test_batcher_merges_concurrent_requests_and_returns_each_its_slice():
    batcher = Batcher(
        _echo_batch,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=20000, num_batch_threads=1),
    )
    try:
        futures = [batcher.submit([b"a" * (i + 1)]) for i in range(12)]
        results = [f.result(timeout=10)["x"].tolist() for f in futures]
    finally:
        batcher.close()
    assert results == [[i + 1] for i in range(12)]
    assert max(batcher.batch_sizes) == 8 and sum(batcher.batch_sizes) == 12


def test_batcher_isolates_a_bad_request_and_bounds_its_queue():
    batcher = Batcher(
        _echo_batch,
        BatchingOptions(
            max_batch_size=4,
            batch_timeout_micros=50000,
            max_enqueued_batches=2,
            num_batch_threads=1,
        ),
    )
    try:
        good, bad, good2 = (batcher.submit(x) for x in ([b"aa"], [b"bad"], [b"ccc"]))
        assert good.result(timeout=10)["x"].tolist() == [2]
        assert good2.result(timeout=10)["x"].tolist() == [3]
        with pytest.raises(InvalidArgument):
            bad.result(timeout=10)
        with pytest.raises(ResourceExhausted):
            for _ in range(20):
                batcher.submit([b"x"] * 4)
    finally:
        batcher.close()


def test_concurrent_clients_all_get_correct_answers(serving_stack):
    stack = serving_stack
    images = make_images(20, seed=31)
    expected = TFServingClient(stack.server.url, timeout=60).predict(images)

    def one(i):
        return TFServingClient(stack.server.url, timeout=60).predict([images[i]])[0]

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(one, range(20)))
    for g, e in zip(got, expected):
        assert g.class_name == e.class_name
        np.testing.assert_allclose(
            list(g.probabilities.values()), list(e.probabilities.values()), atol=1e-5
        )


def test_new_version_is_picked_up_without_restart(serving_stack):
    stack = serving_stack
    client = TFServingClient(stack.server.url, model_name="brain_mri_reload", timeout=30)
    before = {s["version"] for s in client.status()["model_version_status"]}
    new = export_run(stack.other_run_path, stack.reload_base_path, verify=False)
    deadline = time.monotonic() + 60
    states = {}
    while time.monotonic() < deadline:
        states = {s["version"]: s["state"] for s in client.status()["model_version_status"]}
        if states.get(new.name) == "AVAILABLE":
            break
        time.sleep(0.2)
    assert states.get(new.name) == "AVAILABLE", states
    assert client.metadata()["model_version"] == int(new.name)
    # the default policy serves only the newest version; older ones are reported as END
    assert all(states[v] == "END" for v in before)
    assert client.predict(make_images(1))[0].class_name


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing address
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_server_binds_localhost_only(serving_stack):
    url = serving_stack.server.url
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(url + "/v1/models/brain_mri", timeout=10).status_code == 200
    # a request that is not part of the API is a clean 404 JSON error, not a crash
    response = requests.get(url + "/not/the/api", timeout=10)
    assert response.status_code == 404 and "error" in response.json()
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    with pytest.raises(requests.ConnectionError):
        requests.get(url.replace("127.0.0.1", address) + "/v1/models/brain_mri", timeout=3)


def test_batcher_survives_a_request_whose_caller_gave_up():
    batcher = Batcher(
        _echo_batch,
        BatchingOptions(max_batch_size=8, batch_timeout_micros=30000, num_batch_threads=1),
    )
    try:
        first = batcher.submit([b"a"])  # runs alone (idle server), keeping the thread busy
        abandoned = batcher.submit([b"bb"])
        kept = batcher.submit([b"ccc"])
        assert abandoned.cancel()  # what a timed-out HTTP handler does
        assert first.result(timeout=10)["x"].tolist() == [1]
        assert kept.result(timeout=10)["x"].tolist() == [3]
    finally:
        batcher.close()
