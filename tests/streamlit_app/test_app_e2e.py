"""End to end in a real browser: the upload page over the local TF Serving REST server.

Starts ``python -m serving.local`` (the session's ``serving_stack`` fixture, serving an
exported fixture model) and the page through ``tumorlib app``'s launcher on free 127.0.0.1 ports,
then drives headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium) to
upload a real slice from the SARTAJ archive and a truncated file, waits for the answers, checks the
text on the page and saves a screenshot to ``reports/app_e2e.png`` (a CI artefact).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.fixtures.ci import require
from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.serving import free_port
from tumorlib.contracts.serving_contract import DISCLAIMER
from tumorlib_cli.page import page_command

ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "brain_tumor_classification_mri.zip"
SCREENSHOT = REPO_ROOT / "reports" / "app_e2e.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 90

pytestmark = pytest.mark.slow


def _real_slice(directory: Path) -> Path:
    """One pituitary slice from the archive's Testing split, copied out for the file dialog."""
    require(
        ARCHIVE.exists(),
        f"the SARTAJ archive is not at {ARCHIVE} (needs ../shared/data beside the repo)",
    )
    with zipfile.ZipFile(ARCHIVE) as archive:
        names = sorted(
            n for n in archive.namelist() if "Testing/pituitary_tumor/" in n and n.endswith(".jpg")
        )
        require(bool(names), f"{ARCHIVE} has no Testing/pituitary_tumor/*.jpg")
        path = directory / "pituitary_slice.jpg"
        path.write_bytes(archive.read(names[0]))
    return path


def _browser():
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    require(webdriver is not None, "selenium is not installed (pip install selenium==4.51.0)")
    for binary in (CHROMIUM, CHROMEDRIVER):
        require(
            Path(binary).exists(),
            f"{binary} not found: apt-get install -y chromium chromium-driver (.ci/run does)",
        )
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tumorlib-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,2200",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    return driver, profile


class StreamlitApp:
    """The page (``tumorlib app``'s command) on a free 127.0.0.1 port, pointed at ``url``."""

    def __init__(self, serving_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, TUMORLIB_SERVING_URL=serving_url, TF_CPP_MIN_LOG_LEVEL="2")
        # fmt: off
        self.process = subprocess.Popen(
            page_command(self.port, ["--server.address", "127.0.0.1", "--server.headless", "true",
                                     "--browser.gatherUsageStats", "false"]),
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        # fmt: on
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.output()[-3000:]}")
            try:
                if requests.get(self.url + "/_stcore/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("streamlit did not start within 60 s")

    def output(self) -> str:
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.output()


def test_upload_a_real_slice_in_chromium_and_read_the_prediction(
    tmp_path, monkeypatch, serving_stack
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    real = _real_slice(tmp_path)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    stack = serving_stack
    driver, profile = _browser()
    app = StreamlitApp(stack.server.url)
    try:
        driver.get(app.url)
        wait = WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.3)
        wait.until(lambda d: "AVAILABLE" in d.find_element(By.TAG_NAME, "body").text)
        # The sidebar renders before the uploader: wait for the file input itself.
        inputs = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type='file']"))
        inputs[0].send_keys(f"{real}\n{truncated}")
        wait.until(lambda d: "Predicted:" in d.find_element(By.TAG_NAME, "body").text)
        wait.until(lambda d: "Download results (CSV)" in d.find_element(By.TAG_NAME, "body").text)
        time.sleep(1.0)  # let the chart finish drawing for the screenshot
        text = driver.find_element(By.TAG_NAME, "body").text
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        log = app.stop()

    assert f"TF Serving REST at {stack.server.url}" in text
    assert "version 2 AVAILABLE" in text
    assert DISCLAIMER in text
    assert "Model version 2" in text
    assert any(
        f"Predicted: {name} (" in text
        for name in ("Glioma", "Meningioma", "No tumour", "Pituitary tumour")
    )
    assert "truncated.jpg: The file is truncated" in text
    assert "Traceback" not in text
    assert SCREENSHOT.stat().st_size > 10_000
    # Uploads are never logged by the app process.
    assert "pituitary_slice" not in log and "Traceback" not in log
