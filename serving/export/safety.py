"""The clinical-safety pieces a run folder holds, as the export needs them.

``RUN/abstention.json`` (``python -m tumorlib.abstention``) gives ``serving_default`` its
``abstain`` output; ``RUN/input_gate.npz`` (``python -m tumorlib.input_gate``) its
``in_distribution`` and ``gate_score``. A run without those files exports without those outputs,
rather than with a default: a constant ``in_distribution = true`` would claim a check that was
never made.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.export.errors import ExportError
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import (
    ABSTENTION_FILE,
    FAMILIARITY_FILE,
    GATE_FILE,
    GATE_SUMMARY_FILE,
    MODEL_FILE,
    Run,
)
from tumorlib.contracts.serving_contract import (
    ABSTENTION_OUTPUT_KEYS,
    CONFIDENCE_KEY,
    FAMILIARITY_OUTPUT_KEYS,
    GATE_OUTPUT_KEYS,
    OUTPUT_KEYS,
    UNCERTAIN_MESSAGE,
)
from tumorlib.safety.gate import GateError, InputGate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Safety:
    """The clinical-safety pieces a run has measured; ``None`` where a step was not run."""

    abstention: dict[str, Any] | None  # metadata block; "threshold" is what the graph uses
    gate: InputGate | None
    gate_report: dict[str, Any] | None  # RUN/input_gate.json, if written
    familiarity: InputGate | None = None  # RUN/familiarity.npz: the "unfamiliar" flag

    @property
    def threshold(self) -> float | tuple[float, ...] | None:
        """What ``abstain`` compares the confidence with: one threshold, or one per class."""
        if self.abstention is None:
            return None
        by_class = self.abstention.get("class_thresholds")
        if by_class:
            return tuple(float(by_class[name]) for name in CLASS_NAMES)
        return float(self.abstention["threshold"])

    def serving_outputs(self) -> list[str]:
        """``serving_default``'s output names for this run, in a stable order."""
        keys = [*OUTPUT_KEYS, CONFIDENCE_KEY]
        if self.abstention is not None:
            keys += ABSTENTION_OUTPUT_KEYS
        if self.gate is not None:
            keys += GATE_OUTPUT_KEYS
            if self.familiarity is not None:
                keys += FAMILIARITY_OUTPUT_KEYS
        return keys


NO_SAFETY = Safety(None, None, None)


def read_json(path: Path) -> dict[str, Any]:
    """A run file's JSON, or an :class:`ExportError` naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON: {err}") from None


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: an unmeasurable number (e.g. precision when nothing is accepted) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_abstention(run: Run) -> dict[str, Any] | None:
    """The validation-chosen threshold from ``RUN/abstention.json`` as a metadata block.

    The threshold applies to temperature-scaled confidences; one chosen under another
    temperature would be on a different scale, so that mismatch stops the export.
    """
    path = run.path / ABSTENTION_FILE
    if not path.is_file():
        return None
    report = read_json(path)
    try:
        chosen = report["chosen_on_validation"]
        threshold = float(chosen["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{path} has no chosen_on_validation.threshold") from None
    temperature = report.get("temperature")
    if temperature is not None and not math.isclose(
        float(temperature), run.temperature, rel_tol=1e-6
    ):
        raise ExportError(
            f"{path} was computed at temperature {temperature}, but the run's calibration is "
            f"{run.temperature}; re-run `python -m tumorlib.abstention {run.path}`"
        )
    if report.get("rule") == "per_class":
        return _per_class_block(path, report)
    return {
        "threshold": threshold,
        **_measured(chosen, report.get("test") or {}),
        "rule": "abstain = confidence < threshold (confidence: top temperature-scaled probability)",
        "message": report.get("message", UNCERTAIN_MESSAGE),
    }


def _measured(chosen: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """What a rule achieved on validation (where it was chosen) and on test."""
    return {
        "target_precision": finite_or_none(chosen.get("target_precision")),
        "reachable": chosen.get("reachable"),
        "validation_coverage": finite_or_none(chosen.get("coverage")),
        "validation_precision": finite_or_none(chosen.get("precision")),
        "test_coverage": finite_or_none(test.get("coverage")),
        "test_accepted_accuracy": finite_or_none(test.get("accepted_accuracy")),
    }


def _load_gate(path: Path) -> InputGate | None:
    if not path.is_file():
        return None
    try:
        return InputGate.load(path)
    except (GateError, KeyError, ValueError, OSError) as err:
        raise ExportError(f"{path} could not be read: {err}") from None


def _per_class_block(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The metadata block of per-class thresholds (``"threshold"``: the lowest, for display)."""
    try:
        per_class = report["per_class"]
        by_class = {name: float(per_class["thresholds_by_class"][name]) for name in CLASS_NAMES}
        chosen = per_class["chosen_on_validation"]
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{path} has no per_class.thresholds_by_class for every class") from None
    return {
        "threshold": min(by_class.values()),
        "class_thresholds": by_class,
        **_measured(chosen, per_class.get("test") or {}),
        "second_source": report.get("second_source"),
        "rule": "abstain = confidence < class_thresholds[predicted class] (confidence: top "
        "temperature-scaled probability; thresholds chosen together on validation)",
        "message": report.get("message", UNCERTAIN_MESSAGE),
    }


def load_safety(run: Run) -> Safety:
    """Whatever of ``abstention.json``, ``input_gate.npz`` / ``.json`` and ``familiarity.npz``
    the run folder holds (the familiarity check only alongside a gate: it shares its features)."""
    gate = _load_gate(run.path / GATE_FILE)
    familiarity = _load_gate(run.path / FAMILIARITY_FILE) if gate is not None else None
    summary = run.path / GATE_SUMMARY_FILE
    gate_report = read_json(summary) if gate is not None and summary.is_file() else None
    safety = Safety(load_abstention(run), gate, gate_report, familiarity)
    warn_if_stale(run, safety)
    return safety


def warn_if_stale(run: Run, safety: Safety) -> None:
    """A threshold or gate fitted before the model was last written may not fit it."""
    model_time = (run.path / MODEL_FILE).stat().st_mtime
    present = [
        name
        for name, used in ((ABSTENTION_FILE, safety.abstention), (GATE_FILE, safety.gate))
        if used is not None
    ]
    for name in present:
        if (run.path / name).stat().st_mtime < model_time:
            log.warning(
                "%s is older than %s; re-run its step if the model was retrained",
                run.path / name,
                MODEL_FILE,
            )
