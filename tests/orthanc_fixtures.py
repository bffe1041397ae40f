"""A real Orthanc PACS (with its DICOMweb plugin) for the PACS tests, started per test module.

Why a real one: DICOMweb servers differ in what QIDO-RS returns and how STOW-RS answers, and the
point of the tests is that results land in a real PACS. Orthanc binds its HTTP and DICOM ports to
free ports, refuses remote access, requires a generated user and password, and keeps its storage
and index in a temporary folder removed afterwards. Skipped only when Orthanc is not installed
outside CI (``.ci/run`` installs it); in CI a missing Orthanc fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.serving_fixtures import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class OrthancServer:
    """Where the test Orthanc listens and how to log in."""

    url: str  # REST root, e.g. http://127.0.0.1:8042
    user: str
    password: str

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def upload(self, files: list[tuple[str, bytes]]) -> None:
        """Store DICOM files through Orthanc's REST API (``POST /instances``)."""
        for _, data in files:
            answer = requests.post(f"{self.url}/instances", data=data, auth=self.auth, timeout=30)
            answer.raise_for_status()


def require_orthanc() -> None:
    """Skip without Orthanc + DICOMweb, unless in CI, where their absence is a failure."""
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if not missing:
        return
    reason = (
        f"Orthanc with its DICOMweb plugin is not installed ({', '.join(missing)} missing): "
        "apt-get install orthanc orthanc-dicomweb (.ci/run does)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def orthanc_config(root: Path, http_port: int, dicom_port: int, user: str, password: str) -> dict:
    return {
        "Name": "tumorlib-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "TUMORLIBTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 4,
    }


def start_orthanc() -> Iterator[OrthancServer]:
    """Start Orthanc in a throwaway folder, wait until ``/system`` answers, stop and clean up."""
    require_orthanc()
    root = Path(tempfile.mkdtemp(prefix="tumorlib-orthanc-"))
    user, password = "tumorlib-test", secrets.token_urlsafe(16)
    http_port, dicom_port = free_port(), free_port()
    config = root / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(root, http_port, dicom_port, user, password)))
    log = open(root / "orthanc.log", "wb")  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        [str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=root
    )
    server = OrthancServer(f"http://127.0.0.1:{http_port}", user, password)
    try:
        _wait_until_up(server, process, root / "orthanc.log")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_up(server: OrthancServer, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(f"{server.url}/system", auth=server.auth, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"Orthanc did not answer within {STARTUP_TIMEOUT_S:g} s")
