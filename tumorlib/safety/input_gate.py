"""Input gate: refuse images that are not brain MRI slices before classifying them.

``python -m tumorlib.input_gate RUN`` fits the gate on the run's training split, sets its
thresholds on validation, measures it on test and on generated negatives, and writes
``RUN/input_gate.npz`` (the statistics the export embeds), ``RUN/input_gate.json`` (the measured
rates) and ``RUN/safety/input_gate.png`` (file names from :mod:`tumorlib.contracts.runs`).

The pieces: :mod:`tumorlib.safety.gate` (the statistics, fitting, evaluation),
:mod:`tumorlib.safety.gate_features` (what is measured), :mod:`tumorlib.safety.gate_negatives`
(non-MRI images), :mod:`tumorlib.safety.gate_graph` (the gate inside the served graph).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.inputs.png import encode_png
from tumorlib.model.loading import load_run_model
from tumorlib.safety.gate import (
    DEFAULT_FALSE_REJECTION,
    Features,
    InputGate,
    evaluate_gate,
    fit_gate,
    fit_linear_check,
)
from tumorlib.safety.gate_features import (
    DEFAULT_LAYERS,
    feature_extractor,
    features_for_images,
    split_features,
)
from tumorlib.safety.gate_negatives import generate_negatives, unusable_views

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
    from tumorlib.evaluation.plots import save_figure

    return save_figure(fig, path)


# Seeds of the acquisition changes applied to each split's second copy (fixed: reproducible).
CHANGED_SEEDS = {"train": 11, "validation": 12, "test": 13}
VIEW_SLICES = 24  # validation slices made into unusable views (quarter crops, rotations, mosaics)


FIT_NEGATIVES = {"seed": 0, "per_kind": 16, "photo_half": 0}  # what the linear check learns from
HELD_OUT_NEGATIVES = {"seed": 1, "per_kind": 8, "photo_half": 1}  # what it is measured on
NEGATIVE_SIZE = 256  # generated at one size (the preprocessing resizes them like any upload)
FAR_FACTOR = 2.0  # the distances' thresholds, widened: they only catch what is far out


def _negative_features(
    extractor, layers: Sequence[str], size: int, negatives: list[tuple[str, np.ndarray]]
) -> tuple[list[str], Features]:
    """Names and gate features of non-MRI images, encoded as PNG like an upload."""
    names = [name for name, _ in negatives]
    encoded = [encode_png(image) for _, image in negatives]
    return names, features_for_images(extractor, layers, encoded, size)


def _kind(name: str) -> str:
    return name.split(":")[0]


def _leave_kind_out(
    positives: Features,
    validation: Features,
    fit_names: list[str],
    fit_neg: Features,
    eval_names: list[str],
    eval_neg: Features,
    false_rejection: float,
) -> dict[str, Any]:
    """Rejection of each held-out negative kind by a linear check fitted without that kind: how
    the check does on a kind of image it has never seen."""
    fit_kinds, eval_kinds = (
        np.array([_kind(n) for n in fit_names]),
        np.array([_kind(n) for n in eval_names]),
    )
    out = {}
    for kind in sorted(set(eval_kinds)):
        keep = fit_kinds != kind
        check = fit_linear_check(
            positives, {k: v[keep] for k, v in fit_neg.items()}, validation, false_rejection
        )
        rows = eval_kinds == kind
        out[kind] = _rate(check.score({k: v[rows] for k, v in eval_neg.items()}) > 1.0)
    return out


def _by_kind(names: list[str], features: Features) -> dict[str, Features]:
    """Split negatives' features by kind (the name before the first ``:``)."""
    kinds = np.array([n.split(":")[0] for n in names])
    return {k: {layer: v[kinds == k] for layer, v in features.items()} for k in sorted(set(kinds))}


def _joined(*parts: Features) -> Features:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _validation_slices(config: str, data_dir_: str | None, size: int) -> list[np.ndarray]:
    """A few validation slices as uint8 images (for the unusable views)."""
    from tumorlib.data import pipeline as data

    ds = data.load_pipeline(
        "validation", config, training=False, data_dir_=data_dir_, image_size=size,
        batch_size=VIEW_SLICES, cache=False,
    )  # fmt: skip
    images, _ = next(iter(ds))
    return list(np.round((images.numpy() + 1.0) * 127.5).astype(np.uint8))


def _rate(mask: np.ndarray) -> dict[str, Any]:
    return {"rate": float(np.mean(mask)) if len(mask) else float("nan"), "n": int(len(mask))}


def _second_source_report(
    extractor, layers: Sequence[str], size: int, gate: InputGate, familiarity: InputGate
) -> dict[str, Any] | None:
    """Rejection and unfamiliar rates on the second-source slices (measured, never fitted)."""
    from tumorlib.data.second_source import default_archive, load_second_source

    if default_archive() is None:
        return None
    source = load_second_source()
    feats = features_for_images(extractor, layers, source.images, size)
    rejected, unfamiliar = ~gate.accept(feats), ~familiarity.accept(feats)
    collections = np.array(source.collection)
    return {
        "rejected_as_not_brain_mri": _rate(rejected),
        "unfamiliar": _rate(unfamiliar),
        "by_collection": {
            c: {
                "rejected_as_not_brain_mri": _rate(rejected[collections == c]),
                "unfamiliar": _rate(unfamiliar[collections == c]),
            }
            for c in sorted(set(source.collection))
        },
        "rejected_names": [n for n, r in zip(source.names, rejected) if r],
    }


def run_gate(
    run_path: str | Path,
    *,
    config: str | None = None,
    data_dir_: str | None = None,
    false_rejection: float = DEFAULT_FALSE_REJECTION,
    layers: Sequence[str] = DEFAULT_LAYERS,
) -> dict:
    """Fit both checks, measure them, and write the run's gate files.

    - The **brain-MRI check** (``input_gate.npz``: "is this a brain MRI slice at all?") is
      learnt from the training slices *and* a copy of each under random acquisition changes
      (:mod:`tumorlib.images.acquisition`: other contrast, gamma, bias field, blur, noise, frames,
      burnt-in text, field of view) — every sequence is a brain MRI, so none may be refused for
      its contrast: a linear discriminant against generated non-MRI images
      (:func:`~tumorlib.safety.gate.fit_linear_check`, threshold on validation), plus the per-layer
      distances with thresholds widened by :data:`FAR_FACTOR` as a net for anything far out.
      It is measured on negatives it was not fitted on (another seed, the other half of the
      packaged photos), and per kind with that kind left out of fitting.
    - The **familiarity check** (``familiarity.npz``: "is this like the data the model learnt
      from?") is the same statistics fitted on the unchanged slices only; an image outside it
      is still classified, with an "unfamiliar acquisition" flag.
    """
    from tumorlib.contracts import runs

    run = runs.load_run(run_path)
    config = config or run.dataset_config
    size = run.image_size
    extractor = feature_extractor(load_run_model(run), layers, probabilities=False)

    def features(split: str, changed: bool) -> Features:
        seed = CHANGED_SEEDS[split] if changed else None
        return split_features(
            extractor, layers, split, config, data_dir_, size, acquisition_seed=seed
        )

    plain = {s: features(s, False) for s in CHANGED_SEEDS}
    changed = {s: features(s, True) for s in CHANGED_SEEDS}
    positives = _joined(plain["train"], changed["train"])
    validation = _joined(plain["validation"], changed["validation"])
    fit_names, fit_neg = _negative_features(
        extractor, layers, size, generate_negatives(NEGATIVE_SIZE, **FIT_NEGATIVES)
    )
    gate = fit_gate(positives, validation, false_rejection, far_factor=FAR_FACTOR)
    gate.linear = fit_linear_check(positives, fit_neg, validation, false_rejection)
    familiarity = fit_gate(plain["train"], plain["validation"], false_rejection)
    gate.save(run.path / runs.GATE_FILE)
    familiarity.save(run.path / runs.FAMILIARITY_FILE)

    names, held_out = _negative_features(
        extractor,
        layers,
        size,
        generate_negatives(NEGATIVE_SIZE, **HELD_OUT_NEGATIVES)
        + unusable_views(_validation_slices(config, data_dir_, size)),
    )
    is_view = np.array([n.startswith("view:") for n in names])
    generated = {k: v[~is_view] for k, v in held_out.items()}
    generated_names = [n for n, view in zip(names, is_view) if not view]
    report = evaluate_gate(gate, plain["test"], _by_kind(generated_names, generated))
    report["config"] = config
    report["far_factor"] = FAR_FACTOR
    report["linear_check"] = {
        "layers": list(gate.linear.layers),
        "threshold_logit": gate.linear.threshold,
        "fitted_on_negatives": len(fit_names),
        "negatives_fit": FIT_NEGATIVES,
        "negatives_measured": HELD_OUT_NEGATIVES,
    }
    report["negative_rejection_leave_kind_out"] = _leave_kind_out(
        positives, validation, fit_names, fit_neg, generated_names, generated, false_rejection
    )
    report["accepted_negatives"] = [
        n for n, ok, view in zip(names, gate.accept(held_out), is_view) if ok and not view
    ]
    report["test_changed_false_rejection_rate"] = float(np.mean(~gate.accept(changed["test"])))
    views = np.array([n.split(":")[1] for n in names if n.startswith("view:")])
    view_rejected = ~gate.accept({k: v[is_view] for k, v in held_out.items()})
    report["unusable_views_rejection_by_kind"] = {
        k: _rate(view_rejected[views == k]) for k in sorted(set(views))
    }
    report["familiarity"] = {
        "layers": [{"layer": g.layer, "threshold": g.threshold} for g in familiarity.layers],
        "test_unfamiliar_rate": float(np.mean(~familiarity.accept(plain["test"]))),
        "test_changed_unfamiliar_rate": float(np.mean(~familiarity.accept(changed["test"]))),
        "validation_familiarity_scores": [
            round(float(v), 4) for v in familiarity.score(plain["validation"]) if np.isfinite(v)
        ],
    }
    report["second_source"] = _second_source_report(extractor, layers, size, gate, familiarity)
    plot = plot_gate(
        run.safety_dir / runs.GATE_PLOT,
        {
            "validation": gate.score(plain["validation"]),
            "validation, acquisition changed": gate.score(changed["validation"]),
            "test": gate.score(plain["test"]),
            "generated negatives": gate.score(generated),
        },
    )
    report["plot"] = str(plot.relative_to(run.path))
    # The export copies these into its metadata: drift watch's reference (docs/audit.md).
    report["validation_gate_scores"] = [
        round(float(v), 4) for v in gate.score(plain["validation"]) if np.isfinite(v)
    ]
    runs.write_json(run.path / runs.GATE_SUMMARY_FILE, report)
    log.info("input gate of %s written to %s", run.path, run.path / runs.GATE_FILE)
    return report


def _print_report(report: dict) -> None:
    long = ("negative_rejection_by_kind", "validation_gate_scores", "familiarity", "second_source")
    print(json.dumps({k: v for k, v in report.items() if k not in long}, indent=2))
    familiarity = {k: v for k, v in report["familiarity"].items() if "scores" not in k}
    print(json.dumps({"familiarity": familiarity}, indent=2))
    if report.get("second_source"):
        source = {k: v for k, v in report["second_source"].items() if k != "rejected_names"}
        print(json.dumps({"second_source": source}, indent=2))
    for kind, v in report["negative_rejection_by_kind"].items():
        print(f"  {kind:>14}: rejected {v['rate']:.1%} of {v['n']}")
    for kind, v in report["unusable_views_rejection_by_kind"].items():
        print(f"  view {kind:>9}: rejected {v['rate']:.1%} of {v['n']}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.input_gate",
        description="Fit the out-of-distribution input gate of a run and evaluate it.",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument(
        "--config", default=None, help="dataset config (default: the one the run trained on)"
    )
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
