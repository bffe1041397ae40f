"""The one result type every serving backend returns.

The Streamlit page, the REST client and the in-process model all hand back ``Prediction``
objects, so a caller can switch backend without touching its display code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One image's result: temperature-scaled probabilities keyed by class name, and the argmax."""

    probabilities: dict[str, float]
    class_index: int
    class_name: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any], class_names: Sequence[str]) -> Prediction:
        """Build from one row of the serving signature's outputs (REST ``predictions`` entry).

        ``class_name`` may arrive as ``bytes`` (in-process TF string tensor) or ``str`` (JSON).
        """
        probs = [float(p) for p in row["probabilities"]]
        if len(probs) != len(class_names):
            raise ValueError(
                f"model returned {len(probs)} probabilities but knows {len(class_names)} classes"
            )
        name = row["class_name"]
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        return cls(
            probabilities=dict(zip(class_names, probs)),
            class_index=int(row["class_index"]),
            class_name=str(name),
        )
