"""Retrieval as a check on the classifier: do the nearest confirmed cases agree with the answer?

For each slice, the ``k`` nearest training slices in the model's own embedding
(:mod:`tumorlib.model.embedding`, cosine) vote; the majority label (ties: the nearer case's) is
compared with the model's class. Reported per set: how often they agree, and the model's accuracy
when they agree and when they disagree. If disagreement marks errors, it is worth offering as a
"refer" reason — decided on **validation** only (:func:`choose_rule`), then reported on test and
on the second source (tumour vs no tumour: that archive has no tumour types).

``python -m tumorlib.evaluation.retrieval_agreement RUN [--out DIR]`` writes
``retrieval_agreement.json`` (and the embeddings it used, ``retrieval_embeddings.npz``) into the
run folder by default; the export then ships the refer rule in its metadata.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import RETRIEVAL_AGREEMENT_FILE, load_run, write_json

DEFAULT_K = 10
NO_TUMOUR = CLASS_NAMES.index("no_tumor")
# Offer "neighbours disagree" as a refer reason only if, on validation, a disagreeing answer is
# at least this many times as likely to be wrong as an agreeing one, and it flags at most this
# share of the slices (a reason that refers everything is no reason).
MIN_ERROR_RATIO = 3.0
MAX_FLAGGED = 0.15


def embed_bytes(model, images: list[bytes], image_size: int, batch_size: int = 32):
    """``(probabilities [N, C], unit embeddings [N, D])`` of encoded images (serving's steps)."""
    import tensorflow as tf

    from tumorlib.images.preprocessing import preprocess_bytes_batch
    from tumorlib.model.embedding import embed_and_classify

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(batch):
        return embed_and_classify(model, preprocess_bytes_batch(batch, image_size))

    probs, vectors = [], []
    for lo in range(0, len(images), batch_size):
        p, v = run(tf.constant(images[lo : lo + batch_size]))
        probs.append(p.numpy())
        vectors.append(v.numpy())
    return np.concatenate(probs), np.concatenate(vectors)


def split_bytes(config: str, split: str, data_dir) -> tuple[list[bytes], np.ndarray]:
    from tumorlib.data.pipeline import load_split

    images, labels = [], []
    for example in load_split(split, config, data_dir):
        images.append(bytes(example["image"].numpy()))
        labels.append(int(example["label"]))
    return images, np.asarray(labels)


def neighbour_majority(index: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int):
    """The majority label ``[Q]`` of each query's ``k`` nearest rows (ties: nearest first)."""
    scores = queries @ index.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    votes = labels[order]
    majority = np.empty(len(queries), np.int64)
    for q, row in enumerate(votes):
        counts = np.bincount(row, minlength=len(CLASS_NAMES))
        tied = np.flatnonzero(counts == counts.max())
        majority[q] = next(label for label in row if label in tied)
    return majority


def agreement(predicted: np.ndarray, majority: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Agreement rate and the model's accuracy when the neighbours agree vs disagree."""
    agree = predicted == majority

    def rate(mask: np.ndarray) -> float | None:
        return round(float(correct[mask].mean()), 4) if mask.any() else None

    return {
        "n": int(len(predicted)),
        "agreement": round(float(agree.mean()), 4),
        "accuracy": round(float(correct.mean()), 4),
        "accuracy_when_agree": rate(agree),
        "accuracy_when_disagree": rate(~agree),
        "disagree": int((~agree).sum()),
        "errors": int((~correct).sum()),
        "errors_flagged_by_disagreement": int((~correct & ~agree).sum()),
    }


def choose_rule(validation: dict[str, Any]) -> dict[str, Any]:
    """Whether "the neighbours disagree" becomes a refer reason, from validation alone."""
    wrong_agree = 1 - (validation["accuracy_when_agree"] or 1.0)
    wrong_disagree = 1 - (validation["accuracy_when_disagree"] or 1.0)
    ratio = wrong_disagree / max(wrong_agree, 1e-9)
    flagged = validation["disagree"] / max(validation["n"], 1)
    adopted = ratio >= MIN_ERROR_RATIO and flagged <= MAX_FLAGGED
    return {
        "adopted": bool(adopted),
        "error_ratio_on_validation": round(float(ratio), 2),
        "flagged_on_validation": round(float(flagged), 4),
        "criterion": f"error rate when disagreeing >= {MIN_ERROR_RATIO}x when agreeing, and at "
        f"most {MAX_FLAGGED:.0%} of validation slices flagged",
    }


def run_agreement(
    run_path: str | os.PathLike,
    *,
    data_dir: str | None = None,
    k: int = DEFAULT_K,
    second_source: str | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Measure on validation, ``clean/test`` and the second source; write the report into
    ``out`` (default: the run folder, where the export and the model card read it)."""
    from tumorlib.model.loading import load_run_model

    run = load_run(run_path)
    model = load_run_model(run)
    folder = data_dir or run.config.get("dataset", {}).get("data_dir")
    config = run.dataset_config
    train_images, train_labels = split_bytes(config, "train", folder)
    _, index = embed_bytes(model, train_images, run.image_size)
    sets: dict[str, Any] = {}
    saved: dict[str, np.ndarray] = {"index": index, "index_labels": train_labels}
    for name, (cfg, split) in {
        "validation": (config, "validation"),
        "clean_test": ("clean", "test"),
    }.items():
        images, labels = split_bytes(cfg, split, folder)
        probs, vectors = embed_bytes(model, images, run.image_size)
        predicted, majority = probs.argmax(1), neighbour_majority(index, train_labels, vectors, k)
        sets[name] = agreement(predicted, majority, predicted == labels)
        saved |= {f"{name}_vectors": vectors, f"{name}_labels": labels, f"{name}_probs": probs}
    try:
        from tumorlib.data.second_source import load_second_source

        source = load_second_source(second_source)
    except (FileNotFoundError, ValueError) as err:
        sets["second_source"] = {"skipped": str(err)}
    else:
        probs, vectors = embed_bytes(model, source.images, run.image_size)
        predicted, majority = probs.argmax(1), neighbour_majority(index, train_labels, vectors, k)
        # Tumour vs no tumour: agreement on that question, correctness against the archive.
        said = predicted != NO_TUMOUR
        result = agreement(said, majority != NO_TUMOUR, said == source.tumour)
        result["agreement_4_class"] = round(float((predicted == majority).mean()), 4)
        sets["second_source"] = result
    report = {
        "run": run.path.name,
        "k": k,
        "index": f"{config}/train ({len(train_labels)} slices)",
        "sets": sets,
        "refer_rule": choose_rule(sets["validation"]),
    }
    target = Path(out) if out else run.path
    target.mkdir(parents=True, exist_ok=True)
    write_json(target / RETRIEVAL_AGREEMENT_FILE, report)
    np.savez_compressed(target / "retrieval_embeddings.npz", **saved)  # type: ignore[arg-type]
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.evaluation.retrieval_agreement",
        description="How often the k nearest training slices agree with the model.",
    )
    parser.add_argument("run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--second-source", default=None, help="second_source_mri.zip")
    parser.add_argument("--out", default=None, help="report folder (default: the run folder)")
    args = parser.parse_args(argv)

    def body() -> None:
        report = run_agreement(
            args.run, data_dir=args.data_dir, k=args.k, second_source=args.second_source,
            out=args.out,
        )  # fmt: skip
        print(json.dumps(report, indent=2))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
