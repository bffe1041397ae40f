"""The dataset build as an Apache Beam pipeline: the same splits and examples, on many workers.

Used when ``tfds build`` is given ``--beam_pipeline_options`` (or a Beam runner). Stages:

1. **List** the archive on the driver (names only), in chunks of :data:`CHUNK` files.
2. **Read, hash, thumbnail** each chunk in parallel (``beam.FlatMap``): SHA-256 and the 32x32
   thumbnail of :mod:`brain_mri.dedup`; unreadable files are marked, not dropped silently.
3. **Blocked cosine search**: files fall into blocks of :data:`BLOCK` by archive position; each
   thumbnail is sent to every block pair it belongs to, and each pair ``(a <= b)`` is one task
   that returns the linked index pairs (:func:`brain_mri.dedup.near_duplicate_pairs`, whose
   answer does not depend on the blocking). Work O(n^2 d) spread over (n/BLOCK)^2/2 tasks;
   shuffle O(n^2 d / BLOCK) floats; memory per task O(BLOCK d). No worker holds all thumbnails.
4. **Plan** (one global step): connected components over the links and equal hashes, then
   :func:`brain_mri.planning.plan_config`. It holds O(n) small records (name, label, hash,
   group) — about 200 bytes per file, not the thumbnails or the bytes.
5. **Write**: the plan is joined back to the files by position (``CoGroupByKey``) and each
   split's examples go to TFDS's Beam writer in parallel.

The plan's metadata (counts, groups, leakage) is written as JSON beside the dataset and merged
into ``DatasetInfo.metadata`` by the builder once the pipeline has run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from . import dedup, sartaj
from .planning import example, plan_config

logger = logging.getLogger(__name__)

METADATA_FILE = "brain_mri_beam_plan.json"
CHUNK = 64  # files read per task (one archive open per chunk)
BLOCK = 512  # thumbnails per block of the all-pairs search


@dataclass(frozen=True)
class FileMeta:
    """What the plan needs of a file: no bytes, no thumbnail."""

    position: int
    file_name: str
    source_split: str
    label: str
    sha256: str
    readable: bool


def read_chunk(chunk: list[tuple[int, str, str, str, str]], source: str):
    """Read a chunk of files; yield ``(position, meta, bytes, thumbnail or None)`` per file."""
    datas = sartaj.read_members(epath.Path(source), [m[1] for m in chunk])
    for (position, _member, file_name, split, label), data in zip(chunk, datas):
        try:
            thumb: np.ndarray | None = dedup.thumbnail(data)
        except dedup.UnreadableImageError as error:
            logger.warning("skipping unreadable file %s: %s", file_name, error)
            thumb = None
        meta = FileMeta(
            position, file_name, split, label, dedup.content_hash(data), thumb is not None
        )
        yield position, meta, data, thumb


def to_block_pairs(position: int, thumb: np.ndarray, num_blocks: int, block: int):
    """Send a thumbnail to every block pair ``(a, b)``, ``a <= b``, that its block is part of."""
    own = position // block
    for other in range(num_blocks):
        yield (min(own, other), max(own, other)), (own, position, thumb)


def block_pair_links(item, threshold: float = dedup.NEAR_DUPLICATE_COSINE):
    """Linked ``(position, position)`` pairs between two blocks (or within one)."""
    (a, b), members = item
    left = [(p, t) for blk, p, t in members if blk == a]
    right = left if a == b else [(p, t) for blk, p, t in members if blk == b]
    if not left or not right:
        return
    lpos = np.array([p for p, _ in left])
    rpos = np.array([p for p, _ in right])
    r, c = dedup.near_duplicate_pairs(
        np.stack([t for _, t in left]), np.stack([t for _, t in right]), threshold
    )
    yield from zip(lpos[r].tolist(), rpos[c].tolist())


def make_plan(_, metas: list[FileMeta], links: list[tuple[int, int]], config: str, source: str):
    """The global step: groups and splits, as ``{position: (split, group)}`` plus metadata."""
    metas = sorted(metas, key=lambda m: m.position)
    readable = [m for m in metas if m.readable]
    if not readable:
        raise ValueError(f"no readable class images found in {source}")
    index = {m.position: i for i, m in enumerate(readable)}
    rows = np.array([index[p] for p, _ in links], dtype=np.int64)
    cols = np.array([index[q] for _, q in links], dtype=np.int64)
    hashes = [m.sha256 for m in readable]
    groups = dedup.groups_from_pairs(hashes, rows, cols)
    assignment, plan_metadata = plan_config(config, readable, hashes, groups)
    skipped = [m.file_name for m in metas if not m.readable]
    metadata = {"source": source, "skipped_unreadable": skipped, **plan_metadata}
    where = {
        m.position: (split, int(g))
        for m, split, g in zip(readable, assignment, groups)
        if split is not None
    }
    return where, metadata


def write_metadata(plan, path: str) -> None:
    epath.Path(path).write_text(json.dumps(plan[1], sort_keys=False))


def read_metadata(path: epath.Path) -> dict[str, Any]:
    """The plan's metadata written by the pipeline; the file is removed after reading."""
    metadata = json.loads(path.read_text())
    path.unlink()
    return metadata


def plan_entries(plan):
    yield from plan[0].items()


def joined_examples(item):
    """``(split, (key, example))`` for a file the plan kept."""
    _, grouped = item
    files, places = grouped["file"], grouped["place"]
    if not files or not places:
        return
    meta, data = files[0]
    split, group = places[0]
    yield split, example(meta, data, group)


class BeamBuild:
    """One config's pipeline; ``split_transform(split)`` is what ``_split_generators`` returns."""

    def __init__(self, source: str, config: str, metadata_path: str, block: int = BLOCK) -> None:
        self.source, self.config, self.metadata_path, self.block = (
            source, config, metadata_path, block,
        )  # fmt: skip
        self.members = sartaj.list_members(epath.Path(source))
        self.num_blocks = max(1, -(-len(self.members) // block))
        self._by_split = None

    def _build(self, pipeline):
        """The shared stages 1-5, built once per pipeline."""
        beam = tfds.core.lazy_imports.apache_beam
        listed = [(i, *m) for i, m in enumerate(self.members)]
        chunks = [listed[i : i + CHUNK] for i in range(0, len(listed), CHUNK)]
        files = (
            pipeline
            | "ListArchive" >> beam.Create(chunks)
            | "SpreadChunks" >> beam.Reshuffle()
            | "ReadHashThumbnail" >> beam.FlatMap(read_chunk, self.source)
        )
        metas = files | "Meta" >> beam.Map(lambda f: f[1])
        links = (
            files
            | "Readable" >> beam.Filter(lambda f: f[3] is not None)
            | "ToBlockPairs"
            >> beam.FlatMap(
                lambda f, n, b: to_block_pairs(f[0], f[3], n, b), self.num_blocks, self.block
            )  # fmt: skip
            | "GroupBlockPairs" >> beam.GroupByKey()
            | "BlockPairLinks" >> beam.FlatMap(block_pair_links)
        )
        plan = (
            pipeline
            | "PlanSeed" >> beam.Create([None])
            | "Plan"
            >> beam.Map(
                make_plan,
                beam.pvalue.AsList(metas),
                beam.pvalue.AsList(links),
                self.config,
                self.source,
            )
        )
        _ = plan | "WriteMetadata" >> beam.Map(write_metadata, self.metadata_path)
        places = plan | "PlanEntries" >> beam.FlatMap(plan_entries)
        keyed = files | "KeyFiles" >> beam.Map(lambda f: (f[0], (f[1], f[2])))
        return (
            {"file": keyed, "place": places}
            | "JoinPlan" >> beam.CoGroupByKey()
            | "Examples" >> beam.FlatMap(joined_examples)
        )

    def split_transform(self, split: str):
        """A PTransform yielding ``(key, example)`` of one split from the shared pipeline."""
        beam = tfds.core.lazy_imports.apache_beam
        build = self

        @beam.ptransform_fn
        def _split(pbegin):
            if build._by_split is None:
                build._by_split = build._build(pbegin.pipeline)
            return (
                build._by_split
                | f"Only_{split}" >> beam.Filter(lambda kv, s: kv[0] == s, split)
                | f"Drop_{split}" >> beam.Map(lambda kv: kv[1])
            )

        return _split()
