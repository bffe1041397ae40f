"""``tumorlib source-check``: second-source rates from the served model's own outputs."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from serving.clients.prediction import Prediction
from tests.fixtures.serving import make_images
from tumorlib.data.second_source import SecondSource, load_second_source
from tumorlib_cli import source_check


def _prediction(name: str, *, abstain=False, brain=True, familiar=True) -> Prediction:
    probs = dict.fromkeys(("glioma", "meningioma", "no_tumor", "pituitary"), 0.1)
    probs[name] = 0.7
    index = list(probs).index(name)
    return Prediction(probs, index, name, None, abstain, brain, 0.5, familiar, 0.5)


def test_summary_counts_each_verdict_and_the_tumour_question():
    source = SecondSource(
        names=[f"s{i}" for i in range(6)],
        images=[b""] * 6,
        tumour=np.array([False, False, False, True, True, True]),
        collection=["A"] * 3 + ["B"] * 3,
    )
    predictions = [
        _prediction("no_tumor"),  # answered, right
        _prediction("glioma", familiar=False),  # answered, wrong, flagged unfamiliar
        _prediction("no_tumor", brain=False),  # refused as not a brain MRI
        _prediction("meningioma", abstain=True),  # referred; right on the tumour question
        _prediction("pituitary"),  # answered, right
        "image could not be decoded",  # failed
    ]
    report = source_check.summarise(source_check.second_source_slices(source), predictions)
    a = report["all"]
    assert a["n"] == 6
    assert a["not_brain_mri"] == pytest.approx(1 / 6)
    assert a["uncertain"] == pytest.approx(1 / 6)
    assert a["failed"] == pytest.approx(1 / 6)
    assert a["answered"] == pytest.approx(3 / 6)
    assert a["answered_right"] == pytest.approx(2 / 3)
    assert a["unfamiliar_flag"] == pytest.approx(1 / 6)
    # Over the five slices with probabilities: right are 0, 2 (no_tumor on no tumour), 3, 4.
    assert a["tumour_vs_no_tumour_accuracy"] == pytest.approx(4 / 5)
    assert report["by_collection"]["B"]["answered"] == pytest.approx(1 / 3)
    # stated = answered and not flagged: slices 0 and 4, both right on the tumour question
    assert a["stated"] == pytest.approx(2 / 6) and a["stated_wrong"] == 0.0


def test_with_known_classes_a_wrong_tumour_type_is_a_wrong_answer():
    slices = source_check.Slices(
        images=[b""] * 4,
        tumour=np.array([True, True, True, False]),
        groups=["tcga_lgg/flair"] * 2 + ["tcga_lgg/t1_precontrast"] * 2,
        labels=["glioma", "glioma", "glioma", "no_tumor"],
    )
    predictions = [
        _prediction("glioma"),  # stated, right
        _prediction("meningioma"),  # stated, wrong type: a tumour, but not the right one
        _prediction("no_tumor", familiar=False),  # answered, wrong, but flagged
        _prediction("no_tumor"),  # stated, right
    ]
    report = source_check.summarise(slices, predictions)
    a = report["all"]
    assert report["right_means"] == "the class"
    assert a["tumour_vs_no_tumour_accuracy"] == pytest.approx(3 / 4)
    assert a["accuracy"] == pytest.approx(2 / 4)
    assert a["stated"] == pytest.approx(3 / 4) and a["stated_wrong"] == pytest.approx(1 / 3)
    assert report["by_collection"]["tcga_lgg/flair"]["stated_wrong"] == pytest.approx(1 / 2)


def _archive(tmp_path) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, data in enumerate(make_images(4, seed=1)):
            archive.writestr(f"second_source/no_tumor_br35h/{i}.png", data)
        for i, data in enumerate(make_images(3, seed=2)):
            archive.writestr(f"second_source/tumor_navoneel/Y{i}.png", data)
        archive.writestr("second_source/README.md", "not an image")
    path = tmp_path / "second_source_mri.zip"
    path.write_bytes(buffer.getvalue())
    return str(path)


def test_the_command_measures_the_exported_model(fixture_export, tmp_path, capsys):
    archive = _archive(tmp_path)
    source = load_second_source(archive)
    assert len(source) == 7 and source.tumour.sum() == 3
    out = tmp_path / "report"
    code = source_check.main(
        ["--archive", archive, "--model-base-path", str(fixture_export), "--out", str(out)]
    )
    assert code == 0
    report = json.loads((out / source_check.REPORT_JSON).read_text())
    assert report["all"]["n"] == 7
    assert report["all"]["not_brain_mri"] == 0.0  # the fixture export has no gate
    assert report["all"]["answered"] == 1.0  # ...and no abstention
    assert 0.0 <= report["all"]["tumour_vs_no_tumour_accuracy"] <= 1.0
    assert (out / source_check.REPORT_PLOT).stat().st_size > 1000
    assert "7 second-source slices" in capsys.readouterr().out


def test_a_dataset_split_is_checked_with_its_classes(fixture_export, tmp_path, capsys):
    from tests.fixtures.archives import make_archive, make_lgg_archive
    from tumorlib.data import pipeline as data

    manual = tmp_path / "manual"
    make_archive(manual, per_class_training=3, per_class_testing=1, plant=False)
    make_lgg_archive(manual, sites={"CS": 4, "DU": 6}, slices=(1, 2))
    data.build("multi_sequence", manual_dir=manual, data_dir_=tmp_path / "tfds")
    out = tmp_path / "report"
    argv = ["--split", "multi_sequence/test", "--data-dir", str(tmp_path / "tfds"),
            "--model-base-path", str(fixture_export), "--out", str(out)]  # fmt: skip
    assert source_check.main(argv) == 0
    report = json.loads((out / source_check.REPORT_JSON).read_text())
    n = data.get_builder("multi_sequence", tmp_path / "tfds").info.splits["test"].num_examples
    assert report["source"] == "multi_sequence/test" and report["all"]["n"] == n
    assert report["right_means"] == "the class"
    assert {"sartaj", "tcga_lgg/flair", "tcga_lgg/t1_precontrast"} <= set(report["by_collection"])
    assert f"{n} multi_sequence/test slices" in capsys.readouterr().out
    assert source_check.main([*argv[:1], "multi_sequence", *argv[2:]]) == 1
    assert "CONFIG/SPLIT" in capsys.readouterr().err


def test_a_missing_archive_is_a_clear_error(tmp_path, capsys):
    code = source_check.main(["--archive", str(tmp_path / "nope.zip"), "--out", str(tmp_path)])
    assert code == 1
    assert "second_source_mri.zip not found" in capsys.readouterr().err
