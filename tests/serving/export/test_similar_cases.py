"""The ``similar_cases`` signature: the stored index, its thumbnails and labels, and the same
neighbours over REST, gRPC and in-process as a NumPy brute force on the stored rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.clients.grpc_client import TFServingGrpcClient
from serving.clients.inprocess import InProcessModel
from serving.clients.prediction import SimilarUnavailable
from serving.clients.rest import TFServingClient
from serving.common.case_index import CaseIndex, brute_force, png_size
from serving.export.similar_cases import THUMBNAIL_SIZE, source_licences
from tests.fixtures.serving import LocalServer, make_images
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import (
    MAX_SIMILAR,
    SIMILAR_CASES_ASSET_DIR,
    SIMILAR_OUTPUT_KEYS,
    SIMILAR_SIGNATURE,
)


@pytest.fixture(scope="module")
def index(similar_export) -> CaseIndex:
    return CaseIndex.load(similar_export.version_path / "assets" / SIMILAR_CASES_ASSET_DIR)


@pytest.fixture(scope="module")
def server(similar_export):
    server = LocalServer(f"--model_base_path={similar_export.base_path}")
    yield server
    server.stop()


def keras_embeddings(run_path, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and unit embeddings computed from the Keras model, outside the export."""
    import tensorflow as tf

    from tumorlib.contracts.runs import load_run
    from tumorlib.images.preprocessing import preprocess_bytes_batch
    from tumorlib.model.embedding import embed_and_classify
    from tumorlib.model.loading import load_run_model

    run = load_run(run_path)
    batch = preprocess_bytes_batch(tf.constant(images), run.image_size)
    probabilities, vectors = embed_and_classify(load_run_model(run), batch)
    return probabilities.numpy(), vectors.numpy()


def test_similar_cases_over_rest_are_the_numpy_brute_force_on_the_stored_index(
    similar_export, index, server
):
    images = make_images(6, seed=61)
    _, expected_vectors = keras_embeddings(similar_export.run_path, images)
    rows, scores = brute_force(index.embeddings, expected_vectors, MAX_SIMILAR)
    answers = TFServingClient(server.url, timeout=60).similar(images)
    assert len(answers) == len(images)
    for answer, want_rows, want_scores, vector in zip(answers, rows, scores, expected_vectors):
        assert [c.row for c in answer.cases] == want_rows.tolist()
        np.testing.assert_allclose([c.similarity for c in answer.cases], want_scores, atol=1e-5)
        np.testing.assert_allclose(answer.embedding, vector, atol=1e-5)
        for case in answer.cases:  # labels, collection, licence and picture of that very row
            assert case.label == index.items[case.row]["label"]
            assert case.source == index.items[case.row]["source"]
            assert case.licence == index.items[case.row]["licence"]
            assert case.thumbnail == index.thumbnails[case.row]


def test_grpc_and_in_process_answer_the_same_neighbours(similar_export, server):
    images = make_images(3, seed=62)
    by_rest = TFServingClient(server.url, timeout=60).similar(images, k=4)
    grpc_client = TFServingGrpcClient(f"grpc://{server.grpc_target}", timeout=60)
    try:
        by_grpc = grpc_client.similar(images, k=4)
    finally:
        grpc_client.close()
    in_process = InProcessModel(similar_export.base_path).similar(images, k=4)
    for r, g, p in zip(by_rest, by_grpc, in_process):
        assert len(r.cases) == 4
        assert [c.row for c in r.cases] == [c.row for c in g.cases] == [c.row for c in p.cases]
        assert [c.thumbnail for c in r.cases] == [c.thumbnail for c in g.cases]
        assert r.class_name == g.class_name == p.class_name


def test_one_pass_classifies_as_serving_default_does(similar_export):
    model = InProcessModel(similar_export.base_path)
    images = make_images(5, seed=63)
    for predicted, similar in zip(model.predict(images), model.similar(images)):
        assert similar.class_name == predicted.class_name
        np.testing.assert_allclose(
            list(similar.probabilities.values()), list(predicted.probabilities.values()), atol=1e-6
        )


def test_the_index_holds_every_training_slice_with_its_label_source_and_thumbnail(
    similar_export, index
):
    from tumorlib.data.pipeline import load_split

    labels = [int(x["label"]) for x in load_split("train", "clean", similar_export.data_dir)]
    assert index.column("label") == [CLASS_NAMES[i] for i in labels]
    assert set(index.column("source")) == {"sartaj"}
    assert set(index.column("licence")) == {source_licences()["sartaj"]}
    assert all(png_size(png) == (THUMBNAIL_SIZE, THUMBNAIL_SIZE) for png in index.thumbnails)
    norms = np.linalg.norm(index.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert not any("patient" in item or "file_name" in item for item in index.items)
    reloaded = CaseIndex.load(
        index.save(similar_export.version_path.parent.parent / "copy-of-index")
    )
    assert reloaded.items == index.items and reloaded.thumbnails == index.thumbnails


def test_metadata_describes_the_index(similar_export, index):
    meta = json.loads((similar_export.version_path / "assets" / "metadata.json").read_text())
    similar = meta["similar_cases"]
    assert similar["available"] and similar["count"] == len(index) == 80
    assert similar["labels"] == {name: 20 for name in similar["labels"]}
    assert similar["sources"]["sartaj"]["count"] == 80
    assert meta["signatures"][SIMILAR_SIGNATURE] == list(SIMILAR_OUTPUT_KEYS)


def test_an_export_without_a_built_dataset_has_no_index_and_says_why(fixture_export):
    version = sorted(fixture_export.iterdir())[-1]
    meta = json.loads((version / "assets" / "metadata.json").read_text())
    assert meta["similar_cases"]["available"] is False
    assert "no dataset folder" in meta["similar_cases"]["reason"]
    assert SIMILAR_SIGNATURE not in meta["signatures"]
    with pytest.raises(SimilarUnavailable):
        InProcessModel(fixture_export).similar(make_images(1))


def test_a_served_version_without_the_signature_is_said_plainly(serving_stack):
    image = make_images(1, seed=64)
    rest = TFServingClient(serving_stack.server.url, timeout=60)
    with pytest.raises(SimilarUnavailable):
        rest.similar(image)
    grpc_client = TFServingGrpcClient(f"grpc://{serving_stack.server.grpc_target}", timeout=60)
    try:
        with pytest.raises(SimilarUnavailable):
            grpc_client.similar(image)
    finally:
        grpc_client.close()
