"""Epoch sampling: the archive's share, the per-patient cap, class weights, and the pipeline that
draws with them on the graph."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tumorlib.data import pipeline as data
from tumorlib.training.sampling import plan_sampling

# 300 SARTAJ slices; archive: one patient with 70 slices, nine with 10.
SARTAJ = 300
PATIENTS = ["big"] * 70 + [f"p{i}" for i in range(9) for _ in range(10)]


def _plan(share: float, cap: int = 16):
    patients = np.array([""] * SARTAJ + PATIENTS)
    labels = np.array([i % 4 for i in range(SARTAJ)] + [0] * len(PATIENTS))
    return plan_sampling(labels, patients, archive_share=share, patient_cap=cap)


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5])
def test_archive_share_and_patient_cap_hold_in_expectation(share):
    plan = _plan(share)
    p, patients = plan.probabilities, plan.patients
    assert p.max() == pytest.approx(1.0)
    archive = p[patients != ""].sum()
    assert archive / p.sum() == pytest.approx(share)
    # the 70-slice patient draws like a 16-slice one; 10-slice patients are not cut
    assert p[patients == "big"].sum() == pytest.approx(16 / 10 * p[patients == "p0"].sum())
    assert plan.summary()["max_draws_per_patient"] == pytest.approx(
        p[patients == "big"].sum(), 0.01
    )


def test_no_archive_means_every_slice_once():
    plan = plan_sampling(np.arange(8) % 4, np.array([""] * 8), archive_share=0.3)
    assert (plan.probabilities == 1).all() and plan.epoch_size == 8
    # class weights are then exactly scikit-learn's balanced rule
    assert plan.class_weights() == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}


def test_class_weights_balance_what_an_epoch_draws():
    plan = _plan(0.5)
    expected = np.bincount(plan.labels, weights=plan.probabilities, minlength=4)
    weights = plan.class_weights()
    weighted = [expected[c] * weights[c] for c in range(4)]
    assert np.allclose(weighted, weighted[0])
    assert weights[0] < weights[1]  # glioma is over-drawn (the archive is all glioma here)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="archive_share"):
        _plan(1.0)
    with pytest.raises(ValueError, match="patient_cap"):
        _plan(0.3, cap=0)


def _examples(n_sartaj: int, patients: list[str]) -> tf.data.Dataset:
    """Undecoded examples whose label is the row index mod 4 and whose image is 1x1 PNG."""
    png = tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8))
    patient = [""] * n_sartaj + patients
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": tf.fill([len(patient)], png),
            "label": tf.constant([0] * n_sartaj + [1] * len(patients), tf.int64),
            "patient": tf.constant(patient),
        }
    )


def test_pipeline_draws_epochs_with_the_plan():
    patients = ["big"] * 70 + [f"p{i}" for i in range(9) for _ in range(10)]
    plan = plan_sampling(
        np.array([0] * SARTAJ + [1] * len(patients)),
        np.array([""] * SARTAJ + patients),
        archive_share=0.3,
    )
    ds = data.make_pipeline(
        _examples(SARTAJ, patients), training=True, image_size=8, batch_size=50,
        keep=plan.probabilities, seed=3,
    )  # fmt: skip
    epochs = []
    for _ in range(4):
        labels = np.concatenate([y.numpy().argmax(1) for _, y in ds])
        assert len(labels) == plan.epoch_size
        epochs.append(labels)
    share = np.mean([np.mean(e == 1) for e in epochs])
    assert share == pytest.approx(0.3, abs=0.05)
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # new draws every epoch
    again = data.make_pipeline(
        _examples(SARTAJ, patients), training=True, image_size=8, batch_size=50,
        keep=plan.probabilities, seed=3,
    )  # fmt: skip
    np.testing.assert_array_equal(
        np.concatenate([y.numpy().argmax(1) for _, y in again]), epochs[0]
    )


def test_source_class_balance_weighs_each_source_s_classes_equally():
    patients = np.array([""] * SARTAJ + PATIENTS + ["p0", "p1"])
    labels = np.array([i % 4 for i in range(SARTAJ)] + [0] * len(PATIENTS) + [2, 2])
    plan = plan_sampling(labels, patients, archive_share=0.3)
    p, archive = plan.probabilities, patients != ""
    for balance in ("class", "source_class"):
        w = plan.example_weights(balance)
        assert np.average(w, weights=p) == pytest.approx(1.0)
    w = plan.example_weights("source_class")
    mass = lambda mask: float((p * w)[mask].sum())  # noqa: E731
    # within the archive, its two no-tumour slices weigh as much as all its gliomas
    assert mass(archive & (labels == 2)) == pytest.approx(mass(archive & (labels == 0)))
    # and each source keeps its share of the epoch
    assert mass(archive) / mass(np.ones_like(archive)) == pytest.approx(0.3)
    # the epoch-wide rule instead lets the archive's gliomas outweigh its no-tumour slices
    w_class = plan.example_weights("class")
    assert (p * w_class)[archive & (labels == 0)].sum() > 5 * (p * w_class)[
        archive & (labels == 2)
    ].sum()


def test_weighted_pipeline_batches_carry_the_weights_in_order():
    weights = np.arange(1, 9, dtype=np.float32)
    ds = data.make_pipeline(
        _examples(8, []), training=False, image_size=8, batch_size=4, weights=weights
    )
    got = np.concatenate([w.numpy() for _, _, w in ds])
    np.testing.assert_array_equal(got, weights)
