"""What a training run is told: :class:`TrainConfig`, its config file and the hparams file.

Settings come from, in increasing precedence: defaults, a config file (JSON/YAML with
:class:`TrainConfig` field names), a hyperparameters file (the tuning helper's best values,
keys :data:`HPARAM_KEYS`), explicit flags (:func:`tumorlib.training.train.config_from_args`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The keys of the best-hyperparameters JSON that `python -m tuning.search` writes and
# `python -m tumorlib.train --hparams` reads; defined here, once, for both.
HPARAM_KEYS: tuple[str, ...] = ("head_units", "dropout", "learning_rate", "label_smoothing")
OPTIONAL_HPARAM_KEYS: tuple[str, ...] = ("fine_tune_layers",)


@dataclass
class TrainConfig:
    """Every setting of a training run; the defaults are the recipe reported in docs/training.md."""

    run_name: str = ""  # empty: mobilenetv2-<UTC timestamp>
    runs_dir: str = "runs"
    data_dir: str | None = None
    # multi_sequence: SARTAJ clean + the TCGA-LGG archive (CC BY-NC-SA 4.0); "clean" (the
    # --sartaj-only flag) for users who cannot accept that licence.
    dataset_config: str = "multi_sequence"
    # Epoch sampling (tumorlib.training.sampling): the archive's expected share of an epoch and the
    # most slices one patient contributes per epoch. No effect on clean.
    archive_share: float = 0.3
    patient_cap: int = 16
    balance: str = "class"  # or "source_class": classes balanced within each source
    image_size: int = 224
    alpha: float = 1.0
    weights: str | None = "imagenet"
    dropout: float = 0.2
    head_units: int = 0
    label_smoothing: float = 0.1
    batch_size: int = 32
    phase1: str = "features"  # "features" (cached pooled features) or "images"
    head_epochs: int = 60
    head_learning_rate: float = 1e-3
    head_patience: int = 8
    fine_tune_epochs: int = 24  # val loss still falling at 12 (runs tuned vs tuned-long)
    fine_tune_layers: int = 100
    fine_tune_learning_rate: float = 3e-4
    fine_tune_patience: int = 6
    # "plateau": ReduceLROnPlateau on validation loss; "cosine": a cosine decay over all
    # fine_tune_epochs (a known length: the main job's time is predictable).
    fine_tune_schedule: str = "plateau"
    seed: int = 42
    feature_cache_dir: str | None = None  # None: data/features under the current directory
    verbose: int | str = "auto"
    hparams_file: str | None = None
    # tf.distribute (docs/distributed.md): batch_size is per replica; the global batch is
    # batch_size x replicas. "default" is one process on one device, as before.
    strategy: str = "default"  # "default", "mirrored" or "multi_worker" (reads TF_CONFIG)
    mixed_precision: bool = False  # mixed_float16; refused without a GPU
    # Probability that an augmented training slice also gets acquisition changes
    # (tumorlib.images.acquisition: other sequences, bias field, noise, frames, text); 0 is off.
    # 0.5 was chosen on validation (docs/training.md, "Model v2": 0.909 vs 0.897 without).
    acquisition_augment: float = 0.5
    # Warm start: a finished run folder whose model.keras weights this run starts from (same
    # architecture and image size); its phases then continue training them.
    init_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` for a setting no run could use."""
        from tumorlib.data.pipeline import CONFIGS

        if self.dataset_config not in CONFIGS:
            raise ValueError(
                f"unknown dataset config {self.dataset_config!r}; expected {', '.join(CONFIGS)}"
            )
        if self.dataset_config == "original":
            raise ValueError(
                "training needs a validation split; use 'multi_sequence' or 'clean' (SARTAJ only)"
            )
        if not 0.0 <= self.archive_share < 1.0:
            raise ValueError(f"archive_share must be in [0, 1), got {self.archive_share}")
        if self.fine_tune_schedule not in ("plateau", "cosine"):
            raise ValueError(
                f"fine_tune_schedule must be 'plateau' or 'cosine', got {self.fine_tune_schedule!r}"
            )
        if self.fine_tune_schedule == "cosine" and self.strategy == "multi_worker":
            raise ValueError("the multi-worker loop lowers the rate on plateaus only: use plateau")
        from tumorlib.training.sampling import BALANCES

        if self.balance not in BALANCES:
            raise ValueError(f"balance must be 'class' or 'source_class', got {self.balance!r}")
        if self.patient_cap < 1:
            raise ValueError(f"patient_cap must be >= 1, got {self.patient_cap}")
        from tumorlib.training.distribute import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if self.phase1 not in ("features", "images"):
            raise ValueError(f"phase1 must be 'features' or 'images', got {self.phase1!r}")
        for name in ("image_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("head_epochs", "fine_tune_epochs", "fine_tune_layers", "head_units"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.acquisition_augment <= 1.0:
            raise ValueError(
                f"acquisition_augment must be in [0, 1], got {self.acquisition_augment}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.fine_tune_epochs and not self.fine_tune_layers:
            raise ValueError("fine_tune_epochs > 0 needs fine_tune_layers > 0")


def field_names() -> set[str]:
    """The settings a config file may name."""
    return {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON or YAML mapping of :class:`TrainConfig` fields (``-`` or ``_`` in names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        payload = yaml.safe_load(text)
    else:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    payload = {str(k).replace("-", "_"): v for k, v in payload.items()}
    unknown = sorted(set(payload) - field_names())
    if unknown:
        raise ValueError(
            f"config file {path} has unknown settings: {', '.join(unknown)}; known: "
            f"{', '.join(sorted(field_names()))}"
        )
    return payload


def load_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The tuning helper's best hyperparameters, checked and typed.

    Required keys: :data:`HPARAM_KEYS`; optional: :data:`OPTIONAL_HPARAM_KEYS`. Anything else
    is an error rather than silently ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hyperparameters file {path} does not exist")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"hyperparameters file {path} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"hyperparameters file {path} must hold a JSON object")
    unknown = sorted(set(payload) - set(HPARAM_KEYS) - set(OPTIONAL_HPARAM_KEYS))
    if unknown:
        raise ValueError(
            f"hyperparameters file {path} has unknown keys: {', '.join(unknown)}; expected "
            f"{', '.join(HPARAM_KEYS)} (and optionally {', '.join(OPTIONAL_HPARAM_KEYS)})"
        )
    missing = [k for k in HPARAM_KEYS if k not in payload]
    if missing:
        raise ValueError(f"hyperparameters file {path} lacks: {', '.join(missing)}")
    out: dict[str, Any] = {
        "dropout": float(payload["dropout"]),
        "head_units": int(payload["head_units"]),
        "learning_rate": float(payload["learning_rate"]),
        "label_smoothing": float(payload["label_smoothing"]),
    }
    if "fine_tune_layers" in payload:
        out["fine_tune_layers"] = int(payload["fine_tune_layers"])
    return out


def hparams_to_config(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as :class:`TrainConfig` fields (the tuned rate is phase one's)."""
    mapped = dict(hparams)
    mapped["head_learning_rate"] = mapped.pop("learning_rate")
    return mapped
