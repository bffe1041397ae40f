"""tf.data pipelines: shapes, dtypes, ranges; augmentation only when training; seeded."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.archives import encode, texture
from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.data import pipeline as data
from tumorlib.images.preprocessing import preprocess_bytes

SIZE = 32
DUMMY_DATA = data.builder_dir() / "dummy_data"


def _examples(n: int = 12) -> tf.data.Dataset:
    """Undecoded examples shaped like ``load_split``'s, of mixed sizes, modes and formats."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        pixels = texture(rng, 40 + 4 * (i % 3), 48)
        fmt, mode = [("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGBA")][i % 3]
        images.append(encode(pixels, fmt=fmt, mode=mode))
        labels.append(i % NUM_CLASSES)
    return tf.data.Dataset.from_tensor_slices(
        {"image": tf.constant(images), "label": tf.constant(labels, tf.int64)}
    )


def _epoch(ds: tf.data.Dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def test_batches_have_the_model_input_contract():
    ds = data.make_pipeline(_examples(10), training=True, image_size=SIZE, batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].shape.as_list() == [None, NUM_CLASSES]
    sizes = []
    for training in (True, False):
        ds = data.make_pipeline(_examples(10), training=training, image_size=SIZE, batch_size=4)
        for images, labels in ds:
            sizes.append(images.shape[0])
            assert images.shape[1:] == (SIZE, SIZE, 3)
            assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
            np.testing.assert_array_equal(tf.reduce_sum(labels, axis=1), 1.0)
    assert sizes == [4, 4, 2] * 2


def test_eval_pipeline_is_exactly_preprocess_bytes_in_source_order():
    examples = _examples()
    images, labels = _epoch(data.make_pipeline(examples, training=False, image_size=SIZE))
    for i, ex in enumerate(examples):
        np.testing.assert_array_equal(images[i], preprocess_bytes(ex["image"], SIZE).numpy())
        assert labels[i].argmax() == int(ex["label"])
    again, _ = _epoch(data.make_pipeline(examples, training=False, image_size=SIZE, seed=99))
    np.testing.assert_array_equal(images, again)


def test_training_pipeline_augments_every_image():
    examples = _examples()
    plain, plain_labels = _epoch(data.make_pipeline(examples, training=False, image_size=SIZE))
    # A shuffle buffer of one keeps the source order, so images can be compared one by one.
    augmented, labels = _epoch(
        data.make_pipeline(examples, training=True, image_size=SIZE, shuffle_buffer=1)
    )
    np.testing.assert_array_equal(labels, plain_labels)
    for a, b in zip(augmented, plain):
        assert not np.array_equal(a, b)
        assert np.abs(a - b).mean() > 0.01


def test_training_pipeline_is_deterministic_for_a_seed():
    def two_epochs(seed):
        ds = data.make_pipeline(_examples(), training=True, image_size=SIZE, seed=seed)
        return [_epoch(ds) for _ in range(2)]

    first, again, other = two_epochs(1), two_epochs(1), two_epochs(2)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], other[0][0])
    # Each epoch reshuffles and draws new augmentations.
    assert not np.array_equal(first[0][0], first[1][0])


def test_file_cache_gives_the_same_batches(tmp_path):
    examples = _examples()
    memory, _ = _epoch(data.make_pipeline(examples, training=False, image_size=SIZE))
    cache = tmp_path / "cache"
    ds = data.make_pipeline(examples, training=False, image_size=SIZE, cache=str(cache))
    np.testing.assert_array_equal(_epoch(ds)[0], memory)
    np.testing.assert_array_equal(_epoch(ds)[0], memory)  # second epoch: read from the cache
    assert list(tmp_path.glob("cache*"))


# --------------------------------------------------------------------------------------------
# over a built dataset
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    data.build("clean", manual_dir=DUMMY_DATA, data_dir_=data_dir)
    return data_dir


def test_load_split_returns_undecoded_images(built):
    ds = data.load_split("validation", "clean", built)
    assert ds.element_spec["image"].dtype == tf.string
    assert set(ds.element_spec) == {
        "image",
        "label",
        "file_name",
        "source_split",
        "duplicate_group",
        "source",
        "sequence",
        "patient",
    }
    assert sum(1 for _ in ds) > 0


def test_load_pipeline_augments_train_only(built):
    train = data.load_pipeline("train", "clean", data_dir_=built, image_size=SIZE)
    test = data.load_pipeline("test", "clean", data_dir_=built, image_size=SIZE)
    test_again = data.load_pipeline("test", "clean", data_dir_=built, image_size=SIZE, seed=5)
    np.testing.assert_array_equal(_epoch(test)[0], _epoch(test_again)[0])
    images, _ = _epoch(train)
    raw = data.load_split("train", "clean", built)
    plain = np.stack([preprocess_bytes(ex["image"], SIZE).numpy() for ex in raw])
    # Shuffled and augmented: no training image equals any plain preprocessed one.
    assert not any(np.array_equal(a, b) for a in images for b in plain)
    forced = data.load_pipeline("train", "clean", training=False, data_dir_=built, image_size=SIZE)
    np.testing.assert_array_equal(_epoch(forced)[0], plain)


def test_errors_name_the_problem(built, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'training'"):
        data.load_split("training", "clean", built)
    with pytest.raises(ValueError, match="unknown config 'dirty'"):
        data.load_split("train", "dirty", built)
    with pytest.raises(FileNotFoundError, match="tfds build datasets/brain_mri"):
        data.load_split("train", "clean", tmp_path / "empty")


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert data.data_dir() == data.DEFAULT_DATA_DIR
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    assert data.data_dir(tmp_path / "x") == tmp_path / "x"
