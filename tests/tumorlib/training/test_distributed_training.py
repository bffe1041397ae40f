"""Training under tf.distribute: two replicas learn what one device learns, one run folder.

Each training runs in subprocesses (a strategy, logical devices and TF_CONFIG are process-wide):
one device at global batch 16; MirroredStrategy on two logical CPU devices at 8 per replica;
MultiWorkerMirroredStrategy with two local processes on 127.0.0.1 at 8 per replica (trained by
:mod:`tumorlib.training.custom_loop`, Keras 3's ``fit`` failing there); and a two-worker job whose
worker is killed mid-phase and the job restarted, which resumes from the chief's checkpoint instead
of starting again. All slow (minutes on two cores).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.training import build_learnable_dataset, calibrated_backbone_file
from tumorlib.data import pipeline as data

SIZE = 32
ROOT = REPO_ROOT
TWO_CPUS = (
    "import sys, tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)"
    "; from tumorlib import train; sys.exit(train.main(sys.argv[1:]))"
)
ONE_CPU = "import sys; from tumorlib import train; sys.exit(train.main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    data_dir = build_learnable_dataset(tmp)
    pipeline = data.load_pipeline("train", data_dir_=data_dir, image_size=SIZE, training=False)
    images = np.concatenate([x for x, _ in pipeline.as_numpy_iterator()])
    weights = calibrated_backbone_file(tmp / "backbone.weights.h5", SIZE, images)
    return {"tmp": tmp, "data_dir": data_dir, "weights": weights}


def _argv(setup, name: str, batch: int, strategy: str, fine_tune_epochs: int = 1) -> list[str]:
    tmp = setup["tmp"]
    return [
        "--data-dir", str(setup["data_dir"]), "--weights", str(setup["weights"]),
        "--image-size", str(SIZE), "--alpha", "0.35", "--runs-dir", str(tmp / "runs"),
        "--run-name", name,
        "--head-epochs", "4", "--head-learning-rate", "0.003", "--dropout", "0",
        "--head-patience", "10",
        "--fine-tune-epochs", str(fine_tune_epochs), "--fine-tune-layers", "40",
        "--fine-tune-patience", "10", "--batch-size", str(batch), "--verbose", "2",
        "--feature-cache-dir", str(tmp / f"features-{name}"), "--strategy", strategy,
    ]  # fmt: skip


def _start(code: str, argv: list[str], log: Path, tf_config: dict | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv], cwd=ROOT, env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait(procs, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        assert proc.wait(max(1, deadline - time.monotonic())) == 0, proc.args


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(setup, name: str, argv: list[str], ports: list[int]):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        _start(
            ONE_CPU,
            argv,
            setup["tmp"] / f"{name}-w{i}.log",
            {"cluster": cluster, "task": {"type": "worker", "index": i}},
        )  # fmt: skip
        for i in range(len(ports))
    ]


def _losses(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[["phase", "epoch", "loss", "val_loss"]]


@pytest.fixture(scope="module")
def reference(setup):
    log = setup["tmp"] / "ref.log"
    _wait([_start(ONE_CPU, _argv(setup, "ref", 16, "default"), log)])
    return _losses(setup["tmp"] / "runs" / "ref")


def _assert_same_curve(
    curve: pd.DataFrame, reference: pd.DataFrame, head_rtol: float = 0.02
) -> None:
    """Phase one (fixed features, no dropout) tightly; phase two (augmented) loosely.

    Phase two's augmentation and shuffle re-draw per tf.data iterator
    (``rerandomize_each_iteration``), and the distributed input path does not create the same
    iterators as ``fit`` on one device, so its random draws differ (observed: val loss 2.05 vs
    1.67 after one epoch of this tiny fixture) while phase one matched to 1e-6.
    """
    assert list(curve["phase"]) == list(reference["phase"])
    head = (curve["phase"] == "head").to_numpy()
    for column in ("loss", "val_loss"):
        got, want = curve[column].to_numpy(), reference[column].to_numpy()
        np.testing.assert_allclose(got[head], want[head], rtol=head_rtol, atol=0.01)
        np.testing.assert_allclose(got[~head], want[~head], rtol=0.35)


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device(setup, reference):
    log = setup["tmp"] / "mirrored.log"
    _wait([_start(TWO_CPUS, _argv(setup, "mirrored", 8, "mirrored"), log)])
    run = setup["tmp"] / "runs" / "mirrored"
    config = json.loads((run / "config.json").read_text())
    assert config["distribution"] == {"strategy": "mirrored", "replicas": 2,
                                      "global_batch_size": 16}  # fmt: skip
    _assert_same_curve(_losses(run), reference)


@pytest.mark.slow
def test_multi_worker_matches_one_device_and_writes_one_run_folder(setup, reference):
    argv = _argv(setup, "mw", 8, "multi_worker")
    _wait(_workers(setup, "mw", argv, _free_ports(2)))
    runs = setup["tmp"] / "runs"
    assert {p.name for p in runs.iterdir()} <= {"ref", "mirrored", "mw"}  # one folder per run
    run = runs / "mw"
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and config["distribution"]["replicas"] == 2
    assert (run / "model.keras").is_file() and (run / "calibration.json").is_file()
    assert not (run / "checkpoints" / "backup").exists()  # finished: backup state removed
    assert not list(Path("/tmp").glob("tumorlib-mw-worker*"))  # worker scratch removed
    # Features computed once (by the chief): one cache entry per split.
    assert len(list((setup["tmp"] / "features-mw").glob("*.npz"))) == 2
    # Same loss curve within 15 % per epoch (observed: <= 10 %). Not tighter because phase one's
    # batches come in another order: one device lets Keras shuffle the NumPy features, the
    # workers a seeded tf.data shuffle (Keras cannot split NumPy input across workers). The loop
    # itself computes what fit computes to 1e-5 on the same batches
    # (tests/tumorlib/training/test_custom_loop.py).
    _assert_same_curve(_losses(run), reference, head_rtol=0.15)


@pytest.mark.slow
def test_killed_worker_job_resumes_from_backup(setup):
    name = "resume"
    argv = _argv(setup, name, 8, "multi_worker", fine_tune_epochs=4)
    ports = _free_ports(2)
    procs = _workers(setup, name, argv, ports)
    backup = setup["tmp"] / "runs" / name / "checkpoints" / "backup" / "fine_tune"
    deadline = time.monotonic() + 600
    while not list(backup.glob("*")) and time.monotonic() < deadline:
        assert procs[0].poll() is None, "the job ended before a fine-tune backup appeared"
        time.sleep(0.5)
    os.kill(procs[1].pid, signal.SIGKILL)  # a worker dies mid-phase
    try:
        procs[0].wait(20)  # the chief notices the lost peer, or is stopped like a cluster restart
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    _wait(_workers(setup, name, argv, _free_ports(2)))  # the job restarted, same TF_CONFIG shape
    log = (setup["tmp"] / f"{name}-w0.log").read_text()
    assert "finished before a restart" in log  # phase one was not redone
    resumed = [
        int(m) for m in re.findall(r"Phase fine_tune: restored .* resuming at epoch (\d+)", log)
    ]
    assert resumed and resumed[-1] > 0  # phase two went on from the chief's checkpoint
    history = pd.read_csv(setup["tmp"] / "runs" / name / "history.csv")
    fine = history[history["phase"] == "fine_tune"]
    assert len(fine) == 4 and fine["epoch"].is_unique
    assert json.loads((setup["tmp"] / "runs" / name / "config.json").read_text())[
        "status"] == "finished"  # fmt: skip


def test_mixed_precision_and_multi_worker_refuse_clearly(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    from tumorlib.training import distribute, train

    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ValueError, match="needs a GPU"):
            distribute.set_mixed_precision(True)
        assert train.main(["--mixed-precision", "--data-dir", str(tmp_path)]) == 1
        assert "needs a GPU" in capsys.readouterr().err
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    assert distribute.is_chief(distribute.make_strategy("default"))
