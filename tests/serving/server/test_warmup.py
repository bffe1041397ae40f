"""Warm-up records make the first request after a load as fast as the ones after it.

One local server, one model base path; versions are exported into it in turn, alternately
with and without ``assets.extra/tf_serving_warmup_requests``. Each is picked up by the
file-system poll (warm-up runs before the version is AVAILABLE); then its first request is
timed against the median of the requests that follow (each with an image not sent before). A
first version only primes the process
(its threads, the HTTP path), and every version stays loaded (policy ``all``: freeing an old
version's graphs beside the first request would be measured too), so what is measured is each
version's own lazy set-up (function instantiation, graph optimisation, kernels): the cost the
records pay in advance. Each kind is
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
    steady = statistics.median(timed(body) for body in bodies[1:])
    return first, steady


@pytest.mark.slow
def test_first_request_after_a_load_is_within_2x_of_steady_state_only_with_warmup(tmp_path):
    run = make_fixture_run(tmp_path / "runs" / "warm")
    base = tmp_path / "models" / "brain_mri"
    # Every request a new image (new sizes, as real scans have): a repeated image would make
    # the steady state cheaper than traffic is (per-shape work cached), the first look worse.
    images = make_images(8 * (1 + STEADY_REQUESTS), seed=77)
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        for image in images
    ]
    config = tmp_path / "models.config"  # every version stays loaded: no unload to overlap
    config.write_text(f"""model_config_list {{ config {{ name: "brain_mri" base_path: "{base}"
        model_platform: "tensorflow" model_version_policy {{ all {{}} }} }} }}""")
    server = LocalServer(
        f"--model_config_file={config}", "--enable_batching",
        f"--batching_parameters_file={BATCHING_PARAMETERS}", "--file_system_poll_wait_seconds=0.2",
    )  # fmt: skip
    ratios: dict[bool, list[float]] = {True: [], False: []}
    try:
        session = requests.Session()
        for load, warmup in enumerate((True, True, False, True, False, True, True)):
            version = int(export_run(run, base, warmup=warmup, verify=False).name)
            _wait_available(server.url, version)
            time.sleep(1.0)  # let the export (in this process) and the load settle: the lazy
            # set-up warm-up removes waits for the first request however late it comes
            mine = bodies[load * (1 + STEADY_REQUESTS) : (load + 1) * (1 + STEADY_REQUESTS)]
            first, steady = _first_and_steady(session, server.url, version, mine)
            print(f"warm-up {warmup}: first {first * 1e3:.1f} ms, steady {steady * 1e3:.1f} ms")
            if load:  # the first load primes the process
                ratios[warmup].append(first / steady)
    finally:
        server.stop()
    assert statistics.median(ratios[True]) <= 2.0, ratios
    assert statistics.median(ratios[False]) > 2.0, ratios
