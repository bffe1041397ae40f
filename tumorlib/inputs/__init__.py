"""What may come in, and how it is read — before any pixel is decoded.

The input policy (limits on bytes, pixels, frames; accepted formats and bit depths; the words of
every refusal), checked from headers; DICOM reading and windowing; a fast lossless PNG writer for
the slices that go to the model. TensorFlow-free, so light clients check uploads too.
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "MAX_IMAGE_BYTES": "policy",
    "MAX_PIXELS": "policy",
    "InputRejected": "policy",
    "check_image": "policy",
    "DicomError": "dicom",
    "DicomImage": "dicom",
    "is_dicom": "dicom",
    "read_dicom": "dicom",
    "dicom_to_png": "dicom",
    "encode_png": "png",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
