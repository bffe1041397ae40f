"""Studies: a series of slices in, one verdict out.

Reading DICOM series, zips, multi-frame files and NIfTI volumes under the input policy; the study
types; the verdict rule; pseudo-studies to choose and measure it.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "Series": "study",
    "StudySlice": "study",
    "StudyResult": "study",
    "StudyVerdict": "study",
    "StudyError": "readers",
    "read_series": "readers",
    "read_path": "readers",
    "StudyRule": "verdict",
    "aggregate": "verdict",
    "evaluate_run": "pseudo_study_report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
