"""The study's DICOM results: the SR's content read back, the Secondary Captures' references and
pixels, the files written, and the refusal for NIfTI."""

from __future__ import annotations

import io
import logging
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

import tumorlib
from serving.clients.backend import Backend
from serving.clients.prediction import Explanation
from serving.pacs.capture import (
    BANNER_HEIGHT,
    MIN_WIDTH,
    caption,
    caption_font,
    patient_orientation,
)
from serving.pacs.results import (
    DicomResultsError,
    make_secondary_captures,
    make_structured_report,
    study_result_datasets,
    to_bytes,
    write_study_results,
)
from serving.pacs.sr import COUNT_CODES, SCHEME, VERDICT_CODES
from tests.fixtures.dicom_validation import dciodvfy_errors
from tests.fixtures.studies import (
    PATIENT_ID,
    PATIENT_NAME,
    make_dicom_series,
    make_multiframe,
    phantom,
)
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import DISCLAIMER, MODEL_NAME
from tumorlib.studies.study import (
    SLICE_CLASSIFIED,
    STUDY_TUMOUR_TYPE_UNCERTAIN,
    STUDY_UNCERTAIN,
    Series,
    SliceOutcome,
    SliceRef,
    StudyResult,
    StudySlice,
    StudyVerdict,
)

PROBABILITIES = {"glioma": 0.71, "meningioma": 0.12, "no_tumor": 0.05, "pituitary": 0.12}
RULE = "mean of classified slices; uncertain below 0.6"


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_result(
    *, n: int = 5, key: tuple[int, ...] = (3, 1), verdict: str = "glioma", multiframe: bool = False
) -> StudyResult:
    """A StudyResult over a generated DICOM series (headers read back without pixel data)."""
    volume = phantom(n)
    files = [("mf.dcm", make_multiframe(volume))] if multiframe else make_dicom_series(volume)
    headers = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for _, b in files]
    refs = [
        SliceRef(
            i,
            str(headers[0 if multiframe else i].SOPInstanceUID),
            str(headers[0 if multiframe else i].SOPClassUID),
            frame=i + 1 if multiframe else None,
            label=f"slice {i + 1} / {n}",
        )
        for i in range(n)
    ]
    series = Series(
        "dicom",
        [StudySlice(ref, _png(40 * ref.index)) for ref in refs],
        str(headers[0].StudyInstanceUID),
        str(headers[0].SeriesInstanceUID),
        "MR",
        "T1 AX synthetic",
        headers * n if multiframe else headers,  # one header per slice, in slice order
    )
    outcomes = [SliceOutcome(r, SLICE_CLASSIFIED, PROBABILITIES, "glioma", 0.71) for r in refs]
    study = StudyVerdict(verdict, PROBABILITIES, key, n, n - 2, 1, 1, 0, RULE, "Most slices agree.")
    return StudyResult(series, outcomes, study, MODEL_NAME, "3")


def _items(content) -> list:
    """Every content item of an SR tree, depth first."""
    found = []
    for item in content:
        found.append(item)
        found += _items(item.get("ContentSequence", []))
    return found


def _named(items, code) -> list:
    return [
        i
        for i in items
        if i.ConceptNameCodeSequence[0].CodeValue == code.value
        and i.ConceptNameCodeSequence[0].CodingSchemeDesignator == code.scheme_designator
    ]


def test_sr_round_trip_carries_verdict_probabilities_counts_references_and_disclaimer():
    result = make_result()
    data = to_bytes(make_structured_report(result))
    ds = pydicom.dcmread(io.BytesIO(data))
    sr = hd.sr.srread(io.BytesIO(data))
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"

    source = result.series.headers[0]
    assert ds.StudyInstanceUID == result.series.study_instance_uid
    assert ds.PatientID == PATIENT_ID and str(ds.PatientName) == PATIENT_NAME
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.SOPInstanceUID not in {h.SOPInstanceUID for h in result.series.headers}
    assert ds.Manufacturer == "tumorlib" and ds.SoftwareVersions == tumorlib.__version__
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == (
        "COMPLETE",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == SCHEME

    items = _items(ds.ContentSequence)
    finding = [
        i
        for i in _named(items, hd.sr.CodedConcept("121071", "DCM", "Finding"))
        if i.RelationshipType == "CONTAINS"
        and "ContentSequence" in i
        and len(i.ContentSequence) > 1
    ]
    assert len(finding) == 1
    verdict_code = finding[0].ConceptCodeSequence[0]
    assert (verdict_code.CodeValue, verdict_code.CodingSchemeDesignator) == ("393564001", "SCT")

    # Key slices: image references to the source instances, strongest first.
    images = [i for i in _items(finding[0].ContentSequence) if i.ValueType == "IMAGE"]
    referenced = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images]
    assert referenced == [result.series.slices[k].ref.sop_instance_uid for k in (3, 1)]
    assert all(i.RelationshipType == "INFERRED FROM" for i in images)

    probabilities = {}
    class_of = {
        (VERDICT_CODES[n].value, VERDICT_CODES[n].scheme_designator): n for n in CLASS_NAMES
    }
    for item in items:
        concept = item.ConceptCodeSequence[0] if item.ValueType == "CODE" else None
        key = (concept.CodeValue, concept.CodingSchemeDesignator) if concept else None
        if key in class_of:
            nums = [c for c in item.get("ContentSequence", []) if c.ValueType == "NUM"]
            if nums:
                probabilities[class_of[key]] = float(nums[0].MeasuredValueSequence[0].NumericValue)
    assert probabilities == {
        "glioma": 0.71,
        "meningioma": 0.12,
        "no_tumor": 0.05,
        "pituitary": 0.12,
    }

    counts = {
        field: float(_named(items, code)[0].MeasuredValueSequence[0].NumericValue)
        for field, code in COUNT_CODES.items()
    }
    assert counts == {
        "n_slices": 5,
        "n_classified": 3,
        "n_uncertain": 1,
        "n_not_brain_mri": 1,
        "n_failed": 0,
    }

    texts = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in items if "TextValue" in i
    }
    assert texts["Decision support disclaimer"] == DISCLAIMER
    assert texts["Algorithm Name"] == MODEL_NAME
    assert texts["Algorithm Version"] == "3"
    assert texts["Algorithm Parameters"] == RULE
    assert texts["Comment"] == "Most slices agree."

    # Every source instance is recorded as evidence of the current procedure.
    evidence = {
        ref.ReferencedSOPInstanceUID
        for item in ds.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {h.SOPInstanceUID for h in result.series.headers}


def test_sr_references_frames_of_a_multiframe_instance_and_codes_uncertain():
    result = make_result(n=4, key=(2,), verdict=STUDY_UNCERTAIN, multiframe=True)
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_structured_report(result))))
    items = _items(ds.ContentSequence)
    images = [i for i in items if i.ValueType == "IMAGE"]
    assert len(images) == 1
    assert images[0].ReferencedSOPSequence[0].ReferencedFrameNumber == 3
    codes = {
        (i.ConceptCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodingSchemeDesignator)
        for i in items
        if i.ValueType == "CODE"
    }
    assert ("82334004", "SCT") in codes  # SNOMED CT "Indeterminate"
    assert len(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 1


def test_secondary_captures_reference_their_source_slices_and_carry_the_caption():
    result = make_result(key=(3, 1))
    rng = np.random.default_rng(0)
    overlays = {k: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for k in (3, 1)}
    captures = make_secondary_captures(result, overlays)
    assert len(captures) == 2
    series_uids = set()
    for capture, key in zip(captures, (3, 1)):
        ds = pydicom.dcmread(io.BytesIO(to_bytes(capture)))
        assert ds.SOPClassUID == SecondaryCaptureImageStorage
        assert ds.StudyInstanceUID == result.series.study_instance_uid
        assert ds.PatientID == PATIENT_ID
        source_uid = result.series.slices[key].ref.sop_instance_uid
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source_uid
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source_uid
        assert ds.BurnedInAnnotation == "YES"
        assert ds.ImageComments == caption("glioma")
        assert ds.ImageComments == "Grad-CAM Glioma — decision support, not a diagnosis"
        assert list(ds.PatientOrientation) == ["L", "P"]  # axial: rows along +x, columns +y
        scale = MIN_WIDTH // 32
        assert ds.pixel_array.shape == (32 * scale + BANNER_HEIGHT, 32 * scale, 3)
        # The top-left block is the overlay pixel scaled up; the banner holds white text.
        assert np.array_equal(ds.pixel_array[0, 0], overlays[key][0, 0])
        assert ds.pixel_array[32 * scale :].max() == 255
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 1 and result.series.series_instance_uid not in series_uids


def test_captures_of_multiframe_slices_name_the_frame():
    result = make_result(n=3, key=(1,), multiframe=True)
    capture = make_secondary_captures(result, {1: np.zeros((16, 16, 3), np.uint8)})[0]
    assert capture.SourceImageSequence[0].ReferencedFrameNumber == 2
    assert capture.PatientOrientation == ""  # the fixture's header does not say: not guessed


def test_nifti_has_no_dicom_results():
    result = make_result()
    result.series.kind = "nifti"
    result.series.headers = []
    with pytest.raises(DicomResultsError, match="DICOM results need a DICOM study"):
        make_structured_report(result)
    with pytest.raises(DicomResultsError, match="DICOM results need a DICOM study"):
        make_secondary_captures(result, {})
    with pytest.raises(DicomResultsError, match="DICOM results need a DICOM study"):
        study_result_datasets(result, HeatmapBackend(), None)


class HeatmapBackend(Backend):
    """A model stand-in that explains every slice with the same heatmap (the Grad-CAM
    arithmetic is tested in test_gradcam.py; here only what the writer does with it)."""

    label = "heatmap stand-in"

    def __init__(self, heatmap: np.ndarray | None = None) -> None:
        self.heatmap = heatmap
        self.calls = 0

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        self.calls += 1
        if self.heatmap is None:
            raise RuntimeError("no gradients here")
        return Explanation(PROBABILITIES, 0, "glioma", self.heatmap)


def test_write_study_results_writes_the_sr_and_one_capture_per_key_slice(tmp_path, caplog):
    result = make_result(key=(4, 0, 2))
    heatmap = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    backend = HeatmapBackend(heatmap)
    paths = write_study_results(result, backend, None, tmp_path / "out")
    assert backend.calls == 3
    assert [p.suffix for p in paths] == [".dcm"] * 4
    datasets = [pydicom.dcmread(p) for p in paths]
    assert [d.Modality for d in datasets] == ["SR", "OT", "OT", "OT"]
    refs = [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in datasets[1:]]
    assert refs == [result.series.slices[k].ref.sop_instance_uid for k in (4, 0, 2)]
    # File names and the log carry UIDs at most, never the patient.
    for path in paths:
        assert PATIENT_NAME not in path.name and PATIENT_ID not in path.name
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text


def test_a_model_without_gradcam_still_gets_its_sr(caplog):
    result = make_result(key=(1,))
    datasets = study_result_datasets(result, HeatmapBackend(None), None)
    assert [d.Modality for d in datasets] == ["SR"]
    assert "no gradients here" in caplog.text


def test_a_latin1_source_keeps_its_patient_name_in_the_utf8_results():
    result = make_result(n=3, key=(1,))
    rewritten = []
    for header in result.series.headers:
        header.SpecificCharacterSet = "ISO_IR 100"
        header.PatientName = "Müller^Jörg"
        buffer = io.BytesIO()
        header.save_as(buffer, enforce_file_format=True)
        rewritten.append(pydicom.dcmread(io.BytesIO(buffer.getvalue()), stop_before_pixels=True))
    result.series.headers = rewritten
    assert rewritten[0].PatientName.original_string == "Müller^Jörg".encode("latin-1")
    sr = make_structured_report(result)
    capture = make_secondary_captures(result, {1: np.zeros((8, 8, 3), np.uint8)})[0]
    for ds in (sr, capture):
        back = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
        assert back.SpecificCharacterSet == "ISO_IR 192"
        assert str(back.PatientName) == "Müller^Jörg"


@pytest.mark.parametrize(
    ("orientation", "letters"),
    [
        ((1, 0, 0, 0, 1, 0), ("L", "P")),  # axial
        ((0, 1, 0, 0, 0, -1), ("P", "F")),  # sagittal
        ((1, 0, 0, 0, 0, -1), ("L", "F")),  # coronal
        ((-0.9, 0.1, 0, 0, 0.2, -0.98), ("R", "F")),  # oblique: the dominant axis
    ],
)
def test_capture_orientation_follows_the_source(orientation, letters):
    header = pydicom.Dataset()
    header.ImageOrientationPatient = list(orientation)
    assert patient_orientation(header) == letters
    assert patient_orientation(pydicom.Dataset()) is None


def test_findings_use_standard_codes_never_the_private_scheme():
    for verdict, (value, scheme) in {
        "glioma": ("393564001", "SCT"),
        "meningioma": ("302820008", "SCT"),
        "pituitary": ("254956000", "SCT"),
        "no_tumor": ("111286", "DCM"),
        STUDY_TUMOUR_TYPE_UNCERTAIN: ("126952004", "SCT"),
        STUDY_UNCERTAIN: ("82334004", "SCT"),
    }.items():
        ds = make_structured_report(make_result(verdict=verdict))
        findings = [
            i.ConceptCodeSequence[0]
            for i in _items(ds.ContentSequence)
            if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "121071"
        ]
        assert findings and all(f.CodingSchemeDesignator != SCHEME for f in findings)
        stated = [f for f in findings if f.CodeValue == value]
        assert stated and {f.CodingSchemeDesignator for f in stated} == {scheme}


def test_the_sr_and_the_captures_pass_dciodvfy_with_no_errors(tmp_path):
    result = make_result(key=(3, 1))
    heatmap = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    paths = write_study_results(result, HeatmapBackend(heatmap), None, tmp_path)
    assert len(paths) == 3
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name
    capture = pydicom.dcmread(paths[1])
    assert "Laterality" in capture and capture.Laterality == ""


def test_a_malformed_birth_date_is_emptied_and_never_quoted(capsys, caplog):
    caplog.set_level(logging.DEBUG)
    result = make_result(n=3, key=(1,))
    secret = "not-a-date-SECRET-1970"
    with warnings.catch_warnings():  # setting them here makes pydicom complain, quoting them
        warnings.simplefilter("ignore")
        for header in result.series.headers:
            header.PatientBirthDate = secret
            header.StudyTime = "noon-SECRET"
    capsys.readouterr()
    caplog.clear()  # from here on, only what the results code says
    sr = make_structured_report(result)
    capture = make_secondary_captures(result, {1: np.zeros((8, 8, 3), np.uint8)})[0]
    for ds in (sr, capture):
        back = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
        assert back.PatientBirthDate == "" and back.PatientID == PATIENT_ID
    assert "SECRET" not in "".join(capsys.readouterr()) + caplog.text
    assert result.series.headers[0].PatientBirthDate == secret  # the source is left alone


def test_the_caption_font_draws_the_em_dash_not_an_empty_box():
    font = caption_font()
    left, top, right, bottom = font.getbbox("—")
    assert right - left > 3 * (bottom - top)  # a dash: wide and thin; a missing glyph: a box
    assert font.getbbox("—") != font.getbbox("\uffff")
