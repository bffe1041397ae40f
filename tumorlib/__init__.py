"""tumorlib: brain MRI tumour classification with TFDS, tf.data and Keras.

One folder per concept; a folder imports only the folders below it (import-linter keeps it so,
docs/architecture.md draws it):

    training | safety | studies   fitting | abstention, input gate | study verdicts
    evaluation                     predictions, metrics, calibration, plots, the model card
    model | data                   the network, serving body, Grad-CAM | tf.data, shared archives
    images                         bytes -> model input; augmentation
    inputs                         what may come in: limits, refusal words, DICOM, PNG
    contracts                      classes, serving contract, run folder, command errors

The modules at this level (``train``, ``evaluate``, ...) only keep documented
``python -m tumorlib.<command>`` lines working; each names where its command lives now.
"""

from tumorlib.contracts.classes import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES"]
__version__ = "0.2.0"
