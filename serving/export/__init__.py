"""A trained run -> a TF Serving SavedModel in ``models/brain_mri/<version>/``.

The signatures (``serving_default``, ``explain``, ``metadata``), the safety layer embedded in the
graph, the metadata it carries, and a check that the reloaded export answers like the Keras
model. ``python -m serving.export RUN`` runs :func:`export_run`.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "export_run": "exporter",
    "ExportError": "errors",
    "verify_export": "verify",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
