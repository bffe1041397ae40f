"""Input gate: refuse images that are not brain MRI slices before classifying them.

Why: a softmax classifier always answers one of its four classes, with high confidence even on a
holiday photo or a page of text. The gate measures how far an image lies from the training
distribution in the backbone's feature space: for each of a few backbone layers, the Mahalanobis
distance of the layer's globally pooled activations to the training mean under a Ledoit–Wolf
shrinkage covariance (Lee et al., 2018, use several layers the same way; Ledoit & Wolf, 2004:
~2,000 samples cannot estimate a 1280×1280 covariance without shrinkage). An image is accepted only
if every layer accepts it.

Why several layers: the final embedding (``out_relu``, what the head sees) is tuned to tell the
four classes apart and maps blank images and smooth gradients close to the MRI mean (measured: it
let all blank images through). A mid-level layer (``block_13_expand_relu``) still describes
texture and edges and separates those easily; together they rejected every generated negative.

Each layer's threshold is the ``1 - false_rejection / L`` quantile of the *validation* split's
distances (L layers: a Bonferroni split, so the combined validation false-rejection stays within
the target); the test split then measures the real false-rejection rate, and generated negatives
(noise, blank images, gradients, rendered text, photos shipped inside installed packages) the
rejection rate.

The fitted statistics are plain arrays (``.npz`` + a ``.json`` summary), so the export embeds them
as graph constants: :func:`make_gated_serve_fn` is a drop-in ``serving_default`` that also returns
``in_distribution`` and ``gate_score`` (the largest distance/threshold ratio; accepted <= 1).

``python -m tumorlib.input_gate RUN`` fits, evaluates and writes ``RUN/input_gate.npz``,
``RUN/input_gate.json`` and ``RUN/safety/input_gate.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GATE_FILE = "input_gate.npz"
GATE_SUMMARY = "input_gate.json"
DEFAULT_FALSE_REJECTION = 0.005
DEFAULT_LAYERS = ("block_13_expand_relu", "out_relu")
REJECTED_MESSAGE = "This does not look like a brain MRI slice; not classified."

Features = dict[str, np.ndarray]  # layer name -> pooled activations [N, D_layer]


class GateError(ValueError):
    """The gate cannot be fitted or loaded (too few samples, wrong shapes, missing file)."""


@dataclass
class LayerGate:
    """Mahalanobis statistics of one layer's pooled activations."""

    layer: str
    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D], inverse of the shrinkage covariance
    threshold: float = float("inf")
    shrinkage: float = float("nan")

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``[N]`` of pooled activations ``[N, D]``."""
        features = np.asarray(features, dtype=np.float64)
        dim = self.mean.shape[0]
        if features.ndim != 2 or features.shape[1] != dim:
            raise GateError(
                f"layer {self.layer}: expected features [N, {dim}], got {list(features.shape)}"
            )
        centred = features - self.mean
        d2 = np.einsum("nd,de,ne->n", centred, self.precision, centred)
        return np.sqrt(np.maximum(d2, 0.0))


@dataclass
class InputGate:
    """Accept an image when every layer's distance is within that layer's threshold."""

    layers: list[LayerGate]
    false_rejection_target: float = DEFAULT_FALSE_REJECTION
    meta: dict = field(default_factory=dict)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(g.layer for g in self.layers)

    def _check(self, features: Features) -> None:
        missing = [name for name in self.layer_names if name not in features]
        if missing:
            raise GateError(f"features for layers {missing} missing (have {sorted(features)})")

    def distances(self, features: Features) -> dict[str, np.ndarray]:
        self._check(features)
        return {g.layer: g.distance(features[g.layer]) for g in self.layers}

    def score(self, features: Features) -> np.ndarray:
        """``[N]``: the largest distance/threshold ratio over layers; accepted when <= 1."""
        self._check(features)
        return np.max([g.distance(features[g.layer]) / g.threshold for g in self.layers], axis=0)

    def accept(self, features: Features) -> np.ndarray:
        """Boolean ``[N]``: True for inputs that look like the training data."""
        return self.score(features) <= 1.0

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``: every layer's arrays, float32) for export and reloading."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "layers": np.array(self.layer_names),
            "false_rejection_target": np.float64(self.false_rejection_target),
        }
        for g in self.layers:
            arrays[f"{g.layer}.mean"] = g.mean.astype(np.float32)
            arrays[f"{g.layer}.precision"] = g.precision.astype(np.float32)
            arrays[f"{g.layer}.threshold"] = np.float64(g.threshold)
            arrays[f"{g.layer}.shrinkage"] = np.float64(g.shrinkage)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> InputGate:
        path = Path(path)
        if not path.is_file():
            raise GateError(
                f"input gate file {path} does not exist; run `python -m tumorlib.input_gate RUN`"
            )
        with np.load(path) as z:
            layers = [
                LayerGate(
                    layer=str(name),
                    mean=z[f"{name}.mean"].astype(np.float64),
                    precision=z[f"{name}.precision"].astype(np.float64),
                    threshold=float(z[f"{name}.threshold"]),
                    shrinkage=float(z[f"{name}.shrinkage"]),
                )
                for name in z["layers"]
            ]
            return cls(layers, float(z["false_rejection_target"]))


def fit_gate(
    train_features: Features,
    validation_features: Features,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
) -> InputGate:
    """Fit each layer's mean and shrinkage covariance on train; thresholds on validation.

    Fitting the statistics and the thresholds on different splits matters: training features
    are closer to their own mean than new in-distribution images, so thresholds set on them
    would reject too many genuine slices.
    """
    from sklearn.covariance import LedoitWolf

    if not 0.0 <= false_rejection < 1.0:
        raise GateError(f"false_rejection must be in [0, 1), got {false_rejection}")
    if not train_features:
        raise GateError("no layers to fit the gate on")
    per_layer = false_rejection / len(train_features)
    layers = []
    for name, train in train_features.items():
        train = np.asarray(train, dtype=np.float64)
        if name not in validation_features:
            raise GateError(f"validation features lack layer {name}")
        val = np.asarray(validation_features[name], dtype=np.float64)
        if train.ndim != 2 or len(train) < 2:
            raise GateError(
                f"layer {name}: need at least 2 training rows [N, D], got {train.shape}"
            )
        if val.ndim != 2 or val.shape[1] != train.shape[1]:
            raise GateError(
                f"layer {name}: validation features {val.shape} do not match training {train.shape}"
            )
        lw = LedoitWolf().fit(train)
        gate = LayerGate(name, lw.location_, lw.precision_, shrinkage=float(lw.shrinkage_))
        gate.threshold = float(np.quantile(gate.distance(val), 1.0 - per_layer, method="higher"))
        layers.append(gate)
    return InputGate(layers, false_rejection)


# --------------------------------------------------------------------------------------------
# TensorFlow side: the gate inside the exported graph
# --------------------------------------------------------------------------------------------


def gate_score_tf(pooled: Sequence, gate: InputGate):
    """The gate score ``[N]`` as TF ops from pooled features in ``gate.layers`` order.

    The statistics become graph constants, so nothing besides the SavedModel is needed to serve.
    """
    import tensorflow as tf

    ratios = []
    for g, feats in zip(gate.layers, pooled):
        centred = tf.cast(feats, tf.float32) - tf.constant(g.mean, tf.float32)
        d2 = tf.reduce_sum(tf.matmul(centred, tf.constant(g.precision, tf.float32)) * centred, -1)
        ratios.append(tf.sqrt(tf.maximum(d2, 0.0)) / g.threshold)
    return tf.reduce_max(tf.stack(ratios, axis=0), axis=0)


def feature_extractor(model, layers: Sequence[str] = DEFAULT_LAYERS):
    """Keras model: normalised images -> ``[pooled activations of each layer..., probabilities]``.

    Built from the classifier's own ``"backbone"`` and ``"head"`` layers (shared weights), so
    one backbone pass yields the gate's features and the prediction. For an ensemble
    (:mod:`tumorlib.ensemble`) the features come from its first member's backbone (at that
    member's resolution) — one backbone is enough to tell a brain MRI from anything else — and
    the probabilities are the whole ensemble's.
    """
    import keras

    from tumorlib.ensemble_model import Resize, members
    from tumorlib.model import backbone_of, head_of

    primary = members(model)[0]
    backbone = backbone_of(primary)
    try:
        taps = [backbone.get_layer(name).output for name in layers]
    except ValueError as err:
        raise GateError(f"backbone has no layer named in {list(layers)}: {err}") from None
    inner = keras.Model(backbone.inputs, taps + [backbone.output], name="gate_taps")
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = inputs
    size = int(backbone.input_shape[1])
    if size != int(model.input_shape[1]):
        x = Resize(size, name="gate_resize")(x)
    outs = inner(x, training=False)
    pooled = [
        keras.layers.GlobalAveragePooling2D(name=f"gate_pool_{i}")(o) for i, o in enumerate(outs)
    ]
    if primary is model:
        probabilities = head_of(model)(pooled[-1], training=False)
    else:
        probabilities = model(inputs, training=False)
    return keras.Model(inputs, pooled[:-1] + [probabilities], name="gate_features")


def make_gated_serve_fn(model, gate: InputGate, *, image_size: int, temperature: float = 1.0):
    """A ``serving_default`` replacement: ``image_bytes`` ``tf.string [None]`` ->
    ``probabilities`` ``[None, 4]`` (temperature-scaled), ``class_index`` ``int64``,
    ``class_name`` ``string``, ``in_distribution`` ``bool``, ``gate_score`` ``float32``.

    Returns ``(serve, extractor)``: attach both to the exporter's ``tf.Module``
    (``module.gate_features = extractor; module.serve = serve``) so their variables — the
    classifier's own — are tracked and saved.
    """
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature
    from tumorlib.classes import CLASS_NAMES
    from tumorlib.preprocessing import preprocess_bytes_batch

    extractor = feature_extractor(model, gate.layer_names)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        images = preprocess_bytes_batch(image_bytes, image_size)
        *pooled, probabilities = extractor(images, training=False)
        probabilities = apply_temperature(probabilities, temperature)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        score = gate_score_tf(pooled, gate)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(tf.constant(CLASS_NAMES), class_index),
            "in_distribution": score <= 1.0,
            "gate_score": score,
        }

    return serve, extractor


# --------------------------------------------------------------------------------------------
# Negatives: images that are certainly not brain MRI, producible offline
# --------------------------------------------------------------------------------------------


def _packaged_photos() -> list[tuple[str, np.ndarray]]:
    """Photos and pictures shipped inside installed packages (no download)."""
    from PIL import Image

    found: list[tuple[str, np.ndarray]] = []
    candidates: list[Path] = []
    try:
        import matplotlib

        mpl = Path(matplotlib.get_data_path())
        candidates += [
            mpl / "sample_data" / n
            for n in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png")
        ]
        candidates += sorted((mpl / "images").glob("*_large.png"))[:10]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        candidates += sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))
    except ImportError:
        pass
    try:
        import skimage.data

        candidates += sorted(Path(skimage.data.__file__).parent.glob("*.png"))
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            with Image.open(path) as im:
                found.append((f"photo:{path.name}", np.asarray(im.convert("RGB"))))
    return found


def _text_image(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    dark = rng.random() < 0.5
    image = Image.new("RGB", (size, size), (0, 0, 0) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(10, 28)))
    words = ["patient", "report", "normal", "MRI", "brain", "lorem", "ipsum", "scan", "2024"]
    y = 4
    while y < size - 10:
        line = " ".join(rng.choice(words, 6))
        draw.text((4, y), line, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
        y += int(rng.integers(14, 32))
    return np.asarray(image)


def generate_negatives(size: int = 224, seed: int = 0, per_kind: int = 8):
    """``(kind, uint8 [H, W, 3])`` pairs: noise, blanks, gradients, text, packaged photos.

    Photos also appear cropped, rescaled and in grayscale — MRI slices are grayscale, so a gray
    photo is the harder, more honest negative.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for _ in range(per_kind):
        out.append(("noise:uniform", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        gauss = rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (size, size, 1))
        out.append(("noise:gaussian_gray", np.clip(gauss, 0, 255).astype(np.uint8).repeat(3, 2)))
        out.append(("text", _text_image(rng, size)))
    for value in (0, 32, 128, 200, 255):
        out.append((f"blank:{value}", np.full((size, size, 3), value, np.uint8)))
    out.append(("blank:red", np.tile(np.array([255, 0, 0], np.uint8), (size, size, 1))))
    ramp = np.linspace(0, 255, size)
    yy, xx = np.mgrid[0:size, 0:size]
    radial = np.hypot(yy - size / 2, xx - size / 2)
    for name, g in (
        ("horizontal", np.tile(ramp, (size, 1))),
        ("vertical", np.tile(ramp, (size, 1)).T),
        ("radial", 255 * radial / radial.max()),
        ("radial_inverse", 255 - 255 * radial / radial.max()),
        ("checkerboard", 255.0 * (((yy // 16) + (xx // 16)) % 2)),
    ):
        out.append((f"gradient:{name}", g.astype(np.uint8)[..., None].repeat(3, 2)))
    for name, photo in _packaged_photos():
        out.append((name, photo))
        gray = photo.mean(axis=2, keepdims=True).astype(np.uint8).repeat(3, 2)
        out.append((name + ":gray", gray))
        h, w = photo.shape[:2]
        for _ in range(3):
            crop = int(min(h, w) * rng.uniform(0.4, 0.9))
            y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            out.append((name + ":crop", photo[y0 : y0 + crop, x0 : x0 + crop]))
    return out


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Fitting and evaluating on a run
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Fitting and evaluating on a run
# --------------------------------------------------------------------------------------------


def _features_of(extractor, images, layers) -> Features:
    outs = extractor(images, training=False)
    return {name: outs[i].numpy() for i, name in enumerate(layers)}


def _concat(chunks: list[Features]) -> Features:
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def features_for_images(extractor, layers, images: list[bytes], image_size: int) -> Features:
    """Gate features for encoded images, through the project's preprocessing."""
    import tensorflow as tf

    from tumorlib.preprocessing import preprocess_bytes_batch

    return _concat(
        [
            _features_of(
                extractor,
                preprocess_bytes_batch(tf.constant(images[i : i + 32]), image_size),
                layers,
            )
            for i in range(0, len(images), 32)
        ]
    )


def split_features(extractor, layers, split: str, config: str, data_dir_, image_size: int):
    """Gate features of a dataset split (evaluation pipeline, no augmentation)."""
    from tqdm import tqdm

    from tumorlib import data

    ds = data.load_pipeline(
        split,
        config,
        training=False,
        data_dir_=data_dir_,
        image_size=image_size,
        batch_size=32,
        cache=False,
    )
    return _concat([_features_of(extractor, x, layers) for x, _ in tqdm(ds, desc=f"embed {split}")])


def plot_gate(path: Path, scores: dict[str, np.ndarray]) -> Path:
    """Histogram of gate scores per group, threshold at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = np.concatenate([s[np.isfinite(s)] for s in scores.values()])
    bins = np.logspace(np.log10(max(finite.min(), 1e-3)), np.log10(finite.max() * 1.1), 50)
    for name, s in scores.items():
        ax.hist(s, bins=bins, alpha=0.5, label=f"{name} (n={len(s)})")
    ax.axvline(1.0, color="black", ls="--", label="threshold (score 1)")
    ax.set_xscale("log")
    ax.set_xlabel("gate score: max over layers of Mahalanobis distance / threshold")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title("Input gate: accepted left of the line")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_gate(gate: InputGate, test_features: Features, negatives: dict[str, Features]) -> dict:
    """False rejection on in-distribution test images; rejection rate on negatives, per kind."""
    test_rejected = ~gate.accept(test_features)
    per_kind = {kind: ~gate.accept(feats) for kind, feats in negatives.items()}
    all_neg = np.concatenate(list(per_kind.values())) if per_kind else np.zeros(0, bool)
    return {
        "layers": [
            {
                "layer": g.layer,
                "threshold": g.threshold,
                "shrinkage": g.shrinkage,
                "feature_dim": int(g.mean.shape[0]),
            }
            for g in gate.layers
        ],
        "false_rejection_target_on_validation": gate.false_rejection_target,
        "test_false_rejection_rate": float(np.mean(test_rejected)),
        "test_rejected": int(test_rejected.sum()),
        "test_total": len(test_rejected),
        "negative_rejection_rate": float(np.mean(all_neg)) if len(all_neg) else float("nan"),
        "negatives_total": len(all_neg),
        "negative_rejection_by_kind": {
            k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in sorted(per_kind.items())
        },
    }


def run_gate(
    run_path: str | Path,
    *,
    config: str = "clean",
    data_dir_: str | None = None,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
    layers: Sequence[str] = DEFAULT_LAYERS,
) -> dict:
    """Fit on train, thresholds on validation, evaluate on test and negatives; write files."""
    from tumorlib.runs import load_run, write_json

    run = load_run(run_path)
    model = run.load_model()
    size = run.image_size
    extractor = feature_extractor(model, layers)
    feats = {
        s: split_features(extractor, layers, s, config, data_dir_, size)
        for s in ("train", "validation", "test")
    }
    gate = fit_gate(feats["train"], feats["validation"], false_rejection)
    gate.save(run.path / GATE_FILE)
    negatives = generate_negatives(size)
    names = [name for name, _ in negatives]
    neg_feats = features_for_images(
        extractor, layers, [encode_png(img) for _, img in negatives], size
    )
    kinds = np.array([n.split(":")[0] for n in names])
    by_kind = {
        k: {layer: v[kinds == k] for layer, v in neg_feats.items()} for k in sorted(set(kinds))
    }
    report = evaluate_gate(gate, feats["test"], by_kind)
    report["config"] = config
    # Negatives that got through, for inspection.
    report["accepted_negatives"] = [n for n, ok in zip(names, gate.accept(neg_feats)) if ok]
    plot = plot_gate(
        run.path / "safety" / "input_gate.png",
        {
            "validation": gate.score(feats["validation"]),
            "test": gate.score(feats["test"]),
            "negatives": gate.score(neg_feats),
        },
    )
    report["plot"] = str(plot.relative_to(run.path))
    write_json(run.path / GATE_SUMMARY, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.input_gate",
        description="Fit the out-of-distribution input gate of a run and evaluate it.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--config", default="clean")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--false-rejection",
        type=float,
        default=DEFAULT_FALSE_REJECTION,
        help="target false-rejection rate on validation (sets the thresholds)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=list(DEFAULT_LAYERS),
        help="backbone layers whose pooled activations are gated",
    )
    args = parser.parse_args(argv)
    from tumorlib.runs import RunNotFoundError

    try:
        report = run_gate(
            args.run,
            config=args.config,
            data_dir_=args.data_dir,
            false_rejection=args.false_rejection,
            layers=args.layers,
        )
    except (RunNotFoundError, GateError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        json.dumps({k: v for k, v in report.items() if k != "negative_rejection_by_kind"}, indent=2)
    )
    for kind, v in report["negative_rejection_by_kind"].items():
        print(f"  {kind:>10}: rejected {v['rate']:.1%} of {v['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
