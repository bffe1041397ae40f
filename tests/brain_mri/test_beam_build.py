"""The Beam build writes exactly what the local build writes: same splits, groups, examples.

Fast: a planted archive (exact and near copies, label conflicts, corrupt files) with Beam's
DirectRunner in-process and a block size small enough that the all-pairs search really spans
several block pairs. Slow: the real archive with two worker processes
(``direct_num_workers=2, direct_running_mode=multi_processing``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from brain_mri import beam_build, dedup
from tests.fixtures.archives import make_archive, make_lgg_archive, texture
from tests.fixtures.ci import require
from tests.fixtures.paths import SHARED_DATA
from tumorlib.data import pipeline as data

SHARED_ARCHIVE = SHARED_DATA


def _build(source: Path, data_dir: Path, config: str, beam_options: str | None):
    builder = data.get_builder(config, data_dir)
    kwargs = {}
    if beam_options is not None:
        beam = tfds.core.lazy_imports.apache_beam
        kwargs["beam_options"] = beam.options.pipeline_options.PipelineOptions.from_dictionary(
            dict(kv.split("=", 1) for kv in beam_options.split(","))
        )
    config_ = tfds.download.DownloadConfig(manual_dir=str(source), **kwargs)
    builder.download_and_prepare(download_config=config_)
    return builder


def _fingerprint(builder, config: str, data_dir: Path):
    """Per split: sorted (file_name, sha256 of the bytes, label, group, source_split)."""
    out = {}
    for split in builder.info.splits:
        rows = []
        for ex in tfds.as_numpy(data.load_split(split, config, data_dir)):
            rows.append(
                (
                    ex["file_name"].decode(),
                    hashlib.sha256(bytes(ex["image"])).hexdigest(),
                    int(ex["label"]),
                    int(ex["duplicate_group"]),
                    int(ex["source_split"]),
                    int(ex["source"]),
                    int(ex["sequence"]),
                    ex["patient"].decode(),
                )
            )
        out[split] = sorted(rows)
    return out


def _compare(source: Path, tmp: Path, config: str, options: str):
    local = _build(source, tmp / "local", config, None)
    beamed = _build(source, tmp / "beam", config, options)
    assert _fingerprint(local, config, tmp / "local") == _fingerprint(beamed, config, tmp / "beam")
    assert dict(beamed.info.metadata) == dict(local.info.metadata)
    assert not list((tmp / "beam").rglob(beam_build.METADATA_FILE))
    return local, beamed


@pytest.mark.parametrize("config", ["clean", "original", "multi_sequence"])
def test_beam_build_equals_local_build_on_planted_archive(tmp_path, monkeypatch, config):
    planted = make_archive(tmp_path / "archive")
    make_lgg_archive(tmp_path / "archive", sites={"CS": 5, "DU": 7}, slices=(2, 4))
    monkeypatch.setattr(beam_build, "BLOCK", 16)  # 100+ files: several blocks and block pairs
    monkeypatch.setattr(beam_build, "CHUNK", 7)
    _, beamed = _compare(planted.root, tmp_path, config, "runner=DirectRunner")
    assert len(beamed.info.metadata["skipped_unreadable"]) == len(planted.corrupt)


def test_pair_decision_does_not_depend_on_blocking():
    rng = np.random.default_rng(0)
    from PIL import Image

    thumbs = []
    for _ in range(40):
        base = texture(rng)
        for shift in (0, 1):
            img = np.roll(base, shift, axis=1)
            thumbs.append(dedup.thumbnail(_png(Image.fromarray(img))))
    t = np.stack(thumbs)
    whole = set(zip(*[x.tolist() for x in dedup.near_duplicate_pairs(t, t)]))
    blocked = set()
    for a in range(0, len(t), 9):
        for b in range(0, len(t), 13):
            r, c = dedup.near_duplicate_pairs(t[a : a + 9], t[b : b + 13], offset_a=a, offset_b=b)
            blocked |= set(zip(r.tolist(), c.tolist()))
    assert whole == blocked and len(whole) > len(t)


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_beam_build_with_two_workers_equals_local_build_on_real_archive(tmp_path):
    require(
        (SHARED_ARCHIVE / "brain_tumor_classification_mri.zip").is_file(),
        "real archive not in ../shared/data",
    )
    options = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
    local, beamed = _compare(SHARED_ARCHIVE, tmp_path, "clean", options)
    counts = {s: beamed.info.splits[s].num_examples for s in ("train", "validation", "test")}
    assert counts == {"train": 2009, "validation": 438, "test": 435}  # the README's counts
    assert beamed.info.metadata["num_groups"] == 1781
