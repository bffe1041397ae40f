"""Shared fixtures for the serving tests: a tiny trained-looking run folder and test images.

The model here stands in for ``tumorlib.model.build_model``: same contract (normalised
``[N, S, S, 3]`` in [-1, 1] -> softmax ``[N, 4]``) and the same structure (a ``"backbone"``
sub-model, global average pooling, a ``"head"`` sub-model ending in a softmax ``Dense``), so
Grad-CAM and the input gate work on it; a few thousand weights, so exporting and serving it
takes seconds on two cores. The temperature is not 1 so temperature scaling is actually
exercised. :func:`add_safety_outputs` writes what ``tumorlib.abstention`` and
``tumorlib.input_gate`` would write into a run folder, fitted on the fixture's own images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FIXTURE_IMAGE_SIZE = 32
FIXTURE_TEMPERATURE = 1.7
# Backbone layers of the fixture model, named like the gate's default MobileNetV2 taps' roles.
FIXTURE_GATE_LAYERS = ("mid_relu", "out_relu")
# Images like make_images(...) are this gate's "in distribution"; a blank white image is far from
# them (a blank black one is not: every padded training image is partly black).
GATE_FIT_SEED = 500
# make_images(ABSTAIN_PROBE_COUNT, seed=ABSTAIN_PROBE_SEED): the threshold splits them in half.
ABSTAIN_PROBE_SEED = 100
ABSTAIN_PROBE_COUNT = 24


def fixture_model(image_size: int = FIXTURE_IMAGE_SIZE, *, plain: bool = False):
    """The tiny classifier; ``plain=True`` gives one flat model without backbone/head parts."""
    import keras

    from tumorlib.classes import NUM_CLASSES
    from tumorlib.model import BACKBONE_NAME, HEAD_NAME

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name=FIXTURE_GATE_LAYERS[0])(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name=FIXTURE_GATE_LAYERS[1])(x)
    dense = keras.layers.Dense(NUM_CLASSES, activation="softmax", name=f"{HEAD_NAME}_probabilities")
    if plain:
        return keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)))
    backbone = keras.Model(inputs, x, name=BACKBONE_NAME)
    features = keras.Input((backbone.output_shape[-1],))
    # Dropout as in tumorlib.model's head: its seed-generator state must survive the export.
    dropped = keras.layers.Dropout(0.2, name=f"{HEAD_NAME}_dropout")(features)
    head = keras.Model(features, dense(dropped), name=HEAD_NAME)
    image = keras.Input((image_size, image_size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(image, training=False))
    return keras.Model(image, head(pooled), name="fixture_classifier")


def make_fixture_run(
    path: Path,
    *,
    image_size: int = FIXTURE_IMAGE_SIZE,
    temperature: float = FIXTURE_TEMPERATURE,
    seed: int = 0,
    plain: bool = False,
) -> Path:
    """Write ``runs/<name>/`` with model.keras, config.json, calibration.json and one eval."""
    import keras

    from tumorlib.classes import CLASS_NAMES
    from tumorlib.runs import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, write_json

    keras.utils.set_random_seed(seed)
    model = fixture_model(image_size, plain=plain)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL_FILE)
    write_json(
        path / CONFIG_FILE,
        {
            "image_size": image_size,
            "alpha": 0.35,
            "weights": "none (test fixture)",
            "dropout": 0.2,
            "head_units": 0,
            "seed": seed,
            "dataset": {"name": "brain_mri", "config": "clean", "version": "1.0.0"},
        },
    )
    write_json(path / CALIBRATION_FILE, {"temperature": temperature})
    write_json(
        path / "eval" / "clean-test" / "metrics.json",
        {
            "config": "clean",
            "split": "test",
            "accuracy": 0.5,
            "macro_f1": 0.4,
            "per_class": {
                n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3} for n in CLASS_NAMES
            },
        },
    )
    return path


def served_probabilities(run_path: Path, images: list[bytes]) -> np.ndarray:
    """What the run's export will answer for ``images`` (temperature-scaled), from Keras."""
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature_np
    from tumorlib.preprocessing import preprocess_bytes_batch
    from tumorlib.runs import load_run

    run = load_run(run_path)
    raw = run.load_model()(preprocess_bytes_batch(tf.constant(images), run.image_size))
    return apply_temperature_np(np.asarray(raw), run.temperature)


def add_safety_outputs(run_path: Path, *, gate: bool = True, abstention: bool = True) -> None:
    """Write ``abstention.json`` and ``input_gate.npz`` as the real steps would, but fitted here.

    The threshold lies halfway between the middle two confidences of the probe images, so a
    test can pick images on either side of it. The gate is fitted on images like
    :func:`make_images` (random textures of random sizes), with every layer's threshold
    widened by half for margin: those are accepted and a blank white image is not.
    """
    from tumorlib.gate import fit_gate
    from tumorlib.gate_features import feature_extractor, features_for_images
    from tumorlib.runs import ABSTENTION_FILE, GATE_FILE, load_run, write_json
    from tumorlib.serving_contract import UNCERTAIN_MESSAGE

    run = load_run(run_path)
    if abstention:
        probes = make_images(ABSTAIN_PROBE_COUNT, seed=ABSTAIN_PROBE_SEED)
        confidence = np.sort(served_probabilities(run_path, probes).max(axis=1))
        middle = len(confidence) // 2
        threshold = float((confidence[middle - 1] + confidence[middle]) / 2)
        chosen = {"threshold": threshold, "target_precision": 0.99, "coverage": 0.5,
                  "precision": 1.0, "accepted": middle, "total": len(confidence),
                  "reachable": True}  # fmt: skip
        write_json(
            run.path / ABSTENTION_FILE,
            {"temperature": run.temperature, "chosen_on_validation": chosen,
             "test": {"coverage": 0.5, "accepted_accuracy": 1.0}, "message": UNCERTAIN_MESSAGE},
        )  # fmt: skip
    if gate:
        extractor = feature_extractor(run.load_model(), FIXTURE_GATE_LAYERS)
        images = make_images(160, seed=GATE_FIT_SEED)
        feats = features_for_images(extractor, FIXTURE_GATE_LAYERS, images, run.image_size)
        fitted = fit_gate(
            {k: v[:100] for k, v in feats.items()}, {k: v[100:] for k, v in feats.items()}, 0.0
        )
        for layer in fitted.layers:
            layer.threshold *= 1.5
        fitted.save(run.path / GATE_FILE)


def blank_png(value: int = 255, size: int = 48) -> bytes:
    """A uniform PNG (white by default): nothing like the fixture gate's training images."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def make_images(n: int, *, seed: int = 0, fmt: str = "PNG") -> list[bytes]:
    """``n`` encoded images of varied sizes and content (grey and colour, square and not)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        if i % 3 == 1:
            image = image.convert("L")
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


# --------------------------------------------------------------------------------------------
# A running local server, shared by every serving test module in one pytest process
# --------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_REQUEST_BYTES = 2 * 1024 * 1024


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """``python -m serving.local`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, *args: str, startup_timeout: float = 120.0) -> None:
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.local", f"--rest_api_port={self.port}", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up(startup_timeout)

    def _wait_until_up(self, timeout: float) -> None:
        import time

        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace")
                raise RuntimeError(f"local server exited early:\n{output[-3000:]}")
            try:
                requests.get(self.url + "/v1/models/none", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"local server did not start within {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except Exception:  # noqa: BLE001 - last resort for a hung child we started
                self.process.kill()
        if self.process.stdout:
            self.process.stdout.close()


class ServingStack:
    """A fixture run exported twice over (model ``brain_mri``) and a server in front of it.

    The server also serves ``brain_mri_reload`` from a second base path, which tests may export
    new versions into to check pick-up without restart, leaving ``brain_mri`` untouched.
    """

    def __init__(self) -> None:
        import tempfile

        from serving.export import export_run

        self.root = Path(tempfile.mkdtemp(prefix="serving-tests-"))
        self.run_path = make_fixture_run(self.root / "runs" / "fixture")
        self.other_run_path = make_fixture_run(
            self.root / "runs" / "other", seed=1, temperature=0.8
        )
        # Version 2 (the newest) carries abstention and the input gate; version 1 does not, like
        # a model exported before those steps existed.
        add_safety_outputs(self.other_run_path)
        self.base_path = self.root / "models" / "brain_mri"
        self.v1 = export_run(self.run_path, self.base_path)
        self.v2 = export_run(self.other_run_path, self.base_path)
        self.reload_base_path = self.root / "models" / "brain_mri_reload"
        export_run(self.run_path, self.reload_base_path)
        config = self.root / "models.config"
        config.write_text(f"""
model_config_list {{
  config {{ name: "brain_mri" base_path: "{self.base_path}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
  config {{ name: "brain_mri_reload" base_path: "{self.reload_base_path}"
           model_platform: "tensorflow" }}
}}
""")
        self.server = LocalServer(
            f"--model_config_file={config}",
            "--enable_batching",
            f"--batching_parameters_file={REPO_ROOT / 'serving' / 'batching_parameters.txt'}",
            "--file_system_poll_wait_seconds=0.3",
            f"--max_request_bytes={MAX_REQUEST_BYTES}",
        )

    def close(self) -> None:
        import shutil

        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)
