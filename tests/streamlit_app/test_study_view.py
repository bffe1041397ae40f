"""The page's study view, driven through Streamlit's ``AppTest`` with the exported fixture model.

Uploads are generated in memory (``tests/fixtures/studies.py``): a DICOM series with fake patient
tags, a multi-frame DICOM, a NIfTI volume, a zip with a bad member, two series at once. The
fixture export (``fixture_export``, tests/conftest.py) has no abstention threshold and no input
gate, so every readable slice gets a class and the page's counts can be checked exactly against
:func:`serving.clients.study.classify_series` run here on the same files.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from serving.pacs.dicomweb import PASSWORD_ENV, USER_ENV
from streamlit_app import backend as backends
from streamlit_app import study_pacs, study_view
from streamlit_app.study_results import DOWNLOAD_LABEL
from tests.fixtures.paths import APP
from tests.fixtures.studies import (
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    make_dicom_series,
    make_multiframe,
    make_nifti,
    make_zip,
    phantom,
)
from tumorlib.studies.readers import read_series

APP_TIMEOUT_S = 120  # first in-process load of a SavedModel on two busy cores
COUNT_LABELS = ["Slices classified", "Slices uncertain", "Slices not a brain MRI", "Slices failed"]


@pytest.fixture
def page_env(monkeypatch, fixture_export) -> Iterator[pytest.MonkeyPatch]:
    for key in (
        *(backends.ENV_URL, backends.ENV_URLS, backends.ENV_MODEL_NAME, backends.ENV_TIMEOUT),
        *(study_pacs.ENV_PACS_URL, PASSWORD_ENV, USER_ENV),
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(backends.ENV_MODEL_BASE_PATH, str(fixture_export))
    yield monkeypatch


@pytest.fixture(scope="module")
def backend(fixture_export):
    from serving.clients.backend import InProcessBackend, load_model
    from serving.common.versions import find_latest_version

    version = find_latest_version(fixture_export)
    return InProcessBackend(load_model(str(fixture_export), version)), version


def expected(files: list[tuple[str, bytes]], backend) -> list:
    from serving.clients.study import classify_series

    model, version = backend
    return [classify_series(s, model, version) for s in read_series(files)]


def _page() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S)


def _upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value(
        [(name, data, "application/octet-stream") for name, data in files]
    )
    return at.run()


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _all_text(at: AppTest) -> str:
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "subheader", "table")
    text = " ".join(str(e.value) for kind in kinds for e in getattr(at, kind))
    captions = " ".join(str(i.caption) for el in at.get("image") for i in el.proto.imgs)
    return f"{text} {captions}"


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, _texts(at.exception)
    return at


def _counts(at: AppTest) -> dict[str, int]:
    return {m.label: int(m.value) for m in at.metric}


def _study_heading(at: AppTest) -> str:
    texts = _texts(at.markdown) + _texts(at.main.error)
    return next(t for t in texts if t.startswith("#### Study: "))


# The words a radiologist must read for each verdict, written out here — not computed by the code
# under test (a wrong mapping in the page would otherwise agree with itself).
VERDICT_HEADINGS = {
    "glioma": "Glioma",
    "meningioma": "Meningioma",
    "no_tumor": "No tumour",
    "pituitary": "Pituitary tumour",
    "uncertain": "Uncertain — refer to a radiologist",
    "tumour_type_uncertain": "Tumour — type uncertain, refer to a radiologist",
}
NO_USABLE = "No usable slices — the study was not classified"


def _heading_for(result) -> str:
    verdict = result.verdict
    if verdict.n_classified + verdict.n_uncertain == 0:
        return f"#### Study: {NO_USABLE}"
    return f"#### Study: {VERDICT_HEADINGS[verdict.verdict]}"


def _series(n: int = 8, seed: int = 0, **kwargs) -> list[tuple[str, bytes]]:
    return make_dicom_series(phantom(n, 32, seed=seed), shuffle_instance_numbers=True, **kwargs)


def _png(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_routing_keeps_single_slices_and_mixed_uploads_on_the_per_file_view():
    series = _series(3)
    assert study_view.is_study(series)
    assert study_view.is_study([("volume.nii.gz", b"")]) and study_view.is_study([("s.zip", b"")])
    assert study_view.is_study([("mf.dcm", make_multiframe(phantom(3, 16)))])
    assert not study_view.is_study(series[:1])  # one single-frame DICOM: a slice
    assert not study_view.is_study([*series, ("slice.png", _png())])  # mixed: per file
    assert not study_view.is_study([("broken.dcm", b"\0" * 128 + b"DICM\x02")])


def test_dicom_series_gets_a_study_view_and_patient_tags_only_on_request(
    page_env, backend, caplog, monkeypatch
):
    files = _series(8)
    want = expected(files, backend)[0]
    calls = []
    real = study_view.classify_series
    monkeypatch.setattr(
        study_view, "classify_series", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    at = _page().run()
    with caplog.at_level(logging.DEBUG):
        _ok(_upload(at, files))

    assert _study_heading(at) == _heading_for(want)
    assert want.verdict.reason in _texts(at.markdown)
    assert "not a diagnosis" in " ".join(_texts(at.caption))
    counts = _counts(at)
    assert counts == dict(
        zip(
            COUNT_LABELS,
            [
                want.verdict.n_classified,
                want.verdict.n_uncertain,
                want.verdict.n_not_brain_mri,
                want.verdict.n_failed,
            ],
        )
    )
    assert sum(counts.values()) == 8 and counts["Slices classified"] == 8
    slider = at.slider(key="study_slice_0")
    assert (slider.min, slider.max) == (1, 8)
    # The strip starts with the key slices, each captioned with its class and confidence.
    captions = [i.caption for el in at.get("image") for i in el.proto.imgs]
    first_key = want.verdict.key_slices[0]
    assert captions[0].startswith(f"★ slice {first_key + 1} / 8: ")
    # The chosen slice's Grad-CAM is on by default (the fixture export has the explain
    # signature): the switch, its opacity slider and the captioned overlay are all there.
    assert at.checkbox(key="study_gradcam_0").value
    assert at.slider(key="study_gradcam_opacity_0").value > 0
    assert any(c.startswith("Grad-CAM for ") for c in captions), captions
    assert not at.get("vega_lite_chart")  # not the per-file view
    assert [b.proto.label for b in at.get("download_button")] == [DOWNLOAD_LABEL]
    page = _all_text(at)
    for secret in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE):
        assert secret not in page and secret not in caplog.text
    assert not any(name in caplog.text for name, _ in files)

    # Moving the slider shows another slice without classifying the series again.
    slider.set_value(3).run()
    _ok(at)
    assert any(t.startswith("**slice 3 / 8: ") for t in _texts(at.markdown))
    assert len(calls) == 1

    at.toggle(key="study_patient_tags_0").set_value(True).run()
    _ok(at)
    assert PATIENT_NAME in _all_text(at) and PATIENT_ID in _all_text(at)
    assert len(calls) == 1


def test_multi_frame_dicom_and_nifti_volumes_get_the_study_view(page_env, backend):
    multiframe = [("volume.dcm", make_multiframe(phantom(5, 32, seed=3)))]
    at = _ok(_upload(_page().run(), multiframe))
    assert sum(_counts(at).values()) == 5
    assert _study_heading(at) == _heading_for(expected(multiframe, backend)[0])

    nifti = [("brain.nii.gz", make_nifti(phantom(6, 32, seed=4).transpose(1, 2, 0), gz=True))]
    want = expected(nifti, backend)[0]
    at = _ok(_upload(_page().run(), nifti))
    assert _study_heading(at) == _heading_for(want)
    assert sum(_counts(at).values()) == want.series.n_slices
    assert at.slider(key="study_slice_0").max == want.series.n_slices
    assert not at.main.toggle  # a NIfTI volume has no patient tags to show
    assert not at.get("download_button")  # DICOM results only for DICOM studies


def test_zip_with_a_bad_member_says_so_and_the_page_keeps_working(page_env, backend):
    files = _series(7, seed=5)
    (name, data), rest = files[0], files[1:]
    bad = make_zip([*rest, (name, data[:-700]), ("notes.txt", b"not a slice")])
    at = _ok(_upload(_page().run(), [("series.zip", bad)]))
    # The readable slices are classified; the truncated one fails with the reader's words, the
    # text file is skipped, and the page says both.
    want = expected([("series.zip", bad)], backend)[0]
    assert _study_heading(at) == _heading_for(want)
    assert _counts(at)["Slices classified"] == 6 and _counts(at)["Slices failed"] == 1
    warnings = " ".join(_texts(at.warning))
    assert "neither DICOM nor NIfTI were skipped" in warnings
    assert "This DICOM file cannot be used: DICOM pixel data is malformed or truncated" in warnings

    not_a_zip = [("series.zip", b"PK\x03\x04 not really a zip")]
    _ok(_upload(at, not_a_zip))
    assert any("cannot be read" in e for e in _texts(at.main.error))

    from tests.tumorlib.studies.test_hostile_studies import _damaged

    for kind, words in (("crc", "checksum does not match"), ("deflate", "data is corrupt")):
        _ok(_upload(at, [("series.zip", _damaged(kind))]))  # words, not a traceback
        assert any(words in e for e in _texts(at.main.error)), _texts(at.main.error)

    _ok(_upload(at, [("slice.png", _png(1))]))  # the page still answers a plain slice
    assert any(t.startswith("#### Predicted: ") for t in _texts(at.markdown))


def test_two_series_in_one_upload_get_a_select_box(page_env, backend):
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    first = _series(4, seed=6, study_uid=study_uid, prefix="A")
    second = _series(5, seed=7, study_uid=study_uid, prefix="B")
    at = _ok(_upload(_page().run(), first + second))
    box = at.selectbox(key="study_series")
    assert len(box.options) == 2
    sizes = {sum(_counts(at).values())}
    box.set_value(1 - box.value).run()
    _ok(at)
    sizes.add(sum(_counts(at).values()))
    assert sizes == {4, 5}


def test_a_single_png_keeps_the_single_slice_view(page_env):
    at = _ok(_upload(_page().run(), [("slice.png", _png(2))]))
    assert any(t.startswith("#### Predicted: ") for t in _texts(at.markdown))
    assert not at.metric and not any(s.key == "study_slice_0" for s in at.slider)
    assert [c.key for c in at.checkbox] == ["gradcam_show_0"]
    assert "Open from PACS" not in _texts(at.sidebar.header)  # no PACS configured: no box


def test_the_dicom_results_zip_holds_an_sr_and_captures(backend):
    from pydicom import dcmread

    from streamlit_app.study_results import results_zip

    result = expected(_series(4, seed=8), backend)[0]
    model, version = backend
    with zipfile.ZipFile(io.BytesIO(results_zip(result, model, version))) as archive:
        names = archive.namelist()
        datasets = [dcmread(io.BytesIO(archive.read(n))) for n in names]
    assert [ds.Modality for ds in datasets].count("SR") == 1
    assert all(ds.StudyInstanceUID == result.series.study_instance_uid for ds in datasets)
    # One Grad-CAM capture per key slice (the fixture export explains), each an RGB image
    # that references its own key slice.
    captures = [ds for ds in datasets if ds.Modality == "OT"]
    key_uids = [result.series.slices[k].ref.sop_instance_uid for k in result.verdict.key_slices]
    assert key_uids and len(captures) == len(key_uids)
    assert sorted(c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures) == sorted(
        key_uids
    )
    assert all(c.pixel_array.ndim == 3 and c.pixel_array.shape[2] == 3 for c in captures)


def test_single_images_keep_the_policy_size_limit_under_the_larger_upload_cap(page_env):
    too_large = b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024)  # 11 MB: over the policy's 10
    at = _ok(_upload(_page().run(), [("big.png", too_large)]))
    assert any("the limit is 10.0 MB" in e for e in _texts(at.main.error))


@pytest.mark.slow
def test_a_series_opened_from_the_configured_pacs_gets_the_study_view(page_env, backend, caplog):
    from tests.fixtures.orthanc import start_orthanc

    files = _series(6, seed=9)
    want = expected(files, backend)[0]
    for orthanc in start_orthanc():
        orthanc.upload(files)
        page_env.setenv(study_pacs.ENV_PACS_URL, orthanc.dicomweb_url)
        page_env.setenv(USER_ENV, orthanc.user)
        page_env.setenv(PASSWORD_ENV, orthanc.password)
        at = _ok(_page().run())
        assert "Open from PACS" in _texts(at.sidebar.header)
        study = at.sidebar.selectbox(key="pacs_study")
        assert study.value.study_uid == want.series.study_instance_uid
        assert "T1 AX synthetic" in at.sidebar.selectbox(key="pacs_series").format_func(
            at.sidebar.selectbox(key="pacs_series").value
        )
        with caplog.at_level(logging.DEBUG):
            at.sidebar.button(key="pacs_open").click().run()
        _ok(at)
        assert _study_heading(at) == _heading_for(want)
        assert sum(_counts(at).values()) == 6
        sidebar = " ".join(str(e.value) for e in at.sidebar.get("selectbox"))
        for secret in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE):
            assert secret not in _all_text(at) + sidebar and secret not in caplog.text


def test_gate_outcomes_are_counted_and_an_unreadable_series_has_no_verdict(page_env, serving_stack):
    """The stack's newest version has an input gate (and an abstention threshold)."""
    from serving.clients.backend import InProcessBackend, load_model

    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(serving_stack.base_path))
    model = (InProcessBackend(load_model(str(serving_stack.base_path), 2)), 2)
    volume = phantom(6, 32, seed=10)
    volume[3:] = 0  # three blank slices: nothing for the gate to accept
    files = make_dicom_series(volume)
    want = expected(files, model)[0]
    assert want.verdict.n_not_brain_mri >= 1
    at = _ok(_upload(_page().run(), files))
    assert _study_heading(at) == _heading_for(want)
    assert list(_counts(at).values()) == [
        want.verdict.n_classified,
        want.verdict.n_uncertain,
        want.verdict.n_not_brain_mri,
        want.verdict.n_failed,
    ]

    truncated = [(name, data[:-700]) for name, data in _series(4, seed=11)]
    at = _ok(_upload(_page().run(), truncated))
    assert f"#### Study: {study_view.NO_USABLE_SLICES}" in _texts(at.main.error)
    assert _counts(at)["Slices failed"] == 4
    assert "truncated" in " ".join(_texts(at.warning))
    captions = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert not any("Grad-CAM" in c for c in captions)  # nothing to explain
