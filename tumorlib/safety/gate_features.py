"""What the input gate measures: pooled activations of a few backbone layers.

Why several layers: the final embedding (``out_relu``, what the head sees) is tuned to tell the
four classes apart and maps blank images and smooth gradients close to the MRI mean (measured: it
let all blank images through). A mid-level layer (``block_13_expand_relu``) still describes
texture and edges and separates those easily; together they rejected every generated negative.

:func:`feature_extractor` taps those layers on the classifier's own backbone (shared weights), so
one backbone pass yields the gate's features and the prediction — in training-time evaluation
here and inside the exported graph (:mod:`tumorlib.safety.gate_graph`) alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tumorlib.safety.gate import Features, GateError

DEFAULT_LAYERS = ("block_13_expand_relu", "out_relu")
BATCH_SIZE = 32


def feature_extractor(model, layers: Sequence[str] = DEFAULT_LAYERS, *, probabilities: bool = True):
    """Keras model: normalised images -> ``[pooled activations of each layer..., probabilities]``.

    Built from the classifier's own ``"backbone"`` and ``"head"`` layers (shared weights), so
    one backbone pass yields the gate's features and the prediction. For an ensemble
    (:mod:`tumorlib.model.ensemble`) the features come from its first member's backbone (at that
    member's resolution, resized by the ensemble's own :class:`~tumorlib.model.ensemble.Resize`)
    — one backbone is enough to tell a brain MRI from anything else — and the probabilities are
    the whole ensemble's, with that backbone pass reused for the first member's view rather than
    run twice (the gate then costs serving only its distances). ``probabilities=False`` leaves
    them out (fitting needs only features, and an ensemble's other members would triple the
    cost).
    """
    import keras

    from tumorlib.model.classifier import backbone_of, head_of
    from tumorlib.model.ensemble import average_views, has_tta, member_view, members

    primary = members(model)[0]
    backbone = backbone_of(primary)
    try:
        taps = [backbone.get_layer(name).output for name in layers]
    except ValueError as err:
        raise GateError(f"backbone has no layer named in {list(layers)}: {err}") from None
    inner = keras.Model(backbone.inputs, taps + [backbone.output], name="gate_taps")
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = member_view(inputs, int(backbone.input_shape[1]), name="gate_resize")
    outs = inner(x, training=False)
    pooled = [
        keras.layers.GlobalAveragePooling2D(name=f"gate_pool_{i}")(o) for i, o in enumerate(outs)
    ]
    if not probabilities:
        return keras.Model(inputs, pooled[:-1] + [pooled[-1][:, :0]], name="gate_features")
    first = head_of(primary)(pooled[-1], training=False)
    if primary is model:
        probs = first
    else:  # the ensemble again, reusing the first member's backbone pass
        probs = average_views(members(model), inputs, tta=has_tta(model), unflipped={0: (x, first)})
    return keras.Model(inputs, pooled[:-1] + [probs], name="gate_features")


def _features_of(extractor, images, layers: Sequence[str], acquisition_seed=None) -> Features:
    """Features of a normalised batch; with ``acquisition_seed`` ``[N, 2]``, of each image after
    one random acquisition change (:func:`tumorlib.images.acquisition.random_acquisition`)."""
    if acquisition_seed is not None:
        images = _changed_acquisition(images, acquisition_seed)
    outs = extractor(images, training=False)
    return {name: outs[i].numpy() for i, name in enumerate(layers)}


def _changed_acquisition(images, seeds):
    import tensorflow as tf

    from tumorlib.images.acquisition import random_acquisition
    from tumorlib.images.preprocessing import normalize

    grey_levels = (tf.cast(images, tf.float32) + 1.0) * 127.5  # undo normalize: exact
    changed = tf.map_fn(
        lambda pair: random_acquisition(pair[0], pair[1]),
        (grey_levels, tf.cast(seeds, tf.int64)),
        fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
    )
    return normalize(tf.round(changed))


def _seeds(seed: int | None, start: int, n: int):
    """Per-image ``[n, 2]`` seeds, fixed by ``seed`` and the image's position."""
    if seed is None:
        return None
    index = np.arange(start, start + n, dtype=np.int64)
    return np.stack([np.full(n, seed, np.int64), index], axis=1)


def _concat(chunks: list[Features]) -> Features:
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def features_for_images(
    extractor,
    layers: Sequence[str],
    images: list[bytes],
    image_size: int,
    *,
    acquisition_seed: int | None = None,
) -> Features:
    """Gate features for encoded images, through the project's preprocessing (and, with
    ``acquisition_seed``, one random acquisition change per image)."""
    import tensorflow as tf

    from tumorlib.images.preprocessing import preprocess_bytes_batch

    return _concat(
        [
            _features_of(
                extractor,
                preprocess_bytes_batch(tf.constant(images[i : i + BATCH_SIZE]), image_size),
                layers,
                _seeds(acquisition_seed, i, len(images[i : i + BATCH_SIZE])),
            )
            for i in range(0, len(images), BATCH_SIZE)
        ]
    )


def split_features(
    extractor,
    layers: Sequence[str],
    split: str,
    config: str,
    data_dir_,
    image_size: int,
    *,
    acquisition_seed: int | None = None,
) -> Features:
    """Gate features of a dataset split (evaluation pipeline, no augmentation; with
    ``acquisition_seed``, one random acquisition change per image)."""
    from tqdm import tqdm

    from tumorlib.data import pipeline as data

    ds = data.load_pipeline(
        split,
        config,
        training=False,
        data_dir_=data_dir_,
        image_size=image_size,
        batch_size=BATCH_SIZE,
        cache=False,
    )
    chunks, start = [], 0
    desc = f"embed {split}" + (" (changed)" if acquisition_seed else "")
    for x, _ in tqdm(ds, desc=desc, disable=None):  # no redrawn bar in a log file
        chunks.append(_features_of(extractor, x, layers, _seeds(acquisition_seed, start, len(x))))
        start += len(x)
    return _concat(chunks)
