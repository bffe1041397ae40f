"""What every command-line entry point shares: exit codes, error reporting and logging set-up.

One convention for all commands: 0 success, 1 the work failed (a missing run, a server down, a
bad file), 2 the command line itself was wrong (argparse's own code). Errors are one line on
stderr, ``error: ...``, never a traceback for an expected failure.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable

from tumorlib.contracts.display import printable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(RuntimeError):
    """An expected failure of a command: its message is written for the user."""


# Failures a command reports in one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CommandError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ValueError,
)


# Our own packages log their progress at INFO; every other library speaks from WARNING up.
OWN_LOGGERS = ("tumorlib", "tumorlib_cli", "serving", "tuning", "brain_mri", "streamlit_app")
# Libraries whose messages quote header values (a patient's name, a malformed birth date) or URLs
# with their query (a QIDO search by PatientID, in urllib3's "Retrying ..." lines): they never
# reach the terminal, whatever the level (tumorlib.inputs.dicom also silences pydicom's logger for
# every caller). What they would have said reaches the user as our own words.
QUOTING_LIBRARIES = ("pydicom", "highdicom", "dicomweb_client", "urllib3")
ERROR_LIMIT = 2000


def setup_logging(verbose: bool = False) -> None:
    """Diagnostics to stderr, ours from INFO, libraries' from WARNING; results stay on stdout.

    Idempotent. Libraries that quote DICOM header values are kept off the terminal entirely.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUOTING_LIBRARIES:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        warnings.filterwarnings("ignore", module=rf"{name}(\..*)?$")


def progress_verbosity(requested: int | str = "auto") -> int | str:
    """Keras's ``verbose`` for long work: ``"auto"`` is a redrawn bar on a terminal, one line per
    epoch (or prediction) in a log file, where a redrawn bar would be thousands of lines."""
    if requested != "auto":
        return requested
    return 1 if sys.stdout.isatty() else 2


def run_command(
    body: Callable[[], int | None],
    expected: tuple[type[BaseException], ...] = EXPECTED_ERRORS,
) -> int:
    """Run a command's body: ``error: ...`` and exit 1 for an expected failure, 0 on success.

    ``body`` may return its own non-zero code (e.g. a batch where some files failed).
    """
    setup_logging()
    try:
        code = body()
    except expected as err:
        print(f"error: {printable(err, ERROR_LIMIT)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)
