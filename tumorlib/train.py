"""Train the classifier: ``python -m tumorlib.train [flags] [--config FILE] [--hparams FILE]``.

Two phases, the standard transfer-learning recipe:

1. **Head** on the frozen ImageNet backbone. By default the head is fitted on cached pooled
   features of the un-augmented train split (:mod:`tumorlib.features`) — the same optimisation
   as running the frozen backbone every epoch, minutes cheaper on a CPU. ``--phase1 images``
   runs it through the backbone instead.
2. **Fine-tune** the top ``fine_tune_layers`` backbone layers at a lower learning rate on
   augmented images, BatchNorm layers frozen and in inference mode.

Both phases use real Keras callbacks (EarlyStopping restoring the best weights, ModelCheckpoint,
ReduceLROnPlateau, TensorBoard, CSVLogger) and class weights from the train split. A temperature
is then fitted on the validation split. Everything lands in a run folder (:mod:`tumorlib.runs`).

Settings come from, in increasing precedence: defaults, ``--config`` (JSON/YAML with
:class:`TrainConfig` field names), ``--hparams`` (the tuning helper's best hyperparameters),
explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.classes import CLASS_NAMES, NUM_CLASSES
from tumorlib.runs import (
    CALIBRATION_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HISTORY_FILE,
    LOG_DIR,
    MODEL_FILE,
    write_json,
)

HPARAM_KEYS = ("dropout", "head_units", "learning_rate", "label_smoothing")
OPTIONAL_HPARAM_KEYS = ("fine_tune_layers",)


@dataclass
class TrainConfig:
    """Every setting of a training run; the defaults are the recipe reported in docs/training.md."""

    run_name: str = ""  # empty: mobilenetv2-<UTC timestamp>
    runs_dir: str = "runs"
    data_dir: str | None = None
    dataset_config: str = "clean"
    image_size: int = 224
    alpha: float = 0.35
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
    seed: int = 42
    feature_cache_dir: str | None = None  # None: data/features in the repo
    verbose: int | str = "auto"
    hparams_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        from tumorlib.data import CONFIGS

        if self.dataset_config not in CONFIGS:
            raise ValueError(
                f"unknown dataset config {self.dataset_config!r}; expected {', '.join(CONFIGS)}"
            )
        if self.dataset_config != "clean":
            raise ValueError("training needs a validation split; use the 'clean' config")
        if self.phase1 not in ("features", "images"):
            raise ValueError(f"phase1 must be 'features' or 'images', got {self.phase1!r}")
        for name in ("image_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("head_epochs", "fine_tune_epochs", "fine_tune_layers", "head_units"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.fine_tune_epochs and not self.fine_tune_layers:
            raise ValueError("fine_tune_epochs > 0 needs fine_tune_layers > 0")


# ------------------------------------------------------------------------ configuration


def _field_names() -> set[str]:
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
    unknown = sorted(set(payload) - _field_names())
    if unknown:
        raise ValueError(
            f"config file {path} has unknown settings: {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_field_names()))}"
        )
    return payload


def load_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The tuning helper's best hyperparameters, checked and typed.

    Required keys: dropout, head_units, learning_rate, label_smoothing; optional:
    fine_tune_layers. Anything else is an error rather than silently ignored.
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


def _hparams_to_config(hparams: dict[str, Any]) -> dict[str, Any]:
    mapped = dict(hparams)
    mapped["head_learning_rate"] = mapped.pop("learning_rate")
    return mapped


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.train",
        description="Train the MobileNetV2 brain-MRI classifier and write a run folder.",
    )
    parser.add_argument("--config", help="JSON/YAML file of settings (TrainConfig field names)")
    parser.add_argument(
        "--hparams", help="best-hyperparameters JSON from `python -m tuning.search`"
    )
    parser.add_argument("--data-dir", help="TFDS data dir holding brain_mri (default data/...)")
    parser.add_argument("--weights", help="'imagenet' (Keras cache), a weights file, or 'none'")

    def add(name: str, typ: type, help_: str) -> None:
        default = getattr(defaults, name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=typ, help=f"{help_} (default: {default})")

    add("run-name", str, "run folder name under --runs-dir")
    add("runs-dir", str, "where run folders go")
    add("image-size", int, "square input size")
    add("alpha", float, "MobileNetV2 width multiplier")
    add("dropout", float, "head dropout")
    add("head-units", int, "hidden units in the head (0: linear head)")
    add("label-smoothing", float, "label smoothing of the cross-entropy")
    add("batch-size", int, "batch size")
    parser.add_argument(
        "--phase1", choices=("features", "images"), help="phase-one input (default: features)"
    )
    add("head-epochs", int, "maximum epochs of phase one")
    add("head-learning-rate", float, "Adam learning rate of phase one")
    add("head-patience", int, "early-stopping patience of phase one")
    add("fine-tune-epochs", int, "maximum epochs of phase two (0 skips it)")
    add("fine-tune-layers", int, "top backbone layers unfrozen in phase two")
    add("fine-tune-learning-rate", float, "Adam learning rate of phase two")
    add("fine-tune-patience", int, "early-stopping patience of phase two")
    add("seed", int, "random seed")
    add("feature-cache-dir", str, "cache of pooled features (default data/features)")
    parser.add_argument("--verbose", help="Keras verbosity: auto, 0, 1 or 2 (default: auto)")
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Merge defaults < --config < --hparams < explicit flags into a validated config."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
    if args.hparams:
        values.update(_hparams_to_config(load_hparams(args.hparams)))
        values["hparams_file"] = str(Path(args.hparams).resolve())
    for name, value in vars(args).items():
        if name in ("config", "hparams") or value is None:
            continue
        values[name] = value
    if "weights" in values and str(values["weights"]).lower() in ("none", "null", ""):
        values["weights"] = None
    if "verbose" in values and str(values["verbose"]).isdigit():
        values["verbose"] = int(values["verbose"])
    config = TrainConfig(**values)
    config.validate()
    return config


# ----------------------------------------------------------------------------- training


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced class weights (scikit-learn), so no_tumor (the smallest class) is not ignored."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    if len(present) != NUM_CLASSES:
        missing = sorted(set(CLASS_NAMES) - {CLASS_NAMES[i] for i in present})
        raise ValueError(f"the train split has no examples of: {', '.join(missing)}")
    weights = compute_class_weight("balanced", classes=np.arange(NUM_CLASSES), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def split_labels(split: str, config: str, data_dir: str | None) -> np.ndarray:
    from tumorlib.data import load_split

    examples = load_split(split, config, data_dir)
    batches = examples.map(lambda e: e["label"]).batch(4096).as_numpy_iterator()
    return np.concatenate(list(batches)).astype(np.int64)


def _callbacks(run_dir: Path, phase: str, patience: int, monitor: str = "val_loss") -> list:
    import keras

    checkpoint = run_dir / CHECKPOINT_DIR / f"{phase}_best.keras"
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, save_best_only=True, verbose=0
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.3, patience=max(1, patience // 2), min_lr=1e-6, verbose=1
        ),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / LOG_DIR / phase)),
        keras.callbacks.CSVLogger(str(run_dir / LOG_DIR / f"history_{phase}.csv")),
    ]


def _compile(model, learning_rate: float, label_smoothing: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def train_head_on_features(model, config: TrainConfig, run_dir: Path, weights: dict) -> None:
    """Phase one on cached pooled features; the fitted head is the model's head afterwards."""
    from tumorlib import features as features_lib
    from tumorlib.model import backbone_of, head_of

    kwargs = dict(
        image_size=config.image_size,
        alpha=config.alpha,
        weights=config.weights,
        data_dir_=config.data_dir,
        backbone=backbone_of(model),
        verbose=config.verbose,
    )
    if config.feature_cache_dir:
        kwargs["cache_dir"] = config.feature_cache_dir
    print("Phase 1: pooled backbone features (computed once, then cached)", flush=True)
    x_train, y_train = features_lib.cached_features("train", config.dataset_config, **kwargs)
    x_val, y_val = features_lib.cached_features("validation", config.dataset_config, **kwargs)
    head = head_of(model)
    _compile(head, config.head_learning_rate, config.label_smoothing)
    print(f"Phase 1: head on features ({len(x_train)} train, {len(x_val)} validation)")
    head.fit(
        x_train,
        _one_hot(y_train),
        validation_data=(x_val, _one_hot(y_val)),
        epochs=config.head_epochs,
        batch_size=config.batch_size,
        class_weight=weights,
        callbacks=_callbacks(run_dir, "head", config.head_patience),
        shuffle=True,
        verbose=config.verbose,
    )


def _pipelines(config: TrainConfig, augment_train: bool):
    from tumorlib.data import load_split, make_pipeline

    kw = dict(image_size=config.image_size, batch_size=config.batch_size, seed=config.seed)
    train = make_pipeline(
        load_split("train", config.dataset_config, config.data_dir), training=augment_train, **kw
    )
    val = make_pipeline(
        load_split("validation", config.dataset_config, config.data_dir), training=False, **kw
    )
    return train, val


def merge_histories(run_dir: Path) -> Path:
    """One ``history.csv`` over both phases (a ``phase`` column, a running ``epoch``)."""
    import pandas as pd

    frames = []
    offset = 0
    for phase in ("head", "fine_tune"):
        path = run_dir / LOG_DIR / f"history_{phase}.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        frame = pd.read_csv(path)
        frame.insert(0, "phase", phase)
        frame["epoch"] = frame["epoch"] + offset
        offset = int(frame["epoch"].max()) + 1
        frames.append(frame)
    out = run_dir / HISTORY_FILE
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


def predict_split(model, split: str, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of a split, un-augmented, in source order."""
    from tumorlib.data import load_split, make_pipeline

    examples = load_split(split, config.dataset_config, config.data_dir)
    pipeline = make_pipeline(
        examples, training=False, image_size=config.image_size,
        batch_size=config.batch_size, cache=False,
    )  # fmt: skip
    probs = model.predict(pipeline.map(lambda x, y: x), verbose=config.verbose)
    return probs, split_labels(split, config.dataset_config, config.data_dir)


def fit_calibration(model, config: TrainConfig, run_dir: Path) -> dict[str, float]:
    """Fit the temperature on validation and record ECE/NLL before and after."""
    from tumorlib.calibration import (
        apply_temperature_np,
        expected_calibration_error,
        fit_temperature,
    )

    probs, labels = predict_split(model, "validation", config)
    temperature = fit_temperature(probs, labels)
    scaled = apply_temperature_np(probs, temperature)

    def nll(p: np.ndarray) -> float:
        return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-7, 1.0))))

    payload = {
        "temperature": temperature,
        "fitted_on": f"{config.dataset_config}/validation",
        "num_examples": int(len(labels)),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(scaled, labels),
        "nll_before": nll(probs),
        "nll_after": nll(scaled),
        "validation_accuracy": float(np.mean(probs.argmax(1) == labels)),
    }
    write_json(run_dir / CALIBRATION_FILE, payload)
    return payload


def dataset_record(config: TrainConfig) -> dict[str, str]:
    from tumorlib.data import DATASET_NAME, get_builder

    builder = get_builder(config.dataset_config, config.data_dir)
    return {
        "name": DATASET_NAME,
        "config": config.dataset_config,
        "version": str(builder.info.version),
        "data_dir": str(Path(builder.data_dir_root).resolve()),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_config_record(config: TrainConfig) -> dict[str, Any]:
    from tumorlib.model import describe_weights

    record = dataclasses.asdict(config)
    record.pop("extra")
    record["weights_source"] = config.weights
    record["weights"] = describe_weights(config.weights, config.alpha, config.image_size)
    record["learning_rates"] = {
        "head": config.head_learning_rate,
        "fine_tune": config.fine_tune_learning_rate,
    }
    record["class_names"] = list(CLASS_NAMES)
    record["architecture"] = "MobileNetV2 -> GlobalAveragePooling2D -> head"
    return record


def train(config: TrainConfig) -> Path:
    """Run both phases and calibration; returns the run folder."""
    import keras

    from tumorlib.data import load_split
    from tumorlib.model import build_model, set_phase, trainable_layer_counts

    started = time.perf_counter()
    config.validate()
    if not config.run_name:
        config.run_name = "mobilenetv2-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    load_split("train", config.dataset_config, config.data_dir)  # clear error if not built
    run_dir = Path(config.runs_dir) / config.run_name
    if (run_dir / MODEL_FILE).exists():
        raise FileExistsError(
            f"run folder {run_dir} already holds a model; pick another --run-name"
        )
    keras.utils.set_random_seed(config.seed)
    model = build_model(
        image_size=config.image_size, alpha=config.alpha, weights=config.weights,
        dropout=config.dropout, head_units=config.head_units,
    )  # fmt: skip
    # Only now, with the weights loaded, does a run folder appear.
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    (run_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    record = run_config_record(config)
    record["dataset"] = dataset_record(config)
    record["status"] = "training"
    write_json(run_dir / CONFIG_FILE, record)

    weights = class_weights(split_labels("train", config.dataset_config, config.data_dir))
    record["class_weights"] = {CLASS_NAMES[i]: w for i, w in weights.items()}
    timings: dict[str, float] = {}

    set_phase(model, "head")
    record["layers_phase1"] = trainable_layer_counts(model)
    t0 = time.perf_counter()
    if config.head_epochs:
        if config.phase1 == "features":
            train_head_on_features(model, config, run_dir, weights)
        else:
            train_ds, val_ds = _pipelines(config, augment_train=False)
            _compile(model, config.head_learning_rate, config.label_smoothing)
            print("Phase 1: head on the frozen backbone (images)")
            model.fit(
                train_ds, validation_data=val_ds, epochs=config.head_epochs,
                class_weight=weights, verbose=config.verbose,
                callbacks=_callbacks(run_dir, "head", config.head_patience),
            )  # fmt: skip
    timings["phase1_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if config.fine_tune_epochs:
        set_phase(model, "fine_tune", config.fine_tune_layers)
        record["layers_phase2"] = trainable_layer_counts(model)
        _compile(model, config.fine_tune_learning_rate, config.label_smoothing)
        train_ds, val_ds = _pipelines(config, augment_train=True)
        print(
            f"Phase 2: fine-tuning the top {config.fine_tune_layers} backbone layers "
            f"({record['layers_phase2']['backbone_trainable']} with weights; BatchNorm frozen)"
        )
        model.fit(
            train_ds, validation_data=val_ds, epochs=config.fine_tune_epochs,
            class_weight=weights, verbose=config.verbose,
            callbacks=_callbacks(run_dir, "fine_tune", config.fine_tune_patience),
        )  # fmt: skip
    timings["phase2_s"] = time.perf_counter() - t0
    merge_histories(run_dir)

    set_phase(model, "head")  # the saved model is for inference: nothing left trainable inside
    model.save(run_dir / MODEL_FILE)
    calibration = fit_calibration(model, config, run_dir)
    timings["total_s"] = time.perf_counter() - started
    record["status"] = "finished"
    record["timings"] = {k: round(v, 1) for k, v in timings.items()}
    record["peak_memory_mb"] = round(peak_memory_mb(), 1)
    record["calibration"] = calibration
    write_json(run_dir / CONFIG_FILE, record)
    print(
        f"Run {run_dir}: validation accuracy {calibration['validation_accuracy']:.4f}, "
        f"temperature {calibration['temperature']:.3f} (ECE {calibration['ece_before']:.4f} -> "
        f"{calibration['ece_after']:.4f}); {timings['total_s'] / 60:.1f} min, peak memory "
        f"{record['peak_memory_mb']:.0f} MB"
    )
    return run_dir


def main(argv: list[str] | None = None) -> int:
    from tumorlib.model import WeightsError

    try:
        config = config_from_args(argv)
        train(config)
    except (WeightsError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
