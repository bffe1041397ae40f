"""tumorlib: brain MRI tumour classification with TFDS, tf.data and Keras."""

from tumorlib.classes import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES"]
__version__ = "0.2.0"
