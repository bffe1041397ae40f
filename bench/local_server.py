"""What the serving benchmarks share: a local server on a free port and a crowd of good clients.

Both ``bench/serving.py`` and ``bench/hostile.py`` measure ``python -m serving.local`` under the
same client load, so the load is defined once here and their figures stay comparable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tumorlib.contracts.serving_contract import MODEL_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCHING_PARAMETERS = REPO_ROOT / "deploy" / "tf_serving" / "batching_parameters.txt"
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"
STARTUP_TIMEOUT_S = 180


def random_jpegs(n: int, side: int, seed: int = 0) -> list[bytes]:
    """``n`` JPEGs of random RGB noise, ``side`` pixels square (when no real slices are at hand)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local_server(base: Path, port: int, extra: Sequence[str] = ()) -> subprocess.Popen:
    """``serving.server.local`` with batching on 127.0.0.1:``port``, returned once it answers.

    gRPC is off (``--port=0``) unless ``extra`` names a ``--port``.
    """
    import requests

    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server.local", f"--rest_api_port={port}", "--port=0",
         f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={BATCHING_PARAMETERS}", *extra],
        cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("local server exited during start-up")
        try:
            if requests.get(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", timeout=2).ok:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"local server did not become ready in {STARTUP_TIMEOUT_S} s")


def closed_loop(
    clients: int,
    duration: float,
    connect: Callable[[], AbstractContextManager[Any]],
    send: Callable[[Any, int], tuple[bool, str]],
) -> dict:
    """``clients`` threads, each with its own connection from ``connect``, calling
    ``send(connection, j)`` back to back for ``duration`` s (``j`` walks the requests).

    Returns throughput (good answers per second), counts, error kinds and every latency (s).
    """
    stop = time.perf_counter() + duration
    ok, errors, kinds = [0] * clients, [0] * clients, Counter()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def client(k: int) -> None:
        with connect() as connection:
            j = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                good, kind = send(connection, j)
                latencies[k].append(time.perf_counter() - t0)
                if good:
                    ok[k] += 1
                else:
                    errors[k] += 1
                    kinds[kind] += 1
                j += clients

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "throughput": sum(ok) / elapsed,
        "ok": sum(ok),
        "errors": sum(errors),
        "error_kinds": dict(kinds),
        "latencies": [x for per_client in latencies for x in per_client],
    }


def client_load(url: str, bodies: Sequence[bytes], clients: int, duration: float) -> dict:
    """:func:`closed_loop` of single-image REST predicts to ``url``."""
    import requests

    headers = {"Content-Type": "application/json"}

    def send(session: requests.Session, j: int) -> tuple[bool, str]:
        try:
            r = session.post(url, data=bodies[j % len(bodies)], headers=headers, timeout=60)
            return r.status_code == 200 and len(r.json()["predictions"]) == 1, str(r.status_code)
        except (requests.RequestException, ValueError, KeyError) as err:
            return False, type(err).__name__

    return closed_loop(clients, duration, requests.Session, send)
