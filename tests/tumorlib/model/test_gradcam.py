"""Grad-CAM on a tiny MobileNetV2 trained on a task whose evidence is known: a bright blob whose
quadrant *is* the class. The heatmap must be a proper [0, 1] map, and hiding the blob must change
it far more than hiding an equally large patch of plain background."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.training import calibrated_backbone_file
from tumorlib.images.preprocessing import normalize, preprocess_bytes_batch
from tumorlib.model.classifier import build_model, set_phase
from tumorlib.model.gradcam import gradcam, make_explain_fn, make_gradcam_fn, overlay

SIZE = 96
BACKGROUND = 40.0
CENTRES = [
    (SIZE // 4, SIZE // 4),
    (SIZE // 4, 3 * SIZE // 4),
    (3 * SIZE // 4, SIZE // 4),
    (3 * SIZE // 4, 3 * SIZE // 4),
]


def blob_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, S, S, 3] noisy dark images with one bright Gaussian blob; label = its quadrant."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    labels = np.arange(n) % 4
    for i, label in enumerate(labels):
        cy, cx = np.array(CENTRES[label]) + rng.integers(-4, 5, 2)
        blob = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2))
        pixels = np.clip(rng.normal(BACKGROUND, 10, (SIZE, SIZE)) + blob, 0, 255)
        images[i] = pixels.astype(np.uint8)[..., None]
    return images, labels


def mask(images: np.ndarray, centres: list[tuple[int, int]], half: int = 14) -> np.ndarray:
    out = images.copy()
    for i, (cy, cx) in enumerate(centres):
        out[i, max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = BACKGROUND
    return out


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory) -> keras.Model:
    images, labels = blob_images(160, seed=0)
    x = normalize(images).numpy()
    weights = calibrated_backbone_file(
        tmp_path_factory.mktemp("gradcam") / "backbone.weights.h5", SIZE, x[:64]
    )
    keras.utils.set_random_seed(0)
    model = build_model(image_size=SIZE, weights=str(weights), dropout=0.0)
    set_phase(model, "fine_tune", len(model.get_layer("backbone").layers))
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, keras.utils.to_categorical(labels, 4), epochs=10, batch_size=16, verbose=0)
    test_x, test_y = blob_images(8, seed=1)
    accuracy = float(np.mean(model.predict(normalize(test_x), verbose=0).argmax(1) == test_y))
    assert accuracy == 1.0, f"fixture model failed to learn the blob task ({accuracy=})"
    return model


def test_heatmap_is_a_finite_non_constant_map_in_unit_range(blob_model):
    images, _ = blob_images(8, seed=1)
    probabilities, heatmap = gradcam(blob_model, normalize(images))
    heatmap = heatmap.numpy()
    assert heatmap.shape == (8, SIZE, SIZE)
    assert np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    for h in heatmap:
        assert h.max() == pytest.approx(1.0) and h.std() > 0.05
    np.testing.assert_allclose(
        probabilities.numpy(), blob_model(normalize(images)).numpy(), atol=1e-5
    )


def test_heatmap_moves_when_the_salient_region_is_masked(blob_model):
    images, labels = blob_images(8, seed=1)
    blob_centres = [CENTRES[label] for label in labels]
    # The control patch: the same size, in plain background (the quadrant opposite the blob).
    background_centres = [CENTRES[3 - label] for label in labels]
    classes = tf.constant(labels)
    _, original = gradcam(blob_model, normalize(images), classes)
    _, blob_hidden = gradcam(blob_model, normalize(mask(images, blob_centres)), classes)
    _, background_hidden = gradcam(blob_model, normalize(mask(images, background_centres)), classes)
    moved = np.abs(original.numpy() - blob_hidden.numpy()).mean(axis=(1, 2))
    control = np.abs(original.numpy() - background_hidden.numpy()).mean(axis=(1, 2))
    assert moved.mean() > 0.1, moved
    assert moved.mean() > 3 * control.mean(), (moved, control)


def test_explain_signature_round_trips_through_a_saved_model(blob_model, tmp_path):
    images, _ = blob_images(3, seed=2)
    encoded = tf.constant([tf.io.encode_png(image).numpy() for image in images])

    module = tf.Module()
    module.model = blob_model
    module.explain = make_explain_fn(blob_model, image_size=SIZE, temperature=2.0)
    tf.saved_model.save(module, str(tmp_path), signatures={"explain": module.explain})
    out = tf.saved_model.load(str(tmp_path)).signatures["explain"](image_bytes=encoded)

    direct = make_gradcam_fn(blob_model, temperature=2.0)(preprocess_bytes_batch(encoded, SIZE))
    assert out["heatmap"].shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(out["heatmap"].numpy(), direct["heatmap"].numpy(), atol=1e-4)
    np.testing.assert_allclose(
        out["probabilities"].numpy(), direct["probabilities"].numpy(), atol=1e-5
    )
    assert out["class_index"].numpy().tolist() == out["probabilities"].numpy().argmax(1).tolist()


def test_overlay_blends_and_rejects_mismatched_sizes():
    image = np.full((4, 4, 3), 100, np.uint8)
    heat = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(overlay(image, heat, opacity=0.0), image)
    assert not np.array_equal(overlay(image, heat, opacity=0.5), image)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, heat, opacity=2.0)
