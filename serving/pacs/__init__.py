"""The PACS round trip over DICOMweb and the DICOM objects it stores.

QIDO-RS to find studies, WADO-RS to fetch a series within the study limits, STOW-RS to store the
results: a Comprehensive SR with the verdict and Grad-CAM Secondary Captures (highdicom).
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "Pacs": "dicomweb",
    "PacsError": "dicomweb",
    "classify_study": "round_trip",
    "choose_series": "round_trip",
    "write_study_results": "results",
    "study_result_datasets": "results",
    "make_structured_report": "sr",
    "make_secondary_captures": "capture",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
