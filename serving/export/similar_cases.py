"""Similar confirmed cases in the export: the index of training slices and its signature.

At export every slice of the run's training split is embedded with the model's own penultimate
features (:mod:`tumorlib.model.embedding`), and the rows — unit embeddings, confirmed label,
source collection with its licence, a small grey thumbnail — are written to
``assets/similar_cases/`` (:class:`serving.common.case_index.CaseIndex`) *and* held as variables
of the saved module, so the ``similar_cases`` signature needs nothing but the SavedModel:

    image_bytes -> (one backbone pass) probabilities, class_index, class_name, embedding
                -> cosine against every row -> top K: neighbor_index, neighbor_similarity,
                   neighbor_label, neighbor_source, neighbor_licence, neighbor_thumbnail_bytes

``serving_default`` is untouched (its own concrete function), so adding the index costs it
nothing. A run whose dataset is not built here (fixtures, a copied run folder) exports without
the signature; the metadata says why.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from serving.common.case_index import CaseIndex
from tumorlib.contracts.runs import Run
from tumorlib.contracts.serving_contract import (
    EMBEDDING_KEY,
    MAX_SIMILAR,
    NEIGHBOR_INDEX_KEY,
    NEIGHBOR_LABEL_KEY,
    NEIGHBOR_LICENCE_KEY,
    NEIGHBOR_SIMILARITY_KEY,
    NEIGHBOR_SOURCE_KEY,
    NEIGHBOR_THUMBNAIL_KEY,
)
from tumorlib.images.preprocessing import decode_image, preprocess_bytes_batch, resize
from tumorlib.model.embedding import embed_and_classify, embedding_forward
from tumorlib.model.serve_body import Forward, Outputs, ServeFn, make_serve_fn

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 64
INDEX_SPLIT = "train"
# What a neighbour's picture may be used for, per collection (datasets/brain_mri, model card).
SARTAJ_TERMS = (
    "SARTAJ (Bhuvaji et al., 2020): no licence stated by its authors; thumbnail for this "
    "deployment's own review only, not for redistribution"
)


def source_licences() -> dict[str, str]:
    """Each training collection's terms, as the dataset and the model card state them."""
    from brain_mri import lgg

    return {"sartaj": SARTAJ_TERMS, lgg.SOURCE_NAME: lgg.LICENCE}


def index_data_dir(run: Run, data_dir: str | os.PathLike | None) -> Path | None:
    """Where the run's dataset is: ``data_dir``, else the folder training recorded; None when
    neither is known (a fixture or hand-made run: no guessing at a default folder, whose dataset
    may belong to another model)."""
    if data_dir is not None:
        return Path(data_dir)
    recorded = run.config.get("dataset", {}).get("data_dir")
    return Path(recorded) if recorded else None


def build_case_index(
    model, run: Run, *, data_dir: str | os.PathLike | None = None, batch_size: int = 32
) -> tuple[CaseIndex | None, str]:
    """The index of the run's training split, or ``(None, why not)``."""
    from tumorlib.data.pipeline import get_builder, load_split

    folder = index_data_dir(run, data_dir)
    config = run.dataset_config
    if folder is None:
        return None, "no index: the run records no dataset folder (export with --data-dir DIR)"
    try:
        examples = load_split(INDEX_SPLIT, config, folder)
        features = get_builder(config, folder).info.features
    except (FileNotFoundError, ValueError) as err:
        return None, f"no index: the {config}/{INDEX_SPLIT} split is not built in {folder} ({err})"
    names = {key: features[key].names for key in ("label", "source", "sequence") if key in features}
    licences = source_licences()
    embed = _embed_fn(model, run.image_size)
    embeddings, thumbnails, items = [], [], []
    for batch in examples.batch(batch_size).prefetch(2):
        vectors, pngs = embed(batch["image"])
        embeddings.append(vectors.numpy())
        thumbnails.extend(bytes(p) for p in pngs.numpy())
        for i in range(len(pngs)):
            item = {key: values[int(batch[key][i])] for key, values in names.items()}
            item.setdefault("source", "sartaj")
            item.setdefault("sequence", "unknown")
            item["licence"] = licences.get(item["source"], "unknown")
            items.append(item)
    if not items:
        return None, f"no index: {config}/{INDEX_SPLIT} in {folder} is empty"
    description = {
        "dataset": run.config.get("dataset", {}).get("name", "brain_mri"),
        "config": config,
        "split": INDEX_SPLIT,
        "thumbnail_size": THUMBNAIL_SIZE,
        "embedding": "penultimate features of each member, L2-normalised (concatenated / sqrt(M))",
    }
    return CaseIndex(np.concatenate(embeddings), items, thumbnails, description), ""


def _embed_fn(model, image_size: int):
    """Encoded bytes ``[B]`` -> (unit embeddings ``[B, D]``, thumbnail PNGs ``[B]``), on the
    serving graph's own preprocessing."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed(image_bytes):
        _, vectors = embed_and_classify(model, preprocess_bytes_batch(image_bytes, image_size))

        def thumbnail(one):
            small = resize(decode_image(one), THUMBNAIL_SIZE)
            return tf.io.encode_png(tf.cast(tf.image.rgb_to_grayscale(small), tf.uint8))

        return vectors, tf.map_fn(thumbnail, image_bytes, fn_output_signature=tf.string)

    return embed


class CaseTable(tf.Module):
    """The index as variables of the saved module (loaded once with the model)."""

    def __init__(self, index: CaseIndex) -> None:
        super().__init__(name="similar_cases")
        self.embeddings = tf.Variable(index.embeddings, trainable=False, name="embeddings")
        self.labels = tf.Variable(index.column("label"), trainable=False, name="labels")
        self.sources = tf.Variable(index.column("source"), trainable=False, name="sources")
        self.licences = tf.Variable(index.column("licence"), trainable=False, name="licences")
        self.thumbnails = tf.Variable(index.thumbnails, trainable=False, name="thumbnails")
        self.k = min(MAX_SIMILAR, len(index))


def similar_forward(model, table: CaseTable) -> Forward:
    """The embedding forward step plus the ``k`` nearest rows of ``table`` by cosine."""
    base = embedding_forward(model)

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, Outputs]:
        probabilities, extra = base(images)
        scores = tf.matmul(extra[EMBEDDING_KEY], table.embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=table.k, sorted=True)
        rows = tf.cast(top.indices, tf.int64)
        return probabilities, {
            **extra,
            NEIGHBOR_INDEX_KEY: rows,
            NEIGHBOR_SIMILARITY_KEY: top.values,
            NEIGHBOR_LABEL_KEY: tf.gather(table.labels, top.indices),
            NEIGHBOR_SOURCE_KEY: tf.gather(table.sources, top.indices),
            NEIGHBOR_LICENCE_KEY: tf.gather(table.licences, top.indices),
            NEIGHBOR_THUMBNAIL_KEY: tf.gather(table.thumbnails, top.indices),
        }

    return forward


def make_similar_fn(model, table: CaseTable, *, image_size: int, temperature: float) -> ServeFn:
    """The ``similar_cases`` signature (attach ``table`` and the model to the saved module)."""
    return make_serve_fn(
        similar_forward(model, table), image_size=image_size, temperature=temperature
    )


def refer_rule(run: Run) -> dict[str, Any] | None:
    """The run's "neighbours disagree" refer rule (chosen on validation), when it was measured
    (:mod:`tumorlib.evaluation.retrieval_agreement`)."""
    import json

    from tumorlib.contracts.runs import RETRIEVAL_AGREEMENT_FILE

    path = run.path / RETRIEVAL_AGREEMENT_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rule = report.get("refer_rule")
    return {**rule, "k": report.get("k"), "measured": report.get("sets")} if rule else None


def similar_metadata(
    index: CaseIndex | None, reason: str, run: Run | None = None
) -> dict[str, Any]:
    """The metadata asset's ``similar_cases`` entry: what is indexed, or why nothing is."""
    if index is None:
        return {"available": False, "reason": reason}
    sources: dict[str, dict[str, Any]] = {}
    for item in index.items:
        entry = sources.setdefault(item["source"], {"count": 0, "licence": item["licence"]})
        entry["count"] += 1
    labels = index.column("label")
    return {
        "available": True,
        **index.description,
        "count": len(index),
        "dim": index.dim,
        "k": min(MAX_SIMILAR, len(index)),
        "labels": {name: labels.count(name) for name in sorted(set(labels))},
        "sources": sources,
        "similarity": "cosine",
        "bytes_per_row": int(math.ceil(index.embeddings.nbytes / max(len(index), 1))),
        "refer_rule": refer_rule(run) if run is not None else None,
    }
