"""The data: the ``brain_mri`` TFDS dataset as ``tf.data`` pipelines, and the shared archives.

Building and loading splits, the train/evaluation pipelines (with epoch sampling), where
``../shared`` is, and the second-source slices (for measuring only, never for fitting).
"""

from tumorlib._exports import lazy_exports

_EXPORTS = {
    "CONFIGS": "pipeline",
    "DATASET_NAME": "pipeline",
    "build": "pipeline",
    "get_builder": "pipeline",
    "load_split": "pipeline",
    "make_pipeline": "pipeline",
    "load_pipeline": "pipeline",
    "data_dir": "pipeline",
    "shared_data_dir": "shared",
    "SecondSource": "second_source",
    "load_second_source": "second_source",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
