"""Train the classifier: ``python -m tumorlib.train [flags] [--config FILE] [--hparams FILE]``.

Two phases, the standard transfer-learning recipe (:mod:`tumorlib.training.phases`): the head on
the frozen ImageNet backbone, then the top backbone layers fine-tuned on augmented images, both
with class weights from the train split (:mod:`tumorlib.training.class_weights`). A temperature is
then fitted on the validation split (:mod:`tumorlib.evaluation.run_calibration`). Everything lands
in a run folder (:mod:`tumorlib.contracts.runs`); the command prints its path.

Settings come from, in increasing precedence: defaults, ``--config`` (JSON/YAML with
:class:`~tumorlib.training.train_config.TrainConfig` field names), ``--hparams`` (the tuning
helper's best hyperparameters), explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.cli import EXPECTED_ERRORS, run_command
from tumorlib.contracts.runs import CHECKPOINT_DIR, CONFIG_FILE, LOG_DIR, MODEL_FILE, write_json
from tumorlib.training.sampling import BALANCES
from tumorlib.training.train_config import (
    TrainConfig,
    hparams_to_config,
    load_config_file,
    load_hparams,
)

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------ command line


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
    parser.add_argument(
        "--dataset-config",
        choices=("multi_sequence", "clean"),
        help="training data: SARTAJ clean + TCGA-LGG (CC BY-NC-SA 4.0) or SARTAJ only "
        f"(default: {defaults.dataset_config})",
    )
    parser.add_argument(
        "--sartaj-only",
        action="store_const",
        const="clean",
        dest="dataset_config",
        help="train on SARTAJ's clean splits only (no non-commercial TCGA-LGG data)",
    )

    def add(name: str, typ: type, help_: str) -> None:
        default = getattr(defaults, name.replace("-", "_"))
        parser.add_argument(f"--{name}", type=typ, help=f"{help_} (default: {default})")

    add("run-name", str, "run folder name under --runs-dir")
    add("runs-dir", str, "where run folders go")
    add("image-size", int, "square input size")
    parser.add_argument(
        "--alpha",
        type=float,
        choices=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        help=f"MobileNetV2 width multiplier (default: {defaults.alpha})",
    )
    add("archive-share", float, "expected TCGA-LGG share of an epoch (multi_sequence)")
    add("patient-cap", int, "most slices one patient contributes per epoch")
    parser.add_argument(
        "--balance",
        choices=BALANCES,
        help="loss weights balance the classes over the epoch, or within each source "
        f"(default: {defaults.balance})",
    )
    add("dropout", float, "head dropout")
    add("head-units", int, "hidden units in the head (0: linear head)")
    add("label-smoothing", float, "label smoothing of the cross-entropy")
    add("batch-size", int, "batch size per replica (global = this x replicas)")
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
    parser.add_argument(
        "--fine-tune-schedule",
        choices=("plateau", "cosine"),
        help="phase two's learning rate: reduced on plateaus, or a cosine over all epochs "
        f"(default: {defaults.fine_tune_schedule})",
    )
    add("seed", int, "random seed")
    add("acquisition-augment", float, "probability of acquisition changes in augmentation")
    add("init-from", str, "a finished run folder whose weights this run starts from")
    add("feature-cache-dir", str, "cache of pooled features (default data/features)")
    parser.add_argument(
        "--strategy",
        choices=("default", "mirrored", "multi_worker"),
        help="tf.distribute strategy; multi_worker reads TF_CONFIG (default: default)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        default=None,
        help="mixed_float16 compute (GPU only; refused on a CPU)",
    )
    parser.add_argument("--verbose", help="Keras verbosity: auto, 0, 1 or 2 (default: auto)")
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Merge defaults < --config < --hparams < explicit flags into a validated config."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
    if args.hparams:
        values.update(hparams_to_config(load_hparams(args.hparams)))
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


# --------------------------------------------------------------------------- run record


def dataset_record(config: TrainConfig) -> dict[str, str]:
    """Name, config, version and location of the dataset the run was trained on."""
    from tumorlib.data.pipeline import DATASET_NAME, get_builder

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
    """The settings as ``config.json`` records them (weights described, not just named)."""
    from tumorlib.model.classifier import describe_weights

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


# ----------------------------------------------------------------------------- training


def _new_run(config: TrainConfig, strategy):
    """Validate, seed and build the model (in the strategy's scope); only then create the folder.

    Returns ``(model, run_dir, out_dir, record)``: ``out_dir`` is where this process writes
    (the run folder on the chief, a scratch folder on other workers), the record already
    written there as ``config.json``.
    """
    import keras

    from tumorlib.data.pipeline import load_split
    from tumorlib.model.classifier import build_model
    from tumorlib.training import distribute

    config.validate()
    if not config.run_name:
        if config.strategy == "multi_worker":
            raise ValueError("--strategy multi_worker needs --run-name (one name for all workers)")
        config.run_name = "mobilenetv2-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    load_split("train", config.dataset_config, config.data_dir)  # clear error if not built
    run_dir = Path(config.runs_dir) / config.run_name
    if (run_dir / MODEL_FILE).exists():
        raise FileExistsError(
            f"run folder {run_dir} already holds a model; pick another --run-name"
        )
    out_dir = distribute.write_dir(run_dir, strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(
            image_size=config.image_size, alpha=config.alpha, weights=config.weights,
            dropout=config.dropout, head_units=config.head_units,
        )  # fmt: skip
        if config.init_from:
            model.set_weights(_initial_weights(config))
    # Only now, with the weights loaded, does a run folder appear.
    (out_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    record = run_config_record(config)
    record["dataset"] = dataset_record(config)
    record["distribution"] = {
        "strategy": config.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "global_batch_size": distribute.global_batch_size(config.batch_size, strategy),
    }
    record["status"] = "training"
    write_json(out_dir / CONFIG_FILE, record)
    return model, run_dir, out_dir, record


def _initial_weights(config: TrainConfig) -> list:
    """The weights of ``config.init_from``'s model, which must match this run's architecture."""
    import keras

    source = Path(str(config.init_from)) / MODEL_FILE
    if not source.is_file():
        raise FileNotFoundError(f"--init-from: {source} does not exist (not a finished run)")
    previous = keras.models.load_model(source, compile=False)
    shape = tuple(previous.input_shape[1:3])
    if shape != (config.image_size, config.image_size):
        raise ValueError(
            f"--init-from: {source} takes {shape[0]} px images; this run is {config.image_size} px"
        )
    return previous.get_weights()


def _run_phase(phase: str, model, run_dir: Path, out_dir: Path, fit) -> bool:
    """Run ``fit()`` unless a restarted job already finished this phase; returns whether it ran.

    A finished phase leaves its end weights beside the backup state, so a job restarted after a
    crash in phase two does not redo phase one. Every worker looks in the run folder (the
    chief's), so all of them skip, or all redo, the same phase.
    """
    from tumorlib.training.checkpoints import phase_done_file

    done = phase_done_file(run_dir, phase)
    if done.exists():
        logger.info("Phase %s finished before a restart: loading %s", phase, done)
        model.load_weights(done)
        return False
    fit()
    done = phase_done_file(out_dir, phase)
    done.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(done)
    return True


def _sampling_plan(config: TrainConfig):
    """What an epoch draws (:mod:`tumorlib.training.sampling`); the train split must hold every
    class."""
    from tumorlib.training.class_weights import require_every_class
    from tumorlib.training.sampling import split_plan

    plan = split_plan(
        config.dataset_config,
        config.data_dir,
        archive_share=config.archive_share,
        patient_cap=config.patient_cap,
    )
    require_every_class(plan.labels[plan.probabilities > 0], "train")
    return plan


def _local_model(model, out_dir: Path, config: TrainConfig):
    """The model for single-process inference: itself, or reloaded outside the strategy (a
    distributed model's ``predict`` would wait for the other workers)."""
    if config.strategy == "default":
        return model
    import keras

    return keras.models.load_model(out_dir / MODEL_FILE)


def train(config: TrainConfig) -> Path:
    """Run both phases and calibration; returns the run folder."""
    import shutil

    from tumorlib.evaluation.run_calibration import calibrate_on_validation
    from tumorlib.model.classifier import set_phase, trainable_layer_counts
    from tumorlib.training import distribute, phases
    from tumorlib.training.checkpoints import backup_dir
    from tumorlib.training.sampling import epochs

    started = time.perf_counter()
    distribute.set_mixed_precision(config.mixed_precision)
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    model, run_dir, out_dir, record = _new_run(config, strategy)
    plan = _sampling_plan(config)
    weights = plan.class_weights()  # balanced over what an epoch draws
    drawn = epochs(plan, config.balance)  # sampled epochs and per-source balance, if any
    record["class_weights"] = {CLASS_NAMES[i]: w for i, w in weights.items()}
    record["sampling"] = {**plan.summary(), "balance": config.balance}
    timings: dict[str, float] = {}

    set_phase(model, "head")
    record["layers_phase1"] = trainable_layer_counts(model)
    t0 = time.perf_counter()
    if config.head_epochs:
        phase_one = (
            phases.train_head_on_features
            if config.phase1 == "features"
            else phases.train_head_on_images
        )
        fit_head = lambda: phase_one(model, config, out_dir, weights, strategy, chief, drawn)  # noqa: E731
        _run_phase("head", model, run_dir, out_dir, fit_head)
    timings["phase1_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if config.fine_tune_epochs:
        set_phase(model, "fine_tune", config.fine_tune_layers)
        record["layers_phase2"] = trainable_layer_counts(model)
        fit_all = lambda: phases.fine_tune(model, config, out_dir, weights, strategy, drawn)  # noqa: E731
        _run_phase("fine_tune", model, run_dir, out_dir, fit_all)
    timings["phase2_s"] = time.perf_counter() - t0
    phases.merge_histories(out_dir)

    set_phase(model, "head")  # the saved model is for inference: nothing left trainable inside
    model.save(out_dir / MODEL_FILE)
    if not chief:  # workers are done: the chief calibrates and writes the record
        distribute.remove_scratch(out_dir, run_dir)
        return run_dir
    calibration = calibrate_on_validation(
        _local_model(model, out_dir, config), out_dir, dataset_config=config.dataset_config,
        data_dir=config.data_dir, image_size=config.image_size, batch_size=config.batch_size,
        verbose=config.verbose,
    )  # fmt: skip
    shutil.rmtree(backup_dir(out_dir), ignore_errors=True)  # finished: nothing to resume
    timings["total_s"] = time.perf_counter() - started
    record["status"] = "finished"
    record["timings"] = {k: round(v, 1) for k, v in timings.items()}
    record["peak_memory_mb"] = round(peak_memory_mb(), 1)
    record["calibration"] = calibration
    write_json(out_dir / CONFIG_FILE, record)
    logger.info(
        "Run %s: validation accuracy %.4f, temperature %.3f (ECE %.4f -> %.4f); %.1f min, "
        "peak memory %.0f MB",
        run_dir, calibration["validation_accuracy"], calibration["temperature"],
        calibration["ece_before"], calibration["ece_after"], timings["total_s"] / 60,
        record["peak_memory_mb"],
    )  # fmt: skip
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Train from the command line; prints the run folder (exit 1 if training failed)."""

    def body() -> None:
        run_dir = train(config_from_args(argv))
        print(run_dir)

    return run_command(body, EXPECTED_ERRORS + (FileExistsError,))


if __name__ == "__main__":
    sys.exit(main())
