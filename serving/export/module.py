"""The ``tf.Module`` the export saves: the Keras model, its signatures and the metadata asset.

Every signature is the library's one serve body (:mod:`tumorlib.model.serve_body`) with a different
forward step: the plain model, the model with the input gate (:mod:`tumorlib.safety.gate_graph`), or
Grad-CAM (:mod:`tumorlib.model.gradcam`). ``serving_default`` adds ``confidence`` and ``abstain`` on
top; ``metadata`` returns the asset's text once, whatever the request's batch size: a response
of one copy per instance let a request of 100,000 empty strings cost 331 MB of JSON.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from serving.common.case_index import CaseIndex
from serving.export.errors import ExportError
from serving.export.safety import NO_SAFETY, Safety
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    METADATA_INPUT_KEY,
    METADATA_OUTPUT_KEY,
    METADATA_SIGNATURE,
    MODEL_NAME,
    SERVING_SIGNATURE,
    SIMILAR_SIGNATURE,
)
from tumorlib.model.serve_body import make_serve_fn, model_forward, with_confidence
from tumorlib.safety.gate import GateError

MODULE_NAME = f"{MODEL_NAME}_serving"  # the saved root object's name


class ServingModule(tf.Module):
    """Holds the model and every function its signatures call, so the variables they use (the
    classifier's own, shared with the gate's feature extractor) are tracked and saved."""

    def __init__(
        self,
        model,
        *,
        image_size: int,
        temperature: float,
        metadata_file: Path,
        safety: Safety = NO_SAFETY,
        explain: bool = False,
        explain_method: str = "gradcam",
        similar: CaseIndex | None = None,
    ) -> None:
        super().__init__(name=MODULE_NAME)
        self.model = model
        # Every variable reachable from the root, explicitly: Keras does not expose the
        # seed-generator state of layers nested in an ensemble's members to TF's object
        # graph, and tf.saved_model.save refuses functions that capture unreachable state.
        self.model_variables = list(model.variables)
        self.metadata_asset = tf.saved_model.Asset(str(metadata_file))
        if safety.gate is not None:
            from tumorlib.safety.gate_graph import make_gated_serve_fn

            try:
                self.classify, self.gate_features = make_gated_serve_fn(
                    model,
                    safety.gate,
                    image_size=image_size,
                    temperature=temperature,
                    familiarity=safety.familiarity,
                )
            except GateError as err:
                raise ExportError(f"the input gate does not fit this model: {err}") from None
        else:
            self.classify = make_serve_fn(
                model_forward(model), image_size=image_size, temperature=temperature
            )
        self.serve = with_confidence(self.classify, threshold=safety.threshold)
        if explain:
            from tumorlib.model.gradcam import make_explain_fn

            self.explain = make_explain_fn(
                model, image_size=image_size, temperature=temperature, method=explain_method
            )
        if similar is not None:
            from serving.export.similar_cases import CaseTable, make_similar_fn

            self.case_table = CaseTable(similar)
            self.similar_cases = make_similar_fn(
                model, self.case_table, image_size=image_size, temperature=temperature
            )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=METADATA_INPUT_KEY)])
    def metadata(self, request):
        """One row, the asset's text: the input only satisfies TF Serving's request format."""
        del request  # `instances: ["metadata"]` (or anything else) asks for the one row
        text = tf.io.read_file(self.metadata_asset.asset_path)
        return {METADATA_OUTPUT_KEY: tf.reshape(text, [1])}

    def signature_functions(self) -> dict:
        """The concrete functions to save, by signature name."""
        signatures = {
            SERVING_SIGNATURE: self.serve.get_concrete_function(),
            METADATA_SIGNATURE: self.metadata.get_concrete_function(),
        }
        if hasattr(self, "explain"):
            signatures[EXPLAIN_SIGNATURE] = self.explain.get_concrete_function()
        if hasattr(self, "similar_cases"):
            signatures[SIMILAR_SIGNATURE] = self.similar_cases.get_concrete_function()
        return signatures


def save_serving_module(module: ServingModule, target: Path) -> Path:
    """``tf.saved_model.save`` the module with its signatures under ``target``."""
    tf.saved_model.save(module, str(target), signatures=module.signature_functions())
    return target
