"""The ``tumorlib`` command: version, help, dispatch to each module's ``main(argv)``, exit codes,
the page launcher (its command, and the settings Streamlit reads for it from any folder) and the
main job's defaults that must not assume a checkout."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tumorlib import __version__
from tumorlib_cli import page
from tumorlib_cli.__main__ import COMMANDS, main

VERSION_LINE = f"tumorlib {__version__}"


def test_version_and_help_answer_without_importing_any_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == VERSION_LINE
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in COMMANDS:
        assert f"\n  {name} " in listing, name
    # In a fresh interpreter: `python -m tumorlib_cli`, and no TensorFlow for --version/--help.
    probe = (
        "import sys; from tumorlib_cli.__main__ import main; "
        "codes = [main(['--version']), main(['--help']), main(['train', '--version'])]; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tumorlib.training.train') "
        "if m in sys.modules]; "
        "print(codes, heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().endswith("[0, 0, 0] []")
    module_run = subprocess.run(
        [sys.executable, "-m", "tumorlib_cli", "--version"], capture_output=True, text=True
    )
    assert module_run.returncode == 0 and module_run.stdout.strip() == VERSION_LINE


def test_every_sub_command_takes_version_and_names_a_module_with_main(capsys):
    for name, (module, help_) in COMMANDS.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        assert "\ndef main(" in Path(spec.origin).read_text(), f"{module} has no main(argv)"
        assert help_ and "\n" not in help_
        assert main([name, "--version"]) == 0
        assert capsys.readouterr().out.strip() == VERSION_LINE


def test_unknown_or_missing_sub_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_the_rest_of_the_command_line_goes_to_the_module_main(monkeypatch):
    from tumorlib.evaluation import evaluate

    seen = []
    monkeypatch.setattr(evaluate, "main", lambda argv: seen.append(argv) or 7)
    assert main(["evaluate", "runs/x", "--split", "test"]) == 7
    assert seen == [["runs/x", "--split", "test"]]


def test_predict_on_a_fixture_export_writes_one_row_per_image(tmp_path, capsys, fixture_export):
    from tests.fixtures.serving import make_images

    base = fixture_export
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, data in enumerate(make_images(3, seed=7)):
        (folder / f"{i}.png").write_bytes(data)
    out = tmp_path / "out.csv"
    argv = ["predict", str(folder), "-o", str(out), "--model-base-path", str(base)]
    assert main([*argv, "--no-progress"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png", "2.png"]
    assert all(r["class_name"] and not r["error"] for r in rows)
    assert "3 classified" in capsys.readouterr().err
    # A model that is not there: the work failed (1), said in one line.
    assert main(["predict", str(folder), "--model-base-path", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "error: No exported model yet" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# The page launcher
# --------------------------------------------------------------------------------------------


def test_app_runs_the_installed_page_with_streamlit_of_this_interpreter():
    command = page.page_command(8600, ["--theme.base", "dark"])
    script = Path(command[4])
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert script.name == "app.py" and script.parent.name == "streamlit_app" and script.is_file()
    assert command[5:] == ["--server.port", "8600", "--theme.base", "dark"]


def test_page_settings_bind_localhost_and_cap_uploads_from_any_folder(tmp_path):
    """The script-level config beside app.py is what Streamlit reads, whatever the cwd."""
    script = page.page_script()
    settings = tomllib.loads((script.parent / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "127.0.0.1"
    # The transport cap fits a zipped series or a NIfTI volume; single images are still held to
    # the input policy's 10 MB by the page itself (tests/streamlit_app/test_study_view.py).
    assert settings["server"]["maxUploadSize"] == 100
    probe = (
        "import json, sys; from streamlit import config; "
        "config._main_script_path = sys.argv[1]; "  # what `streamlit run SCRIPT` sets first
        "from streamlit.web import bootstrap; bootstrap.load_config_options(flag_options={}); "
        "print(json.dumps([config.get_option(k) for k in "
        "('server.address', 'server.maxUploadSize', 'client.showErrorDetails')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(script)],
        cwd=tmp_path,  # no .streamlit/ here: only the script-level file can set these
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["127.0.0.1", 100, "none"]


def test_main_job_opens_the_page_through_the_same_launcher(tmp_path, monkeypatch):
    from tumorlib_cli import main_job

    calls = []

    def execve(path, command, env):
        calls.append((path, command, env))
        raise SystemExit(0)  # what follows an exec never runs

    monkeypatch.setattr(page.os, "execve", execve)
    with pytest.raises(SystemExit):
        main_job.open_page(str(tmp_path / "models"), 8777)
    ((path, command, env),) = calls
    assert command == page.page_command(8777) and path == command[0]
    assert env["TUMORLIB_MODEL_BASE_PATH"] == str((tmp_path / "models").resolve())


@pytest.mark.slow
def test_app_started_from_another_folder_listens_on_localhost_only(tmp_path):
    import time

    import psutil
    import requests

    from tests.fixtures.serving import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tumorlib_cli", "app", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            pytest.fail("the page did not start within 60 s")
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        listening = {
            c.laddr.ip
            for p in tree
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
    finally:
        process.terminate()
        process.wait(timeout=15)


# --------------------------------------------------------------------------------------------
# Defaults that must not assume a checkout
# --------------------------------------------------------------------------------------------


def test_shipped_hparams_are_package_data():
    from tumorlib_cli import main_job

    shipped = json.loads(main_job.DEFAULT_HPARAMS.read_text())
    assert {"dropout", "head_units", "learning_rate", "label_smoothing"} <= set(shipped)


def test_manual_dir_default_is_shared_data_from_env_or_beside_the_cwd(tmp_path, monkeypatch):
    from tumorlib_cli.build import ENV_SHARED, default_manual_dir

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(ENV_SHARED, raising=False)
    assert default_manual_dir() is None  # nothing there: the builder downloads
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_manual_dir() == (tmp_path / "shared" / "data").resolve()
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)
    monkeypatch.setenv(ENV_SHARED, str(tmp_path / "elsewhere"))
    assert default_manual_dir() == (tmp_path / "elsewhere" / "data").resolve()


def test_long_work_logs_one_line_per_epoch_in_a_file_and_a_bar_on_a_terminal(monkeypatch):
    import io

    from tumorlib.contracts.cli import progress_verbosity

    monkeypatch.setattr("sys.stdout", io.StringIO())  # a log file
    assert progress_verbosity() == 2 and progress_verbosity(0) == 0

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    assert progress_verbosity("auto") == 1
