"""Where the project's shared, read-only data sits on a machine: one lookup for every command.

The archive, the second-source slices and the offline weights live in ``../shared`` beside a
checkout (or ``$TUMORLIB_SHARED``); nothing of it is ever copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_SHARED = "TUMORLIB_SHARED"


def shared_data_dir() -> Path | None:
    """``$TUMORLIB_SHARED/data`` or ``../shared/data`` (relative to the current folder), if any."""
    candidates = [Path("..") / "shared" / "data"]
    shared = os.environ.get(ENV_SHARED)
    if shared:
        candidates.insert(0, Path(shared) / "data")
    return next((path.resolve() for path in candidates if path.is_dir()), None)
