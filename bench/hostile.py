"""Hostile-client soak: do well-behaved clients keep their service while others attack?

    python bench/hostile.py [--duration 60] [--clients 20] [--attackers 4]

Serves the newest export under ``--model-base-path`` (else a MobileNetV2-0.35/224 stand-in with
random weights, as ``bench/serving.py``) with ``python -m serving.local --enable_batching`` and
its default limits, on a free 127.0.0.1 port. Two phases in one run, against one server:

1. baseline: ``--clients`` good clients send single-image predicts for ``--duration`` s;
2. attack: the same good clients for ``--duration`` s while ``--attackers`` threads loop over the
   hostile cases — a decompression bomb, 20,000 tiny images in one request, JSON nested 100,000
   deep, a ``metadata`` flood of 10,000 instances, a burst of idle sockets beyond the connection
   cap — and one more thread keeps ``--slow-sockets`` slowloris sockets (headers at a byte per
   second, bodies likewise) open.

Reports good-client throughput with attackers vs without (target ratio >= 0.7), good-client
errors (target 0), server peak RSS vs idle RSS (target <= 1.5x), open file descriptors at the
end vs after the baseline, and what the attackers got back. Traffic goes to 127.0.0.1 only and
every loop is bounded in count and time. The last line is exactly ``hostile ratio=X target=0.7``.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import json
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.local_server import (  # noqa: E402
    PREDICT_PATH,
    client_load,
    free_port,
    random_jpegs,
    start_local_server,
)
from tumorlib.contracts.serving_contract import MODEL_BASE_PATH  # noqa: E402  (after sys.path)

TARGET_RATIO = 0.7
TARGET_RSS = 1.5
MAX_LOOPS = 100_000  # per attacker thread, besides the time bound
PREDICT = PREDICT_PATH


def png(width: int, height: int, value: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def body(images: list[bytes], **extra) -> bytes:
    rows = [{"b64": base64.b64encode(b).decode()} for b in images]
    return json.dumps({"instances": rows, **extra}).encode()


def good_images(n: int = 16) -> list[bytes]:
    return random_jpegs(n, 256)


def good_clients(url: str, bodies: list[bytes], clients: int, duration: float) -> dict:
    """The shared client load (bench/local_server.py) without the per-request latencies."""
    result = client_load(url + PREDICT, bodies, clients, duration)
    result.pop("latencies")
    return result


class Attack:
    """The hostile cases, each a bounded function of (url, port) -> outcome label."""

    def __init__(self, port: int, bomb_side: int) -> None:
        self.port = port
        tiny = png(2, 2)
        self.cases = {
            "bomb": body([png(bomb_side, bomb_side)]),
            "20k_instances": body([tiny] * 20_000),
            "deep_json": b"[" * 100_000,
            "metadata_flood": json.dumps(
                {"signature_name": "metadata", "instances": [""] * 10_000}
            ).encode(),
        }
        self.outcomes: Counter = Counter()
        self.lock = threading.Lock()

    def note(self, label: str) -> None:
        with self.lock:
            self.outcomes[label] += 1

    def request_loop(self, stop: float, offset: int) -> None:
        import requests

        names = list(self.cases) + ["idle_burst"]
        session = requests.Session()
        for i in range(offset, offset + MAX_LOOPS):
            if time.perf_counter() >= stop:
                return
            name = names[i % len(names)]
            if name == "idle_burst":
                self.idle_burst(min(stop, time.perf_counter() + 3))
                continue
            url = f"http://127.0.0.1:{self.port}{PREDICT}"
            try:
                r = session.post(url, data=self.cases[name], timeout=30)
                self.note(f"{name}:{r.status_code}")
            except requests.RequestException as err:
                self.note(f"{name}:{type(err).__name__}")

    def idle_burst(self, until: float, count: int = 300) -> None:
        """Open ``count`` sockets that never send a byte; hold them until ``until``."""
        socks = []
        for _ in range(count):
            try:
                socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=2))
            except OSError:
                self.note("idle_burst:connect_failed")
        while time.perf_counter() < until:
            time.sleep(0.2)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                closed += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        self.note(f"idle_burst:closed_by_server={closed >= count - 256}")

    def slow_sockets(self, stop: float, count: int) -> None:
        """Keep ``count`` slowloris sockets: half dribble headers, half dribble a body."""
        socks: list[socket.socket | None] = [None] * count
        for _ in range(MAX_LOOPS):
            if time.perf_counter() >= stop:
                break
            for k in range(count):
                socks[k] = self._dribble(socks[k], k % 2 == 0)
            time.sleep(1.0)
        for s in socks:
            if s is not None:
                s.close()

    def _dribble(self, sock: socket.socket | None, header: bool) -> socket.socket | None:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                start = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n"
                sock.sendall((start if header else start + "Content-Length: 9999\r\n\r\n").encode())
                return sock
            sock.sendall(b"X" if header else b" ")
            return sock
        except OSError:
            self.note(f"slow_{'header' if header else 'body'}:closed_by_server")
            if sock is not None:
                sock.close()
            return None


def run_attackers(
    port: int, bomb_side: int, duration: float, attackers: int, slow: int, outcomes
) -> None:
    """The attack phase (in a child process): request loops plus the slowloris keeper."""
    attack = Attack(port, bomb_side)
    stop_at = time.perf_counter() + duration
    threads = [
        threading.Thread(target=attack.request_loop, args=(stop_at, k)) for k in range(attackers)
    ]
    threads.append(threading.Thread(target=attack.slow_sockets, args=(stop_at, slow)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 60)
    outcomes.put(dict(sorted(attack.outcomes.items())))


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], process.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.1)


def soak(base: Path, args: argparse.Namespace) -> dict:
    import psutil

    bodies = [body([image]) for image in good_images()]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    extra = ["--file_system_poll_wait_seconds=0", *(args.server_flag or [])]
    process = start_local_server(base, port, extra)
    try:
        server = psutil.Process(process.pid)
        good_clients(url, bodies, 2, 3)  # warm-up (traces, allocations)
        idle_rss, fds_idle = server.memory_info().rss, server.num_fds()
        baseline = good_clients(url, bodies, args.clients, args.duration)
        fds_baseline = server.num_fds()
        peak, stop_sampling = [idle_rss], threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(process.pid, stop_sampling, peak))
        sampler.start()
        # The attackers run in their own process: in this one they would take the good
        # clients' GIL, and the bench would measure itself rather than the server.
        context = multiprocessing.get_context("spawn")
        outcomes = context.Queue()
        attackers = context.Process(
            target=run_attackers,
            args=(port, args.bomb_side, args.duration, args.attackers, args.slow_sockets, outcomes),
        )
        attackers.start()
        attacked = good_clients(url, bodies, args.clients, args.duration)
        attack_outcomes = outcomes.get(timeout=args.duration + 120)
        attackers.join(timeout=30)
        time.sleep(args.settle)  # let header/body deadlines close what the attackers left
        stop_sampling.set()
        sampler.join()
        fds_end = server.num_fds()
        alive = good_clients(url, bodies, 1, 1)["ok"] > 0
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "baseline": baseline,
        "attacked": attacked,
        "idle_rss_mb": idle_rss / 2**20,
        "peak_rss_mb": peak[0] / 2**20,
        "fds": {"idle": fds_idle, "after_baseline": fds_baseline, "end": fds_end},
        "attack_outcomes": attack_outcomes,
        "server_alive_after": alive,
    }


def stand_in_or_newest(base: Path, tmp: Path) -> tuple[Path, str]:
    from serving.common.versions import find_latest_version

    if find_latest_version(base) is not None:
        return base, f"{base} version {find_latest_version(base)}"
    # bench/serving.py's stand-in, loaded by path: a `bench/` import would shadow `serving`.
    spec = importlib.util.spec_from_file_location(
        "bench_serving", REPO_ROOT / "bench" / "serving.py"
    )
    assert spec is not None and spec.loader is not None
    bench_serving = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_serving)
    print(f"no export under {base}; exporting a MobileNetV2 stand-in (random weights)")
    return bench_serving.stand_in_export(tmp), "stand-in MobileNetV2 a=0.35/224 (random weights)"


def report(result: dict, args: argparse.Namespace) -> float:
    base, hit = result["baseline"], result["attacked"]
    ratio = hit["throughput"] / base["throughput"] if base["throughput"] else 0.0
    rss_ratio = result["peak_rss_mb"] / result["idle_rss_mb"]
    print(
        f"good clients ({args.clients}) without attackers: {base['throughput']:.1f} req/s, "
        f"{base['ok']} ok, {base['errors']} errors {base['error_kinds'] or ''}"
    )
    print(
        f"good clients with {args.attackers}+1 attackers: {hit['throughput']:.1f} req/s, "
        f"{hit['ok']} ok, {hit['errors']} errors (target 0) {hit['error_kinds'] or ''}"
    )
    print(
        f"server RSS: idle {result['idle_rss_mb']:.0f} MiB, peak {result['peak_rss_mb']:.0f} MiB "
        f"-> {rss_ratio:.2f}x (target <= {TARGET_RSS})"
    )
    fds = result["fds"]
    print(
        f"server fds: idle {fds['idle']}, after baseline {fds['after_baseline']}, end {fds['end']}"
    )
    print(f"attack outcomes: {json.dumps(result['attack_outcomes'])}")
    print(f"server answers after the soak: {result['server_alive_after']}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase (60)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--slow-sockets", type=int, default=40)
    parser.add_argument("--bomb-side", type=int, default=10_000, help="bomb PNG side in pixels")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds before counting fds")
    parser.add_argument("--server-flag", action="append", help="extra serving.server.local flag")
    parser.add_argument("--model-base-path", default=str(REPO_ROOT / MODEL_BASE_PATH))
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        base, desc = stand_in_or_newest(Path(args.model_base_path), Path(tmp))
        print(f"model: {desc}; clients: {args.clients}; duration: {args.duration:g} s per phase")
        result = soak(base, args)
    ratio = report(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "ratio": ratio}, indent=2) + "\n")
    print(f"hostile ratio={ratio:.2f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
