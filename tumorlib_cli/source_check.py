"""``tumorlib source-check``: how the served model's safety layer holds on another hospital's data.

Why a command: the figures that decide whether the tool travels — how many real brain MRI slices
of another source are refused as "not a brain MRI", how many are answered rather than referred,
and how often an answer that is *stated* (neither referred nor flagged unfamiliar) is wrong —
must come from exactly what is deployed: the exported ``serving_default`` (in-process or over
REST), not a re-implementation. By default it reads the second-source archive
(``../shared/data/second_source_mri.zip``, :mod:`tumorlib.data.second_source`: tumour or not is
all it knows); ``--split multi_sequence/test`` reads a split of the built dataset instead (every
class known, reported per source and sequence). Images stay in memory; it writes
``REPORT/source_check.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.clients.backend import DEFAULT_TIMEOUT_S, BackendError, Settings, make_backend
from serving.clients.prediction import NOT_BRAIN_MRI, UNCERTAIN, Prediction
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.cli import CommandError, run_command
from tumorlib.contracts.serving_contract import DISCLAIMER, MODEL_BASE_PATH, MODEL_NAME
from tumorlib.data.second_source import SecondSource, load_second_source

REPORT_JSON = "source_check.json"
REPORT_PLOT = "source_check.png"


def _rate(mask: np.ndarray) -> float:
    return float(np.mean(mask)) if len(mask) else float("nan")


@dataclass(frozen=True)
class Slices:
    """Slices to check and what is known of them: tumour or not always; the class when known."""

    images: list[bytes]
    tumour: np.ndarray  # bool [N]
    groups: list[str]  # collection, or source/sequence
    labels: list[str] | None = None  # class names, when the source has them


def second_source_slices(source: SecondSource) -> Slices:
    return Slices(source.images, source.tumour, list(source.collection))


def split_slices(name: str, data_dir: str | None) -> Slices:
    """``CONFIG/SPLIT`` of the built dataset: bytes, classes, source/sequence of every slice."""
    from tumorlib.data.pipeline import load_split
    from tumorlib.evaluation.by_source import split_strata

    config, _, split = name.partition("/")
    if not split:
        raise CommandError(f"--split wants CONFIG/SPLIT, e.g. multi_sequence/test; got {name!r}")
    try:
        rows = load_split(split, config, data_dir).map(lambda e: (e["image"], e["label"]))
        strata = split_strata(split, config, data_dir)["stratum"]
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(str(err)) from None
    images, labels = [], []
    for image, label in rows.as_numpy_iterator():
        images.append(bytes(image))
        labels.append(CLASS_NAMES[int(label)])
    tumour = np.array([label != "no_tumor" for label in labels])
    return Slices(images, tumour, list(strata), labels)


def summarise(source: Slices, predictions: list[Prediction | str]) -> dict[str, Any]:
    """Rates over all slices and per group; an error string counts as not answered.

    *Right* is the class when the source knows it, else tumour vs no tumour. *Stated* answers
    are classified and not flagged unfamiliar: what a reader would take at face value."""
    ok = np.array([isinstance(p, Prediction) for p in predictions])
    verdict = np.array([p.verdict if isinstance(p, Prediction) else "failed" for p in predictions])
    says_tumour = np.array(
        [isinstance(p, Prediction) and p.class_name != "no_tumor" for p in predictions]
    )
    unfamiliar = np.array([isinstance(p, Prediction) and p.unfamiliar for p in predictions])
    tumour_right = ok & (says_tumour == source.tumour)
    if source.labels is None:
        right = tumour_right
    else:
        right = ok & np.array(
            [isinstance(p, Prediction) and p.class_name == label
             for p, label in zip(predictions, source.labels)]
        )  # fmt: skip
    answered = verdict == "classified"
    stated = answered & ~unfamiliar

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {
            "n": int(mask.sum()),
            "not_brain_mri": _rate(verdict[mask] == NOT_BRAIN_MRI),
            "uncertain": _rate(verdict[mask] == UNCERTAIN),
            "failed": _rate(~ok[mask]),
            "unfamiliar_flag": _rate(unfamiliar[mask]),
            "tumour_vs_no_tumour_accuracy": _rate(tumour_right[mask & ok]),
            "accuracy": _rate(right[mask & ok]),
            "answered": _rate(answered[mask]),
            "answered_right": _rate(right[mask & answered]),
            "stated": _rate(stated[mask]),
            "stated_wrong": _rate(~right[mask & stated]),
        }

    groups = np.array(source.groups)
    return {
        "all": block(np.ones(len(source.images), bool)),
        "by_collection": {c: block(groups == c) for c in sorted(set(source.groups))},
        "right_means": "the class" if source.labels is not None else "tumour vs no tumour",
        "definitions": {
            "not_brain_mri": "refused by the brain-MRI check (in_distribution false)",
            "answered": "neither refused nor referred (verdict classified)",
            "stated": "answered and not flagged unfamiliar: taken at face value",
            "tumour_vs_no_tumour_accuracy": "argmax is not no_tumor exactly when the slice has "
            "a tumour, over every slice the model returned probabilities for",
            "accuracy": "argmax right (see right_means), over those slices",
            "answered_right": "right, over answered slices only",
            "stated_wrong": "wrong, over stated answers only",
        },
    }


def plot(path: Path, report: dict[str, Any]) -> Path:
    """Bars per collection: refused, referred, answered right, answered wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tumorlib.evaluation.plots import save_figure

    groups = {"all": report["all"], **report["by_collection"]}
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for row, b in enumerate(groups.values()):
        parts = [
            ("not a brain MRI", b["not_brain_mri"], "tab:red"),
            ("uncertain — refer", b["uncertain"], "tab:orange"),
            ("answered, right", b["answered"] * b["answered_right"], "tab:green"),
            ("answered, wrong", b["answered"] * (1 - b["answered_right"]), "black"),
        ]
        left = 0.0
        for label, width, colour in parts:
            width = 0.0 if not np.isfinite(width) else width
            ax.barh(row, width, left=left, color=colour, label=label if row == 0 else None)
            left += width
    ax.set_yticks(range(len(groups)), [f"{k} (n={v['n']})" for k, v in groups.items()])
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of slices")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{report['source']} slices through the served model")
    return save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib source-check",
        description="Measure the served model on brain MRI from other collections (refused, "
        f"referred, answered, tumour / no-tumour accuracy). {DISCLAIMER}",
    )
    parser.add_argument("--archive", help="second-source zip (default: ../shared/data/...)")
    parser.add_argument(
        "--split",
        help="check a split of the built dataset instead, e.g. multi_sequence/test (classes known)",
    )
    parser.add_argument("--data-dir", help="TFDS data dir for --split (default data/...)")
    parser.add_argument("--serving-url", help="TF Serving REST URL, e.g. http://127.0.0.1:8501")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    parser.add_argument("--out", default="reports/second_source", help="report folder")
    return parser


def check_served(source: Slices, name: str, settings: Settings, out: Path) -> dict[str, Any]:
    """Ask the served model about every slice; write ``out/source_check.json`` and ``.png``."""
    try:
        backend = make_backend(settings)
        predictions = backend.predict(source.images, None)
    except BackendError as err:
        raise CommandError(err.message) from None
    report = {"source": name, **summarise(source, predictions)}
    out.mkdir(parents=True, exist_ok=True)
    report["plot"] = str(plot(out / REPORT_PLOT, report))
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2))
    return report


def summary_line(report: dict[str, Any]) -> str:
    a = report["all"]
    return (
        f"{a['n']} {report['source']} slices: not a brain MRI {a['not_brain_mri']:.1%}, "
        f"uncertain {a['uncertain']:.1%}, answered {a['answered']:.1%} "
        f"({a['answered_right']:.1%} right on {report['right_means']}); stated {a['stated']:.1%}, "
        f"of them wrong {a['stated_wrong']:.1%}; tumour / no-tumour accuracy "
        f"{a['tumour_vs_no_tumour_accuracy']:.3f}; unfamiliar flag {a['unfamiliar_flag']:.1%}."
    )


def run(args: argparse.Namespace) -> None:
    if args.split:
        source, name = split_slices(args.split, args.data_dir), args.split
    else:
        source, name = second_source_slices(load_second_source(args.archive)), "second-source"
    settings = Settings(
        args.serving_url, args.model_name, Path(args.model_base_path), DEFAULT_TIMEOUT_S
    )
    out = Path(args.out)
    report = check_served(source, name, settings, out)
    print(f"{summary_line(report)} Written to {out / REPORT_JSON}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
