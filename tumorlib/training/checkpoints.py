"""Where a training phase keeps what a restarted job resumes from, under ``checkpoints/``.

Shared by both ways a phase is fitted — Keras ``fit`` with ``BackupAndRestore``
(:mod:`tumorlib.training.phases`) and the multi-worker custom loop
(:mod:`tumorlib.training.custom_loop`) — and by :func:`tumorlib.training.train.train`, which skips
a phase whose end weights are already there.
"""

from __future__ import annotations

from pathlib import Path

from tumorlib.contracts.runs import CHECKPOINT_DIR

BACKUP_DIR = "backup"  # under checkpoints/: BackupAndRestore state and finished-phase weights


def backup_dir(run_dir: Path, phase: str | None = None) -> Path:
    root = run_dir / CHECKPOINT_DIR / BACKUP_DIR
    return root if phase is None else root / phase


def phase_done_file(run_dir: Path, phase: str) -> Path:
    """Weights at the end of a finished phase: a restarted job loads them and skips the phase."""
    return backup_dir(run_dir) / f"{phase}.done.weights.h5"
