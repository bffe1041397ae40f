"""The batch CLI end to end on a tiny exported model: folders of PNG/JPEG/DICOM in, one CSV row
per image (or DICOM frame) out, matching the in-process backend; bad files and a dead server are
clear errors."""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.clients.backend import InProcessBackend
from tests.fixtures import audit as audit_fixtures
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib_cli.predict import main

audit_env = audit_fixtures.audit_env


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_base(fixture_export):
    return fixture_export


@pytest.fixture()
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "slices"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(encode(rng.integers(0, 255, (40, 50, 3), np.uint8), "PNG"))
    (folder / "sub" / "b.jpg").write_bytes(encode(rng.integers(0, 255, (30, 30), np.uint8), "JPEG"))
    frames = np.stack([ramp(), ramp()[::-1], ramp()[:, ::-1]])
    (folder / "sub" / "c.dcm").write_bytes(make_dicom(frames))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folder_to_csv_matches_the_in_process_backend(model_base, inputs, tmp_path, capsys):
    from serving.clients.inprocess import InProcessModel

    out = tmp_path / "out" / "results.csv"
    argv = [
        str(inputs),
        "-o",
        str(out),
        "--model-base-path",
        str(model_base),
        "--abstain-threshold",
        "0.4",
        "--all-frames",
        "--no-progress",
    ]
    assert main(argv) == 1  # every row written, and the failed file makes the exit code say so
    rows = read_rows(out)
    by_name = {(r["path"].split("/")[-1], r["frame"]): r for r in rows}
    assert set(by_name) == {
        ("a.png", ""),
        ("b.jpg", ""),
        ("broken.png", ""),
        ("c.dcm", "0"),
        ("c.dcm", "1"),
        ("c.dcm", "2"),
    }
    assert "truncated" in by_name[("broken.png", "")]["error"]

    model = InProcessModel(model_base)
    expected = model.predict([(inputs / "a.png").read_bytes()])[0]
    row = by_name[("a.png", "")]
    probs = [float(row[f"p_{n}"]) for n in CLASS_NAMES]
    np.testing.assert_allclose(probs, [expected.probabilities[n] for n in CLASS_NAMES], atol=1e-5)
    assert row["class_name"] == expected.class_name and row["error"] == ""
    for row in rows:
        if not row["error"]:
            probs = [float(row[f"p_{n}"]) for n in CLASS_NAMES]
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)
            assert row["abstain"] == str(max(probs) < 0.4).lower()
            assert row["in_distribution"] == ""  # this fixture export has no gate outputs
    text = out.read_text() + capsys.readouterr().err
    assert PATIENT not in text and "5 classified" in text and "1 failed" in text
    assert "1 of 6 images failed" in text


@dataclass
class GatedPrediction:
    probabilities: dict
    class_index: int
    class_name: str
    in_distribution: bool
    gate_score: float


class GatedBackend:
    """Stands in for a model after the gate is wired into the signature's outputs."""

    path = "gated-stand-in"

    def predict(self, images, version=None):
        flat = {n: 0.25 for n in CLASS_NAMES}
        sure = dict(flat, glioma=0.97, meningioma=0.01, no_tumor=0.01, pituitary=0.01)
        return [
            GatedPrediction(sure if i % 2 else flat, 0, "glioma", bool(i % 2), 3.0 + i)
            for i in range(len(images))
        ]

    def metadata(self, version=None):
        return {"abstention": {"threshold": 0.9}}


def test_threshold_and_gate_come_from_the_model(inputs, tmp_path):
    out = tmp_path / "gated.csv"
    assert (
        main(
            [str(inputs / "a.png"), str(inputs / "sub" / "b.jpg"), "-o", str(out), "--no-progress"],
            backend=InProcessBackend(GatedBackend()),
        )
        == 0
    )
    rows = read_rows(out)
    assert [r["abstain"] for r in rows] == ["true", "false"]  # flat 0.25 < 0.9 <= 0.97
    assert [r["in_distribution"] for r in rows] == ["false", "true"]
    assert rows[1]["gate_score"] == "4.000"


def test_missing_path_and_dead_server_are_clear_errors(inputs, tmp_path, capsys):
    assert main([str(tmp_path / "nope.png")]) == 1
    assert "nope.png does not exist" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(
        [str(inputs / "a.png"), "--serving-url", f"http://127.0.0.1:{port}", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "Traceback" not in err


def test_a_password_in_the_serving_url_is_never_printed_or_stored(
    serving_stack, audit_env, tmp_path, capsys, monkeypatch
):
    """The credentials log in, but neither the terminal, the CSV nor the audit record has them."""
    from serving.audit.store import AuditStore

    secret = "svc-" + "pa55word"
    url = serving_stack.server.url.replace("http://", f"http://svc:{secret}@")
    monkeypatch.chdir(tmp_path)
    image = Path("=cmd|calc.png")  # a file name that a spreadsheet would run as a formula
    image.write_bytes(
        encode(np.random.default_rng(3).integers(0, 255, (40, 40, 3), np.uint8), "PNG")
    )
    out = tmp_path / "out.csv"
    assert main([str(image), "--serving-url", url, "--output", str(out), "--no-progress"]) == 0
    dead = f"http://svc:{secret}@127.0.0.1:{_closed_port()}"
    assert main([str(image), "--serving-url", dead, "--no-progress"]) == 1
    printed = "".join(capsys.readouterr())
    store = AuditStore(f"sqlite:///{audit_env}")
    try:
        records = store.rows("prediction")
    finally:
        store.engine.dispose()
    assert records and {r["backend"] for r in records} == {serving_stack.server.url}
    csv_text = out.read_text()
    for text in (printed, csv_text, str(records)):
        assert secret not in text and "svc:" not in text
    assert "Traceback" not in printed and "127.0.0.1" in printed
    assert read_rows(out)[0]["path"].startswith("'")  # the formula is text, not a formula


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
