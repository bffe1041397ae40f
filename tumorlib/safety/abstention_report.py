"""Abstention for a run: thresholds chosen on the validation split, checked on test and the second
source, written to the run folder with a risk-coverage plot (``python -m tumorlib.abstention``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.cli import run_command
from tumorlib.contracts.runs import (
    ABSTENTION_FILE,
    RISK_COVERAGE_PLOT,
    TEST_PREDICTIONS_FILE,
    VALIDATION_PREDICTIONS_FILE,
    load_run,
    write_json,
)
from tumorlib.contracts.serving_contract import UNCERTAIN_MESSAGE
from tumorlib.model.loading import load_run_model
from tumorlib.safety.abstention import (
    DEFAULT_RULE,
    DEFAULT_TARGET_PRECISION,
    PREDICTION_BATCH_SIZE,
    RULES,
    AbstentionResult,
    AbstentionThreshold,
    abstain,
    choose_class_thresholds,
    choose_threshold,
    evaluate_threshold,
    risk_coverage_curve,
)


def plot_risk_coverage(
    path: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    threshold: AbstentionThreshold,
    test_result: AbstentionResult | None = None,
) -> Path:
    """Accepted accuracy vs coverage per split, with the target and the chosen operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    lowest = 1.0
    for name, (probs, labels) in curves.items():
        curve = risk_coverage_curve(probs, labels)
        ax.plot(curve["coverage"], curve["accuracy"], label=name)
        # The first few points (a handful of images) swing wildly; scale to the rest.
        lowest = min(lowest, float(curve["accuracy"][curve["coverage"] >= 0.05].min()))
    ax.axhline(threshold.target_precision, color="grey", ls="--", lw=1, label="target precision")
    if threshold.reachable:
        ax.plot(
            threshold.coverage,
            threshold.precision,
            "o",
            color="black",
            label=f"chosen on validation (t={threshold.threshold:.3f})",
        )
    if test_result is not None and test_result.accepted:
        ax.plot(
            test_result.coverage,
            test_result.accepted_accuracy,
            "s",
            color="red",
            label="same threshold on test",
        )
    ax.set_xlabel("coverage (fraction of slices answered)")
    ax.set_ylabel("accuracy of answered slices")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(max(0.0, min(lowest, threshold.target_precision) - 0.02), 1.005)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Risk–coverage (temperature-scaled confidence)")
    from tumorlib.evaluation.plots import save_figure

    return save_figure(fig, path)


def run_abstention(
    run_path: str | Path,
    *,
    config: str | None = None,
    data_dir_: str | None = None,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    rule: str = DEFAULT_RULE,
) -> dict:
    """Choose the threshold on validation, evaluate on test, write JSON, PNG and predictions.

    ``config`` defaults to the run's own (its validation split chose the model). Both rules are
    chosen and reported — one threshold, and one per predicted class
    (:func:`choose_class_thresholds`); ``rule`` names the one the export serves. When the
    second-source archive is present, its slices measure both (never choose them).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    from tumorlib.evaluation.predictions import predict_split
    from tumorlib.model.calibration import apply_temperature_np

    run = load_run(run_path)
    config = config or run.dataset_config
    model = load_run_model(run)
    out = {}
    for split in ("validation", "test"):
        raw, labels = predict_split(
            model, split, config, data_dir_,
            image_size=run.image_size, batch_size=PREDICTION_BATCH_SIZE,
        )  # fmt: skip
        out[split] = (apply_temperature_np(raw, run.temperature), labels)
    chosen = choose_threshold(*out["validation"], target_precision=target_precision)
    test = evaluate_threshold(*out["test"], chosen.threshold)
    per_class = choose_class_thresholds(*out["validation"], target_precision=target_precision)
    per_class_test = evaluate_threshold(*out["test"], per_class.thresholds)
    safety = run.safety_dir
    safety.mkdir(parents=True, exist_ok=True)
    np.savez(safety / TEST_PREDICTIONS_FILE, probabilities=out["test"][0], labels=out["test"][1])
    np.savez(
        safety / VALIDATION_PREDICTIONS_FILE,
        probabilities=out["validation"][0],
        labels=out["validation"][1],
    )
    plot = plot_risk_coverage(safety / RISK_COVERAGE_PLOT, out, chosen, test)
    second = _second_source(
        model, run, {"single": chosen.threshold, "per_class": per_class.thresholds}
    )
    report = {
        "config": config,
        "temperature": run.temperature,
        "rule": rule,
        "chosen_on_validation": asdict(chosen),
        "test": asdict(test),
        "per_class": {
            "chosen_on_validation": asdict(per_class),
            "test": asdict(per_class_test),
            "thresholds_by_class": dict(zip(CLASS_NAMES, per_class.thresholds)),
        },
        "second_source": second,
        "message": UNCERTAIN_MESSAGE,
        "plot": str(plot.relative_to(run.path)),
    }
    write_json(run.path / ABSTENTION_FILE, report)
    return report


def _second_source(model, run, thresholds: dict[str, Any]) -> dict[str, Any] | None:
    """Coverage and tumour / no-tumour accuracy of answered second-source slices, per rule
    (abstention only: the input gate's refusals are measured by ``tumorlib.safety.input_gate``)."""
    from tumorlib.data.second_source import (
        default_archive,
        load_second_source,
        predict_images,
        tumour_answers,
    )
    from tumorlib.model.calibration import apply_temperature_np

    if default_archive() is None:
        return None
    source = load_second_source()
    raw = predict_images(model, source.images, run.image_size)
    probabilities = apply_temperature_np(raw, run.temperature)
    right = tumour_answers(probabilities, CLASS_NAMES.index("no_tumor")) == source.tumour
    report: dict[str, Any] = {"n": len(source), "tumour_vs_no_tumour_accuracy": float(right.mean())}
    for name, threshold in thresholds.items():
        answered = ~abstain(probabilities, threshold)
        report[name] = {
            "coverage": float(answered.mean()),
            "answered_tumour_vs_no_tumour_accuracy": float(right[answered].mean())
            if answered.any()
            else float("nan"),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.abstention",
        description="Choose the abstention threshold on validation; report coverage on test.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument(
        "--config", default=None, help="dataset config (default: the one the run trained on)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data dir ($TFDS_DATA_DIR, else data/tensorflow_datasets)",
    )
    parser.add_argument("--target-precision", type=float, default=DEFAULT_TARGET_PRECISION)
    parser.add_argument(
        "--rule",
        choices=RULES,
        default=DEFAULT_RULE,
        help="which threshold rule the export serves (both are reported)",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        report = run_abstention(
            args.run,
            config=args.config,
            data_dir_=args.data_dir,
            target_precision=args.target_precision,
            rule=args.rule,
        )
        chosen, test = report["chosen_on_validation"], report["test"]
        per_class = report["per_class"]
        print(
            f"per-class thresholds {per_class['thresholds_by_class']}: validation coverage "
            f"{per_class['chosen_on_validation']['coverage']:.3f}; test coverage "
            f"{per_class['test']['coverage']:.3f}, accepted accuracy "
            f"{per_class['test']['accepted_accuracy']:.4f}"
        )
        if report["second_source"]:
            print(f"second source: {report['second_source']}")
        print(
            f"threshold {chosen['threshold']:.4f} (validation: coverage {chosen['coverage']:.3f}, "
            f"precision {chosen['precision']:.4f}; reachable={chosen['reachable']})\n"
            f"test: coverage {test['coverage']:.3f}, accepted accuracy "
            f"{test['accepted_accuracy']:.4f} ({test['errors_accepted']} errors among "
            f"{test['accepted']}/{test['total']}), overall accuracy {test['overall_accuracy']:.4f}"
        )

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
