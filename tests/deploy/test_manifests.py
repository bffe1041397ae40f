"""deploy/: the kustomize base and its overlay render to objects the Kubernetes schemas accept
(``kubectl kustomize`` to render, ``kubernetes-validate`` strict to check), hardened and probed;
the compose healthcheck tells an AVAILABLE model from anything else."""

from __future__ import annotations

import copy
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from serving.server.config import (
    configs_from_proto,
    load_monitoring_config,
    parse_batching_parameters,
)
from tests.fixtures.ci import require
from tests.fixtures.paths import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
BASE, OVERLAY = DEPLOY / "k8s" / "serving", DEPLOY / "overlays" / "example"
K8S_VERSION = "1.32.0"
KUBECTL = shutil.which("kubectl")


@pytest.fixture
def needs_kubectl() -> None:
    """kubectl renders the kustomizations (the machine image has it): skip here, fail in CI."""
    require(KUBECTL is not None, "kubectl (kustomize) is not installed")


KINDS = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
         "PersistentVolumeClaim"}  # fmt: skip


def render(folder) -> list[dict]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


def test_every_manifest_file_of_the_base_is_schema_valid():
    """Without kustomize too: each file the base lists is a valid object on its own."""
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    files = [BASE / name for name in listed if name.endswith(".yaml")]
    assert {yaml.safe_load(f.read_text())["kind"] for f in files} == KINDS - {"ConfigMap"}
    for path in files:
        kubernetes_validate.validate(yaml.safe_load(path.read_text()), K8S_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field():
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # sic: a typo k8s would drop
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.usefixtures("needs_kubectl")
@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kustomize_renders_objects_the_kubernetes_schemas_accept(folder):
    docs = render(folder)
    assert {doc["kind"] for doc in docs} >= KINDS
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.usefixtures("needs_kubectl")
def test_the_base_is_hardened_probed_and_wired():
    objects = by_kind(render(BASE))
    deployment, config = objects["Deployment"], objects["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/brain_mri"
    assert set(container["resources"]) == {"requests", "limits"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the generated ConfigMap (hashed name) is the one mounted, with deploy/tf_serving's files
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    assert config["metadata"]["name"].startswith("tfserving-config-")
    for name, text in config["data"].items():
        assert text == (DEPLOY / "tf_serving" / name).read_text()
    args = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    assert {args["model_config_file"], args["batching_parameters_file"],
            args["monitoring_config_file"]} == {f"/config/{n}" for n in config["data"]}  # fmt: skip
    claim = objects["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"], "readOnly": True,
    }  # fmt: skip
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert (
        objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )


@pytest.mark.usefixtures("needs_kubectl")
def test_the_config_files_parse_as_tf_serving_parses_them():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    data = by_kind(render(BASE))["ConfigMap"]["data"]
    models = text_format.Parse(data["models.config"], model_server_config_pb2.ModelServerConfig())
    assert [m.name for m in configs_from_proto(models, "models.config")] == ["brain_mri"]
    assert parse_batching_parameters(data["batching_parameters.txt"]).max_batch_size >= 2
    assert load_monitoring_config(DEPLOY / "tf_serving" / "monitoring.config")


@pytest.mark.usefixtures("needs_kubectl")
def test_the_overlay_changes_what_it_says_and_keeps_the_rest():
    objects = by_kind(render(OVERLAY))
    assert all(o["metadata"].get("namespace") == "tumorlib" for k, o in objects.items()
               if k != "Namespace")  # fmt: skip
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert objects["PersistentVolumeClaim"]["spec"]["storageClassName"] == "nfs-client"
    data = objects["ConfigMap"]["data"]
    assert parse_batching_parameters(data["batching_parameters.txt"]).num_batch_threads == 4
    assert data["models.config"] == (DEPLOY / "tf_serving" / "models.config").read_text()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["volumes"][1]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]


# -- docker compose -----------------------------------------------------------------------------


def _compose_service() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tfserving"]


def test_compose_runs_unprivileged():
    service = _compose_service()
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert not service["user"].startswith("0")
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])


def _healthcheck(port: int, model: str = "brain_mri") -> int:
    test = _compose_service()["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3].replace("/8501", f"/{port}").replace("/models/brain_mri", f"/models/{model}")
    return subprocess.run(["bash", "-c", script], timeout=30).returncode


def test_compose_healthcheck_passes_only_for_an_available_model(serving_stack):
    """The healthcheck's own command, run against a TF Serving-compatible server."""
    from tests.fixtures.serving import free_port

    port = serving_stack.server.port
    assert _healthcheck(port) == 0
    assert _healthcheck(port, model="no_such_model") != 0  # 404: not loaded
    assert _healthcheck(free_port()) != 0  # nothing listening
