"""The one error every export step raises, so ``python -m serving.export`` reports it in a line."""

from __future__ import annotations

from tumorlib.contracts.cli import CommandError


class ExportError(CommandError):
    """The export could not be written or does not reproduce the Keras model."""
