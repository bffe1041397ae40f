"""Cached pooled features: right values, reused from disk, keyed on what they depend on."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.training import build_learnable_dataset
from tumorlib.data import pipeline as data
from tumorlib.model.classifier import build_backbone
from tumorlib.training import features

SIZE = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_learnable_dataset(tmp_path_factory.mktemp("features"))


def test_features_match_backbone_and_labels(data_dir, tmp_path):
    backbone = build_backbone(SIZE, weights=None)
    x, y = features.cached_features(
        "validation", image_size=SIZE, weights=None, data_dir_=data_dir, cache_dir=tmp_path,
        backbone=backbone, verbose=0,
    )  # fmt: skip
    examples = list(data.load_split("validation", "clean", data_dir).as_numpy_iterator())
    assert x.shape == (len(examples), backbone.output_shape[-1]) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [e["label"] for e in examples])

    images = np.concatenate(
        [b for b, _ in data.load_pipeline("validation", data_dir_=data_dir, image_size=SIZE)
         .as_numpy_iterator()]
    )  # fmt: skip
    expected = backbone.predict(images, verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-5)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1


def test_cache_is_reused_and_keyed_on_weights(data_dir, tmp_path, monkeypatch):
    kwargs = dict(image_size=SIZE, weights=None, data_dir_=data_dir, cache_dir=tmp_path, verbose=0)
    first = features.cached_features("train", **kwargs)
    # weights=None draws the backbone under a fixed seed, so a second call hits the cache.
    calls = []
    original = features.compute_features
    monkeypatch.setattr(
        features, "compute_features", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    second = features.cached_features("train", **kwargs)
    assert calls == []
    np.testing.assert_array_equal(first[0], second[0])

    other = build_backbone(SIZE, weights=None)  # different random weights -> different key
    third = features.cached_features("train", backbone=other, **kwargs)
    assert calls == [1]
    assert not np.array_equal(first[0], third[0])
    features.cached_features("validation", **kwargs)  # another split -> another entry
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_unknown_split_and_unbuilt_dataset_are_clear_errors(data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        features.cached_features("holdout", image_size=SIZE, weights=None, data_dir_=data_dir,
                                 cache_dir=tmp_path)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="not built"):
        features.cached_features("train", image_size=SIZE, weights=None,
                                 data_dir_=tmp_path / "empty", cache_dir=tmp_path)  # fmt: skip
