"""How image bytes become model input, and how training varies them. TensorFlow ops.

Decode (under the input policy's graph twin), resize with the aspect kept, normalise to [-1, 1]
— the one preprocessing that training, the SavedModel, the page and Grad-CAM share — plus the
training augmentation and the acquisition changes (other sequences, noise, blur, frames, text).
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "DEFAULT_IMAGE_SIZE": "preprocessing",
    "decode_image": "preprocessing",
    "resize": "preprocessing",
    "normalize": "preprocessing",
    "preprocess_bytes": "preprocessing",
    "preprocess_bytes_batch": "preprocessing",
    "augment": "preprocessing",
    "policy_checks": "graph_policy",
    "random_acquisition": "acquisition",
    "TRANSFORMS": "acquisition",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
