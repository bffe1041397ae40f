"""The package installs and works outside a checkout, as a user who runs `pip install` gets it.

Builds the wheel from the files a commit would hold (tracked, and untracked but not ignored),
installs it into a fresh virtual environment with `--no-deps` (its dependencies come from this
environment's site-packages through a `.pth` line, so nothing is downloaded and the checkout is
never on the path), then, from a folder outside the checkout: `tumorlib --version`, a dataset
build from `../shared/data` with the *installed* builder, and the page started by `tumorlib app`,
which must listen on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import tumorlib
from tests.fixtures.ci import require
from tests.fixtures.paths import REPO_ROOT

pytestmark = pytest.mark.slow

ROOT = REPO_ROOT
SHARED_DATA = ROOT.parent / "shared" / "data"


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line and (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with only the built wheel of this project installed; returns its bin/."""
    require(
        shutil.which("git") is not None and (ROOT / ".git").exists(),
        "needs a git checkout to know which files a commit holds",
    )
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in _project_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("tumorlib-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Dependencies from this environment; .pth files *inside* it (the editable install's finder
    # for this checkout) are not processed for a path added this way.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    return venv / "bin"


def _run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TFDS_DATA_DIR")}
    proc = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_installed_package_comes_from_the_wheel_not_the_checkout(installed, tmp_path):
    out = _run(installed, "python", "-c", "import tumorlib, brain_mri; print(tumorlib.__file__)",
               cwd=tmp_path)  # fmt: skip
    assert str(ROOT) not in out and "site-packages" in out
    assert _run(installed, "tumorlib", "--version", cwd=tmp_path).strip() == (
        f"tumorlib {tumorlib.__version__}"
    )


def test_installed_builder_builds_the_dataset(installed, tmp_path):
    require(
        (SHARED_DATA / "brain_tumor_classification_mri.zip").is_file(),
        "../shared/data is not beside the checkout",
    )
    data_dir = tmp_path / "tfds"
    out = _run(
        installed,
        "tumorlib",
        "build",
        "--manual-dir",
        str(SHARED_DATA),
        "--data-dir",
        str(data_dir),
        cwd=tmp_path,
    )
    assert "clean" in out and "original" in out
    assert list(data_dir.glob("brain_mri/clean/*/dataset_info.json"))
    assert list(data_dir.glob("brain_mri/original/*/dataset_info.json"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening_addresses(pid_tree: list[int], port: int) -> set[str]:
    import psutil

    addresses = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid in pid_tree:
            addresses.add(conn.laddr.ip)
    return addresses


def test_page_started_elsewhere_binds_loopback_only(installed, tmp_path):
    import psutil

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HOME"] = str(tmp_path)  # no ~/.streamlit/config.toml of the user's
    proc = subprocess.Popen(
        [str(installed / "tumorlib"), "app", "--server.port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        addresses: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
            addresses = _listening_addresses(tree, port)
            if addresses:
                break
            time.sleep(1)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert addresses == {"127.0.0.1"}, addresses
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
