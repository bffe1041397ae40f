"""``tumorlib study``: a series in, one verdict out, through the fixture model end to end; a
hostile study refused in words before any model is loaded; the pseudo-study report."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from serving.clients.backend import Backend
from serving.clients.prediction import Prediction
from serving.clients.study import classify_series, study_rule
from tests.fixtures.studies import (
    PATIENT_ID,
    PATIENT_NAME,
    make_dicom_series,
    make_dicom_slice,
    make_nifti,
    make_zip,
    phantom,
)
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import DISCLAIMER
from tumorlib.studies.readers import read_series
from tumorlib.studies.study import SLICE_FAILED, SLICE_NOT_BRAIN_MRI, SLICE_UNCERTAIN
from tumorlib.studies.verdict import DEFAULT_RULE, StudyRule
from tumorlib_cli.study import main


@pytest.fixture()
def series_folder(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    files = make_dicom_series(phantom(8), shuffle_instance_numbers=True, skip=(3,))
    files.append(
        (
            "bomb.dcm",
            make_dicom_slice(
                phantom(1)[0], study_uid="1.2", series_uid="1.3", rows=9000, columns=9000
            ),
        )
    )
    for name, data in files:
        (folder / name).write_bytes(data)
    return folder


def test_classify_a_dicom_folder_end_to_end(fixture_export, series_folder, tmp_path, capsys):
    from serving.clients.inprocess import InProcessModel

    out = tmp_path / "out" / "study.json"
    argv = ["classify", str(series_folder), "--model-base-path", str(fixture_export)]
    code = main([*argv, "--json", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Series 1/2" in printed.out and "Series 2/2" in printed.out
    assert "Verdict:" in printed.out and DISCLAIMER in printed.out
    assert "appear to be missing" in printed.out  # the gap left by the skipped slice
    saved = json.loads(out.read_text())
    main_series = next(s for s in saved if s["series"]["n_slices"] == 7)
    assert main_series["verdict"]["n_classified"] + main_series["verdict"]["n_uncertain"] == 7
    bomb = next(s for s in saved if s["series"]["n_slices"] == 1)
    assert bomb["verdict"]["verdict"] == "uncertain" and bomb["verdict"]["n_failed"] == 1
    assert "9000" in bomb["slices"][0]["message"]
    # Each slice's probabilities are the model's answer for that slice's PNG.
    (series, _) = sorted(read_series([(p.name, p.read_bytes()) for p in series_folder.iterdir()]),
                         key=lambda s: -s.n_slices)  # fmt: skip
    model = InProcessModel(str(fixture_export), version=1)
    direct = model.predict([s.image for s in series.slices])
    for answer, row in zip(direct, main_series["slices"]):
        assert row["probabilities"] == pytest.approx(answer.probabilities, abs=1e-5)
    assert main_series["model"]["version"] == "1"
    everything = printed.out + printed.err + out.read_text()
    assert PATIENT_NAME not in everything and PATIENT_ID not in everything


def test_classify_a_zipped_nifti_volume(fixture_export, tmp_path, capsys):
    volume = np.stack([phantom(1, 24, seed=i)[0] for i in range(12)], axis=2).astype(np.int16)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    archive = tmp_path / "volume.zip"
    archive.write_bytes(make_zip([("brain.nii.gz", make_nifti(volume, affine, gz=True))]))
    argv = ["classify", str(archive), "--model-base-path", str(fixture_export), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Series 1/1: MR 'brain.nii.gz (axial)', 12 slices" in out
    assert "Key slices: slice" in out


def test_a_hostile_study_is_refused_in_words_before_any_model(tmp_path, capsys):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip([("../../etc/passwd.dcm", b"x")]))
    # No model exists at this base path: the study is refused before one is looked for.
    argv = ["classify", str(archive), "--model-base-path", str(tmp_path / "none")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The zip file holds a member whose name points outside")
    assert "Traceback" not in err


def test_a_bad_axis_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["classify", str(tmp_path), "--axis", "diagonal"])
    assert raised.value.code == 2
    assert "expected sagittal, coronal, axial or 0-2" in capsys.readouterr().err


def test_no_model_is_a_clear_error(series_folder, tmp_path, capsys):
    assert main(["classify", str(series_folder), "--model-base-path", str(tmp_path / "no")]) == 1
    assert "No exported model yet" in capsys.readouterr().err


class ScriptedBackend(Backend):
    """A backend whose model answers by slice: a gate refusal, an abstention, a crash, glioma."""

    label = "scripted"

    def __init__(self, metadata: dict | None = None) -> None:
        self._meta = metadata or {}
        self.script: list[str] = []

    def _predict(self, images, version):
        out = []
        for _ in images:
            kind = self.script.pop(0)
            if kind == "crash":
                raise RuntimeError("cannot decode")
            glioma = dict(zip(CLASS_NAMES, (0.9, 0.03, 0.04, 0.03)))
            out.append(
                Prediction(
                    glioma,
                    0,
                    "glioma",
                    abstain=kind == "abstain",
                    in_distribution=kind != "gate",
                )
            )
        return out

    def _metadata(self, version):
        return self._meta


def test_classify_series_maps_every_answer_to_an_outcome():
    (series,) = read_series(make_dicom_series(phantom(6)))
    backend = ScriptedBackend({"study_rule": StudyRule(top_k=2).to_json()})
    # One chunk: it fails on slice 3 and is retried slice by slice (the scripted answers again).
    backend.script = (
        ["ok", "gate", "abstain", "crash"]
        + ["ok", "gate", "abstain", "crash"]
        + [
            "ok",
            "ok",
        ]
    )
    result = classify_series(series, backend, None)
    kinds = [o.outcome for o in result.slices]
    assert (
        kinds
        == ["classified", SLICE_NOT_BRAIN_MRI, SLICE_UNCERTAIN, SLICE_FAILED] + ["classified"] * 2
    )
    assert "cannot decode" in result.slices[3].message
    assert result.verdict.verdict == "glioma"
    assert 1 not in result.verdict.key_slices  # the gate's refusal is never evidence
    assert '"top_k": 2' in result.verdict.rule  # the rule the export ships


def test_the_study_rule_comes_from_the_export_or_the_default():
    assert study_rule({}) == DEFAULT_RULE
    assert study_rule({"study_rule": {"top_k": 5}}).top_k == 5
    assert study_rule({"study_rule": "not json"}) == DEFAULT_RULE


def test_evaluate_writes_the_pseudo_study_report(tmp_path, capsys, monkeypatch):
    import tumorlib.studies.pseudo_study_report as pseudo
    from tests.tumorlib.studies.test_pseudo_studies import write_run

    monkeypatch.setattr(pseudo, "_dataset_groups", lambda split, config: None)  # not built
    write_run(tmp_path / "run", seed=5)
    out = tmp_path / "reports"
    argv = ["evaluate", "--run", str(tmp_path / "run"), "--out", str(out)]
    assert main([*argv, "--bootstrap-rounds", "5"]) == 0
    printed = capsys.readouterr().out
    assert "rule (chosen on validation pseudo-studies)" in printed and "test:" in printed
    assert (out / "pseudo_studies.json").exists() and (out / "pseudo_studies.png").exists()
    # The chosen rule goes into the run, and the export's metadata carries it to
    # serving.clients.study.
    from serving.export.metadata import study_rule as exported_rule

    shipped = exported_rule(tmp_path / "run")
    assert study_rule({"study_rule": shipped}).chosen_on.startswith("validation pseudo-studies")
    assert exported_rule(tmp_path) is None
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 1


def test_dicom_out_writes_results_into_the_source_study(fixture_export, tmp_path, capsys):
    import pydicom

    study_uid = "1.2.826.0.1.3680043.8.498.1"
    folder = tmp_path / "study"
    folder.mkdir()
    for name, data in make_dicom_series(phantom(5), study_uid=study_uid):
        (folder / name).write_bytes(data)
    out = tmp_path / "results"
    argv = ["classify", str(folder), "--model-base-path", str(fixture_export), "--no-progress"]
    assert main([*argv, "--dicom-out", str(out)]) == 0, capsys.readouterr().err
    written = sorted(out.glob("*.dcm"))
    assert written
    for path in written:
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study_uid  # the results join the source study
    assert PATIENT_NAME not in capsys.readouterr().out


def test_dicom_out_never_prints_a_malformed_birth_date(
    fixture_export, tmp_path, capsys, monkeypatch
):
    """The real path: a series whose PatientBirthDate is not a date gets its results (the date
    emptied in them); and the error path: a library failure that quotes a header value is
    reported by its type alone."""
    import warnings

    import pydicom

    import serving.pacs.results as results

    secret = "not-a-date-SECRET"
    folder = tmp_path / "study"
    folder.mkdir()
    for name, data in make_dicom_series(phantom(5)):
        ds = pydicom.dcmread(io.BytesIO(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.PatientBirthDate = secret
            ds.save_as(folder / name, enforce_file_format=True)
    argv = ["classify", str(folder), "--model-base-path", str(fixture_export), "--no-progress"]
    assert main([*argv, "--dicom-out", str(tmp_path / "out")]) == 0
    assert secret not in "".join(capsys.readouterr())
    written = sorted((tmp_path / "out").glob("SR_*.dcm"))
    assert written and pydicom.dcmread(written[0]).PatientBirthDate == ""

    def quoting(result):  # what pydicom's DA conversion says when a value slips through
        raise ValueError(f"Unable to convert '{secret}' to 'DA' object")

    monkeypatch.setattr(results, "make_structured_report", quoting)
    assert main([*argv, "--dicom-out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert "could not be built (ValueError)" in err and secret not in err
