"""The TCGA-LGG archive in the ``multi_sequence`` config: read, split by patient, counted.

The guarantee that matters: no patient has slices in two splits (neighbouring slices of one
patient are near-duplicates). Checked on the plan, on a build from a generated archive, and on
the real archive's metadata in ``../shared`` (slow).
"""

from __future__ import annotations

from collections import Counter

import pytest
import tensorflow_datasets as tfds

from brain_mri import dedup, lgg, planning
from tests.fixtures.archives import make_archive, make_lgg_archive
from tests.fixtures.paths import SHARED_DATA
from tumorlib.data import pipeline as data

SHARED_LGG = SHARED_DATA / lgg.ARCHIVE_NAME


def _plan(slices, seed=planning.SPLIT_SEED):
    return lgg.plan_patients(slices, dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS, seed)


def test_patient_plan_is_70_15_15_stratified_by_site_and_seeded(tmp_path):
    make_lgg_archive(tmp_path)
    slices = lgg.list_slices(tmp_path)
    plan = _plan(slices)
    assert Counter(plan.values()) == {"train": 56, "validation": 12, "test": 12}
    per_site = Counter((p.split("_")[1], split) for p, split in plan.items())
    for site, n in {"CS": 11, "DU": 33, "FG": 10, "HT": 25}.items():
        # every split draws from every site with enough patients, near its share
        for split, share in zip(dedup.SPLIT_NAMES, dedup.SPLIT_FRACTIONS):
            assert abs(per_site[(site, split)] - share * n) <= 1.0, (site, split)
    assert _plan(slices) == plan
    assert _plan(slices, seed=1) != plan


def test_multi_sequence_build_keeps_clean_and_never_splits_a_patient(tmp_path):
    planted = make_archive(tmp_path / "manual", per_class_training=6, per_class_testing=2)
    rows = make_lgg_archive(tmp_path / "manual", sites={"CS": 4, "DU": 6}, slices=(2, 3))
    data_dir = tmp_path / "tfds"
    clean = data.build("clean", manual_dir=planted.root, data_dir_=data_dir)
    multi = data.build("multi_sequence", manual_dir=planted.root, data_dir_=data_dir)

    def examples(config, split):
        return list(tfds.as_numpy(data.load_split(split, config, data_dir)))

    patients: dict[str, set[str]] = {}
    for split in dedup.SPLIT_NAMES:
        got = examples("multi_sequence", split)
        sartaj = sorted(e["file_name"] for e in got if e["source"] == 0)
        assert sartaj == sorted(e["file_name"] for e in examples("clean", split))
        for e in got:
            if e["source"] == 1:
                patients.setdefault(e["patient"].decode(), set()).add(split)
                assert e["sequence"] in (1, 2) and e["duplicate_group"] >= lgg.GROUP_OFFSET
            else:
                assert e["sequence"] == 0 and e["patient"] == b""
    assert len(patients) == 10 and all(len(s) == 1 for s in patients.values())
    metadata = multi.info.metadata
    assert metadata["lgg"]["patients"] == {
        split: sum(1 for s in patients.values() if split in s) for split in dedup.SPLIT_NAMES
    }
    by_source = metadata["counts_by_source"]
    assert sum(
        n
        for split in by_source.values()
        for sequences in split.values()
        for classes in sequences.values()
        for n in classes.values()
    ) == sum(multi.info.splits[s].num_examples for s in dedup.SPLIT_NAMES)
    flair_gliomas = sum(by_source[s]["tcga_lgg"]["flair"]["glioma"] for s in by_source)
    assert flair_gliomas == sum(
        1 for r in rows if r["sequence"] == "FLAIR" and r["label"] == "glioma"
    )
    assert "CC BY-NC-SA 4.0" in metadata["lgg"]["licence"]
    assert clean.info.splits["train"].num_examples < multi.info.splits["train"].num_examples


def test_multi_sequence_without_the_archive_says_where_it_goes(tmp_path):
    planted = make_archive(tmp_path / "manual", per_class_training=3, per_class_testing=1)
    with pytest.raises(FileNotFoundError, match=lgg.ARCHIVE_NAME):
        data.build("multi_sequence", manual_dir=planted.root, data_dir_=tmp_path / "tfds")


@pytest.mark.slow
def test_real_archive_metadata_splits_80_patients_56_12_12():
    assert SHARED_LGG.is_file(), f"{SHARED_LGG} is missing (../shared/data)"
    slices = lgg.list_slices(SHARED_LGG)
    assert len(slices) == 2013 and len({s.patient for s in slices}) == 80
    plan = _plan(slices)
    assert Counter(plan.values()) == {"train": 56, "validation": 12, "test": 12}
    by_split = Counter((plan[s.patient], s.sequence, s.label) for s in slices)
    for split in dedup.SPLIT_NAMES:  # every split has both sequences and both labels
        for sequence in lgg.SEQUENCES.values():
            for label in lgg.LABELS:
                assert by_split[(split, sequence, label)] > 0
