"""``tumorlib app``: start the upload page, wherever the package is installed.

Runs ``python -m streamlit run <installed streamlit_app/app.py>`` as a separate process (the apps
do not import each other: the page is found by its package's location, not imported). The page's
settings — 127.0.0.1 only, 10 MB uploads, no stack traces — are in
``streamlit_app/.streamlit/config.toml`` beside the script; Streamlit reads that script-level
file whatever the current folder, so no flag here repeats them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from tumorlib.contracts.cli import CommandError, run_command

PAGE_PACKAGE = "streamlit_app"
PAGE_SCRIPT = "app.py"
DEFAULT_PORT = 8502  # as in the page's config.toml; TF Serving's REST API takes 8501


def page_script() -> Path:
    """The installed ``streamlit_app/app.py``, located without importing the package."""
    spec = importlib.util.find_spec(PAGE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CommandError(f"the {PAGE_PACKAGE} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / PAGE_SCRIPT


def page_command(port: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The ``streamlit run`` command line; ``extra`` goes to Streamlit as it is."""
    command = [sys.executable, "-m", "streamlit", "run", str(page_script())]
    if port is not None:
        command += ["--server.port", str(port)]
    return [*command, *extra]


def launch(
    port: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> NoReturn:
    """Replace this process with Streamlit serving the page.

    Why exec, not a child process: Ctrl-C, SIGTERM from a service manager or a test reach the page
    itself, and no launcher is left behind whose death would orphan a running page.
    """
    command = page_command(port, extra)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, dict(os.environ if env is None else env))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib app",
        description="Start the upload page (http://127.0.0.1:8502). Other arguments go to "
        "`streamlit run`; the model comes from TUMORLIB_SERVING_URL or "
        "TUMORLIB_MODEL_BASE_PATH (default models/brain_mri in the current folder).",
    )
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    return run_command(lambda: launch(args.port, env=os.environ, extra=extra))


if __name__ == "__main__":
    sys.exit(main())
