"""The class labels the ``brain_mri`` dataset defines, in ``ClassLabel`` index order.

The dataset owns the names and their order: an example's integer ``label`` is an index into
:data:`CLASS_NAMES`. Everything downstream (the model head, reports, the serving signature)
reads them from here through ``tumorlib.contracts.classes``, so an index means the same class
everywhere. Kept free of TensorFlow so that TF-free code can import it.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "no_tumor", "pituitary")
