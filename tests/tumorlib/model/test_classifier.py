"""The model builds with every weights option, outputs probabilities and freezes as intended."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.model import classifier as model_lib

SIZE = 32
ALPHA = 0.35


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """A tiny real weights file: a randomly initialised backbone saved to disk."""
    keras.utils.set_random_seed(1)
    backbone = model_lib.build_backbone(SIZE, ALPHA, weights=None)
    path = tmp_path_factory.mktemp("weights") / "backbone.weights.h5"
    backbone.save_weights(path)
    return str(path)


def test_random_init_model_outputs_probabilities():
    model = model_lib.build_model(image_size=SIZE, alpha=ALPHA, weights=None)
    images = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype("float32")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    assert model.get_layer("backbone") is model_lib.backbone_of(model)
    assert model.get_layer("head") is model_lib.head_of(model)


def test_weights_file_is_loaded(weights_file):
    loaded = model_lib.build_backbone(SIZE, ALPHA, weights=weights_file)
    keras.utils.set_random_seed(1)
    reference = model_lib.build_backbone(SIZE, ALPHA, weights=None)
    reference.load_weights(weights_file)
    other = model_lib.build_backbone(SIZE, ALPHA, weights=None)
    for a, b in zip(loaded.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(
        not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(loaded.weights, other.weights)
    )


def test_legacy_h5_file_is_loaded(tmp_path):
    backbone = model_lib.build_backbone(SIZE, ALPHA, weights=None)
    path = tmp_path / "legacy.h5"  # Keras's ImageNet files use this legacy HDF5 layout
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    loaded = model_lib.build_backbone(SIZE, ALPHA, weights=str(path))
    np.testing.assert_array_equal(loaded.weights[0].numpy(), backbone.weights[0].numpy())
    with pytest.raises(model_lib.WeightsError, match="does not fit MobileNetV2"):
        model_lib.build_backbone(SIZE, alpha=0.5, weights=str(path))


def test_wrong_shaped_weights_file_is_clear_error(weights_file):
    with pytest.raises(model_lib.WeightsError, match="does not fit MobileNetV2"):
        model_lib.build_backbone(SIZE, alpha=0.5, weights=weights_file)


def test_missing_weights_file_is_clear_error(tmp_path):
    with pytest.raises(model_lib.WeightsError, match="does not exist"):
        model_lib.build_backbone(SIZE, ALPHA, weights=str(tmp_path / "nope.h5"))


def test_unavailable_imagenet_weights_name_the_alternatives(tmp_path, monkeypatch):
    """An empty Keras cache and no network: a clear error, not another model."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", refuse)
    with pytest.raises(model_lib.WeightsError, match="weights=None") as info:
        model_lib.build_backbone(SIZE, ALPHA, weights="imagenet")
    assert "local weights file" in str(info.value)


def test_head_shapes_and_hidden_layer():
    head = model_lib.build_head(16, dropout=0.3, head_units=8)
    assert head.output_shape == (None, NUM_CLASSES)
    assert [layer.name for layer in head.layers if isinstance(layer, keras.layers.Dense)] == [
        "head_hidden",
        "head_probabilities",
    ]
    linear = model_lib.build_head(16)
    assert len([layer for layer in linear.layers if isinstance(layer, keras.layers.Dense)]) == 1
    with pytest.raises(ValueError, match="dropout"):
        model_lib.build_head(16, dropout=1.5)


def test_phase_freezing_counts():
    model = model_lib.build_model(image_size=SIZE, alpha=ALPHA, weights=None)
    backbone = model_lib.backbone_of(model)
    with_weights = [layer for layer in backbone.layers if layer.weights]

    counts = model_lib.trainable_layer_counts(model)  # a fresh model is in the head phase
    assert counts == {
        "backbone_trainable": 0,
        "backbone_frozen": len(with_weights),
        "head_trainable": 1,
    }
    head_params = sum(int(np.prod(w.shape)) for w in model_lib.head_of(model).trainable_weights)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == head_params

    top = 30
    model_lib.set_phase(model, "fine_tune", fine_tune_layers=top)
    expected = [
        layer
        for layer in backbone.layers[-top:]
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    counts = model_lib.trainable_layer_counts(model)
    assert counts["backbone_trainable"] == len(expected) > 0
    assert counts["backbone_frozen"] == len(with_weights) - len(expected)
    assert all(
        not layer.trainable
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert not any(layer.trainable for layer in backbone.layers[:-top])

    model_lib.set_phase(model, "head")
    assert model_lib.trainable_layer_counts(model)["backbone_trainable"] == 0
    with pytest.raises(ValueError, match="fine_tune_layers"):
        model_lib.set_phase(model, "fine_tune", fine_tune_layers=0)
    with pytest.raises(ValueError, match="unknown phase"):
        model_lib.set_phase(model, "everything")


def test_describe_weights():
    assert model_lib.describe_weights(None, ALPHA, 224).startswith("none")
    assert "0.35_224_no_top" in model_lib.describe_weights("imagenet", ALPHA, 224)
    assert "0.35_224_no_top" in model_lib.imagenet_weights_file(ALPHA, 64)
