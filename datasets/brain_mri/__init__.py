"""The ``brain_mri`` TFDS dataset: the builder and the helpers it builds with.

Laid out as TFDS lays out a dataset folder (``tfds build datasets/brain_mri``) and installed as
the package ``brain_mri``. Deliberately empty: importing :mod:`brain_mri.labels` must not pull in
TensorFlow; the builder lives in :mod:`brain_mri.brain_mri_dataset_builder`.
"""
