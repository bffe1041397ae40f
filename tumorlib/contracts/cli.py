"""What every command-line entry point shares: exit codes, error reporting and logging set-up.

One convention for all commands: 0 success, 1 the work failed (a missing run, a server down, a
bad file), 2 the command line itself was wrong (argparse's own code). Errors are one line on
stderr, ``error: ...``, never a traceback for an expected failure.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

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


def setup_logging(verbose: bool = False) -> None:
    """Library diagnostics to stderr; command results stay on stdout. Idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    # TensorFlow and absl are chatty at INFO; their warnings still show.
    for name in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else int(code)
