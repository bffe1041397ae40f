"""Hostile inputs against every path: the library policy, the page's checks, the exported model
in-process, the batch CLI and the served graph over real HTTP.

Every bomb is generated here, in memory or under tmp_path (never committed): a PNG declaring
12000 x 12000 pixels (IHDR + a tiny IDAT), a JPEG declaring 30000 x 30000, a 16-bit PNG, a CMYK
JPEG, a GIF renamed .png, an animated PNG, a truncated file, an empty and an oversize file, and a
DICOM declaring 8000 x 8000 with almost no pixel data. Each must be refused in the policy's own
words, quickly and without a large allocation, and the server must keep serving.
"""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.serving import make_images
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tumorlib.inputs import policy
from tumorlib.inputs.policy import InputRejected, check_image

MODEL = "brain_mri"
RSS_GROWTH_LIMIT = 200 * 1024 * 1024


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 12000, height: int = 12000) -> bytes:
    """A valid-looking PNG: IHDR declaring ``width`` x ``height``, one tiny IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        policy.PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg_bomb(size: int = 30000) -> bytes:
    """A small grey JPEG whose SOF0 segment is rewritten to declare ``size`` x ``size``."""
    data = bytearray(_encode(Image.new("L", (16, 16), 90), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", size, size)
    return bytes(data)


def _rgb(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


def dicom_bomb(size: int = 8000) -> bytes:
    """An RLE DICOM declaring ``size`` x ``size`` 16-bit pixels with a few bytes of pixel data."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = dcmread(io.BytesIO(make_dicom(ramp())))
    ds.Rows = ds.Columns = size
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x00" * 64])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# name: (bytes, reason, the policy's message — exactly what every surface must show)
BOMBS: dict[str, tuple[bytes, str, str]] = {
    "png_bomb": (
        png_bomb(),
        "too_many_pixels",
        policy.TOO_MANY_PIXELS.format(
            width=12000,
            height=12000,
            megapixels="144.0",
            limit=policy.megapixels(policy.MAX_PIXELS),
        ),
    ),
    "jpeg_bomb": (
        jpeg_bomb(),
        "too_many_pixels",
        policy.TOO_MANY_PIXELS.format(
            width=30000,
            height=30000,
            megapixels="900.0",
            limit=policy.megapixels(policy.MAX_PIXELS),
        ),
    ),
    "png16": (
        _encode(Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 16)),
        "high_bit_depth",
        policy.HIGH_BIT_DEPTH.format(bits=16),
    ),
    "cmyk": (_encode(_rgb(1).convert("CMYK"), "JPEG"), "cmyk", policy.CMYK),
    "gif_as_png": (
        _encode(_rgb(2).convert("P"), "GIF"),
        "unsupported_format",
        policy.UNSUPPORTED_FORMAT.format(format="GIF"),
    ),
    "apng": (
        _encode(_rgb(3), save_all=True, append_images=[_rgb(4)]),
        "animated",
        policy.ANIMATED.format(format="PNG", frames=2),
    ),
    "truncated": (_encode(_rgb(5))[:20], "truncated", policy.TRUNCATED),
    "empty": (b"", "empty", policy.EMPTY),
}
OVERSIZE = 11 * 1024 * 1024
OVERSIZE_MESSAGE = policy.TOO_LARGE_BYTES.format(
    size=policy.megabytes(OVERSIZE), limit=policy.megabytes(policy.MAX_IMAGE_BYTES)
)
DICOM_MESSAGE = policy.DICOM_TOO_MANY_PIXELS.format(
    width=8000, height=8000, limit=policy.megapixels(policy.MAX_PIXELS)
)


def oversize_png() -> bytes:
    return _encode(_rgb(6)) + b"\x00" * OVERSIZE


# --------------------------------------------------------------------------------------------
# The library policy and the page's checks: header only, fast, small
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_policy_refuses_from_the_header_in_its_own_words(name):
    from streamlit_app.validation import validate_upload

    data, reason, message = BOMBS[name]
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputRejected) as caught:
        check_image(data)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (caught.value.reason, caught.value.message) == (reason, message)
    assert elapsed < 0.1 and peak < 1024 * 1024
    with pytest.raises(InputRejected) as on_page:
        validate_upload(data)
    assert on_page.value.message == message  # the page shows the very same words


def test_policy_refuses_oversize_bytes_and_accepts_ordinary_slices():
    with pytest.raises(InputRejected) as caught:
        check_image(oversize_png())
    assert caught.value.reason == "too_large_bytes" and caught.value.message == OVERSIZE_MESSAGE
    for data in make_images(4, seed=3) + make_images(2, seed=4, fmt="JPEG"):
        header = check_image(data)
        assert header.format in policy.ACCEPTED_FORMATS and header.bits == 8


def test_dicom_bomb_is_refused_before_its_pixels_are_touched():
    from streamlit_app.validation import prepare_upload
    from tumorlib.inputs.dicom import read_dicom

    data = dicom_bomb()
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputRejected) as caught:
        read_dicom(data)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.reason == "too_many_pixels" and caught.value.message == DICOM_MESSAGE
    assert elapsed < 1.0 and peak < 20 * 1024 * 1024  # 8000 x 8000 x 2 bytes would be 128 MB
    with pytest.raises(InputRejected) as on_page:
        prepare_upload("bomb.dcm", data)
    assert on_page.value.message == DICOM_MESSAGE


def test_dicom_header_values_never_reach_a_log(tmp_path):
    """pydicom logs through ``logging`` too (every element in debug mode): silenced.

    Run in a fresh interpreter, so no earlier test can have silenced pydicom already: logging at
    DEBUG to stderr, pydicom's own debug mode switched on after our import (as a user might), then
    a DICOM whose malformed PatientAge quotes the patient is read."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(ramp())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientAge = f"{PATIENT}-NOT-AN-AGE"  # malformed AS value: pydicom complains about it
        ds.save_as(tmp_path / "hostile.dcm", enforce_file_format=True)
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "import pydicom\n"
        "from tumorlib.inputs.dicom import read_dicom\n"
        "pydicom.config.debug(True)\n"
        "image = read_dicom(open(sys.argv[1], 'rb').read())\n"
        "logging.getLogger('pydicom').warning('header value %s', sys.argv[2])\n"
        "print('frames', image.num_frames)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "hostile.dcm"), PATIENT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "frames 1" in done.stdout
    assert PATIENT not in done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# The exported model in-process: the graph refuses before decoding
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(fixture_export):
    from serving.clients.inprocess import InProcessModel

    return InProcessModel(fixture_export)


def test_exported_graph_refuses_every_bomb_in_the_policys_words(model):
    import psutil

    rss = psutil.Process().memory_info().rss
    cases = {name: (data, message) for name, (data, _, message) in BOMBS.items()}
    cases["oversize"] = (oversize_png(), OVERSIZE_MESSAGE)
    for name, (data, message) in cases.items():
        start = time.perf_counter()
        with pytest.raises(Exception) as caught:
            model.predict([data])
        assert message in str(caught.value), name
        assert time.perf_counter() - start < 2.0, name
    assert psutil.Process().memory_info().rss - rss < RSS_GROWTH_LIMIT
    assert len(model.predict(make_images(2, seed=9))) == 2  # still answering


# --------------------------------------------------------------------------------------------
# The batch CLI: every row written, the same words, exit 1
# --------------------------------------------------------------------------------------------


def test_batch_cli_refuses_bombs_writes_every_row_and_exits_1(fixture_export, tmp_path, capsys):
    import csv

    from tumorlib_cli.predict import main

    folder = tmp_path / "in"
    folder.mkdir()
    expected = {}
    for name, (data, _, message) in BOMBS.items():
        suffix = ".jpg" if name in ("jpeg_bomb", "cmyk") else ".png"
        (folder / f"{name}{suffix}").write_bytes(data)
        expected[f"{name}{suffix}"] = message
    with open(folder / "oversize.png", "wb") as sparse:  # size from stat, never read
        sparse.truncate(OVERSIZE)
    expected["oversize.png"] = OVERSIZE_MESSAGE
    (folder / "bomb.dcm").write_bytes(dicom_bomb())
    expected["bomb.dcm"] = DICOM_MESSAGE
    (folder / "good.png").write_bytes(make_images(1)[0])
    out = tmp_path / "out.csv"
    argv = [str(folder), "-o", str(out), "--model-base-path", str(fixture_export), "--no-progress"]
    assert main(argv) == 1
    with open(out, newline="") as f:
        rows = {r["path"].split("/")[-1]: r for r in csv.DictReader(f)}
    assert set(rows) == {*expected, "good.png"}
    for name, message in expected.items():
        assert rows[name]["error"] == message, name
    assert rows["good.png"]["error"] == "" and rows["good.png"]["class_name"]
    err = capsys.readouterr().err
    assert f"{len(expected)} of {len(rows)} images failed" in err


# --------------------------------------------------------------------------------------------
# The served graph over real HTTP (python -m serving.local)
# --------------------------------------------------------------------------------------------


def _post(url: str, data: bytes) -> requests.Response:
    body = {"instances": [{"b64": base64.b64encode(data).decode("ascii")}]}
    return requests.post(f"{url}/v1/models/{MODEL}:predict", json=body, timeout=60)


@pytest.mark.slow
def test_served_graph_refuses_bombs_with_400_and_keeps_serving(serving_stack):
    import psutil

    url = serving_stack.server.url
    server = psutil.Process(serving_stack.server.process.pid)
    assert _post(url, make_images(1)[0]).status_code == 200  # warm: lazy loads are not growth
    rss = server.memory_info().rss
    for name, (data, _, message) in BOMBS.items():
        start = time.perf_counter()
        response = _post(url, data)
        elapsed = time.perf_counter() - start
        assert response.status_code == 400, (name, response.text)
        assert response.json() == {"error": message}, name
        assert elapsed < 2.0, name
    assert server.memory_info().rss - rss < RSS_GROWTH_LIMIT
    start = time.perf_counter()
    assert _post(url, png_bomb()).status_code == 400
    assert time.perf_counter() - start < 0.5  # the 12000 x 12000 bomb: milliseconds, not seconds
    truncated_jpeg = _encode(_rgb(7), "JPEG")[:-200]  # header intact: the decoder refuses it
    assert _post(url, truncated_jpeg).status_code == 400
    response = _post(url, make_images(1, seed=2)[0])
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
