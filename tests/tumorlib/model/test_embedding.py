"""The retrieval embedding: one backbone pass gives the model's own probabilities and unit
penultimate features; an ensemble's cosine is the mean of its members'; Grad-CAM++ maps."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.serving import fixture_model
from tumorlib.model.embedding import embed_and_classify, embedding_size, head_features
from tumorlib.model.ensemble import build_ensemble
from tumorlib.model.gradcam import GRADCAM, GRADCAM_PP, gradcam


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (5, 32, 32, 3)).astype("float32")


def test_one_pass_gives_the_models_probabilities_and_unit_penultimate_features(images):
    keras.utils.set_random_seed(0)
    model = fixture_model()
    probabilities, embedding = embed_and_classify(model, images)
    np.testing.assert_allclose(probabilities, model(images, training=False), atol=1e-6)
    pooled = tf.reduce_mean(model.get_layer("backbone")(images), axis=[1, 2])
    features = head_features(model.get_layer("head"), pooled).numpy()
    np.testing.assert_allclose(
        embedding, features / np.linalg.norm(features, axis=1, keepdims=True), atol=1e-6
    )
    assert embedding.shape == (5, embedding_size(model))


def test_an_ensembles_cosine_is_the_mean_of_its_members(images):
    keras.utils.set_random_seed(1)
    first, second = fixture_model(), fixture_model()
    ensemble = build_ensemble([first, second], tta=True)
    probabilities, embedding = embed_and_classify(ensemble, images)
    np.testing.assert_allclose(probabilities, ensemble(images, training=False), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-6)
    cosines = [np.asarray(embed_and_classify(m, images)[1]) for m in (first, second)]
    member_mean = np.mean([c @ c[0] for c in cosines], axis=0)
    np.testing.assert_allclose(np.asarray(embedding) @ np.asarray(embedding)[0], member_mean,
                               atol=1e-5)  # fmt: skip


def test_gradcam_plus_plus_is_a_unit_map_that_weighs_channels_its_own_way(images):
    keras.utils.set_random_seed(2)
    model = fixture_model()
    _, plain = gradcam(model, images, method=GRADCAM)
    _, plus = gradcam(model, images, method=GRADCAM_PP)
    assert plus.shape == plain.shape == (5, 32, 32)
    assert float(tf.reduce_min(plus)) >= 0.0 and float(tf.reduce_max(plus)) <= 1.0
    assert not np.allclose(plus, plain, atol=1e-3)
    with pytest.raises(ValueError, match="unknown heatmap method"):
        gradcam(model, images, method="lime")
