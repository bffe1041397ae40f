"""The upload page: validation, results table, backend choice, and the page itself via AppTest.

The page tests drive the real ``streamlit_app/app.py`` with Streamlit's ``AppTest`` against a real
exported fixture model, in-process and behind the real local REST server (the session's
``serving_stack`` fixture, tests/conftest.py), plus a closed port (server down) and a socket that
never answers (server too slow). The stack's newest version carries an abstention threshold and
an input gate, so the page's "uncertain" and "not a brain MRI slice" answers, DICOM uploads
(generated here with pydicom) and the Grad-CAM overlay are driven through the page too.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from serving.clients.backend import MAX_CHUNK_BYTES, BackendError, predict_isolating_failures
from serving.clients.prediction import CLASSIFIED, NOT_BRAIN_MRI, UNCERTAIN, Prediction
from streamlit_app import backend as backends
from streamlit_app.results import FileResult, results_table, to_csv_bytes
from streamlit_app.validation import prepare_upload, validate_upload
from tests.fixtures.paths import APP
from tests.fixtures.serving import ABSTAIN_PROBE_COUNT, ABSTAIN_PROBE_SEED, blank_png, make_images
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.serving_contract import NOT_BRAIN_MRI_MESSAGE, UNCERTAIN_MESSAGE
from tumorlib.inputs.policy import InputRejected

APP_TIMEOUT_S = 90  # first in-process load of a SavedModel on two busy cores

# --------------------------------------------------------------------------------------------
# Uploads: one good and one of each kind of bad
# --------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rgb(seed: int = 0, size: tuple[int, int] = (48, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def _png_claiming_size(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose header declares ``width`` x ``height`` (a bomb's shape)."""
    data = bytearray(_encode(Image.new("L", (8, 8))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def good_png(seed: int = 0) -> bytes:
    return _encode(_rgb(seed))


def good_jpeg(seed: int = 1) -> bytes:
    return _encode(_rgb(seed).convert("L"), "JPEG", quality=95)


BAD_UPLOADS: dict[str, tuple[bytes, str, str]] = {
    # name: (bytes, expected reason, words the message must contain)
    "not_an_image": (b"PK\x03\x04 this is a zip, not a slice", "not_an_image", "not an image"),
    "truncated": (good_jpeg(2)[:-400], "truncated", "truncated"),
    "too_large": (b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024), "too_large_bytes", "limit"),
    "bomb_header": (_png_claiming_size(6000, 6000), "too_many_pixels", "megapixels"),
    "bomb_pillow": (_png_claiming_size(30000, 30000), "too_many_pixels", "decompression bomb"),
    "16bit": (
        _encode(Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 16)),
        "high_bit_depth",
        "16-bit",
    ),
    "transparent": (
        _encode(Image.fromarray(np.full((32, 32, 4), 128, np.uint8))),
        "transparent",
        "transparent",
    ),
    "cmyk": (_encode(_rgb(3).convert("CMYK"), "JPEG"), "cmyk", "CMYK"),
    "animated": (
        _encode(_rgb(4), save_all=True, append_images=[_rgb(5)]),  # APNG: still a .png
        "animated",
        "animated",
    ),
    "gif": (_encode(_rgb(6).convert("P"), "GIF"), "unsupported_format", "GIF"),
}


@pytest.mark.parametrize("name", sorted(BAD_UPLOADS))
def test_each_bad_upload_is_refused_with_its_own_clear_message(name):
    data, reason, words = BAD_UPLOADS[name]
    with pytest.raises(InputRejected) as caught:
        validate_upload(data)
    assert caught.value.reason == reason
    assert words.lower() in caught.value.message.lower()


def test_good_uploads_pass_unchanged_and_opaque_alpha_is_dropped_losslessly():
    for data, fmt in ((good_png(), "PNG"), (good_jpeg(), "JPEG")):
        checked = validate_upload(data)
        assert checked.data is data and checked.format == fmt and checked.note is None
    rgb = _rgb(7)
    checked = validate_upload(_encode(rgb.convert("RGBA")))
    assert checked.note and "alpha" in checked.note
    converted = Image.open(io.BytesIO(checked.data))
    assert converted.mode == "RGB" and converted.format == "PNG"
    assert np.array_equal(np.asarray(converted), np.asarray(rgb))


def test_truncated_file_is_refused_even_when_pillow_is_lenient(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputRejected, match="truncated"):
        validate_upload(BAD_UPLOADS["truncated"][0])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


# --------------------------------------------------------------------------------------------
# Results table, CSV, backend settings and failure isolation
# --------------------------------------------------------------------------------------------


def _prediction(winner: str) -> Prediction:
    probs = {name: (0.7 if name == winner else 0.1) for name in CLASS_NAMES}
    return Prediction(probs, CLASS_NAMES.index(winner), winner)


def test_results_table_has_plain_words_every_probability_and_errors():
    results = [
        FileResult("a.png", prediction=_prediction("pituitary"), model_version=3, backend="b"),
        FileResult("=cmd|' /C calc'!A0.png", error="The file is empty.", backend="b"),
    ]
    table = results_table(results)
    assert list(table["predicted class"]) == [DISPLAY_NAMES["pituitary"], ""]
    assert table.loc[0, "confidence"] == pytest.approx(0.7)
    assert table.loc[0, f"p({DISPLAY_NAMES['glioma']})"] == pytest.approx(0.1)
    assert table.loc[1, "error"] == "The file is empty."
    csv = to_csv_bytes(table).decode()
    assert csv.splitlines()[0].startswith("file,predicted class,confidence,error,p(Glioma)")
    assert "\n'=cmd" in csv  # a spreadsheet must not run a file name as a formula
    assert "0.700000" in csv and ",3," in csv


def test_results_table_withholds_the_class_when_uncertain_or_not_an_mri():
    probs = {name: 0.25 for name in CLASS_NAMES}
    uncertain = Prediction(probs, 0, CLASS_NAMES[0], abstain=True, in_distribution=True,
                           gate_score=0.4)  # fmt: skip
    refused = Prediction(probs, 1, CLASS_NAMES[1], abstain=True, in_distribution=False,
                         gate_score=7.5)  # fmt: skip
    results = [
        FileResult("sure.png", prediction=_prediction("glioma"), model_version=2),
        FileResult("unsure.png", prediction=uncertain, model_version=2),
        FileResult("cat.png", prediction=refused, model_version=2),
    ]
    assert [r.verdict for r in results] == [CLASSIFIED, UNCERTAIN, NOT_BRAIN_MRI]
    table = results_table(results)
    assert list(table["predicted class"]) == [
        DISPLAY_NAMES["glioma"], UNCERTAIN_MESSAGE, NOT_BRAIN_MRI_MESSAGE
    ]  # fmt: skip
    assert table.loc[1, "confidence"] == pytest.approx(0.25)  # uncertain: numbers stay visible
    assert np.isnan(table.loc[2, "confidence"]) and np.isnan(table.loc[2, "p(Glioma)"])
    assert table["abstain"].tolist() == [None, True, True]
    assert table["in distribution"].tolist() == [None, True, False]
    assert table.loc[2, "gate score"] == pytest.approx(7.5)
    header = to_csv_bytes(table).decode().splitlines()[0]
    assert header.endswith(
        "abstain,in distribution,gate score,familiar,familiarity score,model version,backend"
    )


def test_dicom_uploads_become_png_without_identifying_data(caplog):
    frames = np.stack([ramp(), ramp()[::-1], ramp()[:, ::-1]])
    with caplog.at_level(logging.DEBUG):
        checked = prepare_upload("scan.dcm", make_dicom(frames, window=(2000.0, 4000.0)))
        single = prepare_upload("no-suffix", make_dicom(ramp()))  # recognised by its header
    assert checked.format == single.format == "DICOM"
    assert (checked.width, checked.height) == (48, 32)
    image = Image.open(io.BytesIO(checked.data))
    assert image.format == "PNG" and image.size == (48, 32) and image.mode == "RGB"
    assert "frame 1 of 3" in checked.note and "stored window" in checked.note
    assert "percentile window" in single.note and "frame" not in single.note
    assert PATIENT not in checked.note + single.note and PATIENT not in caplog.text
    for name, data in (
        ("broken.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00\x10"),
        ("truncated.dcm", make_dicom(ramp())[:-500]),
        ("renamed.dcm", good_png()),
    ):
        with pytest.raises(InputRejected) as caught:
            prepare_upload(name, data)
        assert caught.value.reason == "dicom" and "DICOM" in caught.value.message, name
        assert PATIENT not in caught.value.message


def test_only_configured_servers_can_be_chosen(tmp_path):
    env = {
        backends.ENV_URL: "http://env:1",
        backends.ENV_URLS: "http://envs:4, http://env:1/",
        backends.ENV_MODEL_BASE_PATH: str(tmp_path),
    }
    secrets = {backends.SECRET_URLS: ["http://secret:2/"], backends.SECRET_URL: "http://one:3"}
    allowed = backends.configured_urls(secrets, env)
    assert allowed == ["http://secret:2", "http://one:3", "http://envs:4", "http://env:1"]
    for url in allowed:
        assert backends.resolve_settings(url, secrets, env).serving_url == url
    assert backends.resolve_settings("http://secret:2/", secrets, env).serving_url == allowed[0]
    for typed in ("http://169.254.169.254", "http://side:3", "http://secret:2/latest"):
        with pytest.raises(BackendError, match="not one of the configured"):
            backends.resolve_settings(typed, secrets, env)
    embedded = backends.resolve_settings("", {}, {})
    assert not embedded.uses_rest
    assert embedded.model_base_path == backends.default_model_base_path()
    assert backends.resolve_settings(None, {}, env).model_base_path == tmp_path
    for bad in ("ftp://host", "127.0.0.1:8501", "http://host:99999"):
        with pytest.raises(BackendError):
            backends.configured_urls({}, {backends.ENV_URLS: bad})
    with pytest.raises(BackendError, match="seconds"):
        backends.resolve_settings("", {}, {backends.ENV_TIMEOUT: "soon"})


def test_one_failing_image_costs_only_its_own_result_and_outages_propagate():
    calls = []

    def predict(images):
        calls.append(len(images))
        if b"bad" in images:
            raise ValueError("cannot decode")
        return [_prediction("glioma") for _ in images]

    out = predict_isolating_failures(predict, [b"a", b"bad", b"c"])
    assert [isinstance(o, Prediction) for o in out] == [True, False, True]
    assert "cannot decode" in out[1]
    assert calls == [3, 1, 1, 1]

    def down(images):
        raise BackendError("unavailable", "server down")

    with pytest.raises(BackendError):
        predict_isolating_failures(down, [b"a"])


def test_large_batches_are_split_under_the_request_size_cap():
    sizes = []

    def predict(images):
        sizes.append(sum(map(len, images)))
        return [_prediction("glioma") for _ in images]

    images = [b"x" * (2 * 1024 * 1024)] * 7
    assert len(predict_isolating_failures(predict, images)) == 7
    assert len(sizes) > 1 and max(sizes) <= MAX_CHUNK_BYTES


# --------------------------------------------------------------------------------------------
# The page (AppTest)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(serving_stack):
    return serving_stack


@pytest.fixture
def page_env(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    for key in (backends.ENV_URL, backends.ENV_URLS, backends.ENV_MODEL_NAME, backends.ENV_TIMEOUT):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch


def _page() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S)


def _upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "image/png") for name, data in files])
    return at.run()


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def _assert_no_stack_trace(at: AppTest) -> None:
    assert not at.exception, _texts(at.exception)


def _shown_probabilities(at: AppTest) -> list[dict[str, float]]:
    table = at.dataframe[0].value
    return [
        {name: float(row[f"p({DISPLAY_NAMES[name]})"]) / 100 for name in CLASS_NAMES}
        for _, row in table.iterrows()
    ]


def _heading(p: Prediction) -> str:
    """What the page must print above one file's answer."""
    if p.verdict == NOT_BRAIN_MRI:
        return f"#### {NOT_BRAIN_MRI_MESSAGE}."
    if p.verdict == UNCERTAIN:
        return f"#### {UNCERTAIN_MESSAGE}"
    return f"#### Predicted: {DISPLAY_NAMES[p.class_name]} ({p.probabilities[p.class_name]:.1%})"


def _headings(at: AppTest) -> list[str]:
    texts = _texts(at.markdown) + _texts(at.main.error)
    return [t for t in texts if t.startswith("#### ")]


def _all_text(at: AppTest) -> str:
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "subheader")
    return " ".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _images(at: AppTest) -> list:
    """Every picture on the page (``st.image``), in order, as ``(caption, url)``."""
    return [(i.caption, i.url) for element in at.get("image") for i in element.proto.imgs]


def test_page_without_any_export_says_how_to_create_one(page_env, tmp_path):
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(tmp_path / "models" / "brain_mri"))
    at = _page().run()
    _assert_no_stack_trace(at)
    sidebar = " ".join(_texts(at.sidebar.error))
    assert "No exported model yet" in sidebar and "tumorlib export" in sidebar
    assert any("not a diagnosis" in w for w in _texts(at.warning))
    _upload(at, [("slice.png", good_png())])
    _assert_no_stack_trace(at)
    assert any("No exported model yet" in e for e in _texts(at.main.error))
    assert not any(m.startswith("#### Predicted") for m in _texts(at.markdown))


def test_page_happy_path_in_process_with_every_bad_upload_in_the_same_batch(
    page_env, stack, caplog
):
    from serving.clients.inprocess import InProcessModel

    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(stack.base_path))
    good = [("patient-x-slice1.png", good_png(10)), ("patient-x-slice2.jpg", good_jpeg(11))]
    bad = [(f"{name}.png", data) for name, (data, _, _) in sorted(BAD_UPLOADS.items())]
    at = _page().run()
    assert "version 2" in " ".join(_texts(at.sidebar.success))
    with caplog.at_level(logging.DEBUG):
        _upload(at, good + bad)
    _assert_no_stack_trace(at)

    expected = InProcessModel(stack.base_path).predict([data for _, data in good])
    assert all(p.in_distribution for p in expected)
    assert _headings(at) == [_heading(p) for p in expected]
    assert len(at.get("vega_lite_chart")) == len(good)
    captions = _texts(at.caption)
    assert sum("Model version 2" in c and "not a diagnosis" in c for c in captions) == len(good)

    errors = " ".join(_texts(at.main.error))
    for name, (_, _, words) in BAD_UPLOADS.items():
        assert f"{name}.png: " in errors and words.lower() in errors.lower(), name

    table = at.dataframe[0].value
    assert list(table["file"]) == [n for n, _ in good + bad]
    assert (table["error"] == "").tolist() == [True] * len(good) + [False] * len(bad)
    for shown, want in zip(_shown_probabilities(at), expected):
        assert shown == pytest.approx(want.probabilities, abs=1e-6)
    assert at.get("download_button")[0].proto.label == "Download results (CSV)"
    # Uploads are never logged: not their names, not their bytes.
    assert "patient-x" not in caplog.text


def test_page_switches_backend_from_in_process_to_rest_with_identical_answers(page_env, stack):
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(stack.base_path))
    page_env.setenv(backends.ENV_URLS, stack.server.url)
    files = [("a.png", good_png(20)), ("b.jpg", good_jpeg(21))]
    at = _page().run()
    assert not at.sidebar.text_input  # no URL can be typed: only configured ones chosen
    assert at.sidebar.selectbox[0].options == [
        stack.server.url,
        "In-process SavedModel (newest export)",
    ]
    at.sidebar.selectbox[0].set_value("").run()
    at = _upload(at, files)
    assert "In-process SavedModel" in " ".join(_texts(at.sidebar.markdown))
    in_process = _shown_probabilities(at)

    at.sidebar.selectbox[0].set_value(stack.server.url).run()
    _assert_no_stack_trace(at)
    assert f"TF Serving REST at {stack.server.url}" in " ".join(_texts(at.sidebar.markdown))
    assert "version 2 AVAILABLE" in " ".join(_texts(at.sidebar.success))
    over_rest = _shown_probabilities(at)
    for a, b in zip(in_process, over_rest):
        assert a == pytest.approx(b, abs=1e-5)
    assert set(at.dataframe[0].value["backend"]) == {
        f"TF Serving REST at {stack.server.url} (model 'brain_mri')"
    }


def test_page_reads_url_and_model_name_from_secrets_and_reports_a_missing_model(page_env, stack):
    at = _page()
    at.secrets["serving_url"] = stack.server.url
    at.secrets["model_name"] = "no_such_model"
    at.run()
    _assert_no_stack_trace(at)
    assert at.sidebar.selectbox[0].value == stack.server.url
    message = " ".join(_texts(at.sidebar.error))
    assert "does not serve a model named 'no_such_model'" in message


def test_page_reports_a_server_that_is_down(page_env):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    page_env.setenv(backends.ENV_URL, f"http://127.0.0.1:{port}")
    at = _upload(_page().run(), [("a.png", good_png())])
    _assert_no_stack_trace(at)
    assert "down or too slow" in " ".join(_texts(at.sidebar.error))
    assert any("No predictions" in e for e in _texts(at.main.error))


def test_page_reports_a_server_that_is_too_slow(page_env):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        page_env.setenv(backends.ENV_URL, f"http://127.0.0.1:{port}")
        page_env.setenv(backends.ENV_TIMEOUT, "0.5")
        at = _upload(_page().run(), [("a.png", good_png())])
    _assert_no_stack_trace(at)
    message = " ".join(_texts(at.sidebar.error))
    assert "down or too slow (timeout 0.5 s)" in message
    # The socket's read timeout or the call's whole deadline, whichever fires first: both in words.
    assert "timed out" in message.lower() or "did not answer within 0.5 s" in message


def test_page_rejects_a_malformed_url_in_words(page_env):
    page_env.setenv(backends.ENV_URL, "localhost:8501")
    at = _page().run()
    _assert_no_stack_trace(at)
    assert "is not a TF Serving URL" in " ".join(_texts(at.sidebar.error))


def test_page_requires_sign_in_when_auth_is_configured(page_env, tmp_path):
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(tmp_path))
    at = _page()
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8502/oauth2callback"}
    at.user = {"is_logged_in": False}
    at.run()
    _assert_no_stack_trace(at)
    assert not at.file_uploader and [b.label for b in at.button] == ["Log in"]
    at.user = {"is_logged_in": True, "email": "clinician@example.org"}
    at.run()
    _assert_no_stack_trace(at)
    assert at.file_uploader and "clinician@example.org" in " ".join(_texts(at.sidebar.caption))


# --------------------------------------------------------------------------------------------
# The page: safety verdicts, DICOM, Grad-CAM
# --------------------------------------------------------------------------------------------


def _probe_files(stack) -> list[tuple[str, bytes]]:
    """One image the model answers, one it abstains on, and a blank one the gate refuses."""
    from serving.clients.inprocess import InProcessModel

    probes = make_images(ABSTAIN_PROBE_COUNT, seed=ABSTAIN_PROBE_SEED)
    answers = InProcessModel(stack.base_path).predict(probes)
    sure = next(i for i, p in enumerate(answers) if p.verdict == CLASSIFIED)
    unsure = next(i for i, p in enumerate(answers) if p.verdict == UNCERTAIN)
    return [("sure.png", probes[sure]), ("unsure.png", probes[unsure]), ("blank.png", blank_png())]


def test_page_withholds_the_class_when_uncertain_or_not_a_brain_mri(page_env, stack):
    from serving.clients.inprocess import InProcessModel

    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(stack.base_path))
    files = _probe_files(stack)
    expected = InProcessModel(stack.base_path).predict([data for _, data in files])
    assert [p.verdict for p in expected] == [CLASSIFIED, UNCERTAIN, NOT_BRAIN_MRI]
    at = _upload(_page().run(), files)
    _assert_no_stack_trace(at)

    assert _headings(at) == [_heading(p) for p in expected]
    sidebar = " ".join(_texts(at.sidebar.caption))
    assert "confidence are withheld" in sidebar and "Input gate:** on" in sidebar
    unsure = expected[1]
    warning = " ".join(_texts(at.warning))
    assert f"{DISPLAY_NAMES[unsure.class_name]}, has {unsure.confidence:.1%}" in warning
    assert "below the threshold" in warning
    refused = " ".join(c for c in _texts(at.caption) if "Input-gate score" in c)
    assert f"{expected[2].gate_score:.2f}" in refused
    # No class for the refused image anywhere: two charts, two Grad-CAM boxes, not three.
    assert len(at.get("vega_lite_chart")) == 2
    assert [c.key for c in at.checkbox] == ["gradcam_show_0", "gradcam_show_1"]

    table = at.dataframe[0].value
    assert list(table["predicted class"]) == [
        DISPLAY_NAMES[expected[0].class_name], UNCERTAIN_MESSAGE, NOT_BRAIN_MRI_MESSAGE
    ]  # fmt: skip
    assert table["abstain"].tolist() == [p.abstain for p in expected]
    assert table["in distribution"].tolist() == [True, True, False]
    assert table["gate score"].tolist() == pytest.approx([p.gate_score for p in expected], 1e-5)


def test_page_classifies_dicom_and_never_shows_patient_data(page_env, stack, caplog):
    from serving.clients.inprocess import InProcessModel

    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(stack.base_path))
    dicom = make_dicom(np.stack([ramp(), ramp()[::-1]]), window=(2000.0, 4000.0))
    files = [
        ("scan.dcm", dicom),
        ("broken.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00\x10"),
        ("truncated.dcm", dicom[:-700]),
        ("slice.png", good_png(30)),
    ]
    at = _page().run()
    with caplog.at_level(logging.DEBUG):
        at.file_uploader[0].set_value([(n, d, "application/dicom") for n, d in files])
        at.run()
    _assert_no_stack_trace(at)

    converted = prepare_upload("scan.dcm", dicom).data
    expected = InProcessModel(stack.base_path).predict([converted, good_png(30)])
    assert _headings(at) == [_heading(p) for p in expected]
    assert any("DICOM (MR) converted" in i and "frame 1 of 2" in i for i in _texts(at.info))
    errors = " ".join(_texts(at.main.error))
    assert "broken.dcm: This DICOM file" in errors and "truncated.dcm: This DICOM file" in errors
    table = at.dataframe[0].value
    assert (table["error"] != "").tolist() == [False, True, True, False]
    page_text = _all_text(at) + " ".join(c for c, _ in _images(at)) + table.to_csv()
    for secret in (PATIENT, "ID-424242", "19700101"):
        assert secret not in page_text and secret not in caplog.text


@pytest.mark.parametrize("backend_kind", ["in-process", "rest"])
def test_page_shows_a_gradcam_overlay_with_an_opacity_slider(page_env, stack, backend_kind):
    from serving.clients.inprocess import InProcessModel

    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(stack.base_path))
    if backend_kind == "rest":
        page_env.setenv(backends.ENV_URL, stack.server.url)
    files = [("a.png", good_png(40)), ("b.png", good_png(41))]
    at = _upload(_page().run(), files)
    _assert_no_stack_trace(at)
    assert len(_images(at)) == 2 and not at.slider  # nothing computed until asked

    at.checkbox(key="gradcam_show_1").check().run()
    _assert_no_stack_trace(at)
    images = _images(at)
    assert len(images) == 3 and [s.key for s in at.slider] == ["gradcam_opacity_1"]
    caption, first_url = images[2]
    label = InProcessModel(stack.base_path).explain([files[1][1]])[0].class_name
    assert "Grad-CAM" in caption and DISPLAY_NAMES[label] in caption
    assert at.slider(key="gradcam_opacity_1").value == pytest.approx(0.4)

    at.slider(key="gradcam_opacity_1").set_value(0.9).run()
    _assert_no_stack_trace(at)
    assert _images(at)[2][1] != first_url  # redrawn at the new opacity
    at.checkbox(key="gradcam_show_1").uncheck().run()
    assert len(_images(at)) == 2


def test_gradcam_overlay_is_the_heatmap_on_the_slice_as_the_model_saw_it(stack):
    from serving.clients.inprocess import InProcessModel
    from streamlit_app.gradcam_view import overlay_image
    from tumorlib.images.preprocessing import decode_image, resize

    data = good_png(42)
    heatmap = InProcessModel(stack.base_path).explain([data])[0].heatmap
    plain = overlay_image(data, heatmap, 0.0)
    assert plain.shape == (*heatmap.shape, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain, resize(decode_image(data), heatmap.shape[0]).numpy())
    assert not np.array_equal(overlay_image(data, heatmap, 0.8), plain)


def test_page_explains_why_an_old_export_has_no_gradcam(page_env, plain_export):
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(plain_export))
    at = _upload(_page().run(), [("a.png", good_png(43))])
    sidebar = " ".join(_texts(at.sidebar.caption))
    assert "Abstention:** none in this export" in sidebar and "Grad-CAM:** not in this" in sidebar
    assert _headings(at)[0].startswith("#### Predicted: ")
    at.checkbox(key="gradcam_show_0").check().run()
    _assert_no_stack_trace(at)
    assert any("no Grad-CAM (`explain`) signature" in i for i in _texts(at.info))
    assert len(_images(at)) == 1
