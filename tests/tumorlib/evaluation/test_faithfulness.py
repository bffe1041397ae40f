"""Deletion/insertion faithfulness: the curves' arithmetic, a map that marks the evidence beats
its opposite, the measurement end to end on the fixture model, the export serving the chosen
method, and the model card's evidence section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.serving import make_fixture_run, make_images
from tumorlib.contracts.runs import FAITHFULNESS_FILE, RETRIEVAL_AGREEMENT_FILE, write_json
from tumorlib.evaluation.faithfulness import (
    area,
    choose,
    chosen_method,
    measure,
    perturbation_batch,
    pixel_order,
    random_maps,
    summarise,
)


def test_perturbation_moves_pixels_in_the_maps_order():
    image = np.zeros((4, 4, 3), np.float32)
    end = np.ones_like(image)
    heat = np.arange(16, dtype=float).reshape(4, 4)
    batch = perturbation_batch(image, image, end, pixel_order(heat, np.random.default_rng(0)), 4)
    assert batch.shape == (5, 4, 4, 3)
    np.testing.assert_array_equal(batch[0], image)
    np.testing.assert_array_equal(batch[-1], end)
    moved = batch[..., 0].reshape(5, -1).sum(axis=1)
    assert moved.tolist() == [0, 4, 8, 12, 16]
    assert batch[1, 3, 3, 0] == 1 and batch[1, 0, 0, 0] == 0  # the hottest pixels first
    np.testing.assert_allclose(area(np.array([[1.0, 1.0, 1.0]])), [1.0])
    assert random_maps(np.random.default_rng(0), 2, 64).shape == (2, 64, 64)


def test_a_map_that_marks_the_evidence_deletes_faster_and_inserts_faster():
    """A 'model' whose score is the brightness of one corner: the corner-first order is the
    faithful one, on both curves."""
    rng = np.random.default_rng(1)
    image = np.ones((16, 16, 3), np.float32)
    black, blur = np.full_like(image, -1.0), np.zeros_like(image)

    def score(batch):
        return (batch[:, :4, :4, 0].mean(axis=(1, 2)) + 1) / 2

    faithful = np.zeros((16, 16))
    faithful[:4, :4] = 1
    results = {}
    for name, heat in {"faithful": faithful, "opposite": 1 - faithful}.items():
        order = pixel_order(heat, rng)
        deletion = area(score(perturbation_batch(image, image, black, order, 16)))[0]
        insertion = area(score(perturbation_batch(image, blur, image, order, 16)))[0]
        results[name] = (deletion, insertion)
    assert results["faithful"][0] < results["opposite"][0]
    assert results["faithful"][1] > results["opposite"][1]


def test_measure_summarise_and_choose_on_the_fixture_model(tmp_path):
    import tensorflow as tf

    from tumorlib.contracts.runs import load_run
    from tumorlib.images.preprocessing import preprocess_bytes_batch
    from tumorlib.model.loading import load_run_model

    run = load_run(make_fixture_run(tmp_path / "runs" / "fx"))
    model = load_run_model(run)
    images = preprocess_bytes_batch(tf.constant(make_images(6, seed=3)), run.image_size).numpy()
    measured = measure(model, images, steps=4, batch_size=4)
    assert set(measured["methods"]) == {"gradcam", "gradcam++", "random"}
    curves = measured["methods"]["gradcam"]["deletion_curves"]
    assert curves.shape == (6, 5) and np.all((curves >= 0) & (curves <= 1))
    summary = summarise(measured)
    assert {"deletion_auc", "insertion_auc", "score"} <= set(summary["gradcam"])
    assert "score_minus_gradcam" in summary["gradcam++"]
    assert choose(summary) in ("gradcam", "gradcam++")
    better = {**summary, "gradcam++": {**summary["gradcam++"],
              "score_minus_gradcam": {"mean": 0.1, "low": 0.05, "high": 0.2}}}  # fmt: skip
    assert choose(better) == "gradcam++"
    worse = {**summary, "gradcam++": {**summary["gradcam++"],
             "score_minus_gradcam": {"mean": 0.1, "low": -0.01, "high": 0.2}}}  # fmt: skip
    assert choose(worse) == "gradcam"  # an interval touching zero does not replace Grad-CAM


def test_the_export_serves_the_chosen_heatmap_and_the_card_reports_it(tmp_path):
    import tensorflow as tf

    from serving.export.exporter import export_run
    from tumorlib.contracts.runs import load_run
    from tumorlib.evaluation.model_card import build_card
    from tumorlib.images.preprocessing import preprocess_bytes_batch
    from tumorlib.model.gradcam import gradcam
    from tumorlib.model.loading import load_run_model

    run_path = make_fixture_run(tmp_path / "runs" / "fx")
    assert chosen_method(run_path) == "gradcam"  # nothing measured: Grad-CAM
    interval = {"mean": 0.3, "low": 0.2, "high": 0.4}
    row = {"deletion_auc": interval, "insertion_auc": interval, "score": interval}
    write_json(run_path / FAITHFULNESS_FILE, {
        "data": "clean/test", "images": 12, "steps": 16, "subset": None, "chosen": "gradcam++",
        "methods": {"gradcam": row, "gradcam++": row, "random": row},
    })  # fmt: skip
    write_json(run_path / RETRIEVAL_AGREEMENT_FILE, {
        "k": 10, "index": "clean/train (80 slices)",
        "sets": {"clean_test": {"n": 20, "agreement": 0.9, "accuracy_when_agree": 0.95,
                                "accuracy_when_disagree": 0.5, "disagree": 2, "errors": 2,
                                "errors_flagged_by_disagreement": 1}},
        "refer_rule": {"adopted": True, "error_ratio_on_validation": 8.9,
                       "flagged_on_validation": 0.03, "criterion": "..."},
    })  # fmt: skip
    version = export_run(run_path, tmp_path / "models" / "brain_mri")
    meta = json.loads((version / "assets" / "metadata.json").read_text())
    assert meta["explain_method"] == "gradcam++"
    images = make_images(2, seed=4)
    served = (
        tf.saved_model.load(str(version))
        .signatures["explain"](image_bytes=tf.constant(images))["heatmap"]
        .numpy()
    )
    run = load_run(run_path)
    batch = preprocess_bytes_batch(tf.constant(images), run.image_size)
    _, plus = gradcam(load_run_model(run), batch, method="gradcam++")
    _, plain = gradcam(load_run_model(run), batch)
    np.testing.assert_allclose(served, plus.numpy(), atol=1e-5)
    assert not np.allclose(served, plain.numpy(), atol=1e-3)

    card = build_card(run_path)
    assert "## Evidence: heatmap faithfulness and similar cases" in card
    assert "| Grad-CAM++ | 0.300 (0.200–0.400)" in card
    assert "Served in `explain`: **Grad-CAM++**" in card
    assert "| `clean/test` | 20 | 90.0% | 95.0% | 50.0% (2) | 1 of 2 |" in card
    assert "**offered as a refer reason**" in card


@pytest.mark.parametrize("content", ["not json", '{"chosen": "lime"}'])
def test_an_unreadable_or_unknown_choice_serves_gradcam(tmp_path, content):
    (tmp_path / FAITHFULNESS_FILE).write_text(content)
    assert chosen_method(tmp_path) == "gradcam"
