"""Input gate: refuse images that are not brain MRI slices before classifying them.

Why: a softmax classifier always answers one of its four classes, with high confidence even on a
holiday photo or a page of text. The gate measures how far an image's pooled backbone embedding
(the 1280 numbers the head sees) lies from the training distribution — the Mahalanobis distance
to the training features' mean under a Ledoit–Wolf shrinkage covariance (Lee et al., 2018;
Ledoit & Wolf, 2004: ~2,000 samples cannot estimate a 1280×1280 covariance without shrinkage) —
and rejects anything farther than a threshold set on the *validation* split (its
``1 - false_rejection`` quantile). The test split measures the real false-rejection rate; generated
negatives (noise, blank images, gradients, rendered text, photos shipped inside installed
packages) measure the rejection rate.

The fitted statistics are plain arrays (``.npz`` + a ``.json`` summary), so the export embeds them
as graph constants: :func:`make_gated_serve_fn` is a drop-in ``serving_default`` that also returns
``in_distribution`` and ``gate_distance``.

``python -m tumorlib.input_gate RUN`` fits, evaluates and writes ``RUN/input_gate.npz``,
``RUN/input_gate.json`` and ``RUN/safety/input_gate.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GATE_FILE = "input_gate.npz"
GATE_SUMMARY = "input_gate.json"
DEFAULT_FALSE_REJECTION = 0.005
REJECTED_MESSAGE = "This does not look like a brain MRI slice; not classified."


class GateError(ValueError):
    """The gate cannot be fitted or loaded (too few samples, wrong shapes, missing file)."""


@dataclass
class InputGate:
    """Mahalanobis distance gate: accept when ``distance(x) <= threshold``."""

    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D], inverse of the shrinkage covariance
    threshold: float
    false_rejection_target: float = DEFAULT_FALSE_REJECTION
    shrinkage: float = float("nan")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance ``[N]`` of pooled embeddings ``[N, D]``."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise GateError(
                f"expected features [N, {self.feature_dim}], got {list(features.shape)}"
            )
        centred = features - self.mean
        d2 = np.einsum("nd,de,ne->n", centred, self.precision, centred)
        return np.sqrt(np.maximum(d2, 0.0))

    def accept(self, features: np.ndarray) -> np.ndarray:
        """Boolean ``[N]``: True for inputs that look like the training data."""
        return self.distance(features) <= self.threshold

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``: the arrays) and a ``.json`` summary beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            mean=self.mean.astype(np.float32),
            precision=self.precision.astype(np.float32),
            threshold=np.float64(self.threshold),
            false_rejection_target=np.float64(self.false_rejection_target),
            shrinkage=np.float64(self.shrinkage),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> InputGate:
        path = Path(path)
        if not path.is_file():
            raise GateError(
                f"input gate file {path} does not exist; run `python -m tumorlib.input_gate RUN`"
            )
        with np.load(path) as z:
            return cls(
                mean=z["mean"].astype(np.float64),
                precision=z["precision"].astype(np.float64),
                threshold=float(z["threshold"]),
                false_rejection_target=float(z["false_rejection_target"]),
                shrinkage=float(z["shrinkage"]),
            )


def fit_gate(
    train_features: np.ndarray,
    validation_features: np.ndarray,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
) -> InputGate:
    """Fit mean and shrinkage covariance on train; threshold = validation's quantile.

    Fitting the statistics and the threshold on different splits matters: training features are
    closer to their own mean than new in-distribution images, so a threshold set on them would
    reject too many genuine slices.
    """
    from sklearn.covariance import LedoitWolf

    train_features = np.asarray(train_features, dtype=np.float64)
    validation_features = np.asarray(validation_features, dtype=np.float64)
    if train_features.ndim != 2 or len(train_features) < 2:
        raise GateError(f"need at least 2 training embeddings [N, D], got {train_features.shape}")
    if validation_features.ndim != 2 or validation_features.shape[1] != train_features.shape[1]:
        raise GateError(
            f"validation embeddings {validation_features.shape} do not match training "
            f"{train_features.shape}"
        )
    if not 0.0 <= false_rejection < 1.0:
        raise GateError(f"false_rejection must be in [0, 1), got {false_rejection}")
    lw = LedoitWolf().fit(train_features)
    gate = InputGate(
        mean=lw.location_,
        precision=lw.precision_,
        threshold=float("inf"),
        false_rejection_target=false_rejection,
        shrinkage=float(lw.shrinkage_),
    )
    distances = gate.distance(validation_features)
    gate.threshold = float(np.quantile(distances, 1.0 - false_rejection, method="higher"))
    return gate


# --------------------------------------------------------------------------------------------
# TensorFlow side: the gate inside the exported graph
# --------------------------------------------------------------------------------------------


def gate_distance_tf(pooled, gate: InputGate):
    """Mahalanobis distance ``[N]`` as TF ops, the gate's statistics embedded as constants."""
    import tensorflow as tf

    mean = tf.constant(gate.mean, tf.float32)
    precision = tf.constant(gate.precision, tf.float32)
    centred = tf.cast(pooled, tf.float32) - mean
    d2 = tf.reduce_sum(tf.matmul(centred, precision) * centred, axis=-1)
    return tf.sqrt(tf.maximum(d2, 0.0))


def embed_and_classify(model, images):
    """Pooled embedding ``[N, D]`` and (untempered) probabilities from one backbone pass."""
    import tensorflow as tf

    from tumorlib.model import backbone_of, head_of

    pooled = tf.reduce_mean(backbone_of(model)(images, training=False), axis=[1, 2])
    return pooled, head_of(model)(pooled, training=False)


def make_gated_serve_fn(model, gate: InputGate, *, image_size: int, temperature: float = 1.0):
    """A ``serving_default`` replacement: ``image_bytes`` ``tf.string [None]`` ->
    ``probabilities`` ``[None, 4]`` (temperature-scaled), ``class_index`` ``int64``,
    ``class_name`` ``string``, ``in_distribution`` ``bool``, ``gate_distance`` ``float32``.

    Attach it to the exporter's ``tf.Module`` that tracks ``model`` (``module.serve = fn``).
    """
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature
    from tumorlib.classes import CLASS_NAMES
    from tumorlib.preprocessing import preprocess_bytes_batch

    threshold = float(gate.threshold)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        images = preprocess_bytes_batch(image_bytes, image_size)
        pooled, probabilities = embed_and_classify(model, images)
        probabilities = apply_temperature(probabilities, temperature)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        distance = gate_distance_tf(pooled, gate)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(tf.constant(CLASS_NAMES), class_index),
            "in_distribution": distance <= threshold,
            "gate_distance": distance,
        }

    return serve


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


def embeddings_for_images(model, images: list[bytes], image_size: int, batch_size: int = 32):
    """Pooled embeddings for encoded images, through the project's preprocessing."""
    import tensorflow as tf

    from tumorlib.preprocessing import preprocess_bytes_batch

    chunks = []
    for i in range(0, len(images), batch_size):
        batch = preprocess_bytes_batch(tf.constant(images[i : i + batch_size]), image_size)
        chunks.append(embed_and_classify(model, batch)[0].numpy())
    return np.concatenate(chunks)


def split_embeddings(model, split: str, config: str, data_dir_, image_size: int):
    """Pooled embeddings of a dataset split (evaluation pipeline, no augmentation)."""
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
    return np.concatenate(
        [embed_and_classify(model, x)[0].numpy() for x, _ in tqdm(ds, desc=f"embed {split}")]
    )


def plot_gate(path: Path, gate: InputGate, distances: dict[str, np.ndarray]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = np.concatenate([d[np.isfinite(d)] for d in distances.values()])
    bins = np.logspace(np.log10(max(finite.min(), 1e-3)), np.log10(finite.max() + 1), 50)
    for name, d in distances.items():
        ax.hist(d, bins=bins, alpha=0.5, label=f"{name} (n={len(d)})")
    ax.axvline(gate.threshold, color="black", ls="--", label=f"threshold {gate.threshold:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("Mahalanobis distance of the pooled embedding")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title("Input gate: accepted left of the line")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_gate(
    gate: InputGate, test_features: np.ndarray, negatives: dict[str, np.ndarray]
) -> dict:
    """False rejection on in-distribution test images; rejection rate on negatives, per kind."""
    test_rejected = ~gate.accept(test_features)
    per_kind: dict[str, list[bool]] = {}
    for kind, feats in negatives.items():
        per_kind[kind] = (~gate.accept(feats)).tolist()
    all_neg = [r for v in per_kind.values() for r in v]
    return {
        "threshold": gate.threshold,
        "false_rejection_target_on_validation": gate.false_rejection_target,
        "test_false_rejection_rate": float(np.mean(test_rejected)),
        "test_rejected": int(test_rejected.sum()),
        "test_total": len(test_rejected),
        "negative_rejection_rate": float(np.mean(all_neg)) if all_neg else float("nan"),
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
) -> dict:
    from tumorlib.runs import load_run, write_json

    run = load_run(run_path)
    model = run.load_model()
    size = run.image_size
    feats = {
        s: split_embeddings(model, s, config, data_dir_, size)
        for s in ("train", "validation", "test")
    }
    gate = fit_gate(feats["train"], feats["validation"], false_rejection)
    gate.save(run.path / GATE_FILE)
    negatives = generate_negatives(size)
    kinds = [kind.split(":")[0] for kind, _ in negatives]
    neg_feats = embeddings_for_images(model, [encode_png(img) for _, img in negatives], size)
    by_kind = {k: neg_feats[[i for i, kk in enumerate(kinds) if kk == k]] for k in set(kinds)}
    report = evaluate_gate(gate, feats["test"], by_kind)
    report["shrinkage"] = gate.shrinkage
    report["feature_dim"] = gate.feature_dim
    report["config"] = config
    # Negatives that got through, for inspection.
    report["accepted_negatives"] = [
        name for (name, _), ok in zip(negatives, gate.accept(neg_feats)) if ok
    ]
    plot = plot_gate(
        run.path / "safety" / "input_gate.png",
        gate,
        {
            "validation": gate.distance(feats["validation"]),
            "test": gate.distance(feats["test"]),
            "negatives": gate.distance(neg_feats),
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
        help="target false-rejection rate on validation (sets the threshold)",
    )
    args = parser.parse_args(argv)
    from tumorlib.runs import RunNotFoundError

    try:
        report = run_gate(
            args.run,
            config=args.config,
            data_dir_=args.data_dir,
            false_rejection=args.false_rejection,
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
