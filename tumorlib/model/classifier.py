"""The classifier: an ImageNet MobileNetV2 backbone, global average pooling and a small head.

Why this shape: the dataset has ~2,000 training images, far too few to learn a convolutional
network from scratch, so a pretrained backbone supplies the visual features and only a small head
(plus, in phase two, the top of the backbone) is fitted. MobileNetV2 at width 0.35 is small enough
to fine-tune on two CPU cores.

The head is its own sub-model (named ``"head"``) that takes *pooled* features, so exactly the same
head can be trained on cached backbone features (fast, see :mod:`tumorlib.training.features`) and
then be placed on the backbone (named ``"backbone"``) for fine-tuning and serving.

Phases (see :func:`set_phase`):

* ``"head"``: backbone frozen, head trainable.
* ``"fine_tune"``: the top ``fine_tune_layers`` layers of the backbone trainable too, except
  BatchNormalization layers, which stay frozen and in inference mode — with small batches their
  batch statistics would be noisy and would wreck the ImageNet running statistics.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.images.preprocessing import DEFAULT_IMAGE_SIZE

DEFAULT_ALPHA = 0.35
DEFAULT_WEIGHTS = "imagenet"
BACKBONE_NAME = "backbone"
HEAD_NAME = "head"
# Sizes for which Keras publishes MobileNetV2 ImageNet files; any other size loads the 224 file.
_KERAS_WEIGHT_SIZES = (96, 128, 160, 192, 224)


class WeightsError(ValueError):
    """Backbone weights could not be loaded (missing, unreachable or the wrong shape)."""


def imagenet_weights_file(
    alpha: float = DEFAULT_ALPHA, image_size: int = DEFAULT_IMAGE_SIZE
) -> str:
    """Keras's own cache file name for the no-top ImageNet MobileNetV2 weights."""
    rows = image_size if image_size in _KERAS_WEIGHT_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def keras_cache_dir() -> Path:
    """``$KERAS_HOME/models`` (default ``~/.keras/models``), where ``weights="imagenet"`` looks."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "models"


def describe_weights(weights: str | os.PathLike | None, alpha: float, image_size: int) -> str:
    """A human-readable record of where the backbone's starting weights came from."""
    if weights is None:
        return "none (random initialisation)"
    if str(weights) == "imagenet":
        return f"imagenet ({imagenet_weights_file(alpha, image_size)})"
    return f"file {Path(weights).resolve()}"


def build_backbone(
    image_size: int = DEFAULT_IMAGE_SIZE,
    alpha: float = DEFAULT_ALPHA,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
) -> keras.Model:
    """MobileNetV2 without its top, input ``[N, S, S, 3]`` in [-1, 1], named ``"backbone"``.

    ``weights`` is ``"imagenet"`` (Keras's download-and-cache), a path to a local ``.h5`` /
    ``.weights.h5`` file, or ``None`` (random). A file of the wrong architecture is a
    :class:`WeightsError`, and so are ImageNet weights that cannot be had: we never silently
    fall back to training something else.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 for MobileNetV2, got {image_size}")
    kwargs = dict(
        include_top=False, input_shape=(image_size, image_size, 3), alpha=alpha, name=BACKBONE_NAME
    )
    if weights is None:
        return keras.applications.MobileNetV2(weights=None, **kwargs)
    if str(weights) == "imagenet":
        try:
            return keras.applications.MobileNetV2(weights="imagenet", **kwargs)
        except WeightsError:
            raise
        except Exception as exc:  # download failure, bad alpha, corrupt cache file, ...
            cached = keras_cache_dir() / imagenet_weights_file(alpha, image_size)
            raise WeightsError(
                f"ImageNet weights for MobileNetV2 alpha={alpha} could not be loaded "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                f"Either place {cached.name} in {cached.parent} (offline: copy it from "
                "../shared/weights), pass weights=<path to a local weights file>, or pass "
                "weights=None to train from random initialisation."
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass 'imagenet', an existing .h5 / "
            ".weights.h5 file, or None"
        )
    model = keras.applications.MobileNetV2(weights=None, **kwargs)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(
            f"weights file {path} does not fit MobileNetV2 (alpha={alpha}, include_top=False): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    return model


def build_head(
    feature_dim: int,
    *,
    num_classes: int = NUM_CLASSES,
    dropout: float = 0.2,
    head_units: int = 0,
    name: str = HEAD_NAME,
) -> keras.Model:
    """Pooled features ``[N, feature_dim]`` -> softmax probabilities ``[N, num_classes]``.

    ``head_units > 0`` adds one hidden ReLU layer; the default (a linear classifier on pooled
    features with dropout) is what a ~2,000-image dataset can support without overfitting.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if head_units < 0:
        raise ValueError(f"head_units must be >= 0, got {head_units}")
    inputs = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    x = inputs
    if head_units > 0:
        x = keras.layers.Dense(head_units, activation="relu", name=f"{name}_hidden")(x)
    x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=f"{name}_probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def build_model(
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    alpha: float = DEFAULT_ALPHA,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    dropout: float = 0.2,
    head_units: int = 0,
) -> keras.Model:
    """Normalised images ``[N, S, S, 3]`` -> softmax probabilities ``[N, NUM_CLASSES]``.

    The backbone is called with ``training=False``, so its BatchNormalization layers always use
    their running statistics, in fine-tuning too (the Keras transfer-learning recipe).
    """
    backbone = build_backbone(image_size, alpha, weights)
    head = build_head(backbone.output_shape[-1], dropout=dropout, head_units=head_units)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    features = backbone(inputs, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = head(pooled)
    model = keras.Model(inputs, outputs, name="brain_mri_classifier")
    set_phase(model, "head")
    return model


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def head_of(model: keras.Model) -> keras.Model:
    return model.get_layer(HEAD_NAME)


def set_phase(model: keras.Model, phase: str, fine_tune_layers: int = 0) -> None:
    """Freeze/unfreeze for a training phase (``"head"`` or ``"fine_tune"``); recompile after.

    ``fine_tune_layers`` counts backbone layers from the top (weightless layers included, as in
    the Keras guide); BatchNormalization layers inside that range stay frozen.
    """
    backbone = backbone_of(model)
    head_of(model).trainable = True
    if phase == "head":
        backbone.trainable = False
        return
    if phase != "fine_tune":
        raise ValueError(f"unknown phase {phase!r}; expected 'head' or 'fine_tune'")
    layers = backbone.layers
    if not 0 < fine_tune_layers <= len(layers):
        raise ValueError(
            f"fine_tune_layers must be in 1..{len(layers)} for this backbone, "
            f"got {fine_tune_layers}"
        )
    backbone.trainable = True
    first = len(layers) - fine_tune_layers
    for i, layer in enumerate(layers):
        layer.trainable = i >= first and not isinstance(layer, keras.layers.BatchNormalization)


def trainable_layer_counts(model: keras.Model) -> dict[str, int]:
    """How many backbone layers with weights are trainable/frozen, and head trainability."""
    backbone = backbone_of(model)
    with_weights = [layer for layer in backbone.layers if layer.weights]
    trainable = sum(1 for layer in with_weights if layer.trainable and backbone.trainable)
    return {
        "backbone_trainable": trainable,
        "backbone_frozen": len(with_weights) - trainable,
        "head_trainable": int(head_of(model).trainable),
    }
