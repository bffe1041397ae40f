"""Input gate: refuse images that are not brain MRI slices before classifying them.

``python -m tumorlib.input_gate RUN`` fits the gate on the run's training split, sets its
thresholds on validation, measures it on test and on generated negatives, and writes
``RUN/input_gate.npz`` (the statistics the export embeds), ``RUN/input_gate.json`` (the measured
rates) and ``RUN/safety/input_gate.png`` (file names from :mod:`tumorlib.runs`).

The pieces: :mod:`tumorlib.gate` (the statistics, fitting, evaluation),
:mod:`tumorlib.gate_features` (what is measured), :mod:`tumorlib.gate_negatives` (non-MRI
images), :mod:`tumorlib.gate_graph` (the gate inside the served graph).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tumorlib.gate import DEFAULT_FALSE_REJECTION, Features, InputGate, evaluate_gate, fit_gate
from tumorlib.gate_features import (
    DEFAULT_LAYERS,
    feature_extractor,
    features_for_images,
    split_features,
)
from tumorlib.gate_negatives import encode_png, generate_negatives

log = logging.getLogger(__name__)


def plot_gate(path: Path, scores: dict[str, np.ndarray]) -> Path:
    """Histogram of gate scores per group, threshold at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    finite = np.concatenate([s[np.isfinite(s)] for s in scores.values()])
    bins = np.logspace(np.log10(max(finite.min(), 1e-3)), np.log10(finite.max() * 1.1), 50)
    for name, s in scores.items():
        ax.hist(s, bins=bins.tolist(), alpha=0.5, label=f"{name} (n={len(s)})")
    ax.axvline(1.0, color="black", ls="--", label="threshold (score 1)")
    ax.set_xscale("log")
    ax.set_xlabel("gate score: max over layers of Mahalanobis distance / threshold")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title("Input gate: accepted left of the line")
    from tumorlib.plots import save_figure

    return save_figure(fig, path)


def _negative_features(extractor, layers: Sequence[str], size: int) -> tuple[list[str], Features]:
    """Names and gate features of the generated negatives, encoded as PNG like an upload."""
    negatives = generate_negatives(size)
    names = [name for name, _ in negatives]
    encoded = [encode_png(image) for _, image in negatives]
    return names, features_for_images(extractor, layers, encoded, size)


def _by_kind(names: list[str], features: Features) -> dict[str, Features]:
    """Split negatives' features by kind (the name before the first ``:``)."""
    kinds = np.array([n.split(":")[0] for n in names])
    return {k: {layer: v[kinds == k] for layer, v in features.items()} for k in sorted(set(kinds))}


def run_gate(
    run_path: str | Path,
    *,
    config: str = "clean",
    data_dir_: str | None = None,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
    layers: Sequence[str] = DEFAULT_LAYERS,
) -> dict:
    """Fit on train, thresholds on validation, evaluate on test and negatives; write files."""
    from tumorlib.runs import GATE_FILE, GATE_PLOT, GATE_SUMMARY_FILE, load_run, write_json

    run = load_run(run_path)
    size = run.image_size
    extractor = feature_extractor(run.load_model(), layers)
    feats = {
        s: split_features(extractor, layers, s, config, data_dir_, size)
        for s in ("train", "validation", "test")
    }
    gate: InputGate = fit_gate(feats["train"], feats["validation"], false_rejection)
    gate.save(run.path / GATE_FILE)
    names, neg_feats = _negative_features(extractor, layers, size)
    report = evaluate_gate(gate, feats["test"], _by_kind(names, neg_feats))
    report["config"] = config
    # Negatives that got through, for inspection.
    report["accepted_negatives"] = [n for n, ok in zip(names, gate.accept(neg_feats)) if ok]
    plot = plot_gate(
        run.safety_dir / GATE_PLOT,
        {
            "validation": gate.score(feats["validation"]),
            "test": gate.score(feats["test"]),
            "negatives": gate.score(neg_feats),
        },
    )
    report["plot"] = str(plot.relative_to(run.path))
    # The export copies these into its metadata: drift watch's reference (docs/audit.md).
    report["validation_gate_scores"] = [
        round(float(v), 4) for v in gate.score(feats["validation"]) if np.isfinite(v)
    ]
    write_json(run.path / GATE_SUMMARY_FILE, report)
    log.info("input gate of %s written to %s", run.path, run.path / GATE_FILE)
    return report


def _print_report(report: dict) -> None:
    print(
        json.dumps({k: v for k, v in report.items() if k != "negative_rejection_by_kind"}, indent=2)
    )
    for kind, v in report["negative_rejection_by_kind"].items():
        print(f"  {kind:>10}: rejected {v['rate']:.1%} of {v['n']}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tumorlib.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.input_gate",
        description="Fit the out-of-distribution input gate of a run and evaluate it.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--config", default="clean")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--false-rejection",
        type=float,
        default=DEFAULT_FALSE_REJECTION,
        help="target false-rejection rate on validation (sets the thresholds)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=list(DEFAULT_LAYERS),
        help="backbone layers whose pooled activations are gated",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        report = run_gate(
            args.run,
            config=args.config,
            data_dir_=args.data_dir,
            false_rejection=args.false_rejection,
            layers=args.layers,
        )
        _print_report(report)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
