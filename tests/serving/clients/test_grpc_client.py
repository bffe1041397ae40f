"""The gRPC client against the local server's gRPC port: the REST client's answers, same API."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from serving.clients.grpc_client import TFServingGrpcClient, is_grpc_url
from serving.clients.rest import TFServingClient, TFServingError, TFServingUnavailable
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.serving import free_port, make_images


@pytest.fixture(scope="module")
def clients(serving_stack):
    server = serving_stack.server
    grpc_client = TFServingGrpcClient(f"grpc://{server.grpc_target}", timeout=60)
    yield grpc_client, TFServingClient(server.url, timeout=60)
    grpc_client.close()


def test_grpc_client_answers_like_the_rest_client(clients):
    grpc_client, rest_client = clients
    images = make_images(5, seed=41)
    for version in (None, 1):
        by_grpc = grpc_client.predict(images, version=version)
        by_rest = rest_client.predict(images, version=version)
        assert len(by_grpc) == len(images)
        for g, r in zip(by_grpc, by_rest):
            assert (g.class_name, g.class_index, g.verdict) == (
                r.class_name,
                r.class_index,
                r.verdict,
            )
            assert (g.abstain, g.in_distribution) == (r.abstain, r.in_distribution)
            np.testing.assert_allclose(
                list(g.probabilities.values()), list(r.probabilities.values()), atol=1e-6
            )
    assert grpc_client.status() == rest_client.status()
    assert grpc_client.status(1) == rest_client.status(1)
    assert grpc_client.metadata() == rest_client.metadata()
    assert grpc_client.metadata(1) == rest_client.metadata(1)
    assert grpc_client.signature_metadata() == rest_client.signature_metadata()
    assert grpc_client.class_names() == rest_client.class_names()
    assert grpc_client.is_healthy() and rest_client.is_healthy()


def test_grpc_explain_matches_rest(clients):
    grpc_client, rest_client = clients
    image = make_images(1, seed=42)
    by_grpc, by_rest = grpc_client.explain(image)[0], rest_client.explain(image)[0]
    assert by_grpc.heatmap.shape == by_rest.heatmap.shape and by_grpc.heatmap.ndim == 2
    np.testing.assert_allclose(by_grpc.heatmap, by_rest.heatmap, atol=1e-5)
    assert by_grpc.class_name == by_rest.class_name


def test_errors_carry_the_status_a_rest_client_sees(serving_stack):
    target = serving_stack.server.grpc_target
    missing = TFServingGrpcClient(f"grpc://{target}", model_name="no_such_model", timeout=30)
    with pytest.raises(TFServingError) as raised:
        missing.status()
    assert raised.value.status_code == 404
    assert raised.value.message == "Could not find any versions of model no_such_model"
    client = TFServingGrpcClient(f"grpc://{target}", timeout=30)
    with pytest.raises(TFServingError) as bad:
        client.predict([b"this is not an image"])
    assert bad.value.status_code == 400 and not isinstance(bad.value, TFServingUnavailable)
    assert not missing.is_healthy()


def test_a_server_that_is_not_there_is_unavailable_within_the_timeout():
    client = TFServingGrpcClient(f"grpc://127.0.0.1:{free_port()}", timeout=2, retries=1)
    start = time.monotonic()
    with pytest.raises(TFServingUnavailable) as raised:
        client.status()
    assert time.monotonic() - start < 10
    assert raised.value.status_code == 503
    assert "UNAVAILABLE" in raised.value.message


def test_urls():
    assert is_grpc_url("grpc://127.0.0.1:8500") and is_grpc_url("grpcs://tfs.example:443")
    assert not is_grpc_url("http://127.0.0.1:8501") and not is_grpc_url(None)
    assert TFServingGrpcClient("127.0.0.1:8500").base_url == "grpc://127.0.0.1:8500"
    assert TFServingGrpcClient("grpc://u:pw@h:1").display_url == "grpc://h:1"
    with pytest.raises(ValueError):
        TFServingGrpcClient("http://127.0.0.1:8501")


def test_importing_the_client_does_not_import_tensorflow():
    """The stubs import TensorFlow (seconds): only the first call pays it, not the import."""
    code = (
        "import sys, serving.clients.grpc_client, serving.clients.backend; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=120)


def test_a_grpc_url_selects_the_grpc_client_in_the_backend(serving_stack):
    from serving.clients.backend import RestBackend, Settings, make_backend

    backend = make_backend(Settings(serving_url=f"grpc://{serving_stack.server.grpc_target}"))
    assert isinstance(backend, RestBackend)
    assert isinstance(backend.client, TFServingGrpcClient)
    assert backend.label.startswith("TF Serving gRPC at grpc://127.0.0.1:")
    health = backend.health()
    assert health.ok and health.version == 2
    (prediction,) = backend.predict(make_images(1, seed=43), health.version)
    assert not isinstance(prediction, str) and prediction.class_name
    assert backend.safety(health.version).known


def test_the_batch_cli_predicts_over_grpc(serving_stack, tmp_path):
    from tumorlib_cli.predict import main

    image = tmp_path / "a.png"
    image.write_bytes(make_images(1, seed=44)[0])
    out = tmp_path / "out.csv"
    url = f"grpc://{serving_stack.server.grpc_target}"
    assert main([str(image), "--serving-url", url, "--output", str(out), "--no-progress"]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and "a.png" in rows[1]


def test_the_page_accepts_a_grpc_url():
    from streamlit_app.backend import normalize_url

    assert normalize_url(" grpc://127.0.0.1:8500/ ") == "grpc://127.0.0.1:8500"
