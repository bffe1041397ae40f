"""Retrieval benchmark: brute force vs FAISS as the similar-cases index grows (1x, 10x, 100x).

    python bench/retrieval.py [--embeddings retrieval_embeddings.npz] [--queries 200]

The 1x index is a real one when given: ``--embeddings`` (the ``index`` and ``clean_test_vectors``
arrays that ``python -m tumorlib.evaluation.retrieval_agreement`` saves) or ``--model-base-path``
(the newest export's ``assets/similar_cases``); otherwise a synthetic one (3,400 unit vectors of
dimension 512 around four class centres, the size of the shipped model's training split). Growth
is synthetic: each extra copy is every row plus Gaussian noise (per-coordinate sigma 0.04, about
0.9 in norm before renormalising, i.e. cosine ~0.75 to its source), so 100x is 100 perturbed
copies. Queries are held-out vectors (the test split's, when given) or perturbed rows.

For each size: exact brute force (NumPy, ``serving.common.case_index.brute_force``), FAISS HNSW
(``serving.clients.vector_index.FaissIndex``; ``efSearch`` raised until recall@10 >= 0.95) and
FAISS IVF-Flat (``nprobe`` raised likewise): build time, recall@10 against brute force, and
single-query latency (median and p95 over the queries, one query at a time as a page asks).
Both run in this process on the same data, one after the other.

Target (issue 26): at 100x, the vector index's speed-up over brute force, at recall@10 >= 0.95.
The last line is exactly ``retrieval ratio=X target=2.0`` (X = 0 when no setting reaches the
recall).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from serving.clients.vector_index import FaissIndex  # noqa: E402  (after sys.path)
from serving.common.case_index import CaseIndex, brute_force  # noqa: E402

TARGET_RATIO = 2.0
MIN_RECALL = 0.95
K = 10
SCALES = (1, 10, 100)
NOISE = 0.04


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def base_vectors(args, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The 1x index, held-out queries when known, and where they came from."""
    if args.embeddings:
        data = np.load(args.embeddings)
        return data["index"], data.get("clean_test_vectors"), f"real ({args.embeddings})"
    if args.model_base_path:
        versions = sorted(Path(args.model_base_path).iterdir(), key=lambda p: int(p.name))
        index = CaseIndex.load(versions[-1] / "assets" / "similar_cases")
        return index.embeddings, None, f"real ({versions[-1]})"
    centres = rng.normal(size=(4, 512))
    rows = centres[rng.integers(0, 4, 3400)] + rng.normal(scale=1.2, size=(3400, 512))
    return unit(rows), None, "synthetic (3,400 x 512, four centres)"


def grown(base: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    copies = [base] + [
        unit(base + rng.normal(scale=NOISE, size=base.shape)) for _ in range(scale - 1)
    ]
    return np.ascontiguousarray(np.concatenate(copies), dtype=np.float32)


def latencies(search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query alone: (rows [Q, K], seconds [Q])."""
    rows, times = [], []
    for q in queries:
        start = time.perf_counter()
        found, _ = search(q[None, :], K)
        times.append(time.perf_counter() - start)
        rows.append(found[0])
    return np.asarray(rows), np.asarray(times)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)]))


def tuned(name: str, search_with, settings, queries, exact) -> dict:
    """The first setting (cheapest first) reaching MIN_RECALL, else the last one tried."""
    for setting in settings:
        found, times = latencies(lambda q, k, s=setting: search_with(q, k, s), queries)
        r = recall(found, exact)
        if r >= MIN_RECALL or setting == settings[-1]:
            return {"name": name, "setting": setting, "recall": r, "times": times}
    raise AssertionError("unreachable")


def measure(index: np.ndarray, queries: np.ndarray) -> list[dict]:
    import faiss

    exact, brute_times = latencies(lambda q, k: brute_force(index, q, k), queries)
    rows = [{"name": "brute force (NumPy)", "setting": "-", "recall": 1.0, "times": brute_times,
             "build_s": 0.0}]  # fmt: skip
    cases = CaseIndex(index, [{}] * len(index), [b""] * len(index))
    start = time.perf_counter()
    hnsw = FaissIndex(cases)
    build = time.perf_counter() - start

    def hnsw_search(q, k, ef):
        hnsw.faiss_index.hnsw.efSearch = ef
        return hnsw.search(q, k)

    rows.append({**tuned("FAISS HNSW32", hnsw_search, (16, 32, 64, 128, 256), queries, exact),
                 "build_s": build})  # fmt: skip
    start = time.perf_counter()
    nlist = int(4 * np.sqrt(len(index)))
    quantizer = faiss.IndexFlatIP(index.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, index.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(index[np.random.default_rng(0).permutation(len(index))[: 256 * nlist // 4 + 1]])
    ivf.add(index)
    build = time.perf_counter() - start

    def ivf_search(q, k, nprobe):
        ivf.nprobe = nprobe
        scores, found = ivf.search(np.ascontiguousarray(q, np.float32), k)
        return found, scores

    rows.append({**tuned(f"FAISS IVF{nlist}-Flat", ivf_search, (4, 8, 16, 32, 64, 128), queries,
                         exact), "build_s": build})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", default=None)
    parser.add_argument("--model-base-path", default=None)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    base, held_out, origin = base_vectors(args, rng)
    if held_out is None:
        noise = rng.normal(scale=NOISE * 2, size=(args.queries, base.shape[1]))
        held_out = unit(base[rng.integers(0, len(base), args.queries)] + noise)
    queries = np.ascontiguousarray(held_out[: args.queries], dtype=np.float32)
    print(f"index: {origin}; {len(base)} rows x {base.shape[1]}; {len(queries)} queries; k={K}")
    ratio = 0.0
    for scale in SCALES:
        index = grown(base, scale, rng)
        print(f"\n{scale}x: {len(index):,} rows ({index.nbytes / 2**20:.0f} MiB)")
        print(f"{'method':24s} {'setting':>8s} {'recall@10':>9s} {'p50 ms':>8s} {'p95 ms':>8s} "
              f"{'build s':>8s} {'speed-up':>8s}")  # fmt: skip
        rows = measure(index, queries)
        brute = float(np.median(rows[0]["times"]))
        for row in rows:
            p50 = float(np.median(row["times"]))
            print(f"{row['name']:24s} {row['setting']!s:>8s} {row['recall']:9.3f} "
                  f"{1000 * p50:8.3f} {1000 * np.percentile(row['times'], 95):8.3f} "
                  f"{row['build_s']:8.1f} {brute / p50:8.1f}")  # fmt: skip
        if scale == SCALES[-1]:
            good = [brute / np.median(r["times"]) for r in rows[1:] if r["recall"] >= MIN_RECALL]
            ratio = max(good, default=0.0)
    print(f"retrieval ratio={ratio:.2f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
