"""Serving benchmark: the local TF Serving stand-in vs in-process batched predict, same SavedModel.

    python bench/serving.py [--duration 60] [--clients 20] [--model-base-path models/brain_mri]

Uses the newest export under ``--model-base-path`` when there is one; otherwise exports a
stand-in run (the project's MobileNetV2 alpha=0.35 at 224 px, random weights: the same compute
as the real model) into a temporary folder. Request images are real JPEGs from
``../shared/data`` when the archive is there, else generated ones.

Phases, in one process and one run:
1. in-process ``serving_default`` on batches of ``--batch-size`` images for ``--duration`` s
   (throughput baseline), then single-image calls (latency baseline);
2. ``python -m serving.local --enable_batching`` started on free 127.0.0.1 ports (REST and
   gRPC); its first request (the export's warm-up records replayed at load), sequential
   single-image requests (latency), then ``--clients`` concurrent clients sending single-image
   requests for ``--duration`` s (throughput, errors), server RSS at start and end;
3. the same two phases over gRPC (official stubs, raw bytes in a ``TensorProto``), same server.

Targets (issue 4): throughput ratio >= 0.8, single-image p50 <= 1.3x in-process, 0 errors.
The line before last is ``grpc ratio=Y`` (gRPC vs REST throughput; issue 25); the last line is
exactly ``serving ratio=X target=0.8`` (REST vs in-process).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.local_server import (  # noqa: E402
    client_load,
    closed_loop,
    free_port,
    random_jpegs,
    start_local_server,
)
from tumorlib.contracts.serving_contract import (  # noqa: E402  (after sys.path)
    INPUT_KEY,
    MODEL_BASE_PATH,
    MODEL_NAME,
)

ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "brain_tumor_classification_mri.zip"
TARGET_RATIO = 0.8
TARGET_P50 = 1.3


def load_images(n: int) -> tuple[list[bytes], str]:
    """``n`` encoded images: real archive JPEGs when available, else generated ones."""
    if ARCHIVE.exists():
        with zipfile.ZipFile(ARCHIVE) as archive:
            names = sorted(x for x in archive.namelist() if x.lower().endswith((".jpg", ".jpeg")))
            step = max(1, len(names) // n)
            return [archive.read(x) for x in names[::step][:n]], f"{n} JPEGs from {ARCHIVE.name}"
    return random_jpegs(n, 512), f"{n} generated 512x512 JPEGs"


def stand_in_run(root: Path) -> Path:
    """A MobileNetV2-0.35/224 run folder with random weights (same cost as the real model)."""
    import keras

    from tumorlib.contracts.classes import NUM_CLASSES
    from tumorlib.contracts.runs import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, write_json
    from tumorlib.data.pipeline import DATASET_NAME

    try:
        from tumorlib.model.classifier import build_model

        model = build_model(image_size=224, alpha=0.35, weights=None)
    except ImportError:
        backbone = keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), alpha=0.35, include_top=False, weights=None
        )
        inputs = keras.Input((224, 224, 3))
        x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
        model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, activation="softmax")(x))
    run = root / "runs" / "bench-stand-in"
    run.mkdir(parents=True)
    model.save(run / MODEL_FILE)
    write_json(
        run / CONFIG_FILE,
        {
            "image_size": 224,
            "alpha": 0.35,
            "weights": "none (benchmark stand-in)",
            "dataset": {"name": DATASET_NAME, "version": "n/a"},
        },
    )
    write_json(run / CALIBRATION_FILE, {"temperature": 1.5})
    return run


def stand_in_export(root: Path) -> Path:
    """Export the stand-in run (:func:`stand_in_run`); returns the model base path."""
    from serving.export.exporter import export_run

    return export_run(stand_in_run(root), root / MODEL_BASE_PATH).parent


def percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    arr = np.array(latencies) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def bench_in_process(
    base: Path, images: list[bytes], duration: float, batch_size: int, latency_seconds: float
) -> dict:
    from serving.clients.inprocess import InProcessModel

    model = InProcessModel(base)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or [images[:batch_size]]
    model.predict_raw(batches[0])  # warm-up (traces, allocations)
    model.predict_raw(images[:1])
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < duration:
        done += len(model.predict_raw(batches[i % len(batches)])["class_index"])
        i += 1
    throughput = done / (time.perf_counter() - start)
    latencies, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < latency_seconds:
        t0 = time.perf_counter()
        model.predict_raw([images[i % len(images)]])
        latencies.append(time.perf_counter() - t0)
        i += 1
    p50, p99 = percentiles(latencies)
    return {"version": model.version, "throughput": throughput, "p50_ms": p50, "p99_ms": p99}


def grpc_requests(images: list[bytes]) -> list:
    """One single-image ``PredictRequest`` per image, built once (as the REST bodies are)."""
    from tensorflow_serving.apis import predict_pb2

    out = []
    for image in images:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        tensor = request.inputs[INPUT_KEY]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.string_val.append(image)
        out.append(request)
    return out


def grpc_load(target: str, requests_: list, clients: int, duration: float) -> dict:
    """``client_load`` over gRPC: ``clients`` threads, each with its own channel and stub."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    @contextlib.contextmanager
    def connect() -> Iterator[Any]:
        with grpc.insecure_channel(target) as channel:
            yield prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def send(stub: Any, j: int) -> tuple[bool, str]:
        try:
            response = stub.Predict(requests_[j % len(requests_)], timeout=60)
            return len(response.outputs["class_index"].int64_val) == 1, "OK"
        except grpc.RpcError as err:
            return False, err.code().name

    return closed_loop(clients, duration, connect, send)


def grpc_latency(target: str, requests_: list, seconds: float) -> list[float]:
    """Sequential single-image gRPC predicts for ``seconds``; each one's latency (s)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for request in requests_[:4]:  # warm-up, as the REST side
            stub.Predict(request, timeout=60)
        latencies, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            stub.Predict(requests_[i % len(requests_)], timeout=60)
            latencies.append(time.perf_counter() - t0)
            i += 1
    return latencies


def bench_server(
    base: Path, images: list[bytes], duration: float, clients: int, latency_seconds: float
) -> dict:
    import psutil
    import requests

    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(b).decode()}]}).encode() for b in images
    ]
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    headers = {"Content-Type": "application/json"}
    process = start_local_server(base, port, [f"--port={grpc_port}"])
    try:
        server = psutil.Process(process.pid)
        session = requests.Session()
        t0 = time.perf_counter()  # the export's warm-up records ran at load: no cold start
        session.post(url, data=bodies[0], headers=headers, timeout=60).raise_for_status()
        first_ms = (time.perf_counter() - t0) * 1000
        for body in bodies[:4]:  # warm-up, like the in-process side
            session.post(url, data=body, headers=headers, timeout=60).raise_for_status()
        rss_start = server.memory_info().rss
        latencies, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < latency_seconds:
            t0 = time.perf_counter()
            session.post(
                url, data=bodies[i % len(bodies)], headers=headers, timeout=60
            ).raise_for_status()
            latencies.append(time.perf_counter() - t0)
            i += 1
        p50, p99 = percentiles(latencies)

        load = client_load(url, bodies, clients, duration)
        rss_end = server.memory_info().rss
        load_p50, load_p99 = percentiles(load["latencies"])
        target, messages = f"127.0.0.1:{grpc_port}", grpc_requests(images)
        grpc_p50, grpc_p99 = percentiles(grpc_latency(target, messages, latency_seconds))
        by_grpc = grpc_load(target, messages, clients, duration)
        grpc_load_p50, grpc_load_p99 = percentiles(by_grpc["latencies"])
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "first_ms": first_ms,
        "grpc": {
            "throughput": by_grpc["throughput"],
            "p50_ms": grpc_p50,
            "p99_ms": grpc_p99,
            "errors": by_grpc["errors"],
            "error_kinds": by_grpc["error_kinds"],
            "requests": by_grpc["ok"] + by_grpc["errors"],
            "load_p50_ms": grpc_load_p50,
            "load_p99_ms": grpc_load_p99,
        },
        "throughput": load["throughput"],
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": load["errors"],
        "requests": load["ok"] + load["errors"],
        "load_p50_ms": load_p50,
        "load_p99_ms": load_p99,
        "rss_start_mb": rss_start / 2**20,
        "rss_end_mb": rss_end / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of each throughput phase (default 60)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="seconds of each single-image latency phase (default duration/4)",
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="in-process batch size (the server's max_batch_size is 32)",
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model-base-path", default=str(REPO_ROOT / MODEL_BASE_PATH))
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    latency_seconds = args.latency_seconds or max(3.0, args.duration / 4)

    from serving.common.versions import find_latest_version

    images, source = load_images(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        base = Path(args.model_base_path)
        if find_latest_version(base) is None:
            print(f"no export under {base}; exporting a MobileNetV2 stand-in (random weights)")
            base = stand_in_export(Path(tmp))
            model_desc = "stand-in MobileNetV2 a=0.35/224 (random weights)"
        else:
            model_desc = f"{base} version {find_latest_version(base)}"
        print(
            f"model: {model_desc}; images: {source}; clients: {args.clients}; "
            f"duration: {args.duration:g} s"
        )
        local = bench_in_process(base, images, args.duration, args.batch_size, latency_seconds)
        print(
            f"in-process: {local['throughput']:.1f} img/s (batch {args.batch_size}); "
            f"single-image p50 {local['p50_ms']:.1f} ms, p99 {local['p99_ms']:.1f} ms"
        )
        served = bench_server(base, images, args.duration, args.clients, latency_seconds)
    ratio = served["throughput"] / local["throughput"]
    p50_ratio = served["p50_ms"] / local["p50_ms"]
    print(
        f"server: {served['throughput']:.1f} img/s with {args.clients} clients "
        f"({served['requests']} requests, p50 {served['load_p50_ms']:.1f} ms, "
        f"p99 {served['load_p99_ms']:.1f} ms under load)"
    )
    print(
        f"server single-image: p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms "
        f"-> p50 {p50_ratio:.2f}x in-process (target <= {TARGET_P50})"
    )
    print(f"errors: {served['errors']}")
    print(f"server RSS: start {served['rss_start_mb']:.0f} MiB, end {served['rss_end_mb']:.0f} MiB")
    print(f"first request after load (warm-up records replayed): {served['first_ms']:.1f} ms")
    by_grpc = served["grpc"]
    grpc_ratio = by_grpc["throughput"] / served["throughput"]
    print(
        f"server over gRPC: {by_grpc['throughput']:.1f} img/s with {args.clients} clients "
        f"({by_grpc['requests']} requests, {by_grpc['errors']} errors, p50 "
        f"{by_grpc['load_p50_ms']:.1f} ms, p99 {by_grpc['load_p99_ms']:.1f} ms under load); "
        f"single-image p50 {by_grpc['p50_ms']:.1f} ms, p99 {by_grpc['p99_ms']:.1f} ms"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": model_desc,
                    "images": source,
                    "clients": args.clients,
                    "duration_s": args.duration,
                    "in_process": local,
                    "server": served,
                    "throughput_ratio": ratio,
                    "p50_ratio": p50_ratio,
                    "grpc_vs_rest": grpc_ratio,
                },
                indent=2,
            )
            + "\n"
        )
    print(f"grpc ratio={grpc_ratio:.2f} (gRPC vs REST throughput, same server, same run)")
    print(f"serving ratio={ratio:.2f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
