"""The vector index behind Backend.similar: FAISS agrees with brute force, survives a save and a
load, and a backend given one keeps the served answer and takes the neighbours from it."""

from __future__ import annotations

import numpy as np

from serving.clients.backend import Settings, make_backend
from serving.clients.prediction import SimilarCases
from serving.clients.vector_index import ExactIndex, FaissIndex, open_index
from serving.common.case_index import CaseIndex, brute_force
from tests.fixtures.serving import make_images
from tumorlib.contracts.serving_contract import SIMILAR_CASES_ASSET_DIR


def random_index(rows: int, dim: int = 32, seed: int = 0) -> CaseIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [{"label": ("glioma", "no_tumor")[i % 2], "source": "s", "sequence": "-",
              "licence": "l"} for i in range(rows)]  # fmt: skip
    return CaseIndex(vectors, items, [bytes([i % 256]) for i in range(rows)])


def test_faiss_finds_what_brute_force_finds_and_reloads(tmp_path):
    index = random_index(2000)
    queries = random_index(50, seed=1).embeddings
    exact, _ = brute_force(index.embeddings, queries, 10)
    faiss_index = FaissIndex(index, ef_search=128)
    found, scores = faiss_index.search(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    np.testing.assert_allclose(scores[:, 0], (queries @ index.embeddings.T).max(axis=1), atol=1e-5)
    reopened = open_index(faiss_index.save(tmp_path / "hospital"))
    assert isinstance(reopened, FaissIndex)
    np.testing.assert_array_equal(reopened.search(queries, 10)[0], found)
    cases = reopened.cases(queries[:1], 3)[0]
    assert [c.row for c in cases] == found[0, :3].tolist()
    assert [c.label for c in cases] == [index.items[r]["label"] for r in found[0, :3]]
    assert isinstance(open_index(index.save(tmp_path / "small")), ExactIndex)


def test_a_backend_with_a_vector_index_takes_its_neighbours_from_it(similar_export):
    backend = make_backend(Settings(model_base_path=similar_export.base_path))
    image = make_images(1, seed=91)[0]
    served = backend.similar(image, 5, None)
    assert isinstance(served, SimilarCases)
    stored = CaseIndex.load(similar_export.version_path / "assets" / SIMILAR_CASES_ASSET_DIR)
    backend.vector_index = FaissIndex(stored, ef_search=256)  # exact on 80 rows
    same = backend.similar(image, 5, None)
    assert [c.row for c in same.cases] == [c.row for c in served.cases]
    # A hospital's own cases: the answer is the model's, the neighbours the hospital's.
    hospital = random_index(300, dim=stored.dim, seed=2)
    backend.vector_index = ExactIndex(hospital)
    theirs = backend.similar(image, 4, None)
    assert theirs.class_name == served.class_name
    assert [c.row for c in theirs.cases] == brute_force(
        hospital.embeddings, served.embedding[None, :], 4
    )[0][0].tolist()
    assert all(c.source == "s" for c in theirs.cases)
