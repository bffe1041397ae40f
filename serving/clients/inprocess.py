"""Run an exported SavedModel in this process, behind the same interface as the REST client.

The Streamlit page (and the benchmark's baseline) use :class:`InProcessModel` when no server is
running; because it calls the very same ``serving_default`` signature that TF Serving serves, the
answers are identical to the server's, preprocessing and temperature included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.clients.prediction import (
    ExplainUnavailable,
    Explanation,
    Prediction,
    SimilarCases,
    SimilarUnavailable,
)
from serving.common.tf_errors import summarize_tf_error
from serving.common.versions import find_latest_version, list_versions
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    INPUT_KEY,
    MAX_SIMILAR,
    METADATA_ASSET,
    METADATA_INPUT_KEY,
    METADATA_OUTPUT_KEY,
    METADATA_SIGNATURE,
    MODEL_BASE_PATH,
    SERVING_SIGNATURE,
    SIMILAR_SIGNATURE,
)


class ModelNotFoundError(FileNotFoundError):
    """No exported version (or not the requested one) exists under the model base path."""


class InvalidImageError(ValueError):
    """An input could not be decoded as an image."""


class InProcessModel:
    """The newest (or a given) version of an exported model, loaded with ``tf.saved_model.load``."""

    def __init__(
        self,
        model_base_path: str | os.PathLike = MODEL_BASE_PATH,
        version: int | None = None,
    ) -> None:
        import tensorflow as tf

        self.model_base_path = Path(model_base_path)
        if version is None:
            version = find_latest_version(self.model_base_path)
            if version is None:
                raise ModelNotFoundError(
                    f"no exported model under {self.model_base_path}; "
                    "run `python -m serving.export RUN` first"
                )
        elif version not in list_versions(self.model_base_path):
            raise ModelNotFoundError(
                f"version {version} not found under {self.model_base_path} "
                f"(have {list_versions(self.model_base_path) or 'none'})"
            )
        self.version = int(version)
        self.path = self.model_base_path / str(self.version)
        self._loaded = tf.saved_model.load(str(self.path))
        self._serve = self._loaded.signatures[SERVING_SIGNATURE]
        self._metadata = json.loads((self.path / "assets" / METADATA_ASSET).read_text())
        self.class_names: tuple[str, ...] = tuple(self._metadata["class_names"])

    # -- the shared interface ----------------------------------------------------------------

    def predict(self, images: Sequence[bytes], version: int | None = None) -> list[Prediction]:
        """Classify encoded images; one :class:`Prediction` per image, in order.

        Carries every output the export has (``abstain``, ``in_distribution``, ``gate_score``
        when it was exported with them), like the REST client.
        """
        self._check_version(version)
        outputs = self.predict_raw(images)
        return [
            Prediction.from_row({k: v[i] for k, v in outputs.items()}, self.class_names)
            for i in range(len(images))
        ]

    def explain(self, images: Sequence[bytes], version: int | None = None) -> list[Explanation]:
        """Grad-CAM through the ``explain`` signature: one :class:`Explanation` per image.

        :class:`ExplainUnavailable` when this export has no such signature (exported before it
        existed, or a model without the project's backbone/head structure).
        """
        self._check_version(version)
        signature = self._loaded.signatures.get(EXPLAIN_SIGNATURE)
        if signature is None:
            raise ExplainUnavailable(
                f"version {self.version} under {self.model_base_path} has no "
                f"{EXPLAIN_SIGNATURE!r} signature; re-export the run to add Grad-CAM"
            )
        outputs = self._call(signature, images)
        return [
            Explanation.from_row({k: v[i] for k, v in outputs.items()}, self.class_names)
            for i in range(len(images))
        ]

    def similar(
        self, images: Sequence[bytes], k: int = MAX_SIMILAR, version: int | None = None
    ) -> list[SimilarCases]:
        """The ``k`` nearest confirmed cases per image, through ``similar_cases``
        (:class:`SimilarUnavailable` when this export has no index)."""
        self._check_version(version)
        signature = self._loaded.signatures.get(SIMILAR_SIGNATURE)
        if signature is None:
            raise SimilarUnavailable(
                f"version {self.version} under {self.model_base_path} has no "
                f"{SIMILAR_SIGNATURE!r} signature (exported without an index of training slices)"
            )
        outputs = self._call(signature, images)
        return [
            SimilarCases.from_row({key: v[i] for key, v in outputs.items()}, self.class_names, k)
            for i in range(len(images))
        ]

    def predict_raw(self, images: Sequence[bytes]) -> dict[str, Any]:
        """The signature's outputs as NumPy arrays (for batch callers such as the benchmark)."""
        return self._call(self._serve, images)

    def _call(self, signature, images: Sequence[bytes]) -> dict[str, Any]:
        import numpy as np
        import tensorflow as tf

        images = list(images)
        if not all(isinstance(b, bytes | bytearray) for b in images):
            raise TypeError("images must be encoded image bytes (JPEG/PNG)")
        if not images:  # an empty batch has nothing to run (and some CPU kernels reject it)
            return {
                key: np.zeros([0, *spec.shape[1:]], spec.dtype.as_numpy_dtype)
                for key, spec in signature.structured_outputs.items()
            }
        try:
            outputs = signature(**{INPUT_KEY: tf.constant(images, dtype=tf.string)})
        except tf.errors.InvalidArgumentError as err:
            raise InvalidImageError(
                f"could not decode an input image: {summarize_tf_error(err.message)}"
            ) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def status(self, version: int | None = None) -> dict:
        """The same shape as TF Serving's model status response."""
        self._check_version(version)
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self, version: int | None = None) -> dict:
        """The exported ``assets/metadata.json`` read through the ``metadata`` signature."""
        import tensorflow as tf

        self._check_version(version)
        signature = self._loaded.signatures[METADATA_SIGNATURE]
        text = signature(**{METADATA_INPUT_KEY: tf.constant(["metadata"])})[METADATA_OUTPUT_KEY]
        return json.loads(text.numpy()[0].decode("utf-8"))

    def is_healthy(self) -> bool:
        return self._serve is not None

    def _check_version(self, version: int | None) -> None:
        if version is not None and int(version) != self.version:
            raise ModelNotFoundError(
                f"this in-process model is version {self.version}, not {version}"
            )
