"""The run folder: what training writes and what evaluation, export and serving read.

Layout of ``runs/<name>/``::

    config.json        how the model was built and trained (image_size, alpha, weights, hparams,
                       dataset name/config/version, seed, ...)
    model.keras        the final Keras model (best on validation): normalised images
                       [N, S, S, 3] in [-1, 1] -> softmax probabilities [N, NUM_CLASSES]
    calibration.json   {"temperature": T, ...} fitted on the validation split (optional)
    checkpoints/  logs/  history.csv   training by-products
    ensemble.json      members and TTA, for a run made by ``python -m tumorlib.ensemble``
    eval/<config>-<split>/metrics.json, summary.md + PNGs   ``python -m tumorlib.evaluate``
    abstention.json    the validation-chosen threshold        ``python -m tumorlib.abstention``
    input_gate.npz     the input gate's statistics           ``python -m tumorlib.input_gate``
    input_gate.json    the gate's measured rates
    familiarity.npz    the familiarity check's statistics     ``python -m tumorlib.input_gate``
    safety/            validation/test predictions and the safety plots
    study_rule.json    the study aggregation rule chosen on validation pseudo-studies
                                                             ``tumorlib study evaluate``
    faithfulness.json / .png  heatmap faithfulness (deletion/insertion) ``python -m
                       tumorlib.evaluation.faithfulness``
    retrieval_agreement.json  nearest training slices vs the model ``python -m
                       tumorlib.evaluation.retrieval_agreement``
    model_card.md / .html                                    ``python -m tumorlib.model_card``

Every file name is defined here and nowhere else, so no consumer guesses one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
CALIBRATION_FILE = "calibration.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"  # inside eval/<config>-<split>/
SUMMARY_FILE = "summary.md"  # inside eval/<config>-<split>/
ENSEMBLE_FILE = "ensemble.json"
ABSTENTION_FILE = "abstention.json"
GATE_FILE = "input_gate.npz"
GATE_SUMMARY_FILE = "input_gate.json"
FAMILIARITY_FILE = "familiarity.npz"  # the "unfamiliar acquisition" statistics
SAFETY_DIR = "safety"
STUDY_RULE_FILE = "study_rule.json"  # tumorlib.studies.pseudo_studies; the export ships it
TEST_PREDICTIONS_FILE = "test_predictions.npz"  # inside safety/
VALIDATION_PREDICTIONS_FILE = "validation_predictions.npz"  # inside safety/
RISK_COVERAGE_PLOT = "risk_coverage.png"  # inside safety/
GATE_PLOT = "input_gate.png"  # inside safety/
PSEUDO_STUDIES_DIR = "pseudo_studies"  # inside safety/: the study rule's report (main job)
FAITHFULNESS_FILE = "faithfulness.json"  # heatmap methods' deletion/insertion AUCs; the export
FAITHFULNESS_PANEL = "faithfulness.png"  # serves the chosen one (tumorlib.evaluation.faithfulness)
RETRIEVAL_AGREEMENT_FILE = "retrieval_agreement.json"  # k-NN vs model; the refer rule
CARD_MD = "model_card.md"
CARD_HTML = "model_card.html"


class RunNotFoundError(FileNotFoundError):
    """A run folder is missing or lacks the files a step needs."""


@dataclass
class Run:
    """A trained run: its folder, its config and (lazily) its Keras model."""

    path: Path
    config: dict[str, Any]
    temperature: float = 1.0

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size", 224))

    @property
    def dataset_config(self) -> str:
        """The dataset config the run was trained on (its validation split chose everything)."""
        recorded = self.config.get("dataset", {}).get("config")
        return str(recorded or self.config.get("dataset_config") or "clean")

    def eval_dir(self, config: str, split: str) -> Path:
        return self.path / EVAL_DIR / f"{config}-{split}"

    @property
    def safety_dir(self) -> Path:
        return self.path / SAFETY_DIR


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder, with a clear error naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise RunNotFoundError(f"run folder {path} does not exist")
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (path / name).exists():
            raise RunNotFoundError(f"run folder {path} has no {name}; was training finished?")
    config = json.loads((path / CONFIG_FILE).read_text())
    temperature = 1.0
    if (path / CALIBRATION_FILE).exists():
        temperature = float(json.loads((path / CALIBRATION_FILE).read_text())["temperature"])
    return Run(path=path, config=config, temperature=temperature)


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
