"""CI runs every real component or fails: ``.ci/run`` sets ``CI`` itself and stops when the
package index cannot be updated, and a fixture's missing component fails the run under ``CI``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.fixtures.ci import require
from tests.fixtures.paths import REPO_ROOT


def test_require_skips_on_a_laptop_and_fails_in_ci(monkeypatch):
    def outcome() -> BaseException:
        with pytest.raises(BaseException) as raised:  # skip and fail are BaseExceptions
            require(False, "no orthanc")
        return raised.value

    monkeypatch.delenv("CI", raising=False)
    assert type(outcome()) is pytest.skip.Exception
    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        failed = outcome()
        assert type(failed) is pytest.fail.Exception, value  # not a skip
        assert "no orthanc" in str(failed) and "CI is set" in str(failed)
    require(True, "present: nothing happens")


def test_ci_run_exports_ci_and_stops_when_apt_get_update_fails(tmp_path):
    """With the system packages missing (a bare PATH) and an ``apt-get`` whose update fails,
    ``.ci/run`` exits 1 in words, before installing anything or running the tests."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@ CI=$CI" >> {log}\nexit 100\n')
    (bin_dir / "apt-get").chmod(0o755)
    for tool in ("bash", "dirname", "ls", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / ".ci" / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "apt-get update failed" in done.stderr
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith("update") for c in calls)  # never "install"
    assert calls[0].endswith("CI=true")  # exported by the script itself
    assert "dicom3tools" in done.stderr
    assert os.access(REPO_ROOT / ".ci" / "run", os.X_OK)
