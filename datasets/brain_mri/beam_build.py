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

The ``multi_sequence`` config adds the TCGA-LGG archive (:mod:`brain_mri.lgg`): its patient split
needs only ``metadata.csv``, so it is planned on the driver; its slices are read in parallel
chunks and join SARTAJ's examples before the split filter. Same examples as the local build.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from . import dedup, lgg, sartaj
from .planning import example, merge_lgg, plan_config, plan_lgg

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


def make_plan(
    _,
    metas: list[FileMeta],
    links: list[tuple[int, int]],
    config: str,
    source: str,
    lgg_plan: dict[str, Any] | None = None,
):
    """The global step: groups and splits, as ``{position: (split, group)}`` plus metadata.

    ``lgg_plan`` (multi-sequence config): the TCGA-LGG slices, their splits and plan metadata,
    merged into the metadata as the local build does."""
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
    if lgg_plan is not None:
        metadata["lgg"] = lgg_plan["metadata"]
        metadata = merge_lgg(
            metadata,
            list(zip(readable, assignment)),
            list(zip(lgg_plan["slices"], lgg_plan["splits"])),
        )
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


def read_lgg_chunk(chunk: list[tuple[lgg.LggSlice, str, int]], source: str):
    """``(split, (key, example))`` of each TCGA-LGG slice in a chunk (one archive open)."""
    slices = lgg.read_slices(epath.Path(source), [s for s, _, _ in chunk])
    for data_slice, (_, split, group) in zip(slices, chunk):
        yield split, example(data_slice, data_slice.data, group)


class BeamBuild:
    """One config's pipeline; ``split_transform(split)`` is what ``_split_generators`` returns."""

    def __init__(
        self,
        source: str,
        config: str,
        metadata_path: str,
        block: int = BLOCK,
        lgg_source: str | None = None,
    ) -> None:
        self.source, self.config, self.metadata_path, self.block = (
            source, config, metadata_path, block,
        )  # fmt: skip
        self.members = sartaj.list_members(epath.Path(source))
        self.num_blocks = max(1, -(-len(self.members) // block))
        self.lgg_source = lgg_source
        self.lgg_plan = self._plan_lgg() if lgg_source else None
        self._by_split = None

    def _plan_lgg(self) -> dict[str, Any]:
        """The TCGA-LGG slices (no bytes), their splits and groups: metadata.csv is enough."""
        slices = lgg.list_slices(epath.Path(str(self.lgg_source)))
        splits, metadata = plan_lgg(slices)
        metadata = {"source": self.lgg_source, **metadata}
        return {"slices": slices, "splits": splits, "metadata": metadata,
                "groups": lgg.patient_groups(slices)}  # fmt: skip

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
                self.lgg_plan,
            )
        )
        _ = plan | "WriteMetadata" >> beam.Map(write_metadata, self.metadata_path)
        places = plan | "PlanEntries" >> beam.FlatMap(plan_entries)
        keyed = files | "KeyFiles" >> beam.Map(lambda f: (f[0], (f[1], f[2])))
        examples = (
            {"file": keyed, "place": places}
            | "JoinPlan" >> beam.CoGroupByKey()
            | "Examples" >> beam.FlatMap(joined_examples)
        )
        if self.lgg_plan is None:
            return examples
        plan = self.lgg_plan
        listed = [
            (s, split, plan["groups"][s.patient])
            for s, split in zip(plan["slices"], plan["splits"])
        ]
        lgg_examples = (
            pipeline
            | "ListLgg"
            >> beam.Create([listed[i : i + CHUNK] for i in range(0, len(listed), CHUNK)])
            | "SpreadLgg" >> beam.Reshuffle()
            | "ReadLgg" >> beam.FlatMap(read_lgg_chunk, str(self.lgg_source))
        )
        return (examples, lgg_examples) | "AllSources" >> beam.Flatten()

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
