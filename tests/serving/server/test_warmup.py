"""Warm-up records make the first request after a load as fast as the ones after it.

One local server, one model base path; versions are exported into it in turn, alternately
with and without ``assets.extra/tf_serving_warmup_requests``. Each is picked up by the
file-system poll (warm-up runs before the version is AVAILABLE); then its first request is
timed against the median of the requests that follow. A first version only primes the process
(its threads, the HTTP path), so what is measured is each version's own lazy set-up (function
instantiation, graph optimisation, kernels): the cost the records pay in advance. Each kind is
loaded more than once and the median ratio is compared, because a single request on a shared
two-core machine can be delayed by anything.
"""

from __future__ import annotations

import base64
import json
import statistics
import time

import pytest
import requests

from serving.export.exporter import export_run
from tests.fixtures.serving import BATCHING_PARAMETERS, LocalServer, make_fixture_run, make_images

STEADY_REQUESTS = 15


def _wait_available(url: str, version: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(f"{url}/v1/models/brain_mri/versions/{version}", timeout=10)
        if response.ok and response.json()["model_version_status"][0]["state"] == "AVAILABLE":
            return
        time.sleep(0.1)
    raise AssertionError(f"version {version} did not become AVAILABLE")


def _first_and_steady(session: requests.Session, url: str, version: int, bodies) -> tuple:
    path = f"{url}/v1/models/brain_mri/versions/{version}:predict"

    def timed(body: bytes) -> float:
        start = time.perf_counter()
        response = session.post(path, data=body, timeout=60)
        assert response.status_code == 200, response.text
        return time.perf_counter() - start

    first = timed(bodies[0])
    steady = statistics.median(
        timed(bodies[1 + i % (len(bodies) - 1)]) for i in range(STEADY_REQUESTS)
    )
    return first, steady


@pytest.mark.slow
def test_first_request_after_a_load_is_within_2x_of_steady_state_only_with_warmup(tmp_path):
    run = make_fixture_run(tmp_path / "runs" / "warm")
    base = tmp_path / "models" / "brain_mri"
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        for image in make_images(6, seed=77)
    ]
    server = LocalServer(
        f"--model_base_path={base}", "--enable_batching",
        f"--batching_parameters_file={BATCHING_PARAMETERS}", "--file_system_poll_wait_seconds=0.2",
    )  # fmt: skip
    ratios: dict[bool, list[float]] = {True: [], False: []}
    try:
        session = requests.Session()
        for load, warmup in enumerate((True, True, False, True, False, True)):
            version = int(export_run(run, base, warmup=warmup, verify=False).name)
            _wait_available(server.url, version)
            first, steady = _first_and_steady(session, server.url, version, bodies)
            print(f"warm-up {warmup}: first {first * 1e3:.1f} ms, steady {steady * 1e3:.1f} ms")
            if load:  # the first load primes the process
                ratios[warmup].append(first / steady)
    finally:
        server.stop()
    assert statistics.median(ratios[True]) <= 2.0, ratios
    assert statistics.median(ratios[False]) > 2.0, ratios
